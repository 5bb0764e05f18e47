"""Learning-rate schedules as pure JAX functions (``optax.Schedule``).

Each factory validates its arguments, then returns ``schedule(count)``, a
function of the step built only from ``jnp`` operations (no Python branch on
the step), so it works under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` and can
be handed to any optax optimizer as its ``learning_rate``.

Step ``count`` is the number of updates already applied: optax calls the
schedule with 0 for the first update, and the torch bridge uses ``schedule(k)``
for the k-th ``optimizer.step()`` (k = 0, 1, ...).

Precision: a schedule computes in JAX's default float type at the time it is
called (float32, or float64 under ``jax.enable_x64``), whatever the integer
type of ``count``. Step counts of the configuration are held as Python floats,
so configs whose step counts exceed ``2**31 - 1`` work in float32 mode. An
integer step (Python or numpy) too large for JAX's default integer type is
taken as a float, never wrapped around; a piecewise schedule compares integer
steps exactly and float steps against boundaries rounded up, so a boundary a
float type cannot represent is not moved below its value. A concrete integer
step (a Python int or a numpy integer array) is compared with the boundaries
exactly on the host, at any int64 step and in float32 mode too.

Steps are numbers: a boolean step (``True``, a bool array) raises
``TypeError``. Negative steps: a schedule evaluates its formula there as
written, so ``constant`` gives its value, ``piecewise_constant`` its first
value, and both ramps ``learning_rate * step / num_ramp_steps``, a negative
number; :func:`compute_lr` (and the torch schedulers) refuse negative steps.

Example:
    >>> import jax.numpy as jnp
    >>> from functional_opt import schedules
    >>> sched = schedules.linear_ramp_to_cosine(0.1, 0.01, num_ramp_steps=10, final_num_steps=110)
    >>> [round(float(sched(s)), 6) for s in (0, 5, 10, 60, 110, 1000)]
    [0.0, 0.05, 0.1, 0.055, 0.01, 0.01]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedule_kinds as kinds

__all__ = [
    "Schedule",
    "compute_lr",
    "constant",
    "linear_ramp_to_constant",
    "linear_ramp_to_cosine",
    "piecewise_constant",
    "schedule_from_config",
]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]
"""A function of the step count returning the learning rate (``optax.Schedule``)."""


def _float_dtype() -> Any:
    """JAX's default float type now: float32, or float64 when x64 is enabled."""
    return jnp.result_type(float)


def _as_array(count: jax.typing.ArrayLike) -> jax.Array:
    """The step as an array, never silently wrapped around.

    Integer steps (Python ints, numpy scalars and arrays) that do not fit JAX's
    default integer type (int32, or int64 under x64) are taken as floats
    instead of being truncated. Steps that are already JAX arrays or tracers
    are returned as they are.
    """
    if isinstance(count, (bool, np.bool_)) or getattr(count, "dtype", None) == np.bool_:
        raise TypeError(f"schedule: the step must be a number, got the boolean {_shown(count)}")
    if isinstance(count, jax.Array):
        if not jnp.issubdtype(count.dtype, jnp.number):
            raise TypeError(f"schedule: the step must be a number, got an array of {count.dtype}")
        return count
    if isinstance(count, int):
        info = np.iinfo(jax.dtypes.canonicalize_dtype(np.int64))
        return jnp.asarray(count if info.min <= count <= info.max else float(count))
    array = np.asarray(count)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"schedule: the step must be a number, got {_shown(count)}")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(jax.dtypes.canonicalize_dtype(array.dtype))
        if array.size and (array.min() < info.min or array.max() > info.max):
            array = array.astype(np.float64)
    return jnp.asarray(array)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _host_integer_step(count: Any) -> int | np.ndarray | None:
    """``count`` when it is a concrete integer step (a Python int, a numpy integer scalar or array), else None."""
    if isinstance(count, (bool, np.bool_, jax.Array)) or isinstance(count, jax.core.Tracer):
        return None
    if isinstance(count, int):
        return count
    if isinstance(count, (np.integer, np.ndarray)) and np.issubdtype(np.asarray(count).dtype, np.integer):
        return np.asarray(count)
    return None


def _as_float(count: jax.typing.ArrayLike) -> jax.Array:
    """The step in JAX's default float type."""
    return _as_array(count).astype(_float_dtype())


