"""One formula per kind of schedule, written once against an array namespace ``xp``.

``xp`` is ``jax.numpy`` on the pure side and ``numpy`` (float64) for tables.
Every formula broadcasts: scalar parameters give one schedule, parameters of
shape ``(G,)`` with steps of shape ``(S, 1)`` give ``(S, G)``. Divisions go
through ``xp.divide``: the JAX side passes a namespace whose ``divide`` stays a
true division (:data:`functional_opt.schedule_steps.EXACT_JNP`), where XLA would
multiply by a rounded reciprocal instead. Branches are
``where`` selections whose unused side stays finite, so ``jax.grad`` through a
schedule stays finite too. Codes stand for the string options: see
:mod:`functional_opt.schedule_kinds`, which reads them from the configs.

Example:
    >>> import numpy as np
    >>> linear_formula(np, np.arange(4.0), 1.0, 0.0, 2.0).tolist()
    [1.0, 0.5, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "constant_formula",
    "cosine_restarts_formula",
    "exponential_decay_formula",
    "inverse_sqrt_formula",
    "linear_formula",
    "linear_ramp_to_constant_formula",
    "linear_ramp_to_cosine_formula",
    "one_cycle_formula",
    "piecewise_constant_formula",
    "warmup_stable_decay_formula",
]


def _fraction(xp: Any, step: Any, ramp: Any) -> Any:
    """``min(1, step / ramp)``, exactly 1 from ``step == ramp`` on (so the peak is exactly the rate)."""
    return xp.where(step < ramp, xp.minimum(xp.divide(step, ramp), 1.0), 1.0)


def constant_formula(xp: Any, step: Any, value: Any) -> Any:
    """``value`` (``0 * step`` keeps the step in the graph, for grad and vmap)."""
    return value + 0 * step


def linear_ramp_to_constant_formula(xp: Any, step: Any, learning_rate: Any, num_ramp_steps: Any) -> Any:
    """``learning_rate * min(1, step / num_ramp_steps)``: 0 at step 0, ``learning_rate`` from the ramp's end."""
    return learning_rate * _fraction(xp, step, num_ramp_steps)


def linear_ramp_to_cosine_formula(
    xp: Any, step: Any, learning_rate: Any, final_learning_rate: Any, num_ramp_steps: Any, final_num_steps: Any
) -> Any:
    """The ramp, then the half cosine from ``learning_rate`` to ``final_learning_rate``, then the final rate."""
    ramp, final = num_ramp_steps, final_num_steps
    ramp_value = learning_rate * _fraction(xp, step, ramp)
    # Clipping keeps the unused branch finite, so gradients through where stay finite.
    decay_step = xp.clip(step, ramp, final)
    half_delta = (learning_rate - final_learning_rate) * 0.5
    cosine_value = final_learning_rate + half_delta * (
        1.0 + xp.cos(xp.divide(xp.pi * (decay_step - ramp), final - ramp))
    )
    # Rounding must not take the decay outside [final_learning_rate, learning_rate].
    low, high = xp.minimum(learning_rate, final_learning_rate), xp.maximum(learning_rate, final_learning_rate)
    cosine_value = xp.clip(cosine_value, low, high)
    return xp.where(
        step <= ramp, ramp_value, xp.where(step < final, cosine_value, final_learning_rate + 0 * cosine_value)
    )


def piecewise_constant_formula(xp: Any, step: Any, learning_rate_boundaries: Any, learning_rate_values: Any) -> Any:
    """``values[#{b <= step}]``: the value changes *at* each boundary (boundaries along the last axis)."""
    index = xp.sum(step[..., None] >= learning_rate_boundaries, axis=-1)
    positions = xp.arange(learning_rate_values.shape[-1])
    picked = xp.where(index[..., None] == positions, learning_rate_values, 0.0)
    return xp.sum(picked, axis=-1) + 0 * step


