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
  ``final_num_steps > num_ramp_steps``, every phase of a schedule lasts a
  step or more, sequences nest at most 8 deep, learning rates are finite,
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
from typing import Any, ClassVar, TypeVar

import pydantic
from pydantic import Field, field_validator, model_validator

from functional_opt import yaml_loading
from functional_opt.config_values import (
    MAX_STEP,
    RESERVED_GROUP_NAMES,
    Number,
    _check_beta,
    _check_eps,
    _check_group_name,
    _check_learning_rate,
)
from functional_opt.schedule_config import (
    SCHEDULE_FIELDS,
    TML_SCHEDULE_FIELDS,
    BaseConfig,
    LearningRate,
    LinearRampToConstant,
    LinearRampToCosine,
    PiecewiseConstant,
    Segment,
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
    "MAX_STEP",
    "RESERVED_GROUP_NAMES",
    "SCHEDULE_FIELDS",
    "TML_SCHEDULE_FIELDS",
    "AdagradConfig",
    "AdamConfig",
    "BaseConfig",
    "CosineRestarts",
    "EmbeddingOptimizerConfig",
    "ExponentialDecay",
    "InverseSqrt",
    "LearningRate",
    "Linear",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "MultiStep",
    "MultiTaskLearningRates",
    "OneCycle",
    "OptimizerConfig",
    "PiecewiseConstant",
    "RecapAdamConfig",
    "RecapOptimizerConfig",
    "Segment",
    "SgdConfig",
    "WarmupStableDecay",
    "get_optimizer_algorithm_config",
    "learning_rate_of",
    "load_config_from_yaml",
]

ConfigT = TypeVar("ConfigT", bound="BaseConfig")


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

    algorithm_fields: ClassVar[tuple[str, ...]] = ALGORITHM_FIELDS
    """The algorithm sections, exactly one of which is set (a subclass may add some)."""

    learning_rate: LearningRate | None = Field(None, description="Constant learning rates")
    adam: AdamConfig | None = Field(None)
    sgd: SgdConfig | None = Field(None)
    adagrad: AdagradConfig | None = Field(None)

    @model_validator(mode="after")
    def _exactly_one(self) -> OptimizerConfig:
        self._one_of("optimizer", self.algorithm_fields)
        return self

    @property
    def algorithm_name(self) -> str:
        """The algorithm section that is set: ``"adam"``, ``"sgd"`` or ``"adagrad"`` (or a subclass's)."""
        return next(f for f in self.algorithm_fields if getattr(self, f) is not None)


def get_optimizer_algorithm_config(
    optimizer_config: OptimizerConfig,
) -> AdamConfig | SgdConfig | AdagradConfig:
    """Returns the algorithm config (adam, sgd or adagrad) that ``optimizer_config`` selects."""
    return getattr(optimizer_config, optimizer_config.algorithm_name)


def learning_rate_of(optimizer_config: OptimizerConfig) -> LearningRate:
    """The schedule of ``optimizer_config``: its ``learning_rate``, or ``constant(<algorithm>.lr)`` when null.

    Example:
        >>> learning_rate_of(OptimizerConfig(sgd={"lr": 0.3})).constant
        0.3
    """
    if optimizer_config.learning_rate is not None:
        return optimizer_config.learning_rate
    return LearningRate(constant=get_optimizer_algorithm_config(optimizer_config).lr)


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
