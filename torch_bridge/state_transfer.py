"""Moving a run between torch and JAX: parameters, optimizer moments and the schedule's step.

:func:`export_state` turns a torch model, the optimizer of
:func:`torch_bridge.build_optimizer` and its :class:`~torch_bridge.schedulers.LRShim`
into ``(params, opt_state, step)``: the params pytree (each name split at
``"."``, the one naming rule), and the state of
:func:`functional_opt.optimizers.build_optimizer` for the same config after
``step`` updates, so that JAX continues where torch stopped and lands where
torch would have landed. :func:`import_state` is the reverse: it writes a JAX
run's parameters, moments and step into a freshly built torch model, optimizer
and scheduler.

The state, by torch algorithm (the JAX state is that of ``build_optimizer``):

* ``Adam``: ``exp_avg`` / ``exp_avg_sq`` are ``mu`` / ``nu``; torch's per-parameter
  ``step`` is the update count;
* ``SGD`` with momentum: ``momentum_buffer`` is ``optax.trace``'s ``trace``
  (without momentum there is no buffer);
* ``Adagrad``: ``sum`` is ``sum_of_squares``; ``step`` the count.

The recap optimizer of :func:`torch_bridge.build_recap_optimizer` (with its
:class:`~torch_bridge.recap_scheduler.RecapLRShim`) moves the same way, to and
from :func:`functional_opt.optimizers.build_recap_optimizer`'s state: every
group's moments, ``dense_ebc`` and the fused tables' rows, gathered from every
shard (:mod:`torch_bridge.recap_transfer`).

The config comes from the torch side: the scheduler's schedule and the
optimizer's hyper-parameters; :func:`functional_opt.opt_state.check_state`
compares the exported state with the JAX optimizer a user builds.

Example:
    >>> import torch
    >>> from functional_opt import config
    >>> from torch_bridge import build_optimizer
    >>> model = torch.nn.Linear(2, 1)
    >>> cfg = config.OptimizerConfig(adam={"lr": 0.1}, learning_rate={"constant": 0.1})
    >>> opt, sched = build_optimizer(model, cfg)
    >>> model(torch.ones(1, 2)).sum().backward(); opt.step(); sched.step()
    >>> params, opt_state, step = export_state(model, opt, sched)
    >>> sorted(params), step, int(opt_state.count)
    (['bias', 'weight'], 1, 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch

from functional_opt import config as config_lib
from functional_opt import optimizers
from functional_opt.table_optimizers import DenseLike, TablesLike
from torch_bridge import recap_transfer
from torch_bridge import transfer_parts as tp
from torch_bridge.recap_scheduler import RecapLRShim
from torch_bridge.schedulers import LRShim

__all__ = [
    "count_of",
    "export_state",
    "generic_state",
    "import_state",
    "optimizer_config_of",
    "write_generic",
]


def _single_group(owner: str, optimizer: torch.optim.Optimizer, scheduler: LRShim) -> dict[str, Any]:
    if not isinstance(scheduler, LRShim):
        raise TypeError(f"{owner}: scheduler must be the LRShim of build_optimizer, got {type(scheduler).__name__}")
    if len(optimizer.param_groups) != 1:
        raise ValueError(
            f"{owner}: the optimizer has {len(optimizer.param_groups)} param groups; "
            "a state moves from torch_bridge.build_optimizer's optimizer (one group); for a model whose tables "
            "have optimizers of their own, pass tables= and dense= (the configs it was built from)"
        )
    return optimizer.param_groups[0]


def optimizer_config_of(optimizer: torch.optim.Optimizer, scheduler: LRShim) -> config_lib.OptimizerConfig:
    """The :class:`~functional_opt.config.OptimizerConfig` a torch optimizer and its scheduler were built from.

    Raises:
        ValueError: not one param group, an algorithm other than Adam, SGD or
            Adagrad, an option the config cannot say (AMSGrad, weight decay,
            Nesterov, dampening), or a schedule that is not a config.
    """
    owner = "optimizer_config_of"
    group = _single_group(owner, optimizer, scheduler)
    schedule = next(iter(scheduler.lr_dict.values()))
    if not isinstance(schedule, config_lib.LearningRate):
        raise ValueError(f"{owner}: the scheduler's schedule is a {type(schedule).__name__}, not a LearningRate config")
    lr = float(group["initial_lr"]) if "initial_lr" in group else float(group["lr"])
    unsupported = {
        k: group[k]
        for k in ("weight_decay", "amsgrad", "nesterov", "dampening", "maximize")
        if group.get(k) not in (None, 0, 0.0, False)
    }
    if unsupported:
        raise ValueError(f"{owner}: options {unsupported} have no field in OptimizerConfig")
    if isinstance(optimizer, torch.optim.Adam):
        algorithm = {"adam": {"lr": lr, "betas": tuple(group["betas"]), "eps": group["eps"]}}
    elif isinstance(optimizer, torch.optim.SGD):
        algorithm = {"sgd": {"lr": lr, "momentum": group["momentum"]}}
    elif isinstance(optimizer, torch.optim.Adagrad):
        algorithm = {
            "adagrad": {
                "lr": lr,
                "eps": group["eps"],
                "lr_decay": group["lr_decay"],
                "initial_accumulator_value": group["initial_accumulator_value"],
            }
        }
    else:
        raise ValueError(f"{owner}: {type(optimizer).__name__} is not Adam, SGD or Adagrad")
    return config_lib.OptimizerConfig.model_validate({"learning_rate": schedule, **algorithm})


def _entries(optimizer: torch.optim.Optimizer) -> tuple[str, ...]:
    """The torch state entries that carry moments, by algorithm."""
    if isinstance(optimizer, torch.optim.Adam):
        return ("exp_avg", "exp_avg_sq")
    if isinstance(optimizer, torch.optim.Adagrad):
        return ("sum",)
    if isinstance(optimizer, torch.optim.SGD) and optimizer.param_groups[0]["momentum"]:
        return ("momentum_buffer",)
    return ()


def _template(cfg: config_lib.OptimizerConfig, params: Any) -> Any:
    """The state of ``build_optimizer(cfg)`` before its first update."""
    return optimizers.build_optimizer(cfg).init(params)


def _with_moments(state: Any, moments: dict[str, Any], count: int, rate: float) -> Any:
    """The JAX state ``state`` with the moments, count and rate of a torch run."""
    counted = jnp.asarray(count, jnp.int32)
    if isinstance(state, optimizers.TorchAdamState):
        return state._replace(
            count=counted,
            learning_rate=jnp.asarray(rate, state.learning_rate.dtype),
            mu=moments["exp_avg"],
            nu=moments["exp_avg_sq"],
        )
    if isinstance(state, optimizers.TorchAdagradState):
        return state._replace(
            count=counted, learning_rate=jnp.asarray(rate, state.learning_rate.dtype), sum_of_squares=moments["sum"]
        )
    if isinstance(state, optimizers.ScaleByLearningRateState):
        return state._replace(count=counted, learning_rate=jnp.asarray(rate, state.learning_rate.dtype))
    trace, scale = state  # torch_sgd with momentum: (optax.TraceState, ScaleByLearningRateState)
    return (trace._replace(trace=moments["momentum_buffer"]), _with_moments(scale, {}, count, rate))


def count_of(state: Any) -> int:
    """The update count of a JAX state of ``build_optimizer`` (or of any state with a ``count``)."""
    if isinstance(state, tuple) and not hasattr(state, "_fields"):  # SGD with momentum: (trace, scale)
        return _moments_of(state)[1]
    return int(state.count)


def _moments_of(state: Any) -> tuple[dict[str, Any], int]:
    """The moments (by torch entry name) and the count of a JAX state of ``build_optimizer``."""
    if isinstance(state, optimizers.TorchAdamState):
        return {"exp_avg": state.mu, "exp_avg_sq": state.nu}, int(state.count)
    if isinstance(state, optimizers.TorchAdagradState):
        return {"sum": state.sum_of_squares}, int(state.count)
    if isinstance(state, optimizers.ScaleByLearningRateState):
        return {}, int(state.count)
    trace, scale = state
    return {"momentum_buffer": trace.trace}, int(scale.count)


def export_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRShim,
    *,
    tables: TablesLike | None = None,
    dense: DenseLike = None,
) -> tuple[dict[str, Any], Any, int]:
    """The torch run as ``(params, opt_state, step)`` for the JAX optimizer of the same config.

    Args:
        model: the model (a ``DistributedModelParallel`` too); its parameters are
            named as the params pytree's leaves (less a wrapper's ``"module."``).
        optimizer: the optimizer of :func:`torch_bridge.build_optimizer` (one
            group) or of :func:`torch_bridge.build_recap_optimizer`.
        scheduler: its :class:`~torch_bridge.schedulers.LRShim` (a
            :class:`~torch_bridge.recap_scheduler.RecapLRShim` for the recap optimizer).
        tables: for a model whose tables have optimizers of their own
            (``build_recap_optimizer(..., tables=...)``,
            :func:`torch_bridge.build_embedding_optimizer`): the table configs it
            was built from; the state is then that of
            ``functional_opt.optimizers.build_table_optimizer(params, tables, dense)``
            (:mod:`torch_bridge.table_transfer`).
        dense: with ``tables``, the dense optimizer's config (an
            ``OptimizerConfig`` or a ``RecapOptimizerConfig``).

    Returns:
        ``params`` (nested dicts and lists of arrays, the parameters' dtypes, each
        sharded table whole), ``opt_state`` (the state of
        :func:`functional_opt.optimizers.build_optimizer`, or of
        ``build_recap_optimizer(params, *recap_configs_of(optimizer, scheduler))``,
        after ``step`` updates) and ``step`` (``scheduler.last_epoch``: the next
        update is ``schedule(step)``).

    Raises:
        ValueError: see :func:`optimizer_config_of` and
            :func:`~torch_bridge.recap_transfer.recap_configs_of`; the optimizer
            has taken another number of steps than the scheduler; parameters of
            mixed or non-float types.
    """
    if tables is not None:
        from torch_bridge.table_transfer import export_table_state

        return export_table_state(model, optimizer, scheduler, tables, dense)
    if isinstance(scheduler, RecapLRShim):
        return recap_transfer.export_recap_state(model, optimizer, scheduler)
    owner = "export_state"
    cfg = optimizer_config_of(optimizer, scheduler)
    step = int(scheduler.last_epoch)
    named = tp.trained_tensors(model)
    arrays = {n: tp.whole_array(p) for n, p in named.items()}
    tp.check_counts(owner, optimizer, step)
    with jax.enable_x64(tp.is_float64(owner, arrays)):
        params = tp.nest(arrays)
        state = generic_state(_template(cfg, params), optimizer, named, arrays, step, cfg.learning_rate)
        return params, state, step


def generic_state(
    template: Any,
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    step: int,
    learning_rate: config_lib.LearningRate,
) -> Any:
    """The JAX state ``template`` (of ``build_optimizer``, maybe masked) with a torch optimizer's moments and step.

    Each moment leaf of ``template`` takes the torch entry of the parameter of its
    name (zeros where torch has none yet); masked leaves stay masked.
    """
    torch_state = optimizer.state
    shapes, _ = _moments_of(template)
    moments = {}
    for entry in _entries(optimizer):
        values = {}
        for name in tp.leaves_by_name(shapes[entry]):
            tensor = torch_state[tensors[name]].get(entry) if tensors[name] in torch_state else None
            values[name] = np.zeros_like(arrays[name]) if tensor is None else tensor.detach().cpu().numpy()
        moments[entry] = tp.filled(shapes[entry], values)
    return _with_moments(template, moments, step, float(tp.rate_before([learning_rate], step)[0]))


def write_generic(optimizer: torch.optim.Optimizer, tensors: Mapping[str, Any], opt_state: Any) -> None:
    """Writes the moments and count of a JAX state of ``build_optimizer`` into a torch optimizer's state."""
    moments, count = _moments_of(opt_state)
    moment_leaves = {entry: tp.leaves_by_name(tree) for entry, tree in moments.items()}
    group = optimizer.param_groups[0]
    names = next(iter(moment_leaves.values()), None)
    for name in tensors if names is None else names:
        p = tensors[name]
        state = optimizer.state[p]
        for entry in _entries(optimizer):
            state[entry] = torch.as_tensor(np.array(moment_leaves[entry][name])).to(p)
        if isinstance(optimizer, (torch.optim.Adam, torch.optim.Adagrad)):
            tp.write_step(state, count, group, p)


