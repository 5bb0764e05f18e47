"""Checks that an optimizer state belongs to the live optimizer, before anything is copied.

torch's ``Optimizer.load_state_dict`` replaces the state and hyper-parameters
and only then may fail (Adam loading an SGD state raises ``KeyError: 'step'``
on the next step, an optimizer of another width loads silently), and
torchrec's ``KeyedOptimizer.load_state_dict`` copies the state parameter by
parameter and stops at the first one it lacks, after overwriting the ones
before it. The checks here look at the whole incoming state first and raise
one ``ValueError`` naming every mismatch, so a refused state changes nothing.

* :func:`keyed_state_problems` checks a torchrec keyed state (groups, parameter
  keys, state entries and shapes); :class:`torch_bridge.keyed.RecapOptimizer`,
  the ``CombinedOptimizer`` of :func:`torch_bridge.build_recap_optimizer`, runs it
  before loading.
* :func:`guard_load_state_dict` installs the same kind of check on a plain
  torch optimizer (as a public ``load_state_dict`` pre-hook).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(3))
    >>> opt = torch.optim.Adam([{"params": [w], "lr": 0.1, "name": "all"}])
    >>> guard_load_state_dict(opt, {"exp_avg", "exp_avg_sq", "step"})
    >>> sgd = torch.optim.SGD([{"params": [w], "lr": 0.1, "momentum": 0.9, "name": "all"}])
    >>> w.grad = torch.ones(3)
    >>> sgd.step()
    >>> try:
    ...     opt.load_state_dict(sgd.state_dict())
    ... except ValueError as e:
    ...     print(str(e)[:60])
    Adam.load_state_dict: the state belongs to another optimizer
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch

__all__ = ["GROUPS_KEY", "group_records", "guard_load_state_dict", "keyed_state_problems"]

GROUPS_KEY = "functional_opt_param_groups"
"""Entry of ``RecapOptimizer.state_dict()`` listing each param group's name and parameter keys."""

_SHOWN = 6


def _shape(value: Any) -> tuple[int, ...] | None:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    size = getattr(value, "size", None)
    if callable(size):  # ShardedTensor and the like
        try:
            return tuple(size())
        except TypeError:
            return None
    return None


def _compare_entries(path: str, live: Mapping[str, Any], new: Any, problems: list[str]) -> None:
    """Appends the differences between one parameter's live state and the incoming one."""
    if not isinstance(new, Mapping):
        problems.append(f"{path}: expected a dict of state entries, got {type(new).__name__}")
        return
    missing = sorted(set(map(str, live)) - set(map(str, new)))
    extra = sorted(set(map(str, new)) - set(map(str, live)))
    if missing or extra:
        problems.append(f"{path}: state entries differ (missing {missing}, extra {extra})")
        return
    for key, value in live.items():
        if isinstance(value, Mapping):
            _compare_entries(f"{path}.{key}", value, new[key], problems)
            continue
        have, got = _shape(value), _shape(new[key])
        if have is not None and got is not None and have != got:
            problems.append(f"{path}.{key}: shape {list(got)} does not match the live {list(have)}")


def _limited(names: list[str]) -> str:
    return str(names[:_SHOWN])[:-1] + (f", ... ({len(names)} in all)]" if len(names) > _SHOWN else "]")


def group_records(optimizer: Any) -> list[dict[str, Any]]:
    """``[{"name": ..., "params": [sorted keys]}]`` for each param group of a torchrec keyed optimizer."""
    keys = {id(p): k for k, p in optimizer.params.items()}
    return [
        {
            "name": str(group.get("name", f"param_groups[{i}]")),
            "params": sorted(keys.get(id(p), "?") for p in group["params"]),
        }
        for i, group in enumerate(optimizer.param_groups)
    ]


