"""The schedule kinds beyond TML's four: the ones optax, torch and torchrec define.

Each model is the parameter record of one kind of
:class:`~functional_opt.config.LearningRate` (its formula lives in
:mod:`functional_opt.schedule_kinds`). ``s`` is the step, 0 for the first
update; counts are integers, rates finite, >= 0 and within float32, and every
rule below is a validation error naming the field.

Example:
    >>> Linear(initial_learning_rate=0.0, final_learning_rate=1.0, num_steps=10).breakpoints
    [10]
    >>> MultiStep(learning_rate=1.0, milestones=[30, 10, 30], gamma=0.5).breakpoints
    [10, 30]
"""

from __future__ import annotations

import math
from typing import Literal

import pydantic
from pydantic import StrictBool, field_validator, model_validator

from functional_opt.config_base import BaseConfig
from functional_opt.config_values import (
    FLOAT32_MAX,
    MAX_STEP,
    NonNegativeInteger,
    Number,
    PositiveInteger,
    _check_learning_rate,
)

__all__ = [
    "DECAY_SHAPES",
    "CosineRestarts",
    "ExponentialDecay",
    "InverseSqrt",
    "Linear",
    "MultiStep",
    "OneCycle",
    "WarmupStableDecay",
]

DECAY_SHAPES = ("linear", "cosine", "one_minus_sqrt", "polynomial")
"""The decay shapes of :class:`WarmupStableDecay`, in the order of their codes."""

RESTARTS_SHOWN = 4
"""How many restarts of :class:`CosineRestarts` its breakpoints list (plots and tables show that many cycles)."""


def _check_factor(value: float, field: str, *, zero: bool = False) -> float:
    """A finite factor > 0 (>= 0 with ``zero``)."""
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
        raise ValueError(f"{field}={value!r} must be a finite number {'>= 0' if zero else '> 0'}")
    return float(value)


def _rates(*fields: str) -> classmethod:
    """A field validator checking learning rates (finite, >= 0, within float32)."""

    def check(cls: type, value: float | None, info: pydantic.ValidationInfo) -> float | None:
        return None if value is None else _check_learning_rate(value, str(info.field_name))

    return field_validator(*fields)(classmethod(check))  # type: ignore[arg-type]


class Linear(BaseConfig):
    """A straight line from ``initial_learning_rate`` to ``final_learning_rate`` over ``num_steps``, then the final.

    ``lr(s) = (initial - final) * (1 - min(s, n) / n) + final`` (optax ``linear_schedule``).
    """

    initial_learning_rate: Number
    final_learning_rate: Number
    num_steps: PositiveInteger

    _check_rates = _rates("initial_learning_rate", "final_learning_rate")

    @property
    def breakpoints(self) -> list[int]:
        return [self.num_steps]


class WarmupStableDecay(BaseConfig):
    """Warmup from 0, a plateau at ``learning_rate``, a decay to ``final_learning_rate``, then the final rate.

    With ``W, S, D`` the three step counts and ``x = (s - W - S) / D``::

        lr(s) = learning_rate * s / W                          s < W
        lr(s) = learning_rate                                  W <= s < W + S
        lr(s) = final + (learning_rate - final) * f(x)         W + S <= s < W + S + D
        lr(s) = final                                          after

    ``f`` is ``decay_shape``: ``linear`` ``1 - x``, ``cosine`` ``0.5 (1 + cos(pi x))``,
    ``one_minus_sqrt`` ``1 - sqrt(x)``, ``polynomial`` ``(1 - x) ** power``.
    ``num_warmup_steps: 0`` means no warmup; ``power`` is for ``polynomial`` only (default 1).
    """

    learning_rate: Number
    final_learning_rate: Number = 0.0
    num_warmup_steps: NonNegativeInteger = 0
    num_stable_steps: NonNegativeInteger = 0
    num_decay_steps: PositiveInteger
    decay_shape: Literal["linear", "cosine", "one_minus_sqrt", "polynomial"] = "linear"
    power: Number | None = None

    _check_rates = _rates("learning_rate", "final_learning_rate")

    @field_validator("power")
    @classmethod
    def _power(cls, value: float | None) -> float | None:
        return None if value is None else _check_factor(value, "power")

    @model_validator(mode="after")
    def _fits(self) -> WarmupStableDecay:
        if self.power is not None and self.decay_shape != "polynomial":
            raise ValueError(
                f"warmup_stable_decay: power applies to decay_shape 'polynomial' only, "
                f"got power={self.power!r} with decay_shape {self.decay_shape!r}"
            )
        if self.num_warmup_steps + self.num_stable_steps + self.num_decay_steps > MAX_STEP:
            raise ValueError("warmup_stable_decay: the three step counts must add up to at most 2**63 - 1")
        return self

    @property
    def exponent(self) -> float:
        """The power of the polynomial decay (1 when not given)."""
        return 1.0 if self.power is None else self.power

    @property
    def breakpoints(self) -> list[int]:
        ends = [self.num_warmup_steps, self.num_warmup_steps + self.num_stable_steps]
        ends.append(ends[-1] + self.num_decay_steps)
        return sorted({e for e in ends if e > 0})


