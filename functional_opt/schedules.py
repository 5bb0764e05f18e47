"""Learning-rate schedules as pure JAX functions (``optax.Schedule``): every kind, from configs or by hand.

TML's four (:mod:`functional_opt.tml_schedules`: ``constant``,
``piecewise_constant``, ``linear_ramp_to_constant``, ``linear_ramp_to_cosine``)
and those optax, torch and torchrec define (:mod:`functional_opt.schedules_common`:
``linear``, ``warmup_stable_decay``, ``exponential_decay``, ``multi_step``,
``cosine_restarts``, ``one_cycle``, ``inverse_sqrt``, ``sequence``) are all
importable from here, with :func:`schedule_from_config` and :func:`compute_lr`.

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
from collections.abc import Mapping
from typing import Any

import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedule_plan
from functional_opt.schedule_steps import Schedule, shown
from functional_opt.schedules_common import (
    cosine_restarts,
    exponential_decay,
    from_section,
    inverse_sqrt,
    linear,
    multi_step,
    one_cycle,
    sequence,
    warmup_stable_decay,
)
from functional_opt.tml_schedules import constant, linear_ramp_to_constant, linear_ramp_to_cosine, piecewise_constant

__all__ = [
    "Schedule",
    "compute_lr",
    "constant",
    "cosine_restarts",
    "exponential_decay",
    "inverse_sqrt",
    "linear",
    "linear_ramp_to_constant",
    "linear_ramp_to_cosine",
    "multi_step",
    "one_cycle",
    "piecewise_constant",
    "schedule_from_config",
    "sequence",
    "warmup_stable_decay",
]


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
    if lr_config.linear_ramp_to_cosine is not None:
        cfg = lr_config.linear_ramp_to_cosine
        return linear_ramp_to_cosine(
            cfg.learning_rate, cfg.final_learning_rate, cfg.num_ramp_steps, cfg.final_num_steps
        )
    if lr_config.sequence is not None:
        segments = lr_config.sequence
        return sequence(
            [schedule_from_config(s.learning_rate) for s in segments],
            [s.num_steps for s in segments[:-1] if s.num_steps is not None],
            [s.from_step for s in segments],
        )
    name = lr_config.schedule_name
    return from_section(name, getattr(lr_config, name))


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
        raise TypeError(f"compute_lr: step must be an integer, got {shown(step)}")
    if not math.isfinite(step):
        raise TypeError(f"compute_lr: step must be an integer, got {step!r}")
    if step < 0:
        raise ValueError(f"compute_lr: step={shown(step)} must be >= 0 (step 0 is the first update)")
    if isinstance(step, (int, np.integer)) and step <= np.iinfo(np.int64).max:
        # An integer step stays an integer: piecewise boundaries are compared exactly at any int64 step.
        steps = np.asarray([step], dtype=np.int64)
    else:
        # Beyond int64 every boundary is passed; a float step meets boundaries rounded up.
        steps = np.asarray([float(step)], dtype=np.float64)
    return float(schedule_plan.evaluate([lr_config], steps)[0, 0])
