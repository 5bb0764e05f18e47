"""The JAX per-table optimizer against torchrec's fused kernels: one TwHIN-shaped model, both frameworks.

torch: ``apply_table_optimizers`` + DMP (FUSED kernels, fbgemm's CPU TBE) +
``build_embedding_optimizer``. JAX: ``optimizers.build_table_optimizer`` on a
params pytree named like the torch model, the same loss written in ``jnp``,
the same initial rows and batches; float32, every step compared.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import table_toys as toys

from functional_opt import config, optimizers, table_config
from torch_bridge import apply_table_optimizers, build_embedding_optimizer

STEPS = 40
DENSE = config.OptimizerConfig(sgd={"lr": 0.05})
BAR = 1e-5  # max |Δparam| / max |param|, float32


def mixed_tables() -> table_config.LargeEmbeddingsConfig:
    ramp = {
        "linear_ramp_to_cosine": {
            "learning_rate": 0.3,
            "final_learning_rate": 0.03,
            "num_ramp_steps": 5,
            "final_num_steps": 30,
        }
    }
    stairs = {"piecewise_constant": {"learning_rate_boundaries": [7, 20], "learning_rate_values": [0.2, 0.1, 0.05]}}
    return table_config.LargeEmbeddingsConfig(
        tables=[
            toys.table("user", {"adagrad": {"lr": 0.3, "eps": 1e-8}, "learning_rate": ramp}),
            toys.table("tweet", {"rowwise_adagrad": {"lr": 0.2, "eps": 1e-6}, "learning_rate": stairs}),
        ]
    )


CASES = {"sgd": toys.sgd_tables, "adagrad+rowwise_adagrad": mixed_tables}


def jax_loss(params: dict, ids: dict[str, jax.Array], rels: jax.Array) -> jax.Array:
    """``toys.TwhinToy``'s loss: one id per example and table, so a pooled bag is the row itself."""
    lhs = params["ebc"]["embedding_bags"]["user"]["weight"][ids["user"]]
    rhs = params["ebc"]["embedding_bags"]["tweet"]["weight"][ids["tweet"]]
    score = ((lhs + params["all_trans_embs"][rels]) * rhs).sum(-1)
    return jax.nn.softplus(-score).mean()


@pytest.mark.parametrize("case", list(CASES))
def test_jax_tables_follow_the_fused_kernels_step_by_step(process_group: None, case: str) -> None:
    tables = CASES[case]()
    model = toys.TwhinToy()
    apply_table_optimizers(model, tables)
    sharded = toys.shard(model)
    opt, sched = build_embedding_optimizer(sharded, tables, DENSE)
    start = toys.table_weights(sharded)
    params = {
        "ebc": {"embedding_bags": {t: {"weight": jnp.asarray(start[t].numpy())} for t in start}},
        "all_trans_embs": jnp.asarray(sharded.module.all_trans_embs.detach().numpy()),
    }
    tx = optimizers.build_table_optimizer(params, tables, DENSE)
    state = tx.init(params)
    grad = jax.jit(jax.grad(jax_loss))
    worst = 0.0
    for k, batch in enumerate(toys.make_batches(STEPS)):
        opt.zero_grad()
        toys.loss_fn(sharded, batch).backward()
        opt.step()
        sched.step()
        ids = {t: jnp.asarray(v.numpy()) for t, v in batch.ids.items()}
        updates, state = tx.update(grad(params, ids, jnp.asarray(batch.rels.numpy())), state, params)
        params = optax.apply_updates(params, updates)
        torch_rows = toys.table_weights(sharded)
        for t, rows in torch_rows.items():
            ours = np.asarray(params["ebc"]["embedding_bags"][t]["weight"])
            gap = float(np.abs(ours - rows.numpy()).max()) / float(np.abs(rows.numpy()).max())
            worst = max(worst, gap)
            assert gap <= BAR, (case, t, k, gap)
        dense_gap = np.abs(np.asarray(params["all_trans_embs"]) - sharded.module.all_trans_embs.detach().numpy()).max()
        assert dense_gap <= BAR * float(np.abs(np.asarray(params["all_trans_embs"])).max()), (k, dense_gap)
    moved = max(float(np.abs(toys.table_weights(sharded)[t].numpy() - start[t].numpy()).max()) for t in start)
    assert moved > 1e3 * BAR, "the tables barely moved: the comparison proves nothing"
    print(f"{case}: worst max |Δparam| / max |param| over {STEPS} steps = {worst:.3g}")


