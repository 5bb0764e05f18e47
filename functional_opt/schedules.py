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

import bisect
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib

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
        count = _as_array(count)
        # `count * 0` keeps the step in the graph, so grad/vmap see a function of it.
        return jnp.full(count.shape, value, _float_dtype()) + 0 * count.astype(_float_dtype())

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

    int64_max = int(np.iinfo(np.int64).max)
    host_edges = np.asarray([b for b in boundaries if b <= int64_max], dtype=np.int64)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        host = _host_integer_step(count)
        if host is not None:
            # Exact on the host: neither a float conversion nor JAX's int32 (float32 mode) can move a boundary.
            if isinstance(host, int):
                index: Any = bisect.bisect_right(boundaries, host)
            else:
                index = np.searchsorted(host_edges, host.astype(np.int64), side="right")
            return jnp.asarray(values, dtype=_float_dtype())[index]
        count = _as_array(count)
        if jnp.issubdtype(count.dtype, jnp.integer):
            # Exact integer comparison; boundaries beyond the step type's range are never reached.
            top = int(jnp.iinfo(count.dtype).max)
            edges = jnp.asarray([b for b in boundaries if b <= top], dtype=count.dtype)
        else:
            edges = jnp.asarray(_float_edges(boundaries, count.dtype))
        index = jnp.searchsorted(edges, count, side="right")
        table = jnp.asarray(values, dtype=_float_dtype())
        return table[index] + 0 * count.astype(_float_dtype())

    return schedule


def _float_edges(boundaries: Sequence[int], dtype: Any) -> np.ndarray:
    """Each boundary rounded *up* to ``dtype``: for a float step ``x``, ``x >= edge`` iff ``x >= boundary``.

    Rounding to nearest instead would move a boundary that ``dtype`` cannot
    represent (e.g. ``2**24 + 1`` in float32) below its true value.
    """
    dtype = np.dtype(dtype)
    up = np.asarray(np.inf, dtype)
    down = np.asarray(-np.inf, dtype)
    edges = []
    with np.errstate(over="ignore"):  # a boundary beyond dtype's range becomes inf: never reached
        for boundary in boundaries:
            edge = np.asarray(float(boundary)).astype(dtype)
            while float(edge) < boundary:
                edge = np.nextafter(edge, up)
            while float(np.nextafter(edge, down)) >= boundary:
                edge = np.nextafter(edge, down)
            edges.append(edge)
    return np.asarray(edges, dtype=dtype)


def _ramp_fraction(step: jax.Array, ramp: float) -> jax.Array:
    """``min(1, step / ramp)``, exactly 1 from ``step == ramp`` on.

    The learning rate is then ``learning_rate * fraction``: its peak is exactly
    ``learning_rate`` (XLA may divide by a constant as a multiplication by its
    rounded reciprocal, so ``ramp / ramp`` need not give 1), and a tiny
    ``learning_rate / ramp`` (flushed to zero in float32) cannot stall the ramp at 0.
    """
    return jnp.where(step < ramp, jnp.minimum(step / ramp, 1.0), 1.0)


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
        step = _as_float(count)
        return learning_rate * _ramp_fraction(step, ramp)

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
    span = final - ramp
    half_delta = (learning_rate - final_learning_rate) * 0.5
    low, high = min(learning_rate, final_learning_rate), max(learning_rate, final_learning_rate)

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        step = _as_float(count)
        # The ramp covers step == ramp too, so the peak is exactly learning_rate.
        ramp_value = learning_rate * _ramp_fraction(step, ramp)
        # Clipping keeps the unused branch finite, so gradients through jnp.where stay finite.
        decay_step = jnp.clip(step, ramp, final)
        cosine_value = final_learning_rate + half_delta * (1.0 + jnp.cos(jnp.pi * (decay_step - ramp) / span))
        # Rounding must not take the decay outside [final_learning_rate, learning_rate].
        cosine_value = jnp.clip(cosine_value, low, high)
        return jnp.where(
            step <= ramp,
            ramp_value,
            jnp.where(step < final, cosine_value, jnp.asarray(final_learning_rate, step.dtype)),
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


@functools.lru_cache(maxsize=256)
def _jitted_float64(config_json: str) -> Callable[[jax.Array], jax.Array]:
    return jax.jit(schedule_from_config(config_lib.LearningRate.model_validate_json(config_json)))


def compute_lr(lr_config: config_lib.LearningRate, step: int) -> float:
    """TML's ``compute_lr``: the learning rate at ``step`` as a Python float, computed in float64.

    Evaluates :func:`schedule_from_config` with x64 enabled, so the value is the
    float64 result of the formulas in this module (see
    :func:`linear_ramp_to_cosine` for the full definition).

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
    fn = _jitted_float64(lr_config.model_dump_json())
    with jax.enable_x64(True):
        if isinstance(step, (int, np.integer)):
            if step <= np.iinfo(np.int64).max:
                # An integer step stays an integer: piecewise boundaries are compared exactly at any int64 step.
                return float(fn(jnp.asarray(step, dtype=jnp.int64)))
            # Beyond int64: evaluated un-jitted, where a piecewise schedule compares Python ints exactly.
            return float(schedule_from_config(lr_config)(int(step)))
        return float(fn(jnp.asarray(float(step), dtype=jnp.float64)))
