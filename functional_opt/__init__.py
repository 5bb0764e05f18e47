"""functional-opt: learning-rate schedules and optimizer rules as pure JAX functions.

The same schedules drive optax (``functional_opt.optimizers``) and PyTorch
(``torch_bridge``); TML's optimizer YAML loads unchanged
(``functional_opt.config``).
"""

from functional_opt import config, demo_model, grouping, opt_state, optimizers, recap, schedules, tabulate, torch_rules
from functional_opt.config import (
    AdagradConfig,
    AdamConfig,
    EmbeddingOptimizerConfig,
    LearningRate,
    LinearRampToConstant,
    LinearRampToCosine,
    MultiTaskLearningRates,
    OptimizerConfig,
    PiecewiseConstant,
    RecapAdamConfig,
    RecapOptimizerConfig,
    SgdConfig,
    load_config_from_yaml,
)
from functional_opt.schedules import (
    Schedule,
    compute_lr,
    constant,
    linear_ramp_to_constant,
    linear_ramp_to_cosine,
    piecewise_constant,
    schedule_from_config,
)

__version__ = "0.1.0"

__all__ = [
    "AdagradConfig",
    "AdamConfig",
    "EmbeddingOptimizerConfig",
    "LearningRate",
    "LinearRampToConstant",
    "LinearRampToCosine",
    "MultiTaskLearningRates",
    "OptimizerConfig",
    "PiecewiseConstant",
    "RecapAdamConfig",
    "RecapOptimizerConfig",
    "Schedule",
    "SgdConfig",
    "compute_lr",
    "config",
    "constant",
    "demo_model",
    "grouping",
    "linear_ramp_to_constant",
    "linear_ramp_to_cosine",
    "load_config_from_yaml",
    "opt_state",
    "optimizers",
    "piecewise_constant",
    "recap",
    "schedule_from_config",
    "schedules",
    "tabulate",
    "torch_rules",
]
