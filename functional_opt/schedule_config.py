"""The schedule part of the config schema: ``LearningRate``, TML's four kinds and ``sequence`` segments.

TML's four kinds are field for field TML's (``tml.optimizers.config``); the
kinds optax and torch define live in :mod:`functional_opt.schedule_config_common`.
:mod:`functional_opt.config` re-exports every name here, which is where users
import them from. Every model rejects unknown keys, and a ``LearningRate``
holds exactly one schedule.

Example:
    >>> lr = LearningRate(linear_ramp_to_constant={"learning_rate": 0.1, "num_ramp_steps": 10})
    >>> lr.schedule_name, lr.breakpoints
    ('linear_ramp_to_constant', [10])
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from functional_opt.config_base import BaseConfig
from functional_opt.config_values import (
    MAX_STEP,
    Integer,
    NonNegativeInteger,
    Number,
    PositiveInteger,
    _check_learning_rate,
)
from functional_opt.schedule_config_common import (
    CosineRestarts,
    ExponentialDecay,
    InverseSqrt,
    Linear,
    MultiStep,
    OneCycle,
    WarmupStableDecay,
)

__all__ = [
    "MAX_SEQUENCE_DEPTH",
    "SCHEDULE_FIELDS",
    "TML_SCHEDULE_FIELDS",
    "BaseConfig",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "PiecewiseConstant",
    "Segment",
]

MAX_SEQUENCE_DEPTH = 8
"""How deeply ``sequence`` schedules may nest."""


class PiecewiseConstant(BaseConfig):
    """``values[bisect_right(boundaries, step)]``.

    Attributes:
        learning_rate_boundaries: strictly increasing, non-negative steps at which the LR changes.
        learning_rate_values: ``len(learning_rate_boundaries) + 1`` learning rates.
    """

    learning_rate_boundaries: list[Integer] | None = Field(None)
    learning_rate_values: list[Number] | None = Field(None)

    @field_validator("learning_rate_boundaries")
    @classmethod
    def _boundaries(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        for i, b in enumerate(value):
            if b < 0:
                raise ValueError(f"learning_rate_boundaries[{i}]={b} must be >= 0")
        for i in range(1, len(value)):
            if value[i] <= value[i - 1]:
                raise ValueError(
                    f"learning_rate_boundaries must be strictly increasing, got "
                    f"learning_rate_boundaries[{i - 1}]={value[i - 1]} >= "
                    f"learning_rate_boundaries[{i}]={value[i]}"
                )
        return value

    @field_validator("learning_rate_values")
    @classmethod
    def _values(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        return [_check_learning_rate(v, f"learning_rate_values[{i}]") for i, v in enumerate(value)]

    @model_validator(mode="after")
    def _lengths(self) -> PiecewiseConstant:
        boundaries = self.learning_rate_boundaries
        values = self.learning_rate_values
        if boundaries is None or values is None:
            missing = [
                n
                for n, v in (
                    ("learning_rate_boundaries", boundaries),
                    ("learning_rate_values", values),
                )
                if v is None
            ]
            raise ValueError(f"piecewise_constant: {missing} must be set (got null)")
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                "piecewise_constant: len(learning_rate_values) must be "
                "len(learning_rate_boundaries) + 1, got "
                f"len(learning_rate_values)={len(values)} and "
                f"len(learning_rate_boundaries)={len(boundaries)}"
            )
        return self

    @property
    def breakpoints(self) -> list[int]:
        return list(self.learning_rate_boundaries or [])


class LinearRampToConstant(BaseConfig):
    """``min(learning_rate, learning_rate / num_ramp_steps * step)``.

    Attributes:
        learning_rate: the constant reached at the end of the ramp.
        num_ramp_steps: number of steps to ramp up from zero (> 0).
    """

    learning_rate: Number
    num_ramp_steps: PositiveInteger = Field(description="Number of steps to ramp this up from zero.")

    @field_validator("learning_rate")
    @classmethod
    def _lr(cls, value: float) -> float:
        return _check_learning_rate(value, "learning_rate")

    @property
    def breakpoints(self) -> list[int]:
        return [self.num_ramp_steps]


class LinearRampToCosine(BaseConfig):
    """Linear ramp from 0 to ``learning_rate``, then cosine decay to ``final_learning_rate``.

    Attributes:
        learning_rate: peak learning rate, reached at ``num_ramp_steps``.
        final_learning_rate: learning rate at and after ``final_num_steps``.
        num_ramp_steps: number of ramp steps (> 0).
        final_num_steps: step at which the decay ends (> ``num_ramp_steps``).
    """

    learning_rate: Number
    final_learning_rate: Number
    num_ramp_steps: PositiveInteger = Field(description="Number of steps to ramp this up from zero.")
    final_num_steps: PositiveInteger = Field(description="Final number of steps where decay stops.")

    @field_validator("learning_rate", "final_learning_rate")
    @classmethod
    def _lr(cls, value: float, info: pydantic.ValidationInfo) -> float:
        return _check_learning_rate(value, str(info.field_name))

    @model_validator(mode="after")
    def _steps(self) -> LinearRampToCosine:
        if self.final_num_steps <= self.num_ramp_steps:
            raise ValueError(
                f"linear_ramp_to_cosine: final_num_steps={self.final_num_steps} must be > "
                f"num_ramp_steps={self.num_ramp_steps}"
            )
        return self

    @property
    def breakpoints(self) -> list[int]:
        return [self.num_ramp_steps, self.final_num_steps]


TML_SCHEDULE_FIELDS = ("constant", "linear_ramp_to_cosine", "linear_ramp_to_constant", "piecewise_constant")
"""TML's four kinds, in TML's order."""

SCHEDULE_FIELDS = (
    *TML_SCHEDULE_FIELDS,
    "linear",
    "warmup_stable_decay",
    "exponential_decay",
    "multi_step",
    "cosine_restarts",
    "one_cycle",
    "inverse_sqrt",
    "sequence",
)
"""Every kind of schedule, by its ``LearningRate`` field: TML's four first."""


