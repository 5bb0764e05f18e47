"""An independent float64 reference of every schedule kind (plain Python, no JAX, no numpy), shared by the tests.

TML's four as TML's ``compute_lr`` writes them; the others as their defining
frameworks compute them, step by step where the framework does (torch's cosine
restarts, torch's one-cycle phase search), so that a closed form in the library
is checked against a computation that is not one.
"""

from __future__ import annotations

import bisect
import math

from functional_opt import config


def _restart_position(cycle_steps: int, cycle_mult: int, step: int) -> tuple[int, int]:
    """torch's ``(T_cur, T_i)`` of ``CosineAnnealingWarmRestarts``, walking whole cycles."""
    if cycle_mult == 1:
        return step % cycle_steps, cycle_steps  # integer arithmetic: whole cycles of one length
    start, length = 0, cycle_steps
    while step >= start + length:
        start, length = start + length, length * cycle_mult
    return step - start, length


def _one_cycle(oc: config.OneCycle, step: int) -> float:
    """torch ``OneCycleLR.get_lr`` for one group (its phase search), ``min_lr`` from ``total_steps`` on."""
    initial = oc.max_learning_rate / oc.div_factor
    minimum = initial / oc.final_div_factor
    first = float(oc.pct_start * oc.total_steps) - 1
    if oc.three_phase:
        phases = [
            (first, initial, oc.max_learning_rate),
            (float(2 * oc.pct_start * oc.total_steps) - 2, oc.max_learning_rate, initial),
            (oc.total_steps - 1, initial, minimum),
        ]
    else:
        phases = [(first, initial, oc.max_learning_rate), (oc.total_steps - 1, oc.max_learning_rate, minimum)]
    if step > oc.total_steps - 1:
        return minimum
    start = 0.0
    for i, (end, lo, hi) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            pct = (step - start) / (end - start)
            if oc.anneal_strategy == "cos":
                return hi + (lo - hi) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (hi - lo) * pct + lo
        start = end
    raise AssertionError("unreachable")


def _reference_common(lr: config.LearningRate, step: int) -> float:
    """The kinds beyond TML's four, at an integer step."""
    if lr.linear is not None:
        c = lr.linear
        done = min(max(step, 0), c.num_steps) / c.num_steps
        return c.initial_learning_rate + (c.final_learning_rate - c.initial_learning_rate) * done
    if lr.warmup_stable_decay is not None:
        c = lr.warmup_stable_decay
        decay_start = c.num_warmup_steps + c.num_stable_steps
        if step < c.num_warmup_steps:
            return c.learning_rate * step / c.num_warmup_steps
        if step < decay_start:
            return c.learning_rate
        if step >= decay_start + c.num_decay_steps:
            return c.final_learning_rate
        x = (step - decay_start) / c.num_decay_steps
        shape = {
            "linear": lambda: 1 - x,
            "cosine": lambda: 0.5 * (1 + math.cos(math.pi * x)),
            "one_minus_sqrt": lambda: 1 - math.sqrt(x),
            "polynomial": lambda: (1 - x) ** c.exponent,
        }[c.decay_shape]()
        return c.final_learning_rate + (c.learning_rate - c.final_learning_rate) * shape
    if lr.exponential_decay is not None:
        c = lr.exponential_decay
        if step <= c.transition_begin:
            value = c.learning_rate
        else:
            exponent = (step - c.transition_begin) / c.transition_steps
            if c.staircase:
                exponent = (step - c.transition_begin) // c.transition_steps
            try:
                value = c.learning_rate * c.decay_rate**exponent
            except OverflowError:
                value = math.inf
        if c.final_learning_rate is not None:
            value = max(value, c.final_learning_rate) if c.decay_rate < 1 else min(value, c.final_learning_rate)
        return value
    if lr.multi_step is not None:
        c = lr.multi_step
        return c.learning_rate * c.gamma ** sum(1 for m in c.milestones if m <= step)
    if lr.cosine_restarts is not None:
        c = lr.cosine_restarts
        t, length = _restart_position(c.cycle_steps, c.cycle_mult, step)
        return (
            c.final_learning_rate + (c.learning_rate - c.final_learning_rate) * (1 + math.cos(math.pi * t / length)) / 2
        )
    if lr.one_cycle is not None:
        return _one_cycle(lr.one_cycle, step)
    if lr.inverse_sqrt is not None:
        c = lr.inverse_sqrt
        return c.learning_rate / math.sqrt((step + c.timescale) / c.timescale)
    assert lr.sequence is not None
    start = 0
    for segment in lr.sequence:
        if segment.num_steps is None or step < start + segment.num_steps:
            return reference_lr(segment.learning_rate, step - start + segment.from_step)
        start += segment.num_steps
    raise AssertionError("unreachable: the last segment runs for ever")


def reference_lr(lr: config.LearningRate, step: int | float) -> float:
    """The schedule at ``step`` in Python floats (TML's ``compute_lr`` for TML's four kinds)."""
    if lr.schedule_name not in config.TML_SCHEDULE_FIELDS:
        return _reference_common(lr, int(step))
    if lr.constant is not None:
        return float(lr.constant)
    if lr.piecewise_constant is not None:
        pc = lr.piecewise_constant
        return float(pc.learning_rate_values[bisect.bisect_right(pc.learning_rate_boundaries, step)])
    if lr.linear_ramp_to_constant is not None:
        rc = lr.linear_ramp_to_constant
        return min(rc.learning_rate, rc.learning_rate / rc.num_ramp_steps * step)
    rc = lr.linear_ramp_to_cosine
    if step < rc.num_ramp_steps:
        return rc.learning_rate / rc.num_ramp_steps * step
    if step <= rc.final_num_steps:
        phase = math.pi * (step - rc.num_ramp_steps) / (rc.final_num_steps - rc.num_ramp_steps)
        return rc.final_learning_rate + (rc.learning_rate - rc.final_learning_rate) * 0.5 * (1.0 + math.cos(phase))
    return float(rc.final_learning_rate)


def peak(lr: config.LearningRate) -> float:
    """The largest value the schedule takes."""
    if lr.sequence is not None:
        return max(peak(segment.learning_rate) for segment in lr.sequence)
    rates = {
        "linear": ("initial_learning_rate", "final_learning_rate"),
        "warmup_stable_decay": ("learning_rate", "final_learning_rate"),
        "exponential_decay": ("learning_rate", "final_learning_rate"),
        "cosine_restarts": ("learning_rate", "final_learning_rate"),
        "inverse_sqrt": ("learning_rate",),
    }
    if lr.schedule_name in rates:
        section = getattr(lr, lr.schedule_name)
        return max(getattr(section, f) or 0.0 for f in rates[lr.schedule_name])
    if lr.multi_step is not None:
        c = lr.multi_step
        return max(c.learning_rate * c.gamma**k for k in range(len(c.milestones) + 1))
    if lr.one_cycle is not None:
        c = lr.one_cycle
        return max(c.max_learning_rate, c.initial_learning_rate, c.min_learning_rate)
    if lr.constant is not None:
        return lr.constant
    if lr.piecewise_constant is not None:
        return max(lr.piecewise_constant.learning_rate_values)
    if lr.linear_ramp_to_constant is not None:
        return lr.linear_ramp_to_constant.learning_rate
    return max(lr.linear_ramp_to_cosine.learning_rate, lr.linear_ramp_to_cosine.final_learning_rate)