class ExponentialDecay(BaseConfig):
    """optax ``exponential_decay``: ``learning_rate * decay_rate ** (max(0, s - begin) / transition_steps)``.

    With ``staircase`` the exponent is floored; with ``final_learning_rate`` the
    value is clipped to it (from below when ``decay_rate < 1``, from above when it
    grows). A growing decay (``decay_rate > 1``) needs ``final_learning_rate``.
    """

    learning_rate: Number
    decay_rate: Number
    transition_steps: PositiveInteger
    transition_begin: NonNegativeInteger = 0
    staircase: StrictBool = False
    final_learning_rate: Number | None = None

    _check_rates = _rates("learning_rate", "final_learning_rate")

    @field_validator("decay_rate")
    @classmethod
    def _decay(cls, value: float) -> float:
        return _check_factor(value, "decay_rate")

    @model_validator(mode="after")
    def _bounded(self) -> ExponentialDecay:
        if self.decay_rate > 1 and self.final_learning_rate is None:
            raise ValueError(
                f"exponential_decay: decay_rate={self.decay_rate!r} > 1 grows without bound: "
                "set final_learning_rate (its upper limit)"
            )
        return self

    @property
    def breakpoints(self) -> list[int]:
        points = [self.transition_begin] if self.transition_begin > 0 else []
        return [*points, self.transition_begin + self.transition_steps]


class MultiStep(BaseConfig):
    """torch ``MultiStepLR``: ``learning_rate * gamma ** #{m in milestones : m <= s}``.

    A milestone given twice applies ``gamma`` twice, as torch does; the order
    of the milestones does not matter.
    """

    learning_rate: Number
    milestones: list[NonNegativeInteger]
    gamma: Number = 0.1

    _check_rates = _rates("learning_rate")

    @field_validator("gamma")
    @classmethod
    def _gamma(cls, value: float) -> float:
        return _check_factor(value, "gamma", zero=True)

    @model_validator(mode="after")
    def _within_float32(self) -> MultiStep:
        for k in range(1, len(self.milestones) + 1):
            try:
                value = self.learning_rate * self.gamma**k
            except OverflowError:
                value = math.inf
            if value > FLOAT32_MAX:
                raise ValueError(
                    f"multi_step: learning_rate * gamma ** {k} = {value!r} does not fit in float32 "
                    f"(max {FLOAT32_MAX:.6g})"
                )
        return self

    @property
    def breakpoints(self) -> list[int]:
        return sorted(set(self.milestones))


class CosineRestarts(BaseConfig):
    """torch ``CosineAnnealingWarmRestarts`` (``T_0 = cycle_steps``, ``T_mult = cycle_mult``, ``eta_min``).

    Cycle ``i`` lasts ``T_i = cycle_steps * cycle_mult ** i`` steps; at step ``t``
    of its cycle, ``lr = final + (learning_rate - final) * (1 + cos(pi * t / T_i)) / 2``.
    """

    learning_rate: Number
    final_learning_rate: Number = 0.0
    cycle_steps: PositiveInteger
    cycle_mult: PositiveInteger = 1

    _check_rates = _rates("learning_rate", "final_learning_rate")

    def restart(self, cycle: int) -> int:
        """The step at which cycle ``cycle`` (0 for the first) starts."""
        if self.cycle_mult == 1:
            return self.cycle_steps * cycle
        return self.cycle_steps * (self.cycle_mult**cycle - 1) // (self.cycle_mult - 1)

    @property
    def breakpoints(self) -> list[int]:
        return [r for r in (self.restart(i) for i in range(1, RESTARTS_SHOWN + 1)) if r <= MAX_STEP]


