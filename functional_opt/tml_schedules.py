"""TML's four schedules as pure JAX functions (``optax.Schedule``): constant, piecewise, and the two ramps.

Each factory validates its arguments, then returns ``schedule(count)``, built
only from ``jnp`` operations on the formula of its kind
(:mod:`functional_opt.schedule_formulas`). :mod:`functional_opt.schedules` is
where users import them from.

Example:
    >>> sched = linear_ramp_to_cosine(0.1, 0.01, num_ramp_steps=10, final_num_steps=110)
    >>> [round(float(sched(s)), 6) for s in (0, 5, 10, 60, 110, 1000)]
    [0.0, 0.05, 0.1, 0.055, 0.01, 0.01]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedule_kinds as kinds
from functional_opt.schedule_steps import (
    EXACT_JNP,
    Schedule,
    as_array,
    as_float,
    check_lr,
    check_steps,
    float_dtype,
    host_integer_step,
)

__all__ = ["constant", "linear_ramp_to_constant", "linear_ramp_to_cosine", "piecewise_constant"]


def constant(value: float) -> Schedule:
    """``lr(step) = value``.

    Args:
        value: the learning rate (finite, >= 0, representable in float32).

    Returns:
        An ``optax.Schedule``.

    Raises:
        ValueError: ``value`` is negative, not finite or beyond float32.

    Example:
        >>> float(constant(0.5)(123))
        0.5
    """
    value = check_lr("constant", "value", value)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return kinds.constant_formula(EXACT_JNP, as_float(count), value)

    return schedule


def piecewise_constant(learning_rate_boundaries: Sequence[int], learning_rate_values: Sequence[float]) -> Schedule:
    """``lr(step) = values[bisect_right(boundaries, step)]``.

    The value changes *at* each boundary: ``step == boundaries[i]`` already
    gets ``values[i + 1]``.

    Args:
        learning_rate_boundaries: strictly increasing non-negative steps.
        learning_rate_values: ``len(boundaries) + 1`` learning rates.

    Returns:
        An ``optax.Schedule``.

    Raises:
        ValueError: lengths disagree, boundaries do not increase, or a value is invalid.

    Example:
        >>> sched = piecewise_constant([10, 20], [1.0, 0.5, 0.25])
        >>> [float(sched(s)) for s in (0, 9, 10, 19, 20, 10**9)]
        [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    """
    try:
        cfg = config_lib.PiecewiseConstant(
            learning_rate_boundaries=list(learning_rate_boundaries),
            learning_rate_values=list(learning_rate_values),
        )
    except Exception as exc:  # pydantic.ValidationError: re-raise with the function's name
        raise ValueError(f"piecewise_constant: {exc}") from None
    boundaries = [int(b) for b in cfg.learning_rate_boundaries or []]
    values = [float(v) for v in cfg.learning_rate_values or []]

    table = np.asarray(values, dtype=np.float64)
    host_edges = np.asarray(boundaries, dtype=np.int64)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        host = host_integer_step(count)
        if host is not None:
            # Exact on the host: neither a float conversion nor JAX's int32 (float32 mode) can move a boundary.
            if isinstance(host, int) and host > kinds.INT64_MAX:
                return jnp.asarray(values[-1], dtype=float_dtype())  # past every (int64) boundary
            value = kinds.piecewise_constant_formula(np, np.asarray(host, dtype=np.int64), host_edges, table)
            return jnp.asarray(value, dtype=float_dtype())
        count = as_array(count)
        if jnp.issubdtype(count.dtype, jnp.integer):
            # Exact integer comparison; boundaries beyond the step type's range are never reached.
            top = int(jnp.iinfo(count.dtype).max)
            kept = [b for b in boundaries if b <= top]
            edges = jnp.asarray(kept, dtype=count.dtype)
            rates = jnp.asarray(values[: len(kept) + 1], dtype=float_dtype())
        else:
            edges = jnp.asarray(kinds.float_edges(boundaries, count.dtype))
            rates = jnp.asarray(values, dtype=float_dtype())
        return kinds.piecewise_constant_formula(jnp, count, edges, rates).astype(float_dtype())

    return schedule


def linear_ramp_to_constant(learning_rate: float, num_ramp_steps: int) -> Schedule:
    """``lr(step) = min(learning_rate, learning_rate / num_ramp_steps * step)``.

    Step 0 gives 0; ``num_ramp_steps`` and later give ``learning_rate``. It is
    computed as ``learning_rate * min(1, step / num_ramp_steps)``: the same value
    up to one rounding, with a peak of exactly ``learning_rate`` and no underflow
    of ``learning_rate / num_ramp_steps`` for tiny rates in float32.

    Args:
        learning_rate: the constant reached at the end of the ramp.
        num_ramp_steps: length of the ramp (> 0).

    Returns:
        An ``optax.Schedule``.

    Raises:
        ValueError: an argument is out of range.

    Example:
        >>> sched = linear_ramp_to_constant(1.0, num_ramp_steps=4)
        >>> [float(sched(s)) for s in (0, 1, 2, 4, 100)]
        [0.0, 0.25, 0.5, 1.0, 1.0]
    """
    name = "linear_ramp_to_constant"
    learning_rate = check_lr(name, "learning_rate", learning_rate)
    num_ramp_steps = check_steps(name, "num_ramp_steps", num_ramp_steps)
    ramp = float(num_ramp_steps)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return kinds.linear_ramp_to_constant_formula(EXACT_JNP, as_float(count), learning_rate, ramp)

    return schedule


def linear_ramp_to_cosine(
    learning_rate: float, final_learning_rate: float, num_ramp_steps: int, final_num_steps: int
) -> Schedule:
    """Linear ramp from 0 to ``learning_rate``, then a half cosine to ``final_learning_rate``.

    With ``lr = learning_rate``, ``f = final_learning_rate``, ``r = num_ramp_steps``,
    ``T = final_num_steps``::

        lr(s) = lr / r * s                                              s < r
        lr(s) = f + (lr - f) * 0.5 * (1 + cos(pi * (s - r) / (T - r)))  r <= s <= T
        lr(s) = f                                                       s > T

    Args:
        learning_rate: peak learning rate, reached at step ``num_ramp_steps``.
        final_learning_rate: learning rate from step ``final_num_steps`` on.
        num_ramp_steps: ramp length (> 0).
        final_num_steps: end of the decay (> ``num_ramp_steps``).

    Returns:
        An ``optax.Schedule``.

    Raises:
        ValueError: an argument is out of range or ``final_num_steps <= num_ramp_steps``.

    Example:
        >>> sched = linear_ramp_to_cosine(1.0, 0.0, num_ramp_steps=2, final_num_steps=4)
        >>> [round(float(sched(s)), 6) for s in (0, 1, 2, 3, 4, 5)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    name = "linear_ramp_to_cosine"
    learning_rate = check_lr(name, "learning_rate", learning_rate)
    final_learning_rate = check_lr(name, "final_learning_rate", final_learning_rate)
    num_ramp_steps = check_steps(name, "num_ramp_steps", num_ramp_steps)
    final_num_steps = check_steps(name, "final_num_steps", final_num_steps)
    if final_num_steps <= num_ramp_steps:
        raise ValueError(f"{name}: final_num_steps={final_num_steps} must be > num_ramp_steps={num_ramp_steps}")
    ramp = float(num_ramp_steps)
    final = float(final_num_steps)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return kinds.linear_ramp_to_cosine_formula(
            EXACT_JNP, as_float(count), learning_rate, final_learning_rate, ramp, final
        )

    return schedule
