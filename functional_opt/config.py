"""Optimizer configuration schema, field-for-field compatible with TML's.

The models mirror ``tml.optimizers.config`` and
``tml.projects.home.recap.optimizer.config`` so that an existing TML YAML
section (including its explicit ``null`` entries for the schedules that are
not used) loads unchanged. On top of TML's schema every model:

* rejects unknown keys (``extra="forbid"``);
* enforces its "exactly one of" groups (one schedule per ``LearningRate``,
  one algorithm per ``OptimizerConfig``, one of multi-task / single-task LR);
* checks the values a schedule or an optimizer needs to be well defined:
  piecewise lengths agree, boundaries strictly increase and are non-negative,
  ``final_num_steps > num_ramp_steps``, learning rates are finite,
  non-negative and representable in float32, betas lie in ``[0, 1)`` and
  ``eps >= 0``.

Every error is a :class:`pydantic.ValidationError` whose message names the
field and the value received.

Example:
    >>> from functional_opt import config
    >>> lr = config.LearningRate(
    ...     linear_ramp_to_cosine=dict(
    ...         learning_rate=0.1, final_learning_rate=0.01,
    ...         num_ramp_steps=10, final_num_steps=100))
    >>> lr.schedule_name
    'linear_ramp_to_cosine'
"""

from __future__ import annotations

import math
import os
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from functional_opt import yaml_loading
from functional_opt.config_values import (
    MAX_STEP,
    RESERVED_GROUP_NAMES,
    Integer,
    Number,
    PositiveInteger,
    _check_beta,
    _check_eps,
    _check_group_name,
    _check_learning_rate,
)

__all__ = [
    "MAX_STEP",
    "RESERVED_GROUP_NAMES",
    "AdagradConfig",
    "AdamConfig",
    "BaseConfig",
    "EmbeddingOptimizerConfig",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "MultiTaskLearningRates",
    "OptimizerConfig",
    "PiecewiseConstant",
    "RecapAdamConfig",
    "RecapOptimizerConfig",
    "SgdConfig",
    "get_optimizer_algorithm_config",
    "load_config_from_yaml",
]

ConfigT = TypeVar("ConfigT", bound="BaseConfig")


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


class OptimizerAlgorithmConfig(BaseConfig):
    """Base of the per-algorithm configs: ``lr`` is the optimizer's initial learning rate."""

    lr: Number

    @field_validator("lr")
    @classmethod
    def _lr(cls, value: float) -> float:
        return _check_learning_rate(value, "lr")


class AdamConfig(OptimizerAlgorithmConfig):
    """torch.optim.Adam hyper-parameters (TML defaults: betas (0.9, 0.999), eps 1e-7)."""

    lr: Number
    betas: tuple[Number, Number] = (0.9, 0.999)
    eps: Number = 1e-7

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        return (_check_beta(value[0], "betas[0]"), _check_beta(value[1], "betas[1]"))

    @field_validator("eps")
    @classmethod
    def _eps(cls, value: float) -> float:
        return _check_eps(value, "eps")


class SgdConfig(OptimizerAlgorithmConfig):
    """torch.optim.SGD hyper-parameters (dampening 0, no Nesterov)."""

    lr: Number
    momentum: Number = 0.0

    @field_validator("momentum")
    @classmethod
    def _momentum(cls, value: float) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"momentum={value!r} must be a finite number >= 0")
        return float(value)


class AdagradConfig(OptimizerAlgorithmConfig):
    """torch.optim.Adagrad hyper-parameters.

    ``lr_decay`` and ``initial_accumulator_value`` are torch's own arguments
    (TML's config does not list them; both default to 0 as in torch). ``eps``
    defaults to torch's 1e-10, not TML's 0: with ``eps=0`` a parameter entry that
    has never received a gradient is updated by ``0 / sqrt(0)``, i.e. NaN.
    """

    lr: Number
    eps: Number = 1e-10
    lr_decay: Number = 0.0
    initial_accumulator_value: Number = 0.0

    @field_validator("eps", "lr_decay", "initial_accumulator_value")
    @classmethod
    def _non_negative(cls, value: float, info: pydantic.ValidationInfo) -> float:
        return _check_eps(value, str(info.field_name))


ALGORITHM_FIELDS = ("adam", "sgd", "adagrad")


class OptimizerConfig(BaseConfig):
    """Generic optimizer: one algorithm and one schedule for every parameter.

    Attributes:
        learning_rate: the schedule; when null the algorithm's ``lr`` is used as a constant.
        adam: see :class:`AdamConfig`.
        sgd: see :class:`SgdConfig`.
        adagrad: see :class:`AdagradConfig`.
    """

    learning_rate: LearningRate | None = Field(None, description="Constant learning rates")
    adam: AdamConfig | None = Field(None)
    sgd: SgdConfig | None = Field(None)
    adagrad: AdagradConfig | None = Field(None)

    @model_validator(mode="after")
    def _exactly_one(self) -> OptimizerConfig:
        self._one_of("optimizer", ALGORITHM_FIELDS)
        return self

    @property
    def algorithm_name(self) -> str:
        """``"adam"``, ``"sgd"`` or ``"adagrad"``."""
        return next(f for f in ALGORITHM_FIELDS if getattr(self, f) is not None)