class OneCycle(BaseConfig):
    """torch ``OneCycleLR``'s learning rate (its defaults), for ``s < total_steps``; ``min_lr`` after.

    ``initial = max_learning_rate / div_factor``, ``min_lr = initial / final_div_factor``;
    the phases end at ``e1 = pct_start * total_steps - 1`` (from ``initial`` up to
    the maximum), then (``three_phase``) ``e2 = 2 * pct_start * total_steps - 2``
    (back down to ``initial``), and ``total_steps - 1`` (down to ``min_lr``). In the
    phase from ``a`` to ``b`` (rates ``u`` to ``v``), ``p = (s - a) / (b - a)`` and
    ``lr = v + (u - v) / 2 * (cos(pi p) + 1)`` (``cos``) or ``(v - u) * p + u`` (``linear``).
    Every phase must last more than 0 steps (torch divides by zero otherwise).
    """

    max_learning_rate: Number
    total_steps: PositiveInteger
    pct_start: Number = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: Number = 25.0
    final_div_factor: Number = 1e4
    three_phase: StrictBool = False

    _check_rates = _rates("max_learning_rate")

    @field_validator("div_factor", "final_div_factor")
    @classmethod
    def _factors(cls, value: float, info: pydantic.ValidationInfo) -> float:
        return _check_factor(value, str(info.field_name))

    @field_validator("pct_start")
    @classmethod
    def _pct(cls, value: float) -> float:
        if not (math.isfinite(value) and 0 < value < 1):
            raise ValueError(f"pct_start={value!r} must be in (0, 1)")
        return float(value)

    @model_validator(mode="after")
    def _phases(self) -> OneCycle:
        ends = self.phase_ends
        starts = [0.0, *ends[:-1]]
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            if b - a <= 0:
                raise ValueError(
                    f"one_cycle: phase {i + 1} of {len(ends)} would last {b - a!r} steps (from {a!r} to {b!r}) "
                    f"with total_steps={self.total_steps} and pct_start={self.pct_start!r}: every phase must last "
                    "more than 0 steps (torch divides by zero there)"
                )
        _check_learning_rate(self.initial_learning_rate, "max_learning_rate / div_factor")
        _check_learning_rate(self.min_learning_rate, "max_learning_rate / div_factor / final_div_factor")
        return self

    @property
    def initial_learning_rate(self) -> float:
        """torch's ``initial_lr``: ``max_learning_rate / div_factor``."""
        return self.max_learning_rate / self.div_factor

    @property
    def min_learning_rate(self) -> float:
        """torch's ``min_lr``: ``initial_lr / final_div_factor``."""
        return self.initial_learning_rate / self.final_div_factor

    @property
    def phase_ends(self) -> list[float]:
        """torch's ``end_step`` of each phase (floats, as torch computes them)."""
        first = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            return [first, float(2 * self.pct_start * self.total_steps) - 2, float(self.total_steps - 1)]
        return [first, float(self.total_steps - 1)]

    @property
    def breakpoints(self) -> list[int]:
        return sorted({max(0, math.ceil(e)) for e in self.phase_ends[:-1]} | {self.total_steps - 1, self.total_steps})


class InverseSqrt(BaseConfig):
    """``learning_rate / sqrt((s + timescale) / timescale)``: the rate at step 0, then ``1 / sqrt`` decay.

    The Hugging Face inverse square root schedule after its warmup; torchrec's
    ``INVSQRT`` stage from step ``a`` on is ``learning_rate = lr / sqrt(a)``, ``timescale = a``.
    """

    learning_rate: Number
    timescale: PositiveInteger

    _check_rates = _rates("learning_rate")

    @property
    def breakpoints(self) -> list[int]:
        return [self.timescale]