def _check_lr(name: str, field: str, value: float) -> float:
    try:
        return config_lib._check_learning_rate(float(value), field)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _check_steps(name: str, field: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: {field}={value!r} must be a positive integer")
    return int(value)


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
    value = _check_lr("constant", "value", value)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return kinds.constant_formula(jnp, _as_float(count), value)

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
        host = _host_integer_step(count)
        if host is not None:
            # Exact on the host: neither a float conversion nor JAX's int32 (float32 mode) can move a boundary.
            if isinstance(host, int) and host > kinds.INT64_MAX:
                return jnp.asarray(values[-1], dtype=_float_dtype())  # past every (int64) boundary
            value = kinds.piecewise_constant_formula(np, np.asarray(host, dtype=np.int64), host_edges, table)
            return jnp.asarray(value, dtype=_float_dtype())
        count = _as_array(count)
        if jnp.issubdtype(count.dtype, jnp.integer):
            # Exact integer comparison; boundaries beyond the step type's range are never reached.
            top = int(jnp.iinfo(count.dtype).max)
            kept = [b for b in boundaries if b <= top]
            edges = jnp.asarray(kept, dtype=count.dtype)
            rates = jnp.asarray(values[: len(kept) + 1], dtype=_float_dtype())
        else:
            edges = jnp.asarray(kinds.float_edges(boundaries, count.dtype))
            rates = jnp.asarray(values, dtype=_float_dtype())
        return kinds.piecewise_constant_formula(jnp, count, edges, rates).astype(_float_dtype())

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
    learning_rate = _check_lr(name, "learning_rate", learning_rate)
    num_ramp_steps = _check_steps(name, "num_ramp_steps", num_ramp_steps)
    ramp = float(num_ramp_steps)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return kinds.linear_ramp_to_constant_formula(jnp, _as_float(count), learning_rate, ramp)

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
    learning_rate = _check_lr(name, "learning_rate", learning_rate)
    final_learning_rate = _check_lr(name, "final_learning_rate", final_learning_rate)
    num_ramp_steps = _check_steps(name, "num_ramp_steps", num_ramp_steps)
    final_num_steps = _check_steps(name, "final_num_steps", final_num_steps)
    if final_num_steps <= num_ramp_steps:
        raise ValueError(f"{name}: final_num_steps={final_num_steps} must be > num_ramp_steps={num_ramp_steps}")
    ramp = float(num_ramp_steps)
    final = float(final_num_steps)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return kinds.linear_ramp_to_cosine_formula(
            jnp, _as_float(count), learning_rate, final_learning_rate, ramp, final
        )

    return schedule


def schedule_from_config(lr_config: config_lib.LearningRate | Mapping[str, Any]) -> Schedule:
    """The schedule a :class:`~functional_opt.config.LearningRate` describes.

    Args:
        lr_config: a ``LearningRate`` (or a mapping that validates as one).

    Returns:
        An ``optax.Schedule``.

    Raises:
        pydantic.ValidationError: a mapping that is not a valid ``LearningRate``.
        TypeError: ``lr_config`` is neither.

    Example:
        >>> from functional_opt import config
        >>> sched = schedule_from_config(config.LearningRate(constant=0.25))
        >>> float(sched(7))
        0.25
    """
    if isinstance(lr_config, Mapping):
        lr_config = config_lib.LearningRate.model_validate(dict(lr_config))
    if not isinstance(lr_config, config_lib.LearningRate):
        raise TypeError(f"schedule_from_config: expected a LearningRate config, got {type(lr_config).__name__}")
    if lr_config.constant is not None:
        return constant(lr_config.constant)
    if lr_config.piecewise_constant is not None:
        cfg = lr_config.piecewise_constant
        return piecewise_constant(cfg.learning_rate_boundaries or [], cfg.learning_rate_values or [])
    if lr_config.linear_ramp_to_constant is not None:
        cfg = lr_config.linear_ramp_to_constant
        return linear_ramp_to_constant(cfg.learning_rate, cfg.num_ramp_steps)
    cfg = lr_config.linear_ramp_to_cosine
    if cfg is None:  # unreachable for a validated LearningRate
        raise ValueError(f"schedule_from_config: no schedule set in {lr_config!r}")
    return linear_ramp_to_cosine(cfg.learning_rate, cfg.final_learning_rate, cfg.num_ramp_steps, cfg.final_num_steps)


def compute_lr(lr_config: config_lib.LearningRate, step: int) -> float:
    """TML's ``compute_lr``: the learning rate at ``step`` as a Python float, computed in float64.

    Evaluates the schedule's formula (:mod:`functional_opt.schedule_kinds`, the
    one the JAX schedules of this module use) in numpy float64: nothing is
    compiled, whatever the number of distinct configs, and the value is the one
    the torch schedulers' tables hold, bit for bit (the JAX schedules agree with
    it to about 1e-16 relative).

    Integer steps are exact: a piecewise boundary is compared with the integer
    step itself, never with a float that rounds it (steps beyond ``2**53``).

    Args:
        lr_config: the schedule.
        step: the step (0 for the first update), an integer >= 0.

    Returns:
        The learning rate.

    Raises:
        TypeError: ``step`` is a boolean, not a number, or not finite.
        ValueError: ``step`` is negative.

    Example:
        >>> from functional_opt import config
        >>> cfg = config.LearningRate(linear_ramp_to_constant=dict(learning_rate=0.5, num_ramp_steps=10))
        >>> compute_lr(cfg, 0), compute_lr(cfg, 5), compute_lr(cfg, 10**12)
        (0.0, 0.25, 0.5)
    """
    if not isinstance(lr_config, config_lib.LearningRate):
        raise TypeError(f"compute_lr: expected a LearningRate config, got {type(lr_config).__name__}")
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer, float, np.floating)):
        raise TypeError(f"compute_lr: step must be an integer, got {_shown(step)}")
    if not math.isfinite(step):
        raise TypeError(f"compute_lr: step must be an integer, got {step!r}")
    if step < 0:
        raise ValueError(f"compute_lr: step={_shown(step)} must be >= 0 (step 0 is the first update)")
    if isinstance(step, (int, np.integer)) and step <= np.iinfo(np.int64).max:
        # An integer step stays an integer: piecewise boundaries are compared exactly at any int64 step.
        steps = np.asarray([step], dtype=np.int64)
    else:
        # Beyond int64 every boundary is passed; a float step meets boundaries rounded up.
        steps = np.asarray([float(step)], dtype=np.float64)
    return float(kinds.evaluate([lr_config], steps)[0, 0])
