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
from functional_opt import demo_model, grouping, optimizers, schedule_plan
from torch_bridge.schedulers import LRShim

__all__ = ["export_state", "import_state", "optimizer_config_of"]

_JAX_DTYPES = {torch.float32: jnp.float32, torch.float64: jnp.float64}


def _single_group(owner: str, optimizer: torch.optim.Optimizer, scheduler: LRShim) -> dict[str, Any]:
    if not isinstance(scheduler, LRShim):
        raise TypeError(f"{owner}: scheduler must be the LRShim of build_optimizer, got {type(scheduler).__name__}")
    if len(optimizer.param_groups) != 1:
        raise ValueError(
            f"{owner}: the optimizer has {len(optimizer.param_groups)} param groups; "
            "a state moves from torch_bridge.build_optimizer's optimizer (one group)"
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


def _named(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return dict(model.named_parameters())


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


def _rate(cfg: config_lib.OptimizerConfig, step: int) -> float:
    """The rate the last of ``step`` updates used (``schedule(0)`` before the first), as the JAX state holds it."""
    return float(schedule_plan.evaluate([cfg.learning_rate], np.asarray([max(step - 1, 0)]))[0, 0])


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
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRShim
) -> tuple[dict[str, Any], Any, int]:
    """The torch run as ``(params, opt_state, step)`` for :func:`functional_opt.optimizers.build_optimizer`.

    Args:
        model: the model; its parameters are named as the params pytree's leaves.
        optimizer: the optimizer of :func:`torch_bridge.build_optimizer` (one group).
        scheduler: its :class:`~torch_bridge.schedulers.LRShim`.

    Returns:
        ``params`` (nested dicts and lists of arrays, the parameters' dtypes),
        ``opt_state`` (the optax state after ``step`` updates) and ``step``
        (``scheduler.last_epoch``: the next update is ``schedule(step)``).

    Raises:
        ValueError: see :func:`optimizer_config_of`; the optimizer has taken
            another number of steps than the scheduler.
    """
    owner = "export_state"
    cfg = optimizer_config_of(optimizer, scheduler)
    step = int(scheduler.last_epoch)
    named = _named(model)
    dtypes = {p.dtype for p in named.values()}
    if len(dtypes) != 1 or not dtypes <= set(_JAX_DTYPES):
        raise ValueError(
            f"{owner}: parameters of dtypes {sorted(map(str, dtypes))}; a model of one float type "
            "(float32 or float64) moves"
        )
    with jax.enable_x64(torch.float64 in dtypes):
        arrays = {n: p.detach().cpu().numpy() for n, p in named.items()}
        params = _nest(arrays)
        template = _template(cfg, params)
        state = optimizer.state
        moments = {}
        for entry in _entries(optimizer):
            values = {}
            for name, p in named.items():
                tensor = state.get(p, {}).get(entry)
                values[name] = np.zeros_like(arrays[name]) if tensor is None else tensor.detach().cpu().numpy()
            moments[entry] = _nest(values)
        counts = {int(s["step"]) for s in state.values() if isinstance(s, Mapping) and "step" in s}
        if counts and counts != {step}:
            raise ValueError(
                f"{owner}: the optimizer's parameters have taken {sorted(counts)} steps and the scheduler {step}; "
                "export after optimizer.step() and scheduler.step()"
            )
        return params, _with_moments(template, moments, step, _rate(cfg, step)), step


def _nest(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{dotted name: array}`` as the params pytree (one dtype: the arrays')."""
    dtypes = {a.dtype for a in arrays.values()}
    return demo_model.params_from_arrays(arrays, dtypes.pop() if len(dtypes) == 1 else None)


def import_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: LRShim, params: Any, opt_state: Any
) -> None:
    """Writes a JAX run (params and the state of ``build_optimizer``) into a torch model, optimizer and scheduler.

    The model's parameters take ``params``, the optimizer's state the moments
    and count, the scheduler the step (and the rates of that step): the next
    ``optimizer.step()`` runs with ``schedule(count)``.

    Raises:
        ValueError: the names or shapes of ``params`` differ from the model's, the
            state is not one of ``build_optimizer`` for this optimizer's config, or
            its moments do not fit (the first differences named). Nothing is
            changed then.
    """
    owner = "import_state"
    cfg = optimizer_config_of(optimizer, scheduler)
    named = _named(model)
    leaves = dict(grouping.named_leaves(params))
    problems = []
    missing, extra = sorted(set(named) - set(leaves)), sorted(set(leaves) - set(named))
    if missing or extra:
        problems.append(f"names differ: the model has {missing[:5]} that params lacks, params has {extra[:5]} more")
    else:
        shapes = [
            f"{n}: params {tuple(np.shape(leaves[n]))}, model {tuple(p.shape)}"
            for n, p in named.items()
            if tuple(np.shape(leaves[n])) != tuple(p.shape)
        ]
        problems += shapes[:5]
    if not problems:
        with jax.enable_x64(any(p.dtype == torch.float64 for p in named.values())):
            template = _template(cfg, params)
            if jax.tree_util.tree_structure(template) != jax.tree_util.tree_structure(opt_state):
                problems.append(
                    f"opt_state is not the state of build_optimizer for {cfg.algorithm_name} over these params"
                )
            else:
                optimizers.check_state(opt_state, template)
    if problems:
        raise ValueError(f"{owner}: the JAX run does not fit this model (nothing was changed): " + "; ".join(problems))
    moments, count = _moments_of(opt_state)
    moment_leaves = {entry: dict(grouping.named_leaves(tree)) for entry, tree in moments.items()}
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(torch.as_tensor(np.asarray(leaves[name])))
            state = optimizer.state[p]
            for entry in _entries(optimizer):
                state[entry] = torch.as_tensor(np.array(moment_leaves[entry][name])).to(p)
            if isinstance(optimizer, (torch.optim.Adam, torch.optim.Adagrad)):
                old = state.get("step")
                like = old if isinstance(old, torch.Tensor) else torch.zeros(())
                state["step"] = torch.full((), float(count), dtype=like.dtype, device=like.device)
    saved = scheduler.state_dict()
    scheduler.load_state_dict({**saved, "last_epoch": count, "_step_count": count + 1})
