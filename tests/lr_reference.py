"""An independent float64 reference of TML's ``compute_lr`` (plain Python, no JAX), shared by the tests."""

from __future__ import annotations

import bisect
import math

from functional_opt import config


def reference_lr(lr: config.LearningRate, step: int | float) -> float:
    """TML's ``compute_lr``, in Python floats."""
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
    if lr.constant is not None:
        return lr.constant
    if lr.piecewise_constant is not None:
        return max(lr.piecewise_constant.learning_rate_values)
    if lr.linear_ramp_to_constant is not None:
        return lr.linear_ramp_to_constant.learning_rate
    return max(lr.linear_ramp_to_cosine.learning_rate, lr.linear_ramp_to_cosine.final_learning_rate)
