"""The JAX recap optimizer at scale: one schedule evaluation per kind, the numbers of one optimizer per group."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from functional_opt import config, grouping, optimizers, recap_rules, schedules, torch_rules

KINDS = (
    {"constant": 0.01},
    {"linear_ramp_to_constant": {"learning_rate": 0.02, "num_ramp_steps": 3}},
    {"linear_ramp_to_cosine": {"learning_rate": 0.03, "final_learning_rate": 0.001, "num_ramp_steps": 2,
                               "final_num_steps": 7}},
    {"piecewise_constant": {"learning_rate_boundaries": [2, 4, 3_000_000_000], "learning_rate_values": [0.1, 0.05,
                                                                                                     0.02, 0.01]}},
)  # fmt: skip
EMB = config.EmbeddingOptimizerConfig(
    learning_rate={"piecewise_constant": {"learning_rate_boundaries": [3], "learning_rate_values": [0.5, 0.25]}}
)


def towers_config(num_towers: int, kinds: tuple[dict[str, Any], ...] = KINDS) -> config.RecapOptimizerConfig:
    rates = {f"t{i}": kinds[i % len(kinds)] for i in range(num_towers)}
    return config.RecapOptimizerConfig(
        adam={"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6},
        multi_task_learning_rates={"tower_learning_rates": rates, "backbone_learning_rate": {"constant": 0.001}},
    )


def towers_params(num_towers: int, dtype: Any = jnp.float32) -> dict[str, Any]:
    key = jax.random.PRNGKey(0)
    towers = {}
    for i in range(num_towers):
        key, a, b = jax.random.split(key, 3)
        towers[f"t{i}"] = {"w": jax.random.normal(a, (3, 2), dtype), "b": jax.random.normal(b, (2,), dtype)}
    return {
        "towers": towers,
        "backbone": {"w": jnp.ones((2, 2), dtype)},
        "ebc": {"embedding_bags": {"t": {"weight": jnp.ones((4, 2), dtype)}}},
    }


def one_optimizer_per_group(params: Any, cfg: config.RecapOptimizerConfig, emb: Any) -> optax.GradientTransformation:
    """The earlier construction: an ``optax.partition`` of one torch-rule optimizer per group."""
    groups, labels = optimizers.recap_labels(params, cfg, emb)
    adam = cfg.adam
    transforms = {
        g.name: torch_rules.torch_sgd(schedules.schedule_from_config(g.learning_rate))
        if g.algorithm == "sgd"
        else torch_rules.torch_adam(
            schedules.schedule_from_config(g.learning_rate), b1=adam.beta_1, b2=adam.beta_2, eps=adam.epsilon
        )
        for g in groups
    }
    return optax.partition(transforms, labels)


def grads_at(params: Any, k: int) -> Any:
    return jax.tree.map(lambda p: jnp.sin(p * (k + 1.0)) + 0.1 * k, params)


def test_float64_numbers_equal_one_optimizer_per_group() -> None:
    with jax.enable_x64(True):
        params = towers_params(8, jnp.float64)
        cfg = towers_config(8)
        new, old = optimizers.build_recap_optimizer(params, cfg, EMB), one_optimizer_per_group(params, cfg, EMB)
        new_state, old_state = new.init(params), old.init(params)
        for k in range(12):
            new_updates, new_state = jax.jit(new.update)(grads_at(params, k), new_state)
            old_updates, old_state = jax.jit(old.update)(grads_at(params, k), old_state)
            for a, b in zip(jax.tree.leaves(new_updates), jax.tree.leaves(old_updates), strict=True):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=0)
            new_rates = optimizers.group_learning_rates(new_state)
            old_rates = optimizers.group_learning_rates(old_state)
            assert {n: float(r) for n, r in new_rates.items()} == {n: float(r) for n, r in old_rates.items()}
        new_records = recap_records(new_state)
        old_records = recap_records(old_state)
        assert new_records.keys() == old_records.keys()
        for key, value in new_records.items():
            np.testing.assert_array_equal(value, old_records[key])


def recap_records(state: Any) -> dict[str, np.ndarray]:
    found = jax.tree_util.tree_flatten_with_path(state)[0]
    return {
        jax.tree_util.keystr(path[:2] + path[-2:]): np.asarray(leaf)
        for path, leaf in found
        if "built_from" in jax.tree_util.keystr(path)
    }


def update_jaxpr(tx: optax.GradientTransformation, params: Any) -> jax.core.ClosedJaxpr:
    return jax.make_jaxpr(tx.update)(params, tx.init(params))


def equations(jaxpr: Any, primitive: str | None = None) -> int:
    """Equations of a jaxpr and of the jaxprs inside it (all of them, or one primitive's)."""
    total = 0
    for eqn in jaxpr.eqns:
        total += primitive is None or eqn.primitive.name == primitive
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += equations(inner, primitive)
    return total


def test_traced_update_does_not_grow_with_the_number_of_towers() -> None:
    """One schedule evaluation per kind: the update costs about what one torch_adam over the same leaves costs."""
    counts = {}
    for num_towers in (4, 50):
        params = towers_params(num_towers)
        recap = update_jaxpr(optimizers.build_recap_optimizer(params, towers_config(num_towers), EMB), params)
        single = update_jaxpr(torch_rules.torch_adam(0.01), params)
        counts[num_towers] = (equations(recap.jaxpr), equations(single.jaxpr))
        # One cosine (linear_ramp_to_cosine's kind) whatever the number of towers using it.
        assert equations(recap.jaxpr, "cos") == 1
    (recap_4, single_4), (recap_50, single_50) = counts[4], counts[50]
    assert recap_50 <= 1.35 * single_50 + 60, counts
    # Per tower (two leaves) the recap update adds at most a few equations to Adam's per-leaf ones.
    assert (recap_50 - recap_4) <= 1.35 * (single_50 - single_4), counts


def test_one_compilation_per_train_step() -> None:
    params = towers_params(20)
    tx = optimizers.build_recap_optimizer(params, towers_config(20), EMB)
    step = jax.jit(tx.update)
    state = tx.init(params)
    for k in range(3):
        _, state = step(grads_at(params, k), state)
    assert step._cache_size() == 1


def test_a_state_of_the_earlier_layout_is_refused_clearly() -> None:
    params = towers_params(3)
    cfg = towers_config(3)
    tx = optimizers.build_recap_optimizer(params, cfg, EMB)
    old_state = one_optimizer_per_group(params, cfg, EMB).init(params)
    with pytest.raises(ValueError, match=r"check_state: the saved recap optimizer state .* earlier layout \(1: an "):
        optimizers.check_state(old_state, tx.init(params))
    restored_as_dicts = jax.tree_util.tree_map(np.asarray, optax.tree_utils.tree_get(old_state, "inner_states"))
    with pytest.raises(ValueError, match=r"earlier layout .* start from tx\.init\(params\)"):
        optimizers.check_state({"inner_states": restored_as_dicts}, tx.init(params))
    with pytest.raises(ValueError, match=r"build_recap_optimizer: this state has the earlier layout"):
        tx.update(grads_at(params, 0), old_state)
    optimizers.check_state(tx.init(params), tx.init(params))


def test_state_layout_and_group_rates() -> None:
    params = towers_params(4)
    tx = optimizers.build_recap_optimizer(params, towers_config(4), EMB)
    state = tx.init(params)
    assert isinstance(state, recap_rules.RecapState)
    assert int(state.recap_layout) == recap_rules.RECAP_LAYOUT
    assert set(state.inner_states) == {"t0", "t1", "t2", "t3", "backbone", "dense_ebc"}
    assert len(state.inner_states["t0"].inner_state.mu) == 2  # the group's own leaves only
    for k in range(5):
        _, state = tx.update(grads_at(params, k), state)
    rates = {n: float(r) for n, r in optimizers.group_learning_rates(state).items()}
    for g in grouping.recap_groups(
        [".".join(("towers", f"t{i}", leaf)) for i in range(4) for leaf in ("w", "b")]
        + ["backbone.w", "ebc.embedding_bags.t.weight"],
        towers_config(4),
        EMB,
    ):
        assert rates[g.name] == pytest.approx(schedules.compute_lr(g.learning_rate, 4), rel=1e-6), g.name


def test_a_tree_with_other_parameters_is_refused() -> None:
    params = towers_params(2)
    tx = optimizers.build_recap_optimizer(params, towers_config(2), EMB)
    with pytest.raises(ValueError, match=r"built for other parameters; unknown names \['towers\.t9\.w'\]"):
        tx.init({**params, "towers": {**params["towers"], "t9": {"w": jnp.ones(1)}}})
