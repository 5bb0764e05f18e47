"""The pieces torch's update rules are built from, shared by every optimizer of this package.

Hyper-parameters that may be numbers or (traced) arrays, the records a state
keeps of them, and the per-leaf steps of torch's Adam and SGD, each written
once: :mod:`functional_opt.torch_rules` (one rule per transformation) and
:mod:`functional_opt.recap_rules` (every group in one transformation) both
call them.

Example:
    >>> import jax.numpy as jnp
    >>> float(sgd_step(jnp.asarray(2.0), jnp.asarray(0.5)))
    -1.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedules

__all__ = [
    "PROBE_STEPS",
    "HyperParameter",
    "LearningRateLike",
    "adam_corrections",
    "adam_first_moment",
    "adam_second_moment",
    "adam_step",
    "as_schedule",
    "bias_correction",
    "hyper_parameter",
    "is_array",
    "lerp",
    "like",
    "lr_at",
    "recorded",
    "recorded_schedule",
    "sgd_step",
    "zero_count",
]

HyperParameter = float | jax.Array
LearningRateLike = float | jax.Array | schedules.Schedule

PROBE_STEPS: tuple[int, ...] = (
    0,
    1,
    2,
    3,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    10_000_000,
    100_000_000,
)
"""The steps at which a state records its learning rate (``built_from["learning_rate"]``)."""


def is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray | jax.core.Tracer)


def hyper_parameter(name: str, checker: Callable[[float, str], float], value: Any, field: str) -> HyperParameter:
    """A number validated to a Python float; a scalar array validated when concrete and kept as an array."""
    if is_array(value):
        if np.ndim(value) != 0:
            raise ValueError(f"{name}: {field} must be a scalar, got an array of shape {np.shape(value)}")
        if not jnp.issubdtype(value.dtype, jnp.number) or jnp.issubdtype(value.dtype, jnp.complexfloating):
            raise ValueError(f"{name}: {field} must be a real number, got an array of dtype {value.dtype}")
        if not isinstance(value, jax.core.Tracer):
            try:
                checker(float(value), field)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        return jnp.asarray(value)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: {field}={value!r} must be a number, got {type(value).__name__}")
    try:
        return checker(float(value), field)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def as_schedule(name: str, learning_rate: LearningRateLike) -> schedules.Schedule:
    """A schedule as it is, an array as a constant of it, a number as :func:`schedules.constant`."""
    if callable(learning_rate):
        return learning_rate
    if is_array(learning_rate):
        value = hyper_parameter(name, config_lib._check_learning_rate, learning_rate, "learning_rate")
        return lambda count: value
    try:
        return schedules.constant(learning_rate)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: learning_rate: {exc}") from None


def recorded(value: HyperParameter) -> jax.Array:
    """A build-time number as an array of the default float type; ``nan`` for an array (held by its injector)."""
    return jnp.asarray(math.nan if is_array(value) else value, dtype=jnp.result_type(float))


def recorded_schedule(learning_rate: LearningRateLike, schedule: schedules.Schedule) -> jax.Array:
    """The schedule at :data:`PROBE_STEPS`, or ``nan`` there for a learning rate given as an array."""
    steps = jnp.asarray(PROBE_STEPS, dtype=jnp.int32)
    if is_array(learning_rate):
        return jnp.full(steps.shape, math.nan, dtype=jnp.result_type(float))
    return jax.vmap(lambda step: lr_at(schedule, step))(steps)


def lr_at(schedule: schedules.Schedule, count: jax.Array) -> jax.Array:
    """``schedule(count)`` as a scalar in JAX's default float type."""
    return jnp.asarray(schedule(count), dtype=jnp.result_type(float))


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def like(value: HyperParameter, x: jax.Array) -> HyperParameter:
    """An array hyper-parameter in ``x``'s dtype (a Python float is weakly typed already)."""
    return value.astype(x.dtype) if is_array(value) else value


def lerp(start: jax.Array, end: jax.Array, weight: HyperParameter) -> jax.Array:
    """torch's ``start.lerp(end, weight)`` for a scalar weight, same branch, same order."""
    if not is_array(weight):
        if abs(weight) < 0.5:
            return start + weight * (end - start)
        return end - (end - start) * (1.0 - weight)
    weight = like(weight, start)
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * (end - start), end - (end - start) * (1.0 - weight))


def bias_correction(beta: HyperParameter, step: jax.Array) -> jax.Array:
    """``1 - beta**step``, torch's bias correction, accurate in float32 too.

    In float64 this is torch's own expression. torch evaluates it in float64
    even for float32 parameters; in float32, ``1 - beta**step`` cancels
    (for ``beta = 0.999`` and ``step = 1`` it is off by 1.3e-5 relative), so
    it is computed as ``-expm1(step * log(beta))`` with ``log(beta)`` taken in
    float64 for a number (within a few float32 ulps of torch's value), in
    float32 for an array.
    """
    if step.dtype == jnp.float64:
        return 1 - like(beta, step) ** step
    if is_array(beta):
        return -jnp.expm1(step * jnp.log(like(beta, step)))  # beta = 0: log gives -inf, the result 1
    if beta == 0.0:
        return jnp.ones_like(step)
    return -jnp.expm1(step * math.log(beta))


def adam_corrections(b1: HyperParameter, b2: HyperParameter, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch Adam's ``1 - b1**t`` and ``sqrt(1 - b2**t)`` at the float step ``t`` (the count after the update)."""
    return bias_correction(b1, step), bias_correction(b2, step) ** 0.5


def adam_first_moment(g: jax.Array, m: jax.Array, b1: HyperParameter) -> jax.Array:
    """torch Adam's ``m.lerp_(g, 1 - b1)`` for one leaf."""
    return lerp(m, g, 1 - b1)


def adam_second_moment(g: jax.Array, v: jax.Array, b2: HyperParameter) -> jax.Array:
    """torch Adam's ``v.mul_(b2).addcmul_(g, g, value=1 - b2)`` for one leaf."""
    return v * like(b2, v) + (1 - like(b2, v)) * g * g


def adam_step(
    m: jax.Array, v: jax.Array, step_size: jax.Array, bias_correction2_sqrt: jax.Array, eps: HyperParameter
) -> jax.Array:
    """torch Adam's step for one leaf: ``(-step_size * m) / (sqrt(v) / sqrt(1 - b2**t) + eps)``."""
    denom = jnp.sqrt(v) / bias_correction2_sqrt.astype(v.dtype) + like(eps, v)
    return (-step_size.astype(m.dtype) * m) / denom


def sgd_step(g: jax.Array, lr: jax.Array) -> jax.Array:
    """The scaled SGD step for one leaf: ``-lr * g``."""
    return -lr.astype(g.dtype) * g
