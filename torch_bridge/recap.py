"""``build_recap_optimizer``: TML's recap optimizer for torch/torchrec, on the shared grouping rule.

The parameters are split by :func:`functional_opt.grouping.recap_groups` (the
one grouping rule, also used by the optax builder): one group per tower,
``backbone`` (or ``single_task``) and ``dense_ebc``. Parameters that a fused
in-backward optimizer already updates (torchrec's FUSED embedding kernel under
``DistributedModelParallel``, or ``apply_optimizer_in_backward``) are left out,
as torchrec's ``in_backward_optimizer_filter`` does.

The returned ``CombinedOptimizer`` holds, in this order:

1. one ``KeyedOptimizerWrapper`` over every Adam parameter, wrapping ONE
   ``torch.optim.Adam`` (``fused=True`` when all parameters are floating point on
   CPU or CUDA) with one param group per tower / ``backbone``, in group order.
   TML builds one wrapped Adam per group; a single fused Adam does the same
   update per group several times faster;
2. a ``KeyedOptimizerWrapper`` over ``torch.optim.SGD`` (no momentum) for
   ``dense_ebc``, the rule of the fused embedding optimizer;
3. the model's ``fused_optimizer`` (DMP), last.

With ``tensor_lr=True`` every dense group's ``"lr"`` is a 0-dim float64 tensor
that the scheduler updates in place, so a ``torch.compile``'d ``optimizer.step``
sees a new value every step without recompiling (see
:func:`torch_bridge.optimizers.build_optimizer` for why the Adam stays fused).

Its ``state_dict`` is torchrec's keyed one: parameter names as keys (plus the
param groups' names, see :class:`torch_bridge.keyed.RecapOptimizer`, which
refuses a state of another config whole, before copying anything). Every
param group carries its group name under ``"name"`` and starts at its
schedule's value at step 0 (TML's placeholder 24601.0 never exists). The
:class:`~torch_bridge.recap_scheduler.RecapLRShim` drives the dense groups from their
schedules and every fused embedding group from
``emb_optimizer_config.learning_rate``.

Example:
    >>> import torch
    >>> from functional_opt import config
    >>> from torch_bridge import build_recap_optimizer
    >>> model = torch.nn.Module()
    >>> model.towers = torch.nn.ModuleDict({"recap__is_clicked": torch.nn.Linear(2, 1)})
    >>> model.backbone = torch.nn.Linear(2, 2)
    >>> cfg = config.RecapOptimizerConfig(adam={}, multi_task_learning_rates={
    ...     "tower_learning_rates": {"recap.is_clicked": {"constant": 0.1}},
    ...     "backbone_learning_rate": {"constant": 0.01}})
    >>> opt, sched = build_recap_optimizer(model, cfg)
    >>> [(g["name"], g["lr"]) for g in opt.param_groups]
    [('recap.is_clicked', 0.1), ('backbone', 0.01)]
    >>> sorted(opt.params)
    ['backbone.bias', 'backbone.weight', 'towers.recap__is_clicked.bias', 'towers.recap__is_clicked.weight']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from functional_opt import config as config_lib
from functional_opt import grouping, schedule_plan
from functional_opt.config_file import EMBEDDINGS
from torch_bridge.flat_adam import FlatAdam
from torch_bridge.flat_buffers import unviewable
from torch_bridge.keyed import RecapOptimizer
from torch_bridge.optimizers import can_fuse_adam, initial_lr
from torch_bridge.recap_scheduler import RecapLRShim
from torch_bridge.schedulers import LRShim
from torch_bridge.tables import TablesLike, check_in_backward, fused_optimizer_of, sharded_tables, table_parts
from torch_bridge.workarounds import fused_leaves

if TYPE_CHECKING:
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizer

__all__ = ["build_recap_optimizer"]


def build_recap_optimizer(
    model: torch.nn.Module,
    recap_config: config_lib.RecapOptimizerConfig,
    emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None = None,
    *,
    tensor_lr: bool = False,
    tables: TablesLike | None = None,
    flat: bool = False,
) -> tuple[CombinedOptimizer, LRShim]:
    """Builds TML's recap optimizer and its scheduler.

    Args:
        model: the model, possibly a ``DistributedModelParallel`` whose
            ``fused_optimizer`` updates sharded embedding tables in backward.
        recap_config: per-tower / backbone (or single-task) schedules and Adam's
            hyper-parameters.
        emb_optimizer_config: the embedding schedule: drives ``dense_ebc`` and the
            fused embedding optimizer.
        tensor_lr: hold the dense groups' learning rates in 0-dim tensors updated
            in place (for ``torch.compile``; see the module docstring).
        tables: every embedding table with its own optimizer and schedule, in place
            of ``emb_optimizer_config``: each fused kernel and each unfused table
            gets a param group named after its tables, driven by their schedule
            (see :func:`torch_bridge.tables.build_embedding_optimizer`; apply
            :func:`torch_bridge.apply_table_optimizers` before sharding).
        flat: step the Adam groups as one :class:`~torch_bridge.flat_adam.FlatAdam`
            (the towers' and backbone's parameters become views of one buffer per
            dtype; one pass per step instead of torch's cost per group). Its param
            groups and state are ``Adam(fused=True)``'s, so checkpoints load either way.

    Returns:
        ``(optimizer, scheduler)``: a torchrec ``CombinedOptimizer`` (see the module
        docstring for its parts) and a :class:`~torch_bridge.recap_scheduler.RecapLRShim`
        (with ``tables``: an :class:`~torch_bridge.schedulers.LRShim` over every group).

    Raises:
        ValueError: a tower matches no parameter, a parameter matches two towers,
            learning rates are missing or extra for some groups (all named), the
            model has a fused embedding optimizer but no embedding learning rate,
            or in-backward parameters that no fused optimizer exposes, or (with
            ``flat``) Adam parameters that cannot become views of one buffer (named).
        TypeError: a config of the wrong type.
    """
    if not isinstance(recap_config, config_lib.RecapOptimizerConfig):
        raise TypeError(f"build_recap_optimizer: expected a RecapOptimizerConfig, got {type(recap_config).__name__}")
    if emb_optimizer_config is not None and not isinstance(emb_optimizer_config, config_lib.EmbeddingOptimizerConfig):
        raise TypeError(
            "build_recap_optimizer: emb_optimizer_config must be an EmbeddingOptimizerConfig or None, "
            f"got {type(emb_optimizer_config).__name__}"
        )

    if tables is not None and emb_optimizer_config is not None:
        raise ValueError(
            "build_recap_optimizer: give the tables' optimizers either as emb_optimizer_config (one for all) "
            "or as tables (one each), not both"
        )

    every = list(model.named_parameters())
    named = dict(in_backward_optimizer_filter(every, include=False))
    in_backward = [n for n, p in in_backward_optimizer_filter(every, include=True) if p.numel()]
    fused = fused_optimizer_of(model)
    check_in_backward("build_recap_optimizer", in_backward, fused)
    parts = (
        None if tables is None else table_parts("build_recap_optimizer", named, fused, tables, sharded_tables(model))
    )
    emb_learning_rate = _embedding_learning_rate(fused, emb_optimizer_config) if parts is None else None
    dense_names = [n for n in named if parts is None or n not in parts.param_names]

    groups = grouping.recap_groups(dense_names, recap_config, emb_optimizer_config)
    # Every group's step-0 rate in one evaluation as data.
    values = schedule_plan.evaluate([g.learning_rate for g in groups], np.zeros(1, dtype=np.int64))[0]
    starts = {g.name: float(v) for g, v in zip(groups, values, strict=True)}
    optimizers: list[KeyedOptimizer] = []
    adam_groups = [g for g in groups if g.algorithm == "adam"]
    if adam_groups:
        adam_params = {n: named[n] for g in adam_groups for n in g.param_names}
        adam_param_groups = [_torch_group(g, named, tensor_lr, starts[g.name]) for g in adam_groups]
        adam = recap_config.adam
        use_fused = can_fuse_adam(adam_params.values())
        if flat:
            _check_flat(adam_params)

        def make_adam(_: Any) -> torch.optim.Optimizer:
            if flat:
                return FlatAdam(adam_param_groups, betas=(adam.beta_1, adam.beta_2), eps=adam.epsilon)
            return torch.optim.Adam(
                adam_param_groups,
                betas=(adam.beta_1, adam.beta_2),
                eps=adam.epsilon,
                maximize=False,
                fused=use_fused or None,
                # torch's multi-tensor Adam rejects a tensor lr unless capturable.
                foreach=False if tensor_lr and not use_fused else None,
            )

        optimizers.append(KeyedOptimizerWrapper(adam_params, make_adam))
    for group in (g for g in groups if g.algorithm == "sgd"):
        sgd_params = {n: named[n] for n in group.param_names}
        sgd_param_groups = [_torch_group(group, named, tensor_lr, starts[group.name])]

        def make_sgd(_: Any, param_groups: list[dict[str, Any]] = sgd_param_groups) -> torch.optim.Optimizer:
            return torch.optim.SGD(param_groups, momentum=0.0, dampening=0.0, maximize=False)

        optimizers.append(KeyedOptimizerWrapper(sgd_params, make_sgd))
    lr_dict = {g.name: g.learning_rate for g in groups}
    if parts is not None:
        clash = [name for name in parts.learning_rates if name in lr_dict]
        if clash:
            raise ValueError(f"build_recap_optimizer: tables {clash} are named like a tower or backbone; rename them")
        optimizers += parts.optimizers
        lr_dict.update(parts.learning_rates)
    elif fused is not None:
        _name_fused_groups(fused)
        optimizers.append(fused)
    if not optimizers:
        raise ValueError(f"build_recap_optimizer: {type(model).__name__} has no parameters to optimize")

    optimizer = RecapOptimizer(optimizers)
    if parts is not None:
        parts.name_fused_groups()
        return optimizer, LRShim(optimizer, lr_dict)
    return optimizer, RecapLRShim(optimizer, lr_dict, emb_learning_rate)


def _torch_group(
    group: grouping.ParamGroup, named: Mapping[str, torch.Tensor], tensor_lr: bool, start: float
) -> dict[str, Any]:
    """A torch param group for ``group``, named and at its schedule's step-0 value ``start`` (a float or a tensor)."""
    params = [named[n] for n in group.param_names]
    return {"params": params, "lr": initial_lr(group.learning_rate, params, tensor_lr, start), "name": group.name}


def _check_flat(named: Mapping[str, torch.Tensor]) -> None:
    """Refuses, naming them, the Adam parameters that cannot become views of one buffer."""
    names = list(named)
    problems = unviewable(list(named.values()))
    if problems:
        listed = "; ".join(f"{names[i]}: {why}" for i, why in problems)
        raise ValueError(
            f"build_recap_optimizer(flat=True): these parameters cannot become views of one buffer: {listed}; "
            "build without flat=True"
        )


def _name_fused_groups(fused: KeyedOptimizer) -> None:
    """Names the fused embedding groups ``"embeddings"`` (``"embeddings.<i>"`` when there are several).

    torchrec leaves them unnamed; a name lets loggers (Lightning's
    ``LearningRateMonitor``, :meth:`LRShim.learning_rates`) tell them apart.
    """
    groups = [g for leaf in fused_leaves(fused) for g in leaf.param_groups]
    for i, group in enumerate(groups):
        group.setdefault("name", EMBEDDINGS if len(groups) == 1 else f"{EMBEDDINGS}.{i}")


def _embedding_learning_rate(
    fused: KeyedOptimizer | None, emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None
) -> config_lib.LearningRate | None:
    if fused is None:
        return None
    if emb_optimizer_config is None or emb_optimizer_config.learning_rate is None:
        raise ValueError(
            f"build_recap_optimizer: the model has a fused embedding optimizer (tables {sorted(fused.params)}) "
            "but no embedding learning rate: set emb_optimizer_config.learning_rate"
        )
    return emb_optimizer_config.learning_rate
