"""``build_optimizer``: the torch optimizer an :class:`~functional_opt.config.OptimizerConfig` selects.

TML's generic builder passes ``optimizer_config.sgd.dict()`` whatever algorithm
was chosen; here each algorithm gets its own hyper-parameters:

* ``adam``: ``torch.optim.Adam(betas=betas, eps=eps)``;
* ``sgd``: ``torch.optim.SGD(momentum=momentum, dampening=0)``;
* ``adagrad``: ``torch.optim.Adagrad(eps=eps, lr_decay=lr_decay,
  initial_accumulator_value=initial_accumulator_value)``.

The optimizer holds one param group, named ``"ALL_PARAMS"`` as in TML, whose
learning rate is ``config.learning_rate`` or, when that is null, the constant
``<algorithm>.lr``. It is created with the schedule's value at step 0 and
driven by an :class:`~torch_bridge.schedulers.LRShim`.

Example:
    >>> import torch
    >>> from functional_opt import config
    >>> from torch_bridge import build_optimizer
    >>> cfg = config.OptimizerConfig(adagrad={"lr": 0.1, "lr_decay": 0.01})
    >>> opt, sched = build_optimizer(torch.nn.Linear(2, 1), cfg)
    >>> type(opt).__name__, opt.param_groups[0]["lr"], opt.param_groups[0]["lr_decay"]
    ('Adagrad', 0.1, 0.01)
"""

from __future__ import annotations

import torch

from functional_opt import config as config_lib
from functional_opt import schedules as schedules_lib
from torch_bridge.schedulers import LRShim

__all__ = ["ALL_PARAMS", "build_optimizer", "learning_rate_of"]

ALL_PARAMS = "ALL_PARAMS"


def learning_rate_of(optimizer_config: config_lib.OptimizerConfig) -> config_lib.LearningRate:
    """The schedule of ``optimizer_config``: its ``learning_rate``, or ``constant(<algorithm>.lr)`` when null.

    Example:
        >>> from functional_opt import config
        >>> learning_rate_of(config.OptimizerConfig(sgd={"lr": 0.3})).constant
        0.3
    """
    if optimizer_config.learning_rate is not None:
        return optimizer_config.learning_rate
    algorithm = config_lib.get_optimizer_algorithm_config(optimizer_config)
    return config_lib.LearningRate(constant=algorithm.lr)


def build_optimizer(
    model: torch.nn.Module, optimizer_config: config_lib.OptimizerConfig
) -> tuple[torch.optim.Optimizer, LRShim]:
    """Builds the optimizer of ``optimizer_config`` over ``model.parameters()`` and its scheduler.

    Args:
        model: the model (every parameter joins the single group).
        optimizer_config: the algorithm, its hyper-parameters and the schedule.

    Returns:
        ``(optimizer, scheduler)``; the group starts at ``schedule(0)`` and the
        k-th ``optimizer.step()`` uses ``schedule(k)`` when ``scheduler.step()``
        follows each ``optimizer.step()``.

    Raises:
        TypeError: ``optimizer_config`` is not an ``OptimizerConfig`` or ``model`` not a module.
        ValueError: the model has no parameters.
    """
    if not isinstance(optimizer_config, config_lib.OptimizerConfig):
        raise TypeError(f"build_optimizer: expected an OptimizerConfig, got {type(optimizer_config).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_optimizer: model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    if not params:
        raise ValueError(f"build_optimizer: {type(model).__name__} has no parameters")
    learning_rate = learning_rate_of(optimizer_config)
    group = {"params": params, "lr": schedules_lib.compute_lr(learning_rate, 0), "name": ALL_PARAMS}
    algorithm = config_lib.get_optimizer_algorithm_config(optimizer_config)
    optimizer: torch.optim.Optimizer
    if isinstance(algorithm, config_lib.AdamConfig):
        optimizer = torch.optim.Adam([group], betas=algorithm.betas, eps=algorithm.eps)
    elif isinstance(algorithm, config_lib.SgdConfig):
        optimizer = torch.optim.SGD([group], momentum=algorithm.momentum, dampening=0.0)
    else:
        optimizer = torch.optim.Adagrad(
            [group],
            eps=algorithm.eps,
            lr_decay=algorithm.lr_decay,
            initial_accumulator_value=algorithm.initial_accumulator_value,
        )
    return optimizer, LRShim(optimizer, {ALL_PARAMS: learning_rate})