def linear_formula(xp: Any, step: Any, initial_learning_rate: Any, final_learning_rate: Any, num_steps: Any) -> Any:
    """optax ``linear_schedule``: ``(initial - final) * (1 - clip(step, 0, n) / n) + final``."""
    frac = 1 - xp.divide(xp.clip(step, 0, num_steps), num_steps)
    return (initial_learning_rate - final_learning_rate) * frac + final_learning_rate


def warmup_stable_decay_formula(
    xp: Any,
    step: Any,
    learning_rate: Any,
    final_learning_rate: Any,
    num_warmup_steps: Any,
    num_stable_steps: Any,
    num_decay_steps: Any,
    decay_shape: Any,
    power: Any,
) -> Any:
    """Warmup ``lr * s / W``, plateau, decay ``final + (lr - final) * f(x)``, then ``final``.

    ``decay_shape`` codes: 0 ``linear`` ``1 - x``, 1 ``cosine`` ``0.5 (1 + cos(pi x))``,
    2 ``one_minus_sqrt`` ``1 - sqrt(x)``, 3 ``polynomial`` ``(1 - x) ** power``.
    """
    decay_start = num_warmup_steps + num_stable_steps
    warm = learning_rate * _fraction(xp, step, xp.maximum(num_warmup_steps, 1))
    x = xp.clip(xp.divide(step - decay_start, num_decay_steps), 0.0, 1.0)
    f = xp.where(
        decay_shape == 0,
        1 - x,
        xp.where(
            decay_shape == 1,
            0.5 * (1 + xp.cos(xp.pi * x)),
            xp.where(decay_shape == 2, _one_minus_sqrt(xp, x), _power(xp, 1 - x, power)),
        ),
    )
    decayed = final_learning_rate + (learning_rate - final_learning_rate) * f
    return xp.where(
        step < num_warmup_steps,
        warm,
        xp.where(
            step < decay_start,
            learning_rate + 0 * step,
            xp.where(step < decay_start + num_decay_steps, decayed, final_learning_rate + 0 * decayed),
        ),
    )


def exponential_decay_formula(
    xp: Any,
    step: Any,
    learning_rate: Any,
    decay_rate: Any,
    transition_steps: Any,
    transition_begin: Any,
    staircase: Any,
    has_final: Any,
    final_learning_rate: Any,
) -> Any:
    """optax ``exponential_decay``, operation for operation; ``staircase`` and ``has_final`` are 0 or 1."""
    decreased = step - transition_begin
    p = xp.divide(decreased, transition_steps)
    p = xp.where(staircase == 1, xp.floor(p), p)
    # The exponent is clipped to >= 0 only where it is unused (decreased <= 0), so the unused side stays finite.
    value = xp.where(decreased <= 0, learning_rate + 0 * p, learning_rate * _power(xp, decay_rate, xp.maximum(p, 0)))
    clipped = xp.where(decay_rate < 1, xp.maximum(value, final_learning_rate), xp.minimum(value, final_learning_rate))
    return xp.where(has_final == 1, clipped, value)


def cosine_restarts_formula(
    xp: Any, step: Any, learning_rate: Any, final_learning_rate: Any, cycle_steps: Any, cycle_mult: Any
) -> Any:
    """torch ``CosineAnnealingWarmRestarts``: cycle ``n`` lasts ``T_n = T_0 * mult ** n``; a half cosine in each.

    The cycle index comes from a logarithm and is then corrected by one either
    way with exact comparisons, so a restart is never moved by rounding.
    """
    grows = cycle_mult > 1
    mult = xp.where(grows, cycle_mult, 2.0)

    def start(n: Any) -> Any:
        return xp.where(grows, xp.divide(cycle_steps * (_integer_power(xp, mult, n) - 1), mult - 1), n * cycle_steps)

    estimate = xp.log1p(xp.divide(xp.maximum(step, 0) * (mult - 1), cycle_steps)) / xp.log(mult)
    n = xp.floor(xp.where(grows, estimate, xp.divide(step, cycle_steps)))
    n = xp.where(step < start(n), n - 1, n)
    n = xp.where(step >= start(n + 1), n + 1, n)
    cycle_start = start(n)
    cycle_length = xp.where(grows, cycle_steps * _integer_power(xp, mult, n), cycle_steps)
    t = step - cycle_start
    return (
        final_learning_rate
        + (learning_rate - final_learning_rate) * (1 + xp.cos(xp.divide(xp.pi * t, cycle_length))) / 2
    )


