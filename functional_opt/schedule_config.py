"""The schedule part of the config schema: ``LearningRate`` and its four kinds, on the shared ``BaseConfig``.

Field for field TML's (``tml.optimizers.config``); :mod:`functional_opt.config`
re-exports every name here, which is where users import them from. Every model
rejects unknown keys, and a ``LearningRate`` holds exactly one schedule.

Example:
    >>> lr = LearningRate(linear_ramp_to_constant={"learning_rate": 0.1, "num_ramp_steps": 10})
    >>> lr.schedule_name, lr.breakpoints
    ('linear_ramp_to_constant', [10])
"""

from __future__ import annotations

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from functional_opt.config_values import (
    Integer,
    Number,
    PositiveInteger,
    _check_learning_rate,
)

__all__ = [
    "SCHEDULE_FIELDS",
    "BaseConfig",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "PiecewiseConstant",
]


class BaseConfig(BaseModel):
    """Base of every config model: unknown keys are rejected, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def _one_of(self, group: str, fields: tuple[str, ...], *, required: bool = True) -> None:
        """Raises ValueError unless exactly one (or at most one) of ``fields`` is set."""
        chosen = [f for f in fields if getattr(self, f) is not None]
        if len(chosen) > 1 or (required and not chosen):
            what = "exactly one" if required else "at most one"
            raise ValueError(
                f"{type(self).__name__}: {what} of {list(fields)} ({group}) must be set, "
                f"got {chosen if chosen else 'none'}"
            )


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


SCHEDULE_FIELDS = ("constant", "linear_ramp_to_cosine", "linear_ramp_to_constant", "piecewise_constant")


class LearningRate(BaseConfig):
    """A learning-rate schedule: exactly one of its four fields is set.

    Attributes:
        constant: a constant learning rate.
        linear_ramp_to_cosine: see :class:`LinearRampToCosine`.
        linear_ramp_to_constant: see :class:`LinearRampToConstant`.
        piecewise_constant: see :class:`PiecewiseConstant`.
    """

    constant: Number | None = Field(None)
    linear_ramp_to_cosine: LinearRampToCosine | None = Field(None)
    linear_ramp_to_constant: LinearRampToConstant | None = Field(None)
    piecewise_constant: PiecewiseConstant | None = Field(None)

    @field_validator("constant")
    @classmethod
    def _constant(cls, value: float | None) -> float | None:
        return None if value is None else _check_learning_rate(value, "constant")

    @model_validator(mode="after")
    def _exactly_one(self) -> LearningRate:
        self._one_of("lr", SCHEDULE_FIELDS)
        return self

    @property
    def schedule_name(self) -> str:
        """The name of the schedule that is set, e.g. ``"linear_ramp_to_cosine"``."""
        return next(f for f in SCHEDULE_FIELDS if getattr(self, f) is not None)

    @property
    def breakpoints(self) -> list[int]:
        """The steps where the schedule changes shape: ramp end, decay end, piecewise boundaries.

        Example:
            >>> LearningRate(linear_ramp_to_cosine=dict(
            ...     learning_rate=1, final_learning_rate=0, num_ramp_steps=10, final_num_steps=50)).breakpoints
            [10, 50]
        """
        if self.linear_ramp_to_cosine is not None:
            return [self.linear_ramp_to_cosine.num_ramp_steps, self.linear_ramp_to_cosine.final_num_steps]
        if self.linear_ramp_to_constant is not None:
            return [self.linear_ramp_to_constant.num_ramp_steps]
        if self.piecewise_constant is not None:
            return list(self.piecewise_constant.learning_rate_boundaries or [])
        return []
