"""Runs the demo model in torch and in JAX from the same weights and batches, and compares them.

torch: ``zero_grad -> forward -> backward -> optimizer.step -> scheduler.step``,
recording every param group's ``"lr"`` just before ``optimizer.step()``.
JAX: one ``jax.lax.scan`` over the stacked batches, recording the learning
rates the optimizer state holds after each update (the rate that update used).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from functional_opt import config as config_lib
from functional_opt import demo_model, optimizers, schedules
from torch_bridge import demo_model as torch_demo

SPEC = demo_model.ModelSpec()
STEPS = 200
BATCH_SIZE = 32
SEED = 0

FLOAT64_BAR = 1e-12
FLOAT32_RELATIVE_BAR = 1e-5
LR_FLOAT64_BAR = 1e-12

RECAP = config_lib.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        "multi_task_learning_rates": {
            "tower_learning_rates": {
                "recap.is_clicked": {
                    "linear_ramp_to_cosine": {
                        "learning_rate": 0.01,
                        "final_learning_rate": 0.001,
                        "num_ramp_steps": 20,
                        "final_num_steps": 150,
                    }
                },
                "recap.is_replied": {"linear_ramp_to_constant": {"learning_rate": 0.005, "num_ramp_steps": 30}},
            },
            "backbone_learning_rate": {
                "linear_ramp_to_cosine": {
                    "learning_rate": 0.003,
                    "final_learning_rate": 0.0003,
                    "num_ramp_steps": 10,
                    "final_num_steps": 180,
                }
            },
        },
    }
)
EMB = config_lib.EmbeddingOptimizerConfig.model_validate(
    {"learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.5, "num_ramp_steps": 25}}}
)
DENSE_GROUPS = ["recap.is_clicked", "recap.is_replied", "backbone"]


def group_configs() -> dict[str, config_lib.LearningRate]:
    rates = RECAP.multi_task_learning_rates
    assert rates is not None and rates.backbone_learning_rate is not None and EMB.learning_rate is not None
    return {**rates.tower_learning_rates, "backbone": rates.backbone_learning_rate, "dense_ebc": EMB.learning_rate}


@functools.lru_cache(maxsize=1)
def batches() -> tuple[demo_model.Batch, ...]:
    return tuple(demo_model.make_batches(SPEC, STEPS, BATCH_SIZE, seed=SEED))


@dataclasses.dataclass
class Trajectory:
    """Final parameters by name and, per step, the learning rate of each group."""

    params: dict[str, np.ndarray]
    lrs: dict[str, np.ndarray]


def torch_dtype(dtype: str) -> torch.dtype:
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def make_torch_model(dtype: str) -> torch_demo.DemoRankingModel:
    return torch_demo.DemoRankingModel(SPEC, seed=SEED, dtype=torch_dtype(dtype))


def group_label(index: int, group: Mapping[str, Any]) -> str:
    name = group.get("name")
    return name if isinstance(name, str) else f"group{index}"


def run_torch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    dtype: str,
    steps: int = STEPS,
) -> Trajectory:
    """Trains ``model`` for ``steps`` steps; ``lrs[label][k]`` is the group's LR at step k."""
    lrs: dict[str, list[float]] = {}
    for k in range(steps):
        dense, features, labels = torch_demo.to_torch(batches()[k], SPEC, torch_dtype(dtype))
        optimizer.zero_grad()
        loss = torch_demo.loss_fn(model(dense, features), labels)
        loss.backward()
        for i, group in enumerate(optimizer.param_groups):
            lrs.setdefault(group_label(i, group), []).append(float(group["lr"]))
        optimizer.step()
        scheduler.step()
    return Trajectory(torch_demo.named_arrays(model), {k: np.asarray(v) for k, v in lrs.items()})


def run_jax(
    initial: Mapping[str, np.ndarray],
    make_tx: Callable[[Any], optax.GradientTransformation],
    dtype: str,
    steps: int = STEPS,
) -> Trajectory:
    """Trains the JAX model from ``initial`` weights; ``make_tx(params)`` builds the optimizer.

    ``lrs`` maps each group to the rate the state holds after each update
    (``"all"`` for a single-group optimizer).
    """
    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        params = demo_model.params_from_arrays(initial, jdtype)
        tx = make_tx(params)
        state = tx.init(params)
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches()[:steps])
        final_params, lrs = _train(tx, params, state, demo_model.to_jax(stacked, jdtype))
        return Trajectory(demo_model.named_arrays(final_params), {k: np.asarray(v) for k, v in lrs.items()})


def _state_lrs(state: Any) -> dict[str, jax.Array]:
    if hasattr(state, "recap_layout") or hasattr(state, "inner_states"):  # the recap state, a partition
        return optimizers.group_learning_rates(state)
    return {"all": optimizers.learning_rate(state)}


@functools.partial(jax.jit, static_argnums=0)
def _train(tx: optax.GradientTransformation, params: Any, state: Any, stacked: demo_model.Batch) -> Any:
    def step(carry: Any, batch: demo_model.Batch) -> Any:
        params, state = carry
        grads = jax.grad(demo_model.loss)(params, batch, SPEC)
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), _state_lrs(state)

    (params, _), lrs = jax.lax.scan(step, (params, state), stacked)
    return params, lrs


def max_abs_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, float]:
    assert set(a) == set(b), (sorted(set(a) ^ set(b)),)
    return {name: float(np.max(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64)))) for name in a}


def check_params(torch_run: Trajectory, jax_run: Trajectory, dtype: str, initial: Mapping[str, np.ndarray]) -> float:
    """Asserts the parity bar on every parameter; returns the largest absolute difference."""
    diffs = max_abs_diff(torch_run.params, jax_run.params)
    moved = max_abs_diff(torch_run.params, initial)
    for name, diff in diffs.items():
        # Every parameter must have been trained, or the comparison proves nothing.
        assert moved[name] > 100 * max(diff, FLOAT64_BAR), (name, moved[name], diff)
        if dtype == "float64":
            assert diff <= FLOAT64_BAR, (name, diff)
        else:
            scale = float(np.max(np.abs(torch_run.params[name])))
            assert diff <= FLOAT32_RELATIVE_BAR * scale, (name, diff, scale)
    return max(diffs.values())


def check_lrs(lrs: np.ndarray, lr_config: config_lib.LearningRate, *, float64: bool, what: str) -> float:
    """``lrs[k] == compute_lr(lr_config, k)``, to 1e-12 relative in float64 and 1e-6 in float32.

    Returns the largest relative gap.
    """
    expected = np.asarray([schedules.compute_lr(lr_config, k) for k in range(len(lrs))])
    tolerance = LR_FLOAT64_BAR if float64 else 1e-6
    gap = np.abs(lrs - expected) / np.maximum(np.abs(expected), 1e-30)
    gap[(lrs == 0) & (expected == 0)] = 0.0
    assert float(gap.max()) <= tolerance, (what, float(gap.max()), int(gap.argmax()))
    return float(gap.max())