class LearningRate(BaseConfig):
    """A learning-rate schedule: exactly one of its fields is set.

    Attributes:
        constant: a constant learning rate.
        linear_ramp_to_cosine: see :class:`LinearRampToCosine`.
        linear_ramp_to_constant: see :class:`LinearRampToConstant`.
        piecewise_constant: see :class:`PiecewiseConstant`.
        linear: see :class:`~functional_opt.schedule_config_common.Linear`.
        warmup_stable_decay: see :class:`~functional_opt.schedule_config_common.WarmupStableDecay`.
        exponential_decay: see :class:`~functional_opt.schedule_config_common.ExponentialDecay`.
        multi_step: see :class:`~functional_opt.schedule_config_common.MultiStep`.
        cosine_restarts: see :class:`~functional_opt.schedule_config_common.CosineRestarts`.
        one_cycle: see :class:`~functional_opt.schedule_config_common.OneCycle`.
        inverse_sqrt: see :class:`~functional_opt.schedule_config_common.InverseSqrt`.
        sequence: schedules one after the other (see :class:`Segment`).
    """

    constant: Number | None = Field(None)
    linear_ramp_to_cosine: LinearRampToCosine | None = Field(None)
    linear_ramp_to_constant: LinearRampToConstant | None = Field(None)
    piecewise_constant: PiecewiseConstant | None = Field(None)
    linear: Linear | None = Field(None)
    warmup_stable_decay: WarmupStableDecay | None = Field(None)
    exponential_decay: ExponentialDecay | None = Field(None)
    multi_step: MultiStep | None = Field(None)
    cosine_restarts: CosineRestarts | None = Field(None)
    one_cycle: OneCycle | None = Field(None)
    inverse_sqrt: InverseSqrt | None = Field(None)
    sequence: list[Segment] | None = Field(None)

    @field_validator("constant")
    @classmethod
    def _constant(cls, value: float | None) -> float | None:
        return None if value is None else _check_learning_rate(value, "constant")

    @field_validator("sequence")
    @classmethod
    def _segments(cls, value: list[Segment] | None) -> list[Segment] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("sequence: at least one segment is needed")
        for i, segment in enumerate(value[:-1]):
            if segment.num_steps is None:
                raise ValueError(f"sequence[{i}]: num_steps is required on every segment but the last")
        if value[-1].num_steps is not None:
            raise ValueError(
                f"sequence[{len(value) - 1}]: the last segment runs for ever: it takes no num_steps "
                f"(got {value[-1].num_steps})"
            )
        if sum(segment.num_steps or 0 for segment in value) > MAX_STEP:
            raise ValueError("sequence: the segments' num_steps must add up to at most 2**63 - 1")
        depth = 1 + max(segment.learning_rate.sequence_depth for segment in value)
        if depth > MAX_SEQUENCE_DEPTH:
            raise ValueError(f"sequence: sequences nest {depth} deep, at most {MAX_SEQUENCE_DEPTH} are allowed")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> LearningRate:
        self._one_of("lr", SCHEDULE_FIELDS)
        return self

    @model_serializer(mode="wrap")
    def _tml_shape(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A dump holds TML's four keys and only the other kinds that are set: it loads in TML, and records
        # saved before those kinds existed compare equal.
        data = handler(self)
        for name in SCHEDULE_FIELDS[len(TML_SCHEDULE_FIELDS) :]:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @property
    def schedule_name(self) -> str:
        """The name of the schedule that is set, e.g. ``"linear_ramp_to_cosine"``."""
        return next(f for f in SCHEDULE_FIELDS if getattr(self, f) is not None)

    @property
    def sequence_depth(self) -> int:
        """How many ``sequence`` levels this schedule holds (0 for any other kind)."""
        if self.sequence is None:
            return 0
        return 1 + max(segment.learning_rate.sequence_depth for segment in self.sequence)

    @property
    def breakpoints(self) -> list[int]:
        """The steps where the schedule changes shape: ramp ends, decay ends, boundaries, segment starts.

        A ``cosine_restarts`` schedule lists its first four restarts; a
        ``sequence`` its segment starts and, shifted, the breakpoints of each
        segment that fall inside it.

        Example:
            >>> LearningRate(linear_ramp_to_cosine=dict(
            ...     learning_rate=1, final_learning_rate=0, num_ramp_steps=10, final_num_steps=50)).breakpoints
            [10, 50]
        """
        if self.constant is not None:
            return []
        if self.sequence is None:
            return list(getattr(self, self.schedule_name).breakpoints)
        points: set[int] = set()
        start = 0
        for segment in self.sequence:
            end = None if segment.num_steps is None else start + segment.num_steps
            if start > 0:
                points.add(start)
            shift = start - segment.from_step
            points.update(
                b + shift
                for b in segment.learning_rate.breakpoints
                if b >= segment.from_step and (end is None or b + shift < end)
            )
            start = end if end is not None else start
        return sorted(p for p in points if p <= MAX_STEP)


class Segment(BaseConfig):
    """One segment of a ``sequence``: a schedule run from its own step ``from_step`` for ``num_steps`` steps.

    The segments run one after the other; segment ``i`` starts at ``start_i``
    (the sum of the earlier ``num_steps``) and gives
    ``learning_rate(s - start_i + from_step)``. Every segment but the last has
    ``num_steps``; the last runs for ever (optax ``join_schedules``).

    Attributes:
        learning_rate: the segment's schedule (any kind; sequences nest).
        num_steps: how many steps the segment lasts (none on the last segment).
        from_step: the step of its own schedule the segment starts at (default 0).
    """

    learning_rate: LearningRate
    num_steps: PositiveInteger | None = None
    from_step: NonNegativeInteger = 0


LearningRate.model_rebuild()
