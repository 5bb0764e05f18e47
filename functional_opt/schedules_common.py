"""The schedules optax, torch and torchrec define, as pure JAX functions (``optax.Schedule``).

Each factory validates its arguments with the config model of its kind
(:mod:`functional_opt.schedule_config_common`), then returns ``schedule(count)``
built from the kind's one formula (:mod:`functional_opt.schedule_formulas`).
:func:`sequence` runs schedules one after the other, each from its own step.
:mod:`functional_opt.schedules` is where users import them from.

Example:
    >>> sched = warmup_stable_decay(1.0, num_warmup_steps=2, num_stable_steps=2, num_decay_steps=4)
    >>> [float(sched(s)) for s in range(9)]
    [0.0, 0.5, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pydantic

from functional_opt import config as config_lib
from functional_opt import schedule_kinds as kinds
from functional_opt import tml_schedules
from functional_opt.config_values import MAX_STEP
from functional_opt.schedule_steps import EXACT_JNP, Schedule, as_array, as_float, float_dtype, host_integer_step

__all__ = [
    "cosine_restarts",
    "exponential_decay",
    "from_section",
    "inverse_sqrt",
    "linear",
    "multi_step",
    "one_cycle",
    "sequence",
    "warmup_stable_decay",
]


def _validated(model: type[pydantic.BaseModel], name: str, **fields: Any) -> Any:
    try:
        return model(**fields)
    except pydantic.ValidationError as exc:  # re-raised as ValueError with the function's name
        raise ValueError(f"{name}: {exc}") from None


def from_section(name: str, section: Any) -> Schedule:
    """The schedule of one validated config section of kind ``name`` (any kind with a formula).

    Example:
        >>> float(from_section("inverse_sqrt", config_lib.InverseSqrt(learning_rate=1.0, timescale=3))(9))
        0.5
    """
    kind = kinds.KINDS[name]
    row = kind.row(section)
    if kind.ragged:
        return tml_schedules.piecewise_constant(row["learning_rate_boundaries"], row["learning_rate_values"])

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        return jnp.asarray(kind.formula(EXACT_JNP, as_float(count), **row), float_dtype())

    return schedule


def linear(initial_learning_rate: float, final_learning_rate: float, num_steps: int) -> Schedule:
    """``lr(s) = (initial - final) * (1 - min(s, n) / n) + final``: a line over ``num_steps``, then ``final``.

    optax's ``linear_schedule(initial, final, num_steps)``.

    Raises:
        ValueError: a rate is negative, not finite or beyond float32, or ``num_steps <= 0``.

    Example:
        >>> [float(linear(1.0, 0.0, 4)(s)) for s in (0, 1, 4, 9)]
        [1.0, 0.75, 0.0, 0.0]
    """
    cfg = _validated(
        config_lib.Linear,
        "linear",
        initial_learning_rate=initial_learning_rate,
        final_learning_rate=final_learning_rate,
        num_steps=num_steps,
    )
    return from_section("linear", cfg)


def warmup_stable_decay(
    learning_rate: float,
    *,
    num_decay_steps: int,
    final_learning_rate: float = 0.0,
    num_warmup_steps: int = 0,
    num_stable_steps: int = 0,
    decay_shape: str = "linear",
    power: float | None = None,
) -> Schedule:
    """Warmup ``lr * s / W``, ``lr`` for ``num_stable_steps``, a decay of ``decay_shape`` to ``final``, then ``final``.

    With ``x`` the fraction of the decay done: ``final + (lr - final) * f(x)``,
    ``f`` one of ``linear`` (``1 - x``), ``cosine`` (``0.5 (1 + cos(pi x))``),
    ``one_minus_sqrt`` (``1 - sqrt(x)``), ``polynomial`` (``(1 - x) ** power``).

    Raises:
        ValueError: a rate or count out of range, an unknown shape, ``power`` with a shape other than polynomial.

    Example:
        >>> sched = warmup_stable_decay(1.0, num_decay_steps=4, decay_shape="one_minus_sqrt")
        >>> [float(sched(s)) for s in (0, 1, 4)]
        [1.0, 0.5, 0.0]
    """
    cfg = _validated(
        config_lib.WarmupStableDecay,
        "warmup_stable_decay",
        learning_rate=learning_rate,
        final_learning_rate=final_learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_stable_steps=num_stable_steps,
        num_decay_steps=num_decay_steps,
        decay_shape=decay_shape,
        power=power,
    )
    return from_section("warmup_stable_decay", cfg)


def exponential_decay(
    learning_rate: float,
    decay_rate: float,
    transition_steps: int,
    transition_begin: int = 0,
    staircase: bool = False,
    final_learning_rate: float | None = None,
) -> Schedule:
    """optax ``exponential_decay``: ``lr * decay_rate ** ((s - begin) / transition_steps)`` from ``begin`` on.

    The exponent is floored with ``staircase``; ``final_learning_rate`` (optax's
    ``end_value``) bounds the value, from below for a decay, from above for growth.

    Raises:
        ValueError: a rate or count out of range, ``decay_rate <= 0``, or growth without a final rate.

    Example:
        >>> sched = exponential_decay(1.0, 0.5, transition_steps=2, staircase=True)
        >>> [float(sched(s)) for s in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    cfg = _validated(
        config_lib.ExponentialDecay,
        "exponential_decay",
        learning_rate=learning_rate,
        decay_rate=decay_rate,
        transition_steps=transition_steps,
        transition_begin=transition_begin,
        staircase=staircase,
        final_learning_rate=final_learning_rate,
    )
    return from_section("exponential_decay", cfg)


def multi_step(learning_rate: float, milestones: Sequence[int], gamma: float = 0.1) -> Schedule:
    """torch ``MultiStepLR``: ``lr * gamma ** #{m in milestones : m <= s}`` (a repeated milestone counts twice).

    Raises:
        ValueError: a negative milestone or rate, ``gamma < 0``, or a value beyond float32.

    Example:
        >>> sched = multi_step(1.0, [2, 4, 4], gamma=0.5)
        >>> [float(sched(s)) for s in range(6)]
        [1.0, 1.0, 0.5, 0.5, 0.125, 0.125]
    """
    cfg = _validated(
        config_lib.MultiStep, "multi_step", learning_rate=learning_rate, milestones=list(milestones), gamma=gamma
    )
    return from_section("multi_step", cfg)


def cosine_restarts(
    learning_rate: float, cycle_steps: int, final_learning_rate: float = 0.0, cycle_mult: int = 1
) -> Schedule:
    """torch ``CosineAnnealingWarmRestarts(T_0=cycle_steps, T_mult=cycle_mult, eta_min=final_learning_rate)``.

    At step ``t`` of cycle ``i`` (of ``T_i = cycle_steps * cycle_mult ** i`` steps):
    ``final + (lr - final) * (1 + cos(pi * t / T_i)) / 2``.

    Raises:
        ValueError: a rate out of range, or a count that is not a positive integer.

    Example:
        >>> sched = cosine_restarts(1.0, cycle_steps=2, cycle_mult=2)
        >>> [round(float(sched(s)), 6) for s in range(7)]
        [1.0, 0.5, 1.0, 0.853553, 0.5, 0.146447, 1.0]
    """
    cfg = _validated(
        config_lib.CosineRestarts,
        "cosine_restarts",
        learning_rate=learning_rate,
        final_learning_rate=final_learning_rate,
        cycle_steps=cycle_steps,
        cycle_mult=cycle_mult,
    )
    return from_section("cosine_restarts", cfg)


def one_cycle(
    max_learning_rate: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> Schedule:
    """torch ``OneCycleLR``'s learning rate for ``s < total_steps`` (its defaults); ``min_lr`` after.

    See :class:`~functional_opt.schedule_config_common.OneCycle` for the phases.

    Raises:
        ValueError: a value out of range, or a phase of no length.

    Example:
        >>> sched = one_cycle(1.0, 10, pct_start=0.5, anneal_strategy="linear", div_factor=2.0, final_div_factor=10.0)
        >>> [round(float(sched(s)), 4) for s in (0, 2, 4, 9, 10)]
        [0.5, 0.75, 1.0, 0.05, 0.05]
    """
    cfg = _validated(
        config_lib.OneCycle,
        "one_cycle",
        max_learning_rate=max_learning_rate,
        total_steps=total_steps,
        pct_start=pct_start,
        anneal_strategy=anneal_strategy,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        three_phase=three_phase,
    )
    return from_section("one_cycle", cfg)


def inverse_sqrt(learning_rate: float, timescale: int) -> Schedule:
    """``lr(s) = learning_rate / sqrt((s + timescale) / timescale)``.

    Raises:
        ValueError: a rate out of range, or ``timescale <= 0``.

    Example:
        >>> [float(inverse_sqrt(1.0, timescale=1)(s)) for s in (0, 3, 15)]
        [1.0, 0.5, 0.25]
    """
    cfg = _validated(config_lib.InverseSqrt, "inverse_sqrt", learning_rate=learning_rate, timescale=timescale)
    return from_section("inverse_sqrt", cfg)


def sequence(
    schedules: Sequence[Callable[[Any], Any]], num_steps: Sequence[int], from_steps: Sequence[int] | None = None
) -> Schedule:
    """Schedules one after the other, each run from its own step: optax ``join_schedules`` with lengths.

    Schedule ``i`` starts at ``start_i = sum(num_steps[:i])`` and gives
    ``schedules[i](s - start_i + from_steps[i])``; the last runs for ever.

    Args:
        schedules: any ``optax.Schedule``.
        num_steps: how long each schedule but the last runs (positive integers).
        from_steps: the step each schedule starts at (default 0 each).

    Raises:
        ValueError: ``num_steps`` is not one shorter than ``schedules``, a count is out of range.
        TypeError: a schedule is not callable.

    Example:
        >>> sched = sequence([linear(0.0, 1.0, 2), inverse_sqrt(1.0, timescale=1)], [2])
        >>> [float(sched(s)) for s in (0, 1, 2, 5)]
        [0.0, 0.5, 1.0, 0.5]
    """
    schedules = list(schedules)
    lengths = [int(n) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else n for n in num_steps]
    offsets = [0] * len(schedules) if from_steps is None else list(from_steps)
    bad = [type(s).__name__ for s in schedules if not callable(s)]
    if not schedules or bad:
        raise TypeError(f"sequence: schedules must be a non-empty list of callables, got {bad or 'none'}")
    if len(lengths) != len(schedules) - 1 or len(offsets) != len(schedules):
        raise ValueError(
            f"sequence: {len(schedules)} schedules need {len(schedules) - 1} num_steps and {len(schedules)} "
            f"from_steps, got {len(lengths)} and {len(offsets)}"
        )
    for field, values, least in (("num_steps", lengths, 1), ("from_steps", offsets, 0)):
        for i, n in enumerate(values):
            if not isinstance(n, int) or isinstance(n, bool) or n < least:
                raise ValueError(f"sequence: {field}[{i}]={n!r} must be an integer >= {least}")
    starts = np.cumsum([0, *lengths]).tolist()
    if starts[-1] > MAX_STEP:
        raise ValueError("sequence: num_steps must add up to at most 2**63 - 1")
    shifts = [start - offset for start, offset in zip(starts, offsets, strict=True)]

    def schedule(count: jax.typing.ArrayLike) -> jax.Array:
        host = host_integer_step(count)
        if isinstance(host, int) and host >= 0:
            # Exact on the host: the segment and its own step are Python integers.
            i = bisect.bisect_right(starts, host) - 1
            return jnp.asarray(schedules[i](host - shifts[i]), float_dtype())
        count = as_array(count)
        out = jnp.asarray(schedules[0](_local(count, shifts[0])), float_dtype())
        for start, shift, segment in zip(starts[1:], shifts[1:], schedules[1:], strict=True):
            if jnp.issubdtype(count.dtype, jnp.integer) and start > int(jnp.iinfo(count.dtype).max):
                break  # never reached by this step type
            out = jnp.where(count < start, out, jnp.asarray(segment(_local(count, shift)), float_dtype()))
        return out

    return schedule


def _local(count: jax.Array, shift: int) -> jax.Array:
    """``count - shift``: in the step's integer type where it cannot overflow, else in the float type."""
    if jnp.issubdtype(count.dtype, jnp.integer) and 0 <= shift <= int(jnp.iinfo(count.dtype).max):
        return count - jnp.asarray(shift, count.dtype)
    return count.astype(float_dtype()) - shift
