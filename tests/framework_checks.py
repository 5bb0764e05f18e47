"""What the comparisons with torch, torchrec and optax share: the bar, config builders, the error report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from functional_opt import config

RTOL = 1e-12
MIN_STEPS = 10_000


def lr(**kwargs: Any) -> config.LearningRate:
    return config.LearningRate.model_validate(kwargs)


def segment(learning_rate: config.LearningRate, num_steps: int | None = None, from_step: int = 0) -> dict[str, Any]:
    """One segment of a ``sequence`` (as data: ``LearningRate`` validates it)."""
    out: dict[str, Any] = {"learning_rate": learning_rate.model_dump(exclude_none=True)}
    if num_steps is not None:
        out["num_steps"] = num_steps
    if from_step:
        out["from_step"] = from_step
    return out


def sequence(*segments: dict[str, Any]) -> config.LearningRate:
    return lr(sequence=list(segments))


def const(value: float) -> config.LearningRate:
    return lr(constant=value)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """``|ours - theirs| / |theirs|`` per step: 0 where both are 0, inf where only theirs is 0."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    diff = np.abs(ours - theirs)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = diff / np.abs(theirs)
    return np.where(theirs == 0, np.where(diff == 0, 0.0, np.inf), err)


def assert_sides_match(
    cfg: config.LearningRate,
    ours: Mapping[str, np.ndarray],
    theirs: np.ndarray,
    steps: np.ndarray,
    framework: str,
) -> float:
    """Every side of ours equals ``theirs`` at ``steps`` to :data:`RTOL`; returns the worst relative error."""
    worst = 0.0
    failures = []
    for side, values in ours.items():
        err = relative_error(values, theirs)
        k = int(np.argmax(err))
        worst = max(worst, float(err[k]))
        if err[k] > RTOL:
            bad = steps[err > RTOL]
            failures.append(
                f"{side}: {bad.size} steps beyond {RTOL} (first {bad[:8].tolist()}), worst at step {steps[k]}: "
                f"{framework} gives {theirs[k]!r}, ours {values[k]!r} (relative error {err[k]:.3g})"
            )
    assert not failures, f"{cfg.model_dump(exclude_none=True)}:\n" + "\n".join(failures)
    return worst


def polynomial(
    learning_rate: float, final: float, num_decay_steps: int, power: float, **kw: int
) -> config.LearningRate:
    """A ``warmup_stable_decay`` polynomial decay from ``learning_rate`` to ``final`` (torch PolynomialLR, optax)."""
    return lr(
        warmup_stable_decay={
            "learning_rate": learning_rate,
            "final_learning_rate": final,
            "num_decay_steps": num_decay_steps,
            "decay_shape": "polynomial",
            "power": power,
            **kw,
        }
    )
