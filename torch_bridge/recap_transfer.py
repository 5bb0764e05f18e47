"""Moving a recap run between torch and JAX: every group's moments, the rows of every table, the step.

The torch side is :func:`torch_bridge.build_recap_optimizer`'s optimizer and
its :class:`~torch_bridge.recap_scheduler.RecapLRShim`; the JAX side is
:func:`functional_opt.optimizers.build_recap_optimizer` for the same configs,
whose state is a :class:`~functional_opt.recap_rules.RecapState`. The groups are
the one grouping rule's on both sides, so the mapping is by parameter name:

* each tower's and the backbone's (or ``single_task``'s) Adam moments:
  torch's ``exp_avg`` / ``exp_avg_sq`` are ``mu[group]`` / ``nu[group]``, in the
  group's parameter order; torch's per-parameter ``step`` is ``count``;
* ``dense_ebc`` (plain SGD) and the tables a fused TBE kernel updates in
  backward (fused SGD): their rows only, each sharded table gathered whole on
  export and written back into every local shard on import
  (:mod:`torch_bridge.transfer_parts`);
* the configs come from the torch side: the scheduler's schedules (towers,
  backbone, the embedding schedule) and Adam's ``betas`` / ``eps``.

Example:
    >>> import torch
    >>> from functional_opt import config
    >>> from torch_bridge import build_recap_optimizer
    >>> model = torch.nn.Module()
    >>> model.towers = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1)})
    >>> model.backbone = torch.nn.Linear(2, 2)
    >>> cfg = config.RecapOptimizerConfig(adam={}, multi_task_learning_rates={
    ...     "tower_learning_rates": {"a": {"constant": 0.1}}, "backbone_learning_rate": {"constant": 0.01}})
    >>> opt, sched = build_recap_optimizer(model, cfg)
    >>> recap_cfg, _ = recap_configs_of(opt, sched)
    >>> recap_cfg == cfg
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from functional_opt import config as config_lib
from functional_opt import grouping, optimizers
from functional_opt.recap_state import GroupValues, RecapState
from torch_bridge import transfer_parts as tp
from torch_bridge.recap_scheduler import RecapLRShim
from torch_bridge.workarounds import optimizer_leaves, wrapped_optimizer

__all__ = [
    "export_recap_state",
    "import_recap_state",
    "recap_configs_of",
    "recap_state",
    "write_recap",
]

_ADAM_ENTRIES = ("exp_avg", "exp_avg_sq")
_UNSAID = ("weight_decay", "amsgrad", "maximize")


def recap_configs_of(
    optimizer: torch.optim.Optimizer, scheduler: RecapLRShim
) -> tuple[config_lib.RecapOptimizerConfig, config_lib.EmbeddingOptimizerConfig]:
    """The recap and embedding configs a torch recap optimizer and its scheduler were built from.

    Raises:
        TypeError: ``scheduler`` is not a :class:`RecapLRShim`.
        ValueError: a schedule that is not a config, Adam groups with different
            ``betas`` / ``eps`` or an option the config cannot say.
    """
    owner = "export_state"
    if not isinstance(scheduler, RecapLRShim):
        raise TypeError(f"{owner}: expected the RecapLRShim of build_recap_optimizer, got {type(scheduler).__name__}")
    rates = dict(scheduler.lr_dict)
    for name, rate in [*rates.items(), ("emb_learning_rate", scheduler.emb_learning_rate)]:
        if rate is not None and not isinstance(rate, config_lib.LearningRate):
            raise ValueError(f"{owner}: the schedule of {name!r} is a {type(rate).__name__}, not a LearningRate config")
    emb_rate = scheduler.emb_learning_rate or rates.pop(grouping.DENSE_EMBEDDINGS, None)
    rates.pop(grouping.DENSE_EMBEDDINGS, None)
    names = [g.get("name") for g in optimizer.param_groups]
    adam = [
        g
        for leaf, _ in optimizer_leaves(optimizer)
        if isinstance(wrapped_optimizer(leaf), torch.optim.Adam)
        for g in leaf.param_groups
    ]
    settings = {(tuple(g["betas"]), float(g["eps"])) for g in adam}
    if len(settings) > 1:
        raise ValueError(f"{owner}: the Adam groups {names} have different betas / eps: {sorted(settings)}")
    unsaid = {k: g[k] for g in adam for k in _UNSAID if g.get(k) not in (None, 0, 0.0, False)}
    if unsaid:
        raise ValueError(f"{owner}: options {unsaid} have no field in RecapOptimizerConfig")
    (b1, b2), eps = settings.pop() if settings else ((0.9, 0.999), 1e-7)
    recap: dict[str, Any] = {"adam": {"beta_1": b1, "beta_2": b2, "epsilon": eps}}
    if grouping.SINGLE_TASK in rates:
        recap["single_task_learning_rate"] = rates[grouping.SINGLE_TASK]
    else:
        backbone = rates.pop(grouping.BACKBONE, None)
        recap["multi_task_learning_rates"] = {"tower_learning_rates": rates, "backbone_learning_rate": backbone}
    return (
        config_lib.RecapOptimizerConfig.model_validate(recap),
        config_lib.EmbeddingOptimizerConfig(learning_rate=emb_rate),
    )


def _groups(names: list[str], recap_cfg: Any, emb_cfg: Any) -> list[grouping.ParamGroup]:
    """The recap groups of the JAX params' names, in pytree order: the order of each group's moments."""
    return grouping.recap_groups(names, recap_cfg, emb_cfg)


def export_recap_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: RecapLRShim
) -> tuple[dict[str, Any], RecapState, int]:
    """The torch recap run as ``(params, opt_state, step)`` of :func:`functional_opt.optimizers.build_recap_optimizer`.

    See :func:`torch_bridge.state_transfer.export_state`.
    """
    owner = "export_state"
    recap_cfg, emb_cfg = recap_configs_of(optimizer, scheduler)
    step = int(scheduler.last_epoch)
    tensors = tp.trained_tensors(model)
    arrays = {name: tp.whole_array(t) for name, t in tensors.items()}
    float64 = tp.is_float64(owner, arrays)
    tp.check_counts(owner, optimizer, step)
    with jax.enable_x64(float64):
        params = tp.nest(arrays)
        template = optimizers.build_recap_optimizer(params, recap_cfg, emb_cfg).init(params)
        groups = _groups(list(tp.leaves_by_name(params)), recap_cfg, emb_cfg)
        return params, recap_state(template, groups, optimizer, tensors, arrays, step), step


def recap_state(
    template: RecapState,
    groups: Sequence[grouping.ParamGroup],
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    step: int,
) -> RecapState:
    """``template`` with the torch optimizer's Adam moments of every Adam group, the count and the last rates."""
    state = optimizer.state
    moments: dict[str, dict[str, tuple[Any, ...]]] = {entry: {} for entry in _ADAM_ENTRIES}
    for group in groups:
        if group.algorithm != "adam":
            continue
        for entry in _ADAM_ENTRIES:
            moments[entry][group.name] = tuple(
                jnp.asarray(_moment(state, tensors[n], entry, arrays[n])) for n in group.param_names
            )
    rates = tp.rate_before([g.learning_rate for g in groups], step)
    return template._replace(
        count=jnp.asarray(step, jnp.int32),
        learning_rates=GroupValues(
            jnp.asarray(rates, template.learning_rates.values.dtype), template.learning_rates.names
        ),
        mu=moments["exp_avg"],
        nu=moments["exp_avg_sq"],
    )


