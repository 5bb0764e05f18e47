"""A run whose tables have optimizers of their own moves between torch and JAX and lands where it would have.

The demo model with ``user_id`` on row-wise Adagrad (its own schedule) and
``tweet_id`` on exact Adagrad (one accumulator per element) or SGD, the other
parameters on the recap optimizer or on one generic optimizer. float64: the
tables on torch's own optimizers (``torch.optim.Adagrad``'s ``sum``, torchrec
``RowWiseAdagrad``'s), max |Δparam| <= 1e-12; float32: the tables sharded onto
fbgemm's fused kernels (their rows and ``momentum1`` accumulators read whole from
the shards on export, written back into them on import), <= 1e-5 x param scale.
torch for N steps, export, JAX for N more == torch for 2N, and the other way.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from transfer_runs import SPEC, gap, jax_steps, torch_steps

import torch_bridge
from functional_opt import config, demo_model, optimizers, table_config
from torch_bridge import demo_model as torch_demo

BAR64, BAR32 = 1e-12, 1e-5
RAMP, END = 4, 12
SWITCHES = (2, RAMP, END + 3)
USER = {
    "rowwise_adagrad": {"lr": 0.05, "eps": 1e-8},
    "learning_rate": {
        "linear_ramp_to_cosine": {
            "learning_rate": 0.05,
            "final_learning_rate": 0.01,
            "num_ramp_steps": RAMP,
            "final_num_steps": END,
        }
    },
}
TWEET = {
    "adagrad": {"adagrad": {"lr": 0.02, "eps": 1e-8}},
    "sgd": {
        "sgd": {"lr": 0.3},
        "learning_rate": {
            "piecewise_constant": {"learning_rate_boundaries": [RAMP], "learning_rate_values": [0.3, 0.1]}
        },
    },
}
RECAP = config.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-7},
        "multi_task_learning_rates": {
            "tower_learning_rates": {
                "recap.is_clicked": {"linear_ramp_to_constant": {"learning_rate": 0.02, "num_ramp_steps": RAMP}},
                "recap.is_replied": {"constant": 0.01},
            },
            "backbone_learning_rate": {
                "piecewise_constant": {"learning_rate_boundaries": [END], "learning_rate_values": [0.01, 0.002]}
            },
        },
    }
)
GENERIC = config.OptimizerConfig.model_validate(
    {
        "sgd": {"lr": 0.1, "momentum": 0.9},
        "learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": RAMP}},
    }
)
VARIANTS = {"recap": (RECAP, "adagrad"), "generic": (GENERIC, "sgd")}


def tables_of(variant: str) -> table_config.LargeEmbeddingsConfig:
    tweet = VARIANTS[variant][1]
    rows = dict(SPEC.tables)
    common = {"embedding_dim": SPEC.embedding_dim, "data_type": "fp32"}
    return table_config.LargeEmbeddingsConfig(
        tables=[
            {"name": "user_id", "num_embeddings": rows["user_id"], "optimizer": USER, **common},
            {"name": "tweet_id", "num_embeddings": rows["tweet_id"], "optimizer": TWEET[tweet], **common},
        ]
    )


@functools.cache
def jax_tables(variant: str, float64: bool) -> optax.GradientTransformation:
    """The JAX optimizer of a variant for the demo model's params (one per float type: its step compiles once)."""
    with jax.enable_x64(float64):
        params = demo_model.params_from_arrays(demo_model.init_arrays(SPEC, 0), jnp.float64 if float64 else jnp.float32)
        return optimizers.build_table_optimizer(params, tables_of(variant), VARIANTS[variant][0])


def build(variant: str, dtype: torch.dtype) -> tuple[Any, Any, Any]:
    dense, tables = VARIANTS[variant][0], tables_of(variant)
    model: torch.nn.Module = torch_demo.DemoRankingModel(SPEC, seed=0, dtype=dtype)
    if dtype == torch.float32:
        model = torch_demo.shard_with_fused_embeddings(model, 0.0, tables=tables)
    if isinstance(dense, config.RecapOptimizerConfig):
        return (model, *torch_bridge.build_recap_optimizer(model, dense, tables=tables))
    return (model, *torch_bridge.build_embedding_optimizer(model, tables, dense))


CASES = [pytest.param(v, torch.float64, s, id=f"{v}-float64-switch{s}") for v in VARIANTS for s in SWITCHES] + [
    pytest.param(v, torch.float32, RAMP, id=f"{v}-float32-fused-switch{RAMP}") for v in VARIANTS
]