def get_optimizer_algorithm_config(
    optimizer_config: OptimizerConfig,
) -> AdamConfig | SgdConfig | AdagradConfig:
    """Returns the algorithm config (adam, sgd or adagrad) that ``optimizer_config`` selects."""
    return getattr(optimizer_config, optimizer_config.algorithm_name)


class RecapAdamConfig(BaseConfig):
    """Adam for the recap optimizer (TML defaults: 0.9, 0.999, 1e-7)."""

    beta_1: Number = 0.9
    beta_2: Number = 0.999
    epsilon: Number = 1e-7

    @field_validator("beta_1", "beta_2")
    @classmethod
    def _beta(cls, value: float, info: pydantic.ValidationInfo) -> float:
        return _check_beta(value, str(info.field_name))

    @field_validator("epsilon")
    @classmethod
    def _eps(cls, value: float) -> float:
        return _check_eps(value, "epsilon")


class MultiTaskLearningRates(BaseConfig):
    """Per-tower schedules plus an optional backbone schedule.

    Attributes:
        tower_learning_rates: tower name -> schedule; must not be empty.
        backbone_learning_rate: schedule of the parameters that match no tower.
    """

    tower_learning_rates: dict[str, LearningRate] = Field(
        description="Learning rates for different towers of the model."
    )
    backbone_learning_rate: LearningRate | None = Field(None, description="Learning rate for backbone of the model.")

    @field_validator("tower_learning_rates")
    @classmethod
    def _non_empty(cls, value: dict[str, LearningRate]) -> dict[str, LearningRate]:
        if not value:
            raise ValueError("tower_learning_rates={} must name at least one tower")
        for name in value:
            problem = _check_group_name(name)
            if problem is not None:
                raise ValueError(problem)
        return value


class RecapOptimizerConfig(BaseConfig):
    """The recap (multi-task) optimizer: Adam with per-group schedules.

    Attributes:
        multi_task_learning_rates: per-tower and backbone schedules.
        single_task_learning_rate: one schedule for every dense parameter.
        adam: the Adam hyper-parameters.
    """

    multi_task_learning_rates: MultiTaskLearningRates | None = Field(
        None, description="Multiple learning rates for different tasks."
    )
    single_task_learning_rate: LearningRate | None = Field(None, description="Single task learning rates")
    adam: RecapAdamConfig

    @model_validator(mode="after")
    def _exactly_one(self) -> RecapOptimizerConfig:
        self._one_of("lr", ("multi_task_learning_rates", "single_task_learning_rate"))
        return self


class EmbeddingOptimizerConfig(BaseConfig):
    """The (fused) embedding optimizer: plain SGD driven by ``learning_rate``.

    Attributes:
        learning_rate: schedule of the embedding tables (fused and ``dense_ebc``).
        init_learning_rate: the LR the embedding tables are created with (TML's field).
    """

    learning_rate: LearningRate | None = Field(None, description="learning rate scheduler for the EBC")
    init_learning_rate: Number | None = Field(None, description="initial learning rate for the EBC")

    @field_validator("init_learning_rate")
    @classmethod
    def _init_lr(cls, value: float | None) -> float | None:
        return None if value is None else _check_learning_rate(value, "init_learning_rate")


def load_config_from_yaml(config_type: type[ConfigT], yaml_path: str | os.PathLike[str]) -> ConfigT:
    """Loads ``config_type`` from a YAML file, substituting ``$VARS`` from the environment.

    The file is read by :func:`functional_opt.yaml_loading.read_yaml_document`:
    plain YAML types only (no Python tags), libyaml's parser when installed,
    duplicate keys, alias bombs, over-deep nesting, binary data and files over
    its size cap refused, and ``$VAR`` / ``${VAR}`` substituted in string values
    only (never in the raw text, so a variable cannot add structure).

    Args:
        config_type: the model to validate against, e.g. :class:`OptimizerConfig`.
        yaml_path: path of the YAML file.

    Returns:
        The validated config.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read or parsed, or is not a mapping (the message names the file).
        pydantic.ValidationError: the content does not match ``config_type``; an error about a
            value that came from an environment variable names the variable, not its value.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "opt.yaml")
        >>> _ = open(path, "w").write("adam: {lr: 0.1}\\nlearning_rate: {constant: 0.1}\\n")
        >>> load_config_from_yaml(OptimizerConfig, path).adam.lr
        0.1
    """
    document = yaml_loading.read_yaml_document(yaml_path)
    try:
        return config_type.model_validate(document.data)
    except pydantic.ValidationError as exc:
        raise yaml_loading.hide_substituted_values(exc, document) from None


def read_yaml(yaml_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads a YAML mapping with ``$VAR`` substitution; errors name the file (and line).

    See :func:`functional_opt.yaml_loading.read_yaml_document` for what is checked.
    """
    return yaml_loading.read_yaml_document(yaml_path).data
