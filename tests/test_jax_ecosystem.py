"""The JAX optimizers inside the JAX ecosystem: optax's wrappers, flax nnx and linen, orbax checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from functional_opt import config, grouping, optimizers, schedules

RAMP = {"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": 5}}
COSINE = {
    "linear_ramp_to_cosine": {
        "learning_rate": 0.05,
        "final_learning_rate": 0.005,
        "num_ramp_steps": 3,
        "final_num_steps": 20,
    }
}
STEPS = 12


def schedule_of(rate: dict[str, Any]) -> schedules.Schedule:
    return schedules.schedule_from_config(config.LearningRate.model_validate(rate))


def grads_at(k: int, like: Any) -> Any:
    """A deterministic gradient for step ``k`` shaped like ``like``, varied in sign and scale."""
    leaves, treedef = jax.tree_util.tree_flatten(like)
    rng = np.random.default_rng(k)
    out = [jnp.asarray(rng.normal(size=np.shape(x)) * 10.0 ** rng.uniform(-2, 1), dtype=x.dtype) for x in leaves]
    return jax.tree_util.tree_unflatten(treedef, out)


def run(tx: optax.GradientTransformation, params: Any, steps: int = STEPS) -> tuple[Any, Any]:
    """``steps`` jitted updates with :func:`grads_at`; the final params and state."""
    update = jax.jit(tx.update)
    state = tx.init(params)
    for k in range(steps):
        updates, state = update(grads_at(k, params), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def bits(tree: Any) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree_util.tree_leaves(tree)]


# --- optax.inject_hyperparams ---------------------------------------------------------------------

INJECTED: dict[str, tuple[Callable[..., optax.GradientTransformation], dict[str, Any]]] = {
    "adam": (optimizers.torch_adam, {"b1": 0.9, "b2": 0.99, "eps": 1e-6}),
    "adam_small_beta1": (optimizers.torch_adam, {"b1": 0.3, "b2": 0.95, "eps": 1e-3}),
    "sgd_momentum": (optimizers.torch_sgd, {"momentum": 0.9}),
    "adagrad": (optimizers.torch_adagrad, {"lr_decay": 0.01, "eps": 1e-10, "initial_accumulator_value": 0.1}),
}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("rate", [0.03, COSINE], ids=["constant", "schedule"])
@pytest.mark.parametrize("rule", sorted(INJECTED))
def test_inject_hyperparams_under_jit_is_bitwise_the_plain_optimizer(rule: str, rate: Any) -> None:
    factory, hyper = INJECTED[rule]
    learning_rate = rate if isinstance(rate, float) else schedule_of(rate)
    params = {"w": jnp.linspace(-1.0, 1.0, 7), "b": [jnp.zeros(3)]}
    injected = optax.inject_hyperparams(factory)(learning_rate=learning_rate, **hyper)
    got_params, got_state = run(injected, params)
    want_params, want_state = run(factory(learning_rate, **hyper), params)
    assert bits(got_params) == bits(want_params)
    assert np.max(np.abs(got_params["w"] - params["w"])) > 1e-3  # the parameters did move
    expected_lr = learning_rate if isinstance(rate, float) else float(learning_rate(STEPS - 1))
    assert float(optimizers.learning_rate(got_state)) == float(optimizers.learning_rate(want_state)) == expected_lr
    for name, value in hyper.items():
        assert float(got_state.hyperparams[name]) == value


@pytest.mark.usefixtures("x64")
def test_injected_hyper_parameters_can_change_between_steps() -> None:
    """The point of injecting: a new b1 (or momentum) set in the state is used by the next jitted step."""
    params = jnp.ones(3)
    tx = optax.inject_hyperparams(optimizers.torch_sgd)(learning_rate=0.1, momentum=0.0)
    state = tx.init(params)
    update = jax.jit(tx.update)
    updates, state = update(jnp.ones(3), state)
    state.hyperparams["momentum"] = jnp.asarray(0.5)
    updates, state = update(jnp.ones(3), state)
    np.testing.assert_array_equal(updates, -0.1 * (0.5 * 1.0 + 1.0) * np.ones(3))


@pytest.mark.parametrize(
    ("factory", "hyper", "message"),
    [
        (optimizers.torch_adam, {"learning_rate": 0.1, "b1": 1.5}, r"torch_adam: b1=1\.5 must be in \[0, 1\)"),
        (optimizers.torch_adam, {"learning_rate": -0.5}, r"torch_adam: learning_rate=-0\.5 must be >= 0"),
        (optimizers.torch_sgd, {"learning_rate": 0.1, "momentum": -1.0}, r"torch_sgd: momentum=-1\.0 must be"),
        (optimizers.torch_adagrad, {"learning_rate": 0.1, "eps": float("nan")}, r"torch_adagrad: eps=nan must be"),
    ],
)
def test_injected_concrete_bad_values_are_refused(factory: Any, hyper: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        optax.inject_hyperparams(factory)(**hyper).init(jnp.zeros(2))


def test_array_hyper_parameters_must_be_real_scalars() -> None:
    with pytest.raises(ValueError, match=r"torch_adam: b1 must be a scalar, got an array of shape \(2,\)"):
        optimizers.torch_adam(0.1, b1=jnp.asarray([0.9, 0.9]))
    with pytest.raises(ValueError, match=r"torch_sgd: momentum='0\.9' must be a number, got str"):
        optimizers.torch_sgd(0.1, momentum="0.9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"torch_adam: eps must be a real number, got an array of dtype bool"):
        optimizers.torch_adam(0.1, eps=jnp.asarray(True))


# --- the learning rates through any wrapper -------------------------------------------------------


def recap_config() -> config.RecapOptimizerConfig:
    return config.RecapOptimizerConfig.model_validate(
        {
            "adam": {},
            "multi_task_learning_rates": {
                "tower_learning_rates": {"task.a": RAMP, "b": {"constant": 0.3}},
                "backbone_learning_rate": COSINE,
            },
        }
    )


RECAP_PARAMS = {
    "towers": {"task__a": {"w": jnp.ones(2)}, "b": {"w": jnp.ones(2)}},
    "backbone": {"w": jnp.ones(3)},
    "ebc": {"embedding_bags": {"t": {"weight": jnp.ones((4, 2))}}},
}
EMB = config.EmbeddingOptimizerConfig.model_validate({"learning_rate": {"constant": 0.5}})


NESTED_PARAMS = {"model": RECAP_PARAMS, "frozen": jnp.ones(2)}


def recap_tx(params: Any = RECAP_PARAMS) -> optax.GradientTransformation:
    """The recap optimizer; inside another partition it is built for the whole tree it will see."""
    return optimizers.build_recap_optimizer(params, recap_config(), EMB)


def expected_group_rates(n: int) -> dict[str, float]:
    """The rates the state holds after ``n >= 1`` updates: ``schedule(n - 1)``."""
    return {
        "task.a": float(schedule_of(RAMP)(n - 1)),
        "b": 0.3,
        "backbone": float(schedule_of(COSINE)(n - 1)),
        "dense_ebc": 0.5,
    }


GROUP_WRAPPERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "chain": lambda: optax.chain(optax.clip_by_global_norm(10.0), recap_tx()),
    "multi_steps": lambda: optax.MultiSteps(recap_tx(), every_k_schedule=1),
    "apply_if_finite": lambda: optax.apply_if_finite(recap_tx(), max_consecutive_errors=2),
    "nested_partition": lambda: optax.partition(
        {"model": recap_tx(NESTED_PARAMS), "frozen": optax.set_to_zero()},
        {"model": jax.tree.map(lambda _: "model", RECAP_PARAMS), "frozen": "frozen"},
    ),
    "multi_transform_in_chain": lambda: optax.chain(
        optax.multi_transform(
            {"model": recap_tx(NESTED_PARAMS), "frozen": optax.set_to_zero()},
            {"model": jax.tree.map(lambda _: "model", RECAP_PARAMS), "frozen": "frozen"},
        )
    ),
}


@pytest.mark.parametrize("wrapper", sorted(GROUP_WRAPPERS))
def test_group_learning_rates_through_wrappers(wrapper: str) -> None:
    params = dict(RECAP_PARAMS)
    if wrapper in ("nested_partition", "multi_transform_in_chain"):
        params = NESTED_PARAMS
    tx = GROUP_WRAPPERS[wrapper]()
    _, state = run(tx, params, steps=7)
    got = {k: float(v) for k, v in optimizers.group_learning_rates(state).items()}
    assert got == pytest.approx(expected_group_rates(7), rel=1e-6, abs=0)


SINGLE_WRAPPERS: dict[str, Callable[[], optax.GradientTransformation]] = {
    "plain": lambda: optimizers.torch_adam(schedule_of(RAMP)),
    "chain": lambda: optax.chain(optax.clip(1.0), optimizers.torch_sgd(schedule_of(RAMP), momentum=0.9)),
    "multi_steps": lambda: optax.MultiSteps(optimizers.torch_adagrad(schedule_of(RAMP)), every_k_schedule=1),
    "apply_if_finite": lambda: optax.apply_if_finite(optimizers.torch_adam(schedule_of(RAMP)), 3),
    "inject_hyperparams": lambda: optax.inject_hyperparams(optimizers.torch_adam)(learning_rate=schedule_of(RAMP)),
    "inject_optax_sgd": lambda: optax.inject_hyperparams(optax.sgd)(learning_rate=schedule_of(RAMP)),
    "masked": lambda: optax.masked(optimizers.torch_adam(schedule_of(RAMP)), {"w": True, "b": False}),
}


@pytest.mark.parametrize("wrapper", sorted(SINGLE_WRAPPERS))
def test_learning_rate_through_wrappers(wrapper: str) -> None:
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    _, state = run(SINGLE_WRAPPERS[wrapper](), params, steps=3)
    assert float(optimizers.learning_rate(state)) == pytest.approx(float(schedule_of(RAMP)(2)), rel=1e-6)


def test_group_names_are_qualified_only_where_they_clash() -> None:
    params = {"x": RECAP_PARAMS, "y": RECAP_PARAMS}
    tx = optax.partition({"x": recap_tx(params), "y": recap_tx(params)}, {"x": "x", "y": "y"})
    state = tx.init(params)
    assert sorted(optimizers.group_learning_rates(state)) == sorted(
        f"{outer}/{inner}" for outer in "xy" for inner in expected_group_rates(1)
    )


# --- orbax: the state records its config ----------------------------------------------------------

SAVE_AT = 5


def recap_config_with(**changes: Any) -> config.RecapOptimizerConfig:
    data = recap_config().model_dump()
    for dotted, value in changes.items():
        *head, last = dotted.split("__")
        node = data
        for key in head:
            node = node[key]
        node[last] = value
    return config.RecapOptimizerConfig.model_validate(data)


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("restore_target", [True, False], ids=["typed", "plain"])
def test_orbax_restore_refuses_another_config_and_resumes_the_same(tmp_path: Path, restore_target: bool) -> None:
    import orbax.checkpoint as ocp

    tx = recap_tx()
    update = jax.jit(tx.update)
    params, state = RECAP_PARAMS, tx.init(RECAP_PARAMS)
    checkpointer = ocp.StandardCheckpointer()
    for k in range(STEPS):
        if k == SAVE_AT:
            checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
            checkpointer.wait_until_finished()
        updates, state = update(grads_at(k, params), state, params)
        params = optax.apply_updates(params, updates)

    other_configs = {
        "adam__beta_1": (
            0.8,
            r"state at \(top level\): b1: saved 0\.9, configured 0\.8",
        ),
        "multi_task_learning_rates__backbone_learning_rate": (
            RAMP,
            r"group 'backbone' \(built_from\): learning_rate: "
            r"saved \[0\.0, 0\.016666666666666666, .*configured \[0\.0, 0\.04",
        ),
    }
    for change, (value, message) in other_configs.items():
        other = optimizers.build_recap_optimizer(RECAP_PARAMS, recap_config_with(**{change: value}), EMB)
        fresh = {"params": RECAP_PARAMS, "opt_state": other.init(RECAP_PARAMS)}
        restored = checkpointer.restore(tmp_path / "ckpt", fresh if restore_target else None)
        before = bits(restored)
        with pytest.raises(ValueError, match=message):
            optimizers.check_state(restored["opt_state"], fresh["opt_state"])
        assert bits(restored) == before  # a refusal changes nothing

    fresh = {"params": RECAP_PARAMS, "opt_state": tx.init(RECAP_PARAMS)}
    restored = checkpointer.restore(tmp_path / "ckpt", fresh)
    optimizers.check_state(restored["opt_state"], fresh["opt_state"])
    resumed_params, resumed_state = restored["params"], restored["opt_state"]
    for k in range(SAVE_AT, STEPS):
        updates, resumed_state = update(grads_at(k, resumed_params), resumed_state, resumed_params)
        resumed_params = optax.apply_updates(resumed_params, updates)
    assert bits((resumed_params, resumed_state)) == bits((params, state))


@pytest.mark.parametrize(
    ("build_a", "build_b", "message"),
    [
        (
            lambda: optimizers.build_optimizer(config.OptimizerConfig(sgd={"lr": 0.1, "momentum": 0.5})),
            lambda: optimizers.build_optimizer(config.OptimizerConfig(sgd={"lr": 0.1, "momentum": 0.25})),
            r"state at 1: momentum: saved 0\.5, configured 0\.25",
        ),
        (
            lambda: optimizers.build_optimizer(config.OptimizerConfig(adagrad={"lr": 0.1, "lr_decay": 0.5})),
            lambda: optimizers.build_optimizer(config.OptimizerConfig(adagrad={"lr": 0.1, "lr_decay": 0.25})),
            r"state at \(top level\): lr_decay: saved 0\.5, configured 0\.25",
        ),
        (
            lambda: optimizers.build_optimizer(config.OptimizerConfig(adam={"lr": 0.5})),
            lambda: optimizers.build_optimizer(config.OptimizerConfig(adam={"lr": 0.25})),
            r"learning_rate: saved \[0\.5, 0\.5.*configured \[0\.25, 0\.25.*at steps \[0, 1, 2",
        ),
        (
            lambda: optimizers.build_optimizer(config.OptimizerConfig(adam={"lr": 0.5})),
            lambda: optimizers.build_optimizer(config.OptimizerConfig(sgd={"lr": 0.5})),
            r"state at \(top level\): b1: not configured; .*momentum: not in the saved state",
        ),
    ],
)
def test_check_state_names_the_field(build_a: Any, build_b: Any, message: str) -> None:
    params = {"w": jnp.ones(2)}
    saved = build_a().init(params)
    optimizers.check_state(saved, build_a().init(params))
    with pytest.raises(ValueError, match=message):
        optimizers.check_state(saved, build_b().init(params))


def test_check_state_needs_a_state_of_this_library() -> None:
    with pytest.raises(ValueError, match=r"fresh_state holds no state of this library's optimizers"):
        optimizers.check_state(optax.sgd(0.1).init(jnp.ones(1)), optax.sgd(0.1).init(jnp.ones(1)))


# --- flax ------------------------------------------------------------------------------------------


def nnx_model() -> Any:
    from flax import nnx

    class Tower(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.dense = nnx.Linear(4, 1, rngs=rngs)

    class Model(nnx.Module):
        """Attribute names follow the grouping rule: ``towers.task__a``, ``ebc.embedding_bags.table``."""

        def __init__(self, rngs: nnx.Rngs) -> None:
            self.ebc = nnx.Dict({"embedding_bags": nnx.Dict({"table": nnx.Embed(10, 4, rngs=rngs)})})
            self.backbone = nnx.List([nnx.Linear(4, 4, rngs=rngs), nnx.Linear(4, 4, rngs=rngs)])
            self.towers = nnx.Dict({"task__a": Tower(rngs), "b": Tower(rngs)})
            self.norm = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)  # its statistics are not parameters

        def __call__(self, ids: jax.Array) -> jax.Array:
            x = self.ebc["embedding_bags"]["table"](ids).sum(axis=1)
            for layer in self.backbone:
                x = jax.nn.relu(layer(x))
            x = self.norm(x)
            return self.towers["task__a"].dense(x) + 2.0 * self.towers["b"].dense(x)

    return Model(nnx.Rngs(0))


def batch(k: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(100 + k)
    return jnp.asarray(rng.integers(0, 10, size=(8, 3))), jnp.asarray(rng.normal(size=(8, 1)), dtype=jnp.float32)


@pytest.mark.parametrize("build_from", ["state", "module"])
def test_nnx_optimizer_over_the_recap_optimizer(build_from: str) -> None:
    from flax import nnx

    model = nnx_model()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    plain = nnx.to_pure_dict(params)
    initial = jax.tree.map(np.array, plain)
    names = sorted(name for name, _ in grouping.named_leaves(plain))
    assert "towers.task__a.dense.kernel" in names and "ebc.embedding_bags.table.embedding" in names

    given = nnx.state(model, nnx.Param) if build_from == "state" else model
    optimizer = nnx.Optimizer(model, optimizers.build_recap_optimizer(given, recap_config(), EMB), wrt=nnx.Param)

    def loss(model: Any, ids: jax.Array, y: jax.Array) -> jax.Array:
        return jnp.mean((model(ids) - y) ** 2)

    @nnx.jit
    def nnx_step(model: Any, optimizer: Any, ids: jax.Array, y: jax.Array) -> None:
        optimizer.update(model, nnx.grad(loss)(model, ids, y))

    tx = optimizers.build_recap_optimizer(plain, recap_config(), EMB)

    @jax.jit
    def plain_step(plain: Any, state: Any, ids: jax.Array, y: jax.Array) -> Any:
        def plain_loss(p: Any) -> jax.Array:
            state = nnx.State(params)
            nnx.replace_by_pure_dict(state, p)
            return loss(nnx.merge(graphdef, state, rest), ids, y)

        updates, state = tx.update(jax.grad(plain_loss)(plain), state, plain)
        return optax.apply_updates(plain, updates), state

    state = tx.init(plain)
    for k in range(6):
        nnx_step(model, optimizer, *batch(k))
        plain, state = plain_step(plain, state, *batch(k))

    got = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(plain), strict=True))
    # Two programs (nnx.jit of the wrapper, jax.jit of the plain step): XLA may fuse and contract them
    # differently on some CPUs, so the bar is a few float32 ulps of the parameters, not bitwise.
    scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(plain))
    assert diff <= 4 * float(np.finfo(np.float32).eps) * scale
    moved = [float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(initial), jax.tree.leaves(got), strict=True)]
    assert min(moved) > 1e-4  # every parameter moved
    rates = {k: float(v) for k, v in optimizers.group_learning_rates(optimizer.opt_state).items()}
    assert rates == pytest.approx(expected_group_rates(6), rel=1e-6)
    assert rates == {k: float(v) for k, v in optimizers.group_learning_rates(state).items()}


def test_nnx_optimizer_with_other_wrt_fails_at_build_saying_what_to_pass() -> None:
    from flax import nnx

    model = nnx_model()
    tx = optimizers.build_recap_optimizer(nnx.state(model, nnx.Param), recap_config(), EMB)
    with pytest.raises(ValueError, match=r"unknown names \['norm\.mean'.*nnx\.state\(model, wrt\)"):
        nnx.Optimizer(model, tx, wrt=nnx.Variable)