def _moment(state: Any, param: Any, entry: str, like: np.ndarray) -> np.ndarray:
    found = state[param].get(entry) if param in state else None
    return np.zeros_like(like) if found is None else found.detach().cpu().numpy().copy()


def import_recap_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: RecapLRShim, params: Any, opt_state: Any
) -> None:
    """Writes a JAX recap run into a torch model, recap optimizer and scheduler.

    See :func:`torch_bridge.state_transfer.import_state`.
    """
    owner = "import_state"
    recap_cfg, emb_cfg = recap_configs_of(optimizer, scheduler)
    tensors = tp.trained_tensors(model)
    leaves = tp.leaves_by_name(params)

    def template_of(p: Any) -> RecapState:
        return optimizers.build_recap_optimizer(p, recap_cfg, emb_cfg).init(p)

    tp.check_fit(owner, tensors, params, opt_state, template_of, "build_recap_optimizer for these groups")
    groups = _groups(list(leaves), recap_cfg, emb_cfg)
    with torch.no_grad():
        for name, tensor in tensors.items():
            tp.write_whole(tensor, leaves[name])
        write_recap(opt_state, groups, optimizer, tensors)
    tp.set_step(scheduler, int(opt_state.count))


def write_recap(
    opt_state: RecapState,
    groups: Sequence[grouping.ParamGroup],
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, Any],
) -> None:
    """Writes every Adam group's moments and the count of a :class:`RecapState` into the torch optimizer's state."""
    count = int(opt_state.count)
    owners = {
        id(p): group for leaf, _ in optimizer_leaves(optimizer) for group in leaf.param_groups for p in group["params"]
    }
    state = optimizer.state
    for group in groups:
        if group.algorithm != "adam":
            continue
        for position, name in enumerate(group.param_names):
            tensor = tensors[name]
            entries = state[tensor]
            entries["exp_avg"] = torch.as_tensor(np.array(opt_state.mu[group.name][position])).to(tensor)
            entries["exp_avg_sq"] = torch.as_tensor(np.array(opt_state.nu[group.name][position])).to(tensor)
            tp.write_step(entries, count, owners[id(tensor)], tensor)