def keyed_state_problems(optimizer: Any, state_dict: Mapping[str, Any]) -> list[str]:
    """Every difference between a keyed ``state_dict`` and a torchrec keyed optimizer (empty when it fits).

    Compares the param groups recorded under :data:`GROUPS_KEY` (when present),
    the parameter keys, each parameter's state entries and the tensor shapes.
    """
    if not isinstance(state_dict, Mapping) or not isinstance(state_dict.get("state"), Mapping):
        return [f"expected a dict with a 'state' entry, got {type(state_dict).__name__}"]
    problems: list[str] = []
    groups = state_dict.get(GROUPS_KEY)
    if groups is not None:
        live_groups = group_records(optimizer)
        live_names = [g["name"] for g in live_groups]
        try:
            new_names = [str(g["name"]) for g in groups]
            new_params = {str(g["name"]): sorted(map(str, g["params"])) for g in groups}
        except (KeyError, TypeError):
            return [f"{GROUPS_KEY} is malformed"]
        if new_names != live_names:
            problems.append(
                f"param groups differ: the live optimizer has {len(live_names)} param groups {live_names}, "
                f"the state has {len(new_names)} {new_names}"
            )
        else:
            for group in live_groups:
                if new_params[group["name"]] != group["params"]:
                    problems.append(f"param group {group['name']!r} holds other parameters")
    new_state = state_dict["state"]
    live_state = {k: optimizer.state[p] for k, p in optimizer.params.items() if p in optimizer.state}
    missing = sorted(set(live_state) - set(map(str, new_state)))
    extra = sorted(set(map(str, new_state)) - set(live_state))
    if missing:
        problems.append(f"parameters missing from the state: {_limited(missing)}")
    if extra:
        problems.append(f"parameters the live optimizer does not have: {_limited(extra)}")
    for key in sorted(set(live_state) & set(map(str, new_state))):
        _compare_entries(key, live_state[key], new_state[key], problems)
    return problems


def guard_load_state_dict(optimizer: torch.optim.Optimizer, entries: Collection[str]) -> None:
    """Makes ``optimizer.load_state_dict`` refuse a state of another optimizer, before changing anything.

    The check compares the group count and ``"name"`` entries, the per-parameter
    state entries against ``entries`` (the state names of the optimizer's
    algorithm, e.g. ``{"step", "exp_avg", "exp_avg_sq"}`` for Adam) and the
    shapes of state tensors against their parameters.

    Args:
        optimizer: a torch optimizer.
        entries: the state entries a parameter of this optimizer may have.
    """
    allowed = set(entries)
    owner = f"{type(optimizer).__name__}.load_state_dict"

    def check(opt: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
        problems: list[str] = []
        groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
        state = state_dict.get("state") if isinstance(state_dict, Mapping) else None
        if not isinstance(groups, list) or not isinstance(state, Mapping):
            raise ValueError(f"{owner}: expected a dict with 'state' and 'param_groups', got {type(state_dict)}")
        live_names = [g.get("name", f"param_groups[{i}]") for i, g in enumerate(opt.param_groups)]
        new_names = [
            g.get("name", f"param_groups[{i}]") if isinstance(g, Mapping) else "?" for i, g in enumerate(groups)
        ]
        if new_names != live_names:
            problems.append(f"param groups differ: live {live_names}, state {new_names}")
        params = [p for g in opt.param_groups for p in g["params"]]
        sizes = [len(g["params"]) for g in opt.param_groups]
        new_sizes = [len(g.get("params", [])) if isinstance(g, Mapping) else -1 for g in groups]
        if sizes != new_sizes:
            problems.append(f"parameters per group differ: live {sizes}, state {new_sizes}")
        for index, entry in state.items():
            if not isinstance(entry, Mapping):
                problems.append(f"state[{index}] is not a dict")
                continue
            unknown = sorted(set(map(str, entry)) - allowed)
            if unknown:
                problems.append(f"state[{index}] has entries {unknown}, expected only {sorted(allowed)}")
            if isinstance(index, int) and 0 <= index < len(params):
                for key, value in entry.items():
                    shape = _shape(value)
                    if shape not in (None, (), tuple(params[index].shape)):
                        problems.append(
                            f"state[{index}][{key!r}] has shape {list(shape)}, "
                            f"the parameter {list(params[index].shape)}"
                        )
            else:
                problems.append(f"state[{index}] names no parameter of the live optimizer ({len(params)} parameters)")
        if problems:
            raise ValueError(
                f"{owner}: the state belongs to another optimizer (nothing was loaded): " + "; ".join(problems)
            )

    optimizer.register_load_state_dict_pre_hook(check)