def _one_minus_sqrt(xp: Any, x: Any) -> Any:
    """``1 - sqrt(x)``, with a finite gradient where ``x == 0`` (the decay's first step and every step before it)."""
    return xp.where(x > 0, 1 - xp.sqrt(xp.where(x > 0, x, 1.0)), 1.0 + 0 * x)


def _power(xp: Any, base: Any, exponent: Any) -> Any:
    """``base ** exponent`` with both operands at the result's shape.

    numpy's float64 ``power`` takes a vectorised loop when both operands are
    contiguous and libm's ``pow`` when one is broadcast, and the two can differ
    by an ulp (``0.8 ** 2.0``): full-shape operands keep a schedule's value
    independent of how many schedules are evaluated with it.
    """
    return xp.power(base + 0 * exponent, exponent + 0 * base)


def _integer_power(xp: Any, base: Any, n: Any) -> Any:
    """``base ** n`` for integer-valued ``0 <= n < 128`` by squaring: exact while the result fits 53 bits.

    (XLA's ``pow`` is ``exp(n * log(base))``, which can miss an integer power by an ulp.)
    """
    n = xp.clip(n, 0, 127)
    out = xp.ones_like(base * n)
    for bit in range(7):
        out = xp.where(xp.floor(n / 2**bit) % 2 == 1, out * base, out)
        base = base * base
    return out


def _anneal(xp: Any, start: Any, end: Any, pct: Any, linear: Any) -> Any:
    """torch ``OneCycleLR``'s two annealing functions (``linear`` 1) at ``pct``, as torch writes them."""
    cos_out = xp.cos(xp.pi * pct) + 1
    return xp.where(linear == 1, (end - start) * pct + start, end + (start - end) / 2.0 * cos_out)


def one_cycle_formula(
    xp: Any,
    step: Any,
    initial_learning_rate: Any,
    max_learning_rate: Any,
    min_learning_rate: Any,
    first_end: Any,
    second_end: Any,
    last_end: Any,
    three_phase: Any,
    linear: Any,
) -> Any:
    """torch ``OneCycleLR``: the phase holding ``step`` (ends ``first_end``, ``second_end``, ``last_end``), annealed.

    Two phases: ``initial -> max`` up to ``first_end``, ``max -> min`` up to
    ``last_end``. Three: ``initial -> max``, ``max -> initial`` up to ``second_end``,
    ``initial -> min``. After ``last_end``: ``min``. In a phase from ``a`` to ``b``,
    ``pct = (step - a) / (b - a)``.
    """
    three = three_phase == 1
    middle_end = xp.where(three, second_end, last_end)
    middle_target = xp.where(three, initial_learning_rate, min_learning_rate)
    first = _anneal(xp, initial_learning_rate, max_learning_rate, xp.divide(step, first_end), linear)
    middle_pct = xp.divide(step - first_end, middle_end - first_end)
    middle = _anneal(xp, max_learning_rate, middle_target, middle_pct, linear)
    last_pct = xp.divide(step - second_end, last_end - second_end)
    last = _anneal(xp, initial_learning_rate, min_learning_rate, last_pct, linear)
    in_middle = xp.logical_or(step <= middle_end, xp.logical_not(three))
    value = xp.where(step <= first_end, first, xp.where(in_middle, middle, last))
    return xp.where(step > last_end, min_learning_rate + 0 * value, value)


def inverse_sqrt_formula(xp: Any, step: Any, learning_rate: Any, timescale: Any) -> Any:
    """``learning_rate / sqrt((step + timescale) / timescale)``."""
    return xp.divide(learning_rate, xp.sqrt(xp.divide(step + timescale, timescale)))
