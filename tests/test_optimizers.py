"""``functional_opt.optimizers``: torch's update rules on single tensors, the LR in the state, build-time errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from functional_opt import config, optimizers, schedules, torch_rule_parts

STEPS = 300
SIZE = 37  # several vector lanes plus a scalar tail on the torch side
SCHEDULE = config.LearningRate(
    linear_ramp_to_cosine={
        "learning_rate": 0.05,
        "final_learning_rate": 0.005,
        "num_ramp_steps": 30,
        "final_num_steps": 250,
    }
)
FLOAT64_BAR = 1e-14  # relative to the largest parameter (at least 1), after STEPS steps
FLOAT32_RELATIVE_BAR = 1e-5


def gradients(seed: int = 0) -> np.ndarray:
    """``STEPS`` gradients whose scale varies over four decades, with some exact zeros."""
    rng = np.random.default_rng(seed)
    grads = rng.normal(size=(STEPS, SIZE)) * 10.0 ** rng.uniform(-3, 1, size=(STEPS, 1))
    grads[rng.random(size=grads.shape) < 0.05] = 0.0
    return grads


def initial_params() -> np.ndarray:
    return np.random.default_rng(1).normal(size=SIZE)


def torch_trajectory(make: Callable[[list[torch.Tensor]], torch.optim.Optimizer], dtype: torch.dtype) -> Any:
    """Parameters after every step; the LR of step k is ``compute_lr(SCHEDULE, k)``."""
    param = torch.nn.Parameter(torch.tensor(initial_params(), dtype=dtype))
    optimizer = make([param])
    out = []
    for k, grad in enumerate(gradients()):
        for group in optimizer.param_groups:
            group["lr"] = schedules.compute_lr(SCHEDULE, k)
        param.grad = torch.tensor(grad, dtype=dtype)
        optimizer.step()
        out.append(param.detach().numpy().copy())
    return np.stack(out), optimizer.state[param]


def jax_trajectory(tx: optax.GradientTransformation, dtype: str, *, read_lr: bool = True) -> Any:
    """Parameters after every step, the LR each state holds, and the final state (one ``lax.scan``)."""
    with jax.enable_x64(dtype == "float64"):
        params = jnp.asarray(initial_params(), dtype=dtype)

        def step(carry: Any, grad: jax.Array) -> Any:
            params, state = carry
            updates, state = tx.update(grad, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), (params, optimizers.learning_rate(state) if read_lr else 0.0)

        run = jax.jit(lambda params, grads: jax.lax.scan(step, (params, tx.init(params)), grads))
        (_, state), (trajectory, lrs) = run(params, jnp.asarray(gradients(), dtype=dtype))
        return np.asarray(trajectory), np.asarray(lrs), state


def jax_schedule() -> schedules.Schedule:
    return schedules.schedule_from_config(SCHEDULE)


RULES: dict[str, tuple[Callable[[list[torch.Tensor]], torch.optim.Optimizer], Callable[[], Any]]] = {
    "adam": (
        lambda p: torch.optim.Adam(p, lr=0.0, betas=(0.9, 0.999), eps=1e-7, foreach=False),
        lambda: optimizers.torch_adam(jax_schedule(), b1=0.9, b2=0.999, eps=1e-7),
    ),
    "adam_fused": (
        lambda p: torch.optim.Adam(p, lr=0.0, betas=(0.9, 0.999), eps=1e-7, fused=True),
        lambda: optimizers.torch_adam(jax_schedule(), b1=0.9, b2=0.999, eps=1e-7),
    ),
    "adam_small_beta1": (
        lambda p: torch.optim.Adam(p, lr=0.0, betas=(0.3, 0.95), eps=1e-3, foreach=False),
        lambda: optimizers.torch_adam(jax_schedule(), b1=0.3, b2=0.95, eps=1e-3),
    ),
    "sgd": (
        lambda p: torch.optim.SGD(p, lr=0.0),
        lambda: optimizers.torch_sgd(jax_schedule()),
    ),
    "sgd_momentum": (
        lambda p: torch.optim.SGD(p, lr=0.0, momentum=0.9),
        lambda: optimizers.torch_sgd(jax_schedule(), momentum=0.9),
    ),
    "adagrad": (
        lambda p: torch.optim.Adagrad(p, lr=0.0, eps=1e-10),
        lambda: optimizers.torch_adagrad(jax_schedule(), eps=1e-10),
    ),
    "adagrad_decay_accumulator": (
        lambda p: torch.optim.Adagrad(p, lr=0.0, lr_decay=0.01, initial_accumulator_value=0.1, eps=1e-6),
        lambda: optimizers.torch_adagrad(jax_schedule(), lr_decay=0.01, eps=1e-6, initial_accumulator_value=0.1),
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_matches_torch_float64(rule: str) -> None:
    make_torch, make_tx = RULES[rule]
    expected, torch_state = torch_trajectory(make_torch, torch.float64)
    got, lrs, state = jax_trajectory(make_tx(), "float64")
    assert np.max(np.abs(got - expected)) <= FLOAT64_BAR * max(1.0, np.max(np.abs(expected)))
    assert np.max(np.abs(expected[-1] - initial_params())) > 1e-3  # the parameters did move
    wanted = np.asarray([schedules.compute_lr(SCHEDULE, k) for k in range(STEPS)])
    np.testing.assert_allclose(lrs, wanted, rtol=1e-14, atol=0)
    if rule.startswith("adam"):
        np.testing.assert_allclose(np.asarray(state.mu), torch_state["exp_avg"].numpy(), rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(np.asarray(state.nu), torch_state["exp_avg_sq"].numpy(), rtol=1e-13, atol=1e-300)
    if rule.startswith("adagrad"):
        np.testing.assert_allclose(np.asarray(state.sum_of_squares), torch_state["sum"].numpy(), rtol=1e-13)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_matches_torch_float32(rule: str) -> None:
    make_torch, make_tx = RULES[rule]
    expected, _ = torch_trajectory(make_torch, torch.float32)
    got, lrs, _ = jax_trajectory(make_tx(), "float32")
    scale = np.max(np.abs(expected))
    assert np.max(np.abs(got - expected)) <= FLOAT32_RELATIVE_BAR * scale
    wanted = np.asarray([schedules.compute_lr(SCHEDULE, k) for k in range(STEPS)])
    np.testing.assert_allclose(lrs, wanted, rtol=1e-6, atol=1e-12)


def test_optax_defaults_differ_from_torch() -> None:
    """Why this module exists: optax's adagrad starts its accumulator at 0.1, torch's at 0."""
    torch_adagrad, _ = torch_trajectory(lambda p: torch.optim.Adagrad(p, lr=0.0, eps=1e-10), torch.float64)
    optax_adagrad, _, _ = jax_trajectory(optax.adagrad(jax_schedule(), eps=1e-10), "float64", read_lr=False)
    assert np.max(np.abs(optax_adagrad[-1] - torch_adagrad[-1])) > 1e-3


@pytest.mark.parametrize("beta", [0.9, 0.999, 0.9999, 0.0, 0.5])
def test_float32_bias_correction_has_no_cancellation(beta: float) -> None:
    """In float32, 1 - 0.999**1 loses 5 digits; the transform keeps float32 accuracy."""
    steps = np.arange(1, 20001, dtype=np.float64)
    exact = 1.0 - beta**steps
    got = np.asarray(torch_rule_parts.bias_correction(beta, jnp.asarray(steps, dtype=jnp.float32)))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=5e-7)


# --- the learning rate in the state ---------------------------------------------------------------

GENERIC_CONFIGS = {
    "adam": {"adam": {"lr": 0.1}},
    "sgd": {"sgd": {"lr": 0.1, "momentum": 0.5}},
    "adagrad": {"adagrad": {"lr": 0.1, "eps": 1e-10}},
}


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("algorithm", sorted(GENERIC_CONFIGS))
def test_learning_rate_in_state_is_the_last_used(algorithm: str) -> None:
    cfg = config.OptimizerConfig.model_validate({**GENERIC_CONFIGS[algorithm], "learning_rate": SCHEDULE.model_dump()})
    tx = optimizers.build_optimizer(cfg)
    params = {"w": jnp.ones(3), "b": [jnp.zeros(2)]}
    state = tx.init(params)
    assert float(optimizers.learning_rate(state)) == schedules.compute_lr(SCHEDULE, 0)
    for n in range(1, 40):
        _, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
        assert float(optimizers.learning_rate(state)) == pytest.approx(
            schedules.compute_lr(SCHEDULE, n - 1), rel=1e-15, abs=0
        )


@pytest.mark.parametrize("algorithm", sorted(GENERIC_CONFIGS))
def test_null_learning_rate_is_the_algorithm_lr(algorithm: str) -> None:
    tx = optimizers.build_optimizer(config.OptimizerConfig.model_validate(GENERIC_CONFIGS[algorithm]))
    state = tx.init(jnp.zeros(2))
    for _ in range(3):
        _, state = tx.update(jnp.ones(2), state)
        assert float(optimizers.learning_rate(state)) == pytest.approx(0.1)


def multi_task_config(**rates: Any) -> config.RecapOptimizerConfig:
    return config.RecapOptimizerConfig.model_validate({"adam": {}, "multi_task_learning_rates": rates})


RAMP = {"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": 10}}
PARAMS = {
    "towers": {"task__a": {"layers": [{"w": jnp.ones(2)}]}, "b": {"w": jnp.ones(2)}},
    "backbone": {"w": jnp.ones(3)},
    "ebc": {"embedding_bags": {"t": {"weight": jnp.ones((4, 2))}}},
}
EMB = config.EmbeddingOptimizerConfig.model_validate({"learning_rate": {"constant": 0.5}})


@pytest.mark.usefixtures("x64")
def test_group_learning_rates_and_groups() -> None:
    cfg = multi_task_config(
        tower_learning_rates={"task.a": RAMP, "b": {"constant": 0.3}},
        backbone_learning_rate={"constant": 0.01},
    )
    groups, labels = optimizers.recap_labels(PARAMS, cfg, EMB)
    assert labels == {
        "backbone": {"w": "backbone"},
        "ebc": {"embedding_bags": {"t": {"weight": "dense_ebc"}}},
        "towers": {"b": {"w": "b"}, "task__a": {"layers": [{"w": "task.a"}]}},
    }
    assert [g.name for g in groups] == ["task.a", "b", "backbone", "dense_ebc"]

    tx = optimizers.build_recap_optimizer(PARAMS, cfg, EMB)
    state = tx.init(PARAMS)
    assert set(optimizers.group_learning_rates(state)) == {"task.a", "b", "backbone", "dense_ebc"}
    ramp = schedules.schedule_from_config(config.LearningRate.model_validate(RAMP))
    update = jax.jit(tx.update)
    for n in range(1, 15):
        updates, state = update(PARAMS, state, PARAMS)
        lrs = {k: float(v) for k, v in optimizers.group_learning_rates(state).items()}
        expected = {"task.a": float(ramp(n - 1)), "b": 0.3, "backbone": 0.01, "dense_ebc": 0.5}
        assert lrs == pytest.approx(expected, rel=1e-15, abs=0)
    # dense_ebc is plain SGD: update = -lr * g
    np.testing.assert_array_equal(updates["ebc"]["embedding_bags"]["t"]["weight"], -0.5 * np.ones((4, 2)))


def test_single_task_groups() -> None:
    cfg = config.RecapOptimizerConfig.model_validate({"adam": {}, "single_task_learning_rate": {"constant": 0.1}})
    tx = optimizers.build_recap_optimizer(PARAMS, cfg, EMB)
    state = tx.init(PARAMS)
    _, state = tx.update(PARAMS, state, PARAMS)
    assert {k: round(float(v), 6) for k, v in optimizers.group_learning_rates(state).items()} == {
        "single_task": 0.1,
        "dense_ebc": 0.5,
    }


def test_learning_rate_accessors_reject_the_other_kind_of_state() -> None:
    cfg = config.RecapOptimizerConfig.model_validate({"adam": {}, "single_task_learning_rate": {"constant": 0.1}})
    recap_state = optimizers.build_recap_optimizer(PARAMS, cfg, EMB).init(PARAMS)
    with pytest.raises(KeyError, match="found 2.*group_learning_rates"):
        optimizers.learning_rate(recap_state)
    generic_state = optimizers.torch_sgd(0.1).init(PARAMS)
    with pytest.raises(TypeError, match="group_learning_rates: expected the state of build_recap_optimizer"):
        optimizers.group_learning_rates(generic_state)
    with pytest.raises(KeyError, match="found 0"):
        optimizers.learning_rate(optax.sgd(0.1).init(PARAMS))


# --- build-time errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rates", "emb", "message"),
    [
        (
            {"tower_learning_rates": {"task.a": RAMP, "nowhere": RAMP}, "backbone_learning_rate": RAMP},
            EMB,
            r"Towers \['nowhere'\] match no parameter.*'\.nowhere\.'",
        ),
        (
            {"tower_learning_rates": {"task.a": RAMP, "layers": RAMP}, "backbone_learning_rate": RAMP},
            EMB,
            r"Parameter 'towers\.task__a\.layers\.0\.w' matched multiple towers: \['task\.a', 'layers'\]",
        ),
        (
            {"tower_learning_rates": {"task.a": RAMP, "b": RAMP}, "backbone_learning_rate": RAMP},
            None,
            r"no learning rate: \['dense_ebc'\].*dense_ebc needs emb_optimizer_config\.learning_rate",
        ),
        (
            {"tower_learning_rates": {"task.a": RAMP, "b": RAMP}},
            EMB,
            r"no learning rate: \['backbone'\].*backbone needs multi_task_learning_rates\.backbone_learning_rate",
        ),
    ],
)
def test_recap_errors_at_build_time(rates: dict[str, Any], emb: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        optimizers.build_recap_optimizer(PARAMS, multi_task_config(**rates), emb)


def test_backbone_rate_without_backbone_parameters_is_an_error() -> None:
    params = {"towers": {"a": {"w": jnp.ones(1)}}}
    cfg = multi_task_config(tower_learning_rates={"a": RAMP}, backbone_learning_rate=RAMP)
    with pytest.raises(ValueError, match=r"learning rates for groups with no parameters: \['backbone'\]"):
        optimizers.build_recap_optimizer(params, cfg)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: optimizers.torch_adam(0.1, b1=1.0), r"torch_adam: b1=1\.0 must be in \[0, 1\)"),
        (lambda: optimizers.torch_adam(0.1, b2=-0.1), r"torch_adam: b2=-0\.1 must be in \[0, 1\)"),
        (lambda: optimizers.torch_adam(0.1, eps=float("nan")), r"torch_adam: eps=nan must be"),
        (lambda: optimizers.torch_adam(-0.1), r"torch_adam: learning_rate: .*value=-0\.1 must be >= 0"),
        (lambda: optimizers.torch_sgd(0.1, momentum=-0.5), r"torch_sgd: momentum=-0\.5 must be"),
        (lambda: optimizers.torch_adagrad(0.1, lr_decay=-1.0), r"torch_adagrad: lr_decay=-1\.0 must be"),
        (
            lambda: optimizers.torch_adagrad(0.1, initial_accumulator_value=float("inf")),
            r"torch_adagrad: initial_accumulator_value=inf must be",
        ),
    ],
)
def test_hyper_parameter_errors(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_build_optimizer_rejects_other_configs() -> None:
    with pytest.raises(TypeError, match="build_optimizer: expected an OptimizerConfig, got dict"):
        optimizers.build_optimizer({"sgd": {"lr": 0.1}})  # type: ignore[arg-type]