def test_recap_dense_leaves_take_the_recap_optimizer_and_tables_their_own_rule() -> None:
    recap = config.RecapOptimizerConfig(
        adam={},
        multi_task_learning_rates={
            "tower_learning_rates": {"a.b": {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 3}}},
            "backbone_learning_rate": {"constant": 0.01},
        },
    )
    dense = {"towers": {"a__b": {"w": jnp.ones(3)}}, "backbone": {"w": jnp.ones(2)}}
    params = {**dense, "ebc": {"embedding_bags": {"user": {"weight": jnp.ones((4, 2))}}}}
    rowwise = {"rowwise_adagrad": {"lr": 0.2, "eps": 1e-8}}
    tables = [table_config.EmbeddingBagConfig.model_validate(toys.table("user", rowwise, rows=4))]
    tx = optimizers.build_table_optimizer(params, tables, recap)
    alone = optimizers.build_recap_optimizer(dense, recap)
    rule = optimizers.fused_exact_rowwise_adagrad(0.2, eps=1e-8)
    state, alone_state, rule_state = (
        tx.init(params),
        alone.init(dense),
        rule.init(params["ebc"]["embedding_bags"]["user"]["weight"]),
    )
    for k in range(5):

        def ramp(p: jax.Array, k: int = k) -> jax.Array:
            return (0.5 + k) * jnp.arange(1, p.size + 1, dtype=p.dtype).reshape(p.shape)

        grads = jax.tree_util.tree_map(ramp, params)
        updates, state = tx.update(grads, state, params)
        expected_dense, alone_state = alone.update({n: grads[n] for n in dense}, alone_state, dense)
        table_grad = grads["ebc"]["embedding_bags"]["user"]["weight"]
        expected_table, rule_state = rule.update(table_grad, rule_state)
        for n in dense:
            assert jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, updates[n], expected_dense[n])), k
        assert jnp.array_equal(updates["ebc"]["embedding_bags"]["user"]["weight"], expected_table), k


def test_tables_without_configs_or_configs_without_tables_are_refused() -> None:
    params = {"embedding_bags": {"user": {"weight": jnp.ones((2, 2))}, "item": {"weight": jnp.ones((2, 2))}}}
    tables = [toys.table("user", {"sgd": {"lr": 0.1}}, rows=2), toys.table("video", {"sgd": {"lr": 0.1}}, rows=2)]
    cfg = table_config.LargeEmbeddingsConfig(tables=tables)
    with pytest.raises(
        ValueError, match=r"tables \['video'\] of the config have no leaf.*tables \['item'\] of the model have no"
    ):
        optimizers.build_table_optimizer(params, cfg)
    only_user = table_config.LargeEmbeddingsConfig(tables=tables[:1])
    with pytest.raises(ValueError, match="some leaves are not tables; give a dense optimizer"):
        optimizers.build_table_optimizer(
            {"bias": jnp.ones(2), "embedding_bags": {"user": params["embedding_bags"]["user"]}}, only_user
        )
    adam = table_config.LargeEmbeddingsConfig(tables=[toys.table("user", {"adam": {"lr": 0.1}}, rows=2)])
    with pytest.raises(ValueError, match="table 'user': adam has no fused CPU kernel"):
        optimizers.build_table_optimizer({"embedding_bags": {"user": {"weight": jnp.ones((2, 2))}}}, adam)
