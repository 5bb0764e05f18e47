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

With ``tensor_lr=True`` the group's ``"lr"`` is a 0-dim float64 tensor (on the
parameters' device) that the scheduler updates in place, so a ``torch.compile``'d
``optimizer.step`` sees a new value every step without recompiling. Adam is then
``Adam(fused=True)`` wherever torch has a fused kernel for the parameters (else
the single-tensor implementation): torch.compile calls the fused kernel as it
is, whereas the Adam it traces (torch 2.13) divides by the learning rate and
writes NaN into every element whose gradient has been zero so far when the
rate is exactly 0 (pytorch/pytorch#126514), which is where every linear ramp
starts. SGD and Adagrad keep torch's default implementation.

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

from collections.abc import Iterable
from typing import Any

import torch

from functional_opt import config as config_lib
from functional_opt import schedules as schedules_lib
from functional_opt.config import learning_rate_of
from torch_bridge.schedulers import LRShim
from torch_bridge.state_checks import guard_load_state_dict
from torch_bridge.workarounds import initialise_state

__all__ = ["ALL_PARAMS", "build_optimizer", "can_fuse_adam", "initial_lr", "learning_rate_of", "make_torch_optimizer"]

ALL_PARAMS = "ALL_PARAMS"

# The per-parameter state of each torch algorithm (what a loaded state may hold).
STATE_ENTRIES = {
    "adam": ("step", "exp_avg", "exp_avg_sq"),
    "sgd": ("momentum_buffer",),
    "adagrad": ("step", "sum"),
}

# Device types on which torch.optim.Adam(fused=True) runs.
_FUSED_ADAM_DEVICES = ("cpu", "cuda")


def can_fuse_adam(params: Iterable[torch.Tensor]) -> bool:
    """Whether ``torch.optim.Adam(fused=True)`` accepts these parameters.

    Example:
        >>> can_fuse_adam([torch.zeros(2)]), can_fuse_adam([torch.zeros(2, dtype=torch.int64)])
        (True, False)
    """
    tensors = list(params)
    if not tensors or not all(type(p) in (torch.Tensor, torch.nn.Parameter) for p in tensors):
        return False
    devices = {p.device.type for p in tensors}
    return len(devices) == 1 and devices <= set(_FUSED_ADAM_DEVICES) and all(p.is_floating_point() for p in tensors)


def initial_lr(
    learning_rate: config_lib.LearningRate,
    params: list[torch.Tensor],
    tensor_lr: bool,
    value: float | None = None,
) -> float | torch.Tensor:
    """A param group's starting ``"lr"``: the schedule's value at step 0, a float or a 0-dim tensor.

    The tensor is float64 (the scheduler's values are float64) and lies on the
    device of ``params[0]``, where a compiled or CUDA-graph-captured step reads it.
    ``value``, when given, is that step-0 value already computed (builders
    compute every group's in one evaluation).

    Example:
        >>> from functional_opt import config
        >>> initial_lr(config.LearningRate(constant=0.5), [torch.zeros(1)], tensor_lr=True)
        tensor(0.5000, dtype=torch.float64)
    """
    if value is None:
        value = schedules_lib.compute_lr(learning_rate, 0)
    if not tensor_lr:
        return value
    device = params[0].device if params else torch.device("cpu")
    return torch.tensor(value, dtype=torch.float64, device=device)


def make_torch_optimizer(
    groups: list[dict[str, Any]], optimizer_config: config_lib.OptimizerConfig, *, tensor_lr: bool = False
) -> torch.optim.Optimizer:
    """The torch optimizer of ``optimizer_config``'s algorithm over ``groups`` (see the module docstring).

    Example:
        >>> from functional_opt import config
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> type(make_torch_optimizer([{"params": [w], "lr": 0.1}], config.OptimizerConfig(sgd={"lr": 0.1}))).__name__
        'SGD'
    """
    algorithm = config_lib.get_optimizer_algorithm_config(optimizer_config)
    params = [p for g in groups for p in g["params"]]
    if isinstance(algorithm, config_lib.AdamConfig):
        options: dict[str, Any] = {}
        if tensor_lr:
            # See the module docstring; torch's multi-tensor Adam rejects a tensor lr unless capturable.
            options = {"fused": True} if can_fuse_adam(params) else {"foreach": False}
        return torch.optim.Adam(groups, betas=algorithm.betas, eps=algorithm.eps, **options)
    if isinstance(algorithm, config_lib.SgdConfig):
        return torch.optim.SGD(groups, momentum=algorithm.momentum, dampening=0.0)
    if isinstance(algorithm, config_lib.AdagradConfig):
        return torch.optim.Adagrad(
            groups,
            eps=algorithm.eps,
            lr_decay=algorithm.lr_decay,
            initial_accumulator_value=algorithm.initial_accumulator_value,
        )
    raise ValueError(
        f"{optimizer_config.algorithm_name} is an embedding-table algorithm; a dense optimizer is "
        "adam, sgd or adagrad"
    )


def build_optimizer(
    model: torch.nn.Module, optimizer_config: config_lib.OptimizerConfig, *, tensor_lr: bool = False
) -> tuple[torch.optim.Optimizer, LRShim]:
    """Builds the optimizer of ``optimizer_config`` over ``model.parameters()`` and its scheduler.

    Args:
        model: the model (every parameter joins the single group).
        optimizer_config: the algorithm, its hyper-parameters and the schedule.
        tensor_lr: hold the learning rate in a 0-dim tensor updated in place
            (for ``torch.compile`` and CUDA graphs; see the module docstring).

    Returns:
        ``(optimizer, scheduler)``; the group starts at ``schedule(0)`` and the
        k-th ``optimizer.step()`` uses ``schedule(k)`` when ``scheduler.step()``
        follows each ``optimizer.step()``.

    Raises:
        TypeError: ``optimizer_config`` is not an ``OptimizerConfig`` or ``model`` not a module.
        ValueError: the model has no parameters.

    The optimizer's ``load_state_dict`` refuses a state of another algorithm,
    group layout or parameter shape before changing anything
    (:func:`torch_bridge.state_checks.guard_load_state_dict`).
    """
    if not isinstance(optimizer_config, config_lib.OptimizerConfig):
        raise TypeError(f"build_optimizer: expected an OptimizerConfig, got {type(optimizer_config).__name__}")
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"build_optimizer: model must be a torch.nn.Module, got {type(model).__name__}")
    params = list(model.parameters())
    if not params:
        raise ValueError(f"build_optimizer: {type(model).__name__} has no parameters")
    learning_rate = learning_rate_of(optimizer_config)
    group = {"params": params, "lr": initial_lr(learning_rate, params, tensor_lr), "name": ALL_PARAMS}
    entries = STATE_ENTRIES[optimizer_config.algorithm_name]
    optimizer = make_torch_optimizer([group], optimizer_config, tensor_lr=tensor_lr)
    # A fresh optimizer holds the state of a started one, so DCP's in-place load fills it (see workarounds).
    initialise_state(optimizer)
    guard_load_state_dict(optimizer, entries)
    return optimizer, LRShim(optimizer, {ALL_PARAMS: learning_rate})