@pytest.mark.parity
@pytest.mark.parametrize(("variant", "dtype", "switch"), CASES)
def test_tables_move_both_ways(variant: str, dtype: torch.dtype, switch: int) -> None:
    dense, tables = VARIANTS[variant][0], tables_of(variant)
    data = demo_model.make_batches(SPEC, 2 * switch, 16, seed=2)
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    fused = dtype == torch.float32
    with torch_demo.single_process_group() if fused else contextlib.nullcontext():
        straight_built = build(variant, dtype)
        initial = torch_demo.named_arrays(straight_built[0])
        torch_steps(straight_built, data, dtype)
        straight = torch_demo.named_arrays(straight_built[0])
        bar = BAR64 if dtype == torch.float64 else BAR32 * max(float(np.abs(v).max()) for v in straight.values())

        first = build(variant, dtype)
        torch_steps(first, data[:switch], dtype)
        params, opt_state, step = torch_bridge.export_state(*first, tables=tables, dense=dense)
        assert step == switch
        with jax.enable_x64(dtype == torch.float64):
            tx = jax_tables(variant, dtype == torch.float64)
            optimizers.check_state(opt_state, tx.init(params))
            accumulators = {
                k: s.inner_state.accumulator
                for k, s in opt_state.inner_states.items()
                if hasattr(s.inner_state, "accumulator")
            }
            assert "user_id" in accumulators and all(
                float(jnp.abs(leaf).max()) > 0 for tree in accumulators.values() for leaf in jax.tree.leaves(tree)
            ), "the accumulators were not carried"
            final, _ = jax_steps(tx, params, opt_state, data[switch:])
        to_jax = gap(straight, demo_model.named_arrays(final))

        with jax.enable_x64(dtype == torch.float64):
            start = demo_model.params_from_arrays(initial, jdtype)
            params, state = jax_steps(tx, start, tx.init(start), data[:switch])
        second = build(variant, dtype)
        torch_bridge.import_state(*second, params, state, tables=tables, dense=dense)
        torch_steps(second, data[switch:], dtype)
        to_torch = gap(straight, torch_demo.named_arrays(second[0]))
    print(
        f"tables {variant} {dtype} switch {switch}: torch -> JAX {to_jax:.3g}, "
        f"JAX -> torch {to_torch:.3g} (bar {bar:.3g})"
    )
    assert to_jax <= bar and to_torch <= bar, (to_jax, to_torch, bar)
    assert all(np.abs(straight[n] - initial[n]).max() > 100 * max(to_jax, to_torch, BAR64) for n in straight)


@pytest.mark.usefixtures("x64")
def test_tables_refusals_change_nothing() -> None:
    dense, tables = VARIANTS["recap"][0], tables_of("recap")
    model, optimizer, scheduler = build("recap", torch.float64)
    torch_steps((model, optimizer, scheduler), demo_model.make_batches(SPEC, 2, 16, seed=2), torch.float64)
    before = {n: p.clone() for n, p in model.named_parameters()}
    sums = {n: optimizer.state[p]["sum"].clone() for n, p in model.named_parameters() if "embedding_bags" in n}
    params, state, _ = torch_bridge.export_state(model, optimizer, scheduler, tables=tables, dense=dense)

    def tweet_on(optimizer: dict) -> table_config.LargeEmbeddingsConfig:
        """The same tables with ``tweet_id`` on another optimizer."""
        new = table_config.TableOptimizerConfig(**optimizer)
        return table_config.LargeEmbeddingsConfig(
            tables=[t.model_copy(update={"optimizer": new}) if t.name == "tweet_id" else t for t in tables.tables]
        )

    other = tweet_on({"sgd": {"lr": 0.5}})
    with pytest.raises(ValueError, match="tweet_id: torch's schedule"):
        torch_bridge.import_state(model, optimizer, scheduler, params, state, tables=other, dense=dense)
    with pytest.raises(ValueError, match="the torch optimizer was built from other configs"):
        torch_bridge.export_state(model, optimizer, scheduler, tables=other, dense=dense)
    # Same schedule, another algorithm: torch runs Adagrad, the config asks for row-wise Adagrad.
    swapped = tweet_on({"rowwise_adagrad": {"lr": 0.02}})
    with pytest.raises(ValueError, match="table 'tweet_id': torch runs Adagrad, its config asks for rowwise_adagrad"):
        torch_bridge.import_state(model, optimizer, scheduler, params, state, tables=swapped, dense=dense)
    user = dict(params["ebc"]["embedding_bags"])
    user["user_id"] = {"weight": jnp.zeros((3, SPEC.embedding_dim))}
    reshaped = {**params, "ebc": {"embedding_bags": user}}
    with pytest.raises(ValueError, match=r"ebc.embedding_bags.user_id.weight: params \(3, 4\), model \(40, 4\)"):
        torch_bridge.import_state(model, optimizer, scheduler, reshaped, state, tables=tables, dense=dense)
    recap_state = optimizers.build_recap_optimizer(
        params, RECAP, config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.1})
    ).init(params)
    with pytest.raises(ValueError, match="not the state of build_table_optimizer"):
        torch_bridge.import_state(model, optimizer, scheduler, params, recap_state, tables=tables, dense=dense)
    with pytest.raises(ValueError, match="pass tables= and dense="):
        torch_bridge.export_state(model, optimizer, scheduler)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    for n, s in sums.items():
        assert torch.equal(optimizer.state[dict(model.named_parameters())[n]]["sum"], s), n
    assert scheduler.last_epoch == 2
