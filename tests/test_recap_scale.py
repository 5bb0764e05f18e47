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
        # The one record of the new state holds what each group's own state recorded.
        new_lr_records = new_state.built_from["learning_rate"].as_dict()
        for name, group_state in old_state.inner_states.items():
            old_record = optax.tree_utils.tree_get(group_state, "built_from")
            # compute_lr's numpy values against the per-group jnp ones: equal but for the last bit of a cosine.
            np.testing.assert_allclose(new_lr_records[name], old_record["learning_rate"], rtol=3e-16, atol=0)
            for field in ("b1", "b2", "eps"):
                if field in old_record:
                    np.testing.assert_array_equal(new_state.built_from[field], old_record[field])
        assert int(new_state.count) == 12


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


def test_states_of_the_earlier_layouts_are_refused_clearly() -> None:
    params = towers_params(3)
    cfg = towers_config(3)
    tx = optimizers.build_recap_optimizer(params, cfg, EMB)
    old_state = one_optimizer_per_group(params, cfg, EMB).init(params)
    with pytest.raises(ValueError, match=r"check_state: the saved recap optimizer state .* layout 1 \(an optax\.part"):
        optimizers.check_state(old_state, tx.init(params))
    restored_as_dicts = jax.tree_util.tree_map(np.asarray, optax.tree_utils.tree_get(old_state, "inner_states"))
    with pytest.raises(ValueError, match=r"layout 1 .* live optimizer layout 3 .* start from tx\.init\(params\)"):
        optimizers.check_state({"inner_states": restored_as_dicts}, tx.init(params))
    # Layout 2 (one torch-rule state per group, with its version), as a checkpoint restores it without a target.
    layout_2 = {"inner_states": {k: {"inner_state": v} for k, v in restored_as_dicts.items()}, "recap_layout": 2}
    with pytest.raises(ValueError, match=r"has layout 2 \(one torch-rule state per group.*live optimizer layout 3"):
        optimizers.check_state(layout_2, tx.init(params))
    with pytest.raises(ValueError, match=r"build_recap_optimizer: this state has the earlier layout 1"):
        tx.update(grads_at(params, 0), old_state)
    with pytest.raises(TypeError, match=r"expected a RecapState, got a mapping of layout 2 .*restore it into tx\.init"):
        tx.update(grads_at(params, 0), layout_2)
    optimizers.check_state(tx.init(params), tx.init(params))


def test_state_layout_and_group_rates() -> None:
    params = towers_params(4)
    tx = optimizers.build_recap_optimizer(params, towers_config(4), EMB)
    state = tx.init(params)
    assert isinstance(state, recap_rules.RecapState)
    assert int(state.recap_layout) == recap_rules.RECAP_LAYOUT
    assert state.learning_rates.names == ("t0", "t1", "t2", "t3", "backbone", "dense_ebc")
    assert set(state.mu) == set(state.nu) == {"t0", "t1", "t2", "t3", "backbone"}  # dense_ebc is SGD
    assert len(state.mu["t0"]) == 2  # the group's own leaves only
    # As many leaves as one torch_adam's state over the same parameters (the rate vector for its rate), less the
    # SGD table's two moments, plus the layout.
    assert len(jax.tree.leaves(state)) == len(jax.tree.leaves(torch_rules.torch_adam(0.1).init(params))) - 2 + 1
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


def test_check_state_names_the_groups_that_differ() -> None:
    params = towers_params(4)
    saved = optimizers.build_recap_optimizer(params, towers_config(4), EMB).init(params)
    swapped = towers_config(4, (KINDS[0], KINDS[2], KINDS[1], KINDS[3]))
    live = optimizers.build_recap_optimizer(params, swapped, EMB).init(params)
    with pytest.raises(ValueError, match=r"group 't1' \(built_from\): learning_rate: .*; group 't2' \(built_from\)"):
        optimizers.check_state(saved, live)
    with pytest.raises(ValueError, match=r"group 't1' \(built_from\): learning_rate: .*group 't2'"):
        optimizers.check_state(as_plain_dicts(saved), live)
    # Other groups: by name in a typed state, by shape in one restored as plain dicts.
    fewer = optimizers.build_recap_optimizer(towers_params(3), towers_config(3), EMB).init(towers_params(3))
    with pytest.raises(ValueError, match=r"groups: saved \['t0', 't1', 't2', 'backbone', 'dense_ebc'\], configured"):
        optimizers.check_state(fewer, live)
    with pytest.raises(ValueError, match=r"learning_rate: saved records of shape \(5, 23\), configured \(6, 23\)"):
        optimizers.check_state(as_plain_dicts(fewer), live)
    optimizers.check_state(as_plain_dicts(live), live)


def as_plain_dicts(state: Any) -> dict[str, Any]:
    """A state as a checkpoint restores it without a target: nested dicts keyed by the key path's names."""
    out: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        *head, last = grouping.path_to_name(path).split(".")
        node = out
        for key in head:
            node = node.setdefault(key, {})
        node[last] = np.asarray(leaf)
    return out