def import_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRShim,
    params: Any,
    opt_state: Any,
    *,
    tables: TablesLike | None = None,
    dense: DenseLike = None,
) -> None:
    """Writes a JAX run (params and the optimizer's state) into a torch model, optimizer and scheduler.

    The model's parameters take ``params`` (each sharded table's local shards
    their rows), the optimizer's state the moments and count, the scheduler the
    step (and the rates of that step, fused kernels included): the next
    ``optimizer.step()`` runs with ``schedule(count)``. ``opt_state`` is the
    state of :func:`functional_opt.optimizers.build_optimizer` (or of
    ``build_recap_optimizer`` when ``scheduler`` is a
    :class:`~torch_bridge.recap_scheduler.RecapLRShim`; of ``build_table_optimizer``
    with ``tables`` and ``dense``, see :func:`export_state`) for the torch side's config.

    Raises:
        ValueError: the names or shapes of ``params`` differ from the model's, the
            state is not one of the JAX optimizer for this optimizer's config, or
            its moments do not fit (the first differences named). Nothing is
            changed then.
    """
    if tables is not None:
        from torch_bridge.table_transfer import import_table_state

        import_table_state(model, optimizer, scheduler, params, opt_state, tables, dense)
        return
    if isinstance(scheduler, RecapLRShim):
        recap_transfer.import_recap_state(model, optimizer, scheduler, params, opt_state)
        return
    owner = "import_state"
    cfg = optimizer_config_of(optimizer, scheduler)
    named = tp.trained_tensors(model)
    leaves = tp.leaves_by_name(params)
    tp.check_fit(
        owner, named, params, opt_state, lambda p: _template(cfg, p), f"build_optimizer for {cfg.algorithm_name}"
    )
    with torch.no_grad():
        for name, p in named.items():
            tp.write_whole(p, leaves[name])
        write_generic(optimizer, named, opt_state)
    tp.set_step(scheduler, count_of(opt_state))
