"""Checks that an optimizer state belongs to the live optimizer, before anything is copied.

torch's ``Optimizer.load_state_dict`` replaces the state and hyper-parameters
and only then may fail (Adam loading an SGD state raises ``KeyError: 'step'``
on the next step, an optimizer of another width loads silently), and
torchrec's ``KeyedOptimizer.load_state_dict`` copies the state parameter by
parameter and stops at the first one it lacks, after overwriting the ones
before it. The checks here look at the whole incoming state first and raise
one ``ValueError`` naming every mismatch, so a refused state changes nothing.

The config is the truth: a state saved with other hyper-parameters (betas,
eps, momentum, lr_decay, ...) is refused, naming the group, the field, the
saved and the configured value, rather than silently replacing them (torch's
default) or silently ignoring them (torchrec's).

* :func:`keyed_state_problems` checks a torchrec keyed state (groups, parameter
  keys, state entries, dtypes and shapes); :class:`torch_bridge.keyed.RecapOptimizer`,
  the ``CombinedOptimizer`` of :func:`torch_bridge.build_recap_optimizer`, runs it
  before loading.
* :func:`guard_load_state_dict` installs the same kind of check on a plain
  torch optimizer (as public ``load_state_dict`` pre- and post-hooks). It takes
  torch's positional states and the states DCP's ``get_state_dict`` makes
  (keyed by parameter name), as torch itself does.

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

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "GROUPS_KEY",
    "HYPER_PARAMETERS",
    "group_records",
    "guard_load_state_dict",
    "hyper_parameter_problems",
    "keyed_state_problems",
]

GROUPS_KEY = "functional_opt_param_groups"
"""Entry of ``RecapOptimizer.state_dict()`` listing each param group's name and parameter keys."""

HYPER_PARAMETERS = (
    "betas",
    "eps",
    "weight_decay",
    "amsgrad",
    "momentum",
    "dampening",
    "nesterov",
    "lr_decay",
    "initial_accumulator_value",
    "maximize",
)
"""The param-group entries a config sets: a saved state must agree with the live ones.

The learning rate is not among them: the scheduler sets it from its schedule
(and checks the schedule itself); implementation switches (``fused``,
``foreach``, ``capturable``, ...) are not either.
"""

_SHOWN = 6
_STEP = "step"


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


def _is_tensor_like(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (_shape(value) is not None and hasattr(value, "local_shards"))


def _dtype(value: Any) -> torch.dtype | None:
    dtype = getattr(value, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _value_problem(path: str, live: Any, new: Any) -> str | None:
    """Why ``new`` cannot replace the live state value ``live`` (None when it can)."""
    if _is_tensor_like(live):
        if not _is_tensor_like(new):
            return f"{path}: expected a tensor, got {type(new).__name__}"
        have, got = _shape(live), _shape(new)
        if have is not None and got is not None and have != got:
            return f"{path}: shape {list(got)} does not match the live {list(have)}"
        live_dtype, new_dtype = _dtype(live), _dtype(new)
        if live_dtype is not None and new_dtype is not None:
            if (
                live_dtype.is_floating_point != new_dtype.is_floating_point
                or live_dtype.is_complex != new_dtype.is_complex
            ):
                return f"{path}: dtype {new_dtype} cannot stand for the live {live_dtype}"
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
        problem = _value_problem(f"{path}.{key}", value, new[key])
        if problem:
            problems.append(problem)


def _limited(names: list[str]) -> str:
    return str(names[:_SHOWN])[:-1] + (f", ... ({len(names)} in all)]" if len(names) > _SHOWN else "]")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        try:
            return bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))
        except (TypeError, RuntimeError):
            return False
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def hyper_parameter_problems(live_groups: Sequence[Mapping[str, Any]], saved_groups: Any) -> list[str]:
    """The hyper-parameters (:data:`HYPER_PARAMETERS`) on which saved param groups disagree with the live ones.

    Groups are paired in order; an entry absent from either side is not compared.

    Example:
        >>> hyper_parameter_problems([{"name": "all", "betas": (0.9, 0.999)}], [{"name": "all", "betas": [0.8, 0.999]}])
        ["param group 'all': betas saved [0.8, 0.999], configured (0.9, 0.999)"]
    """
    if not isinstance(saved_groups, list):
        return []
    problems = []
    for i, (live, saved) in enumerate(zip(live_groups, saved_groups, strict=False)):
        if not isinstance(saved, Mapping):
            problems.append(f"param_groups[{i}] is not a dict")
            continue
        label = live.get("name", f"param_groups[{i}]")
        for key in HYPER_PARAMETERS:
            if key in live and key in saved and not _same(live[key], saved[key]):
                problems.append(f"param group {label!r}: {key} saved {saved[key]!r}, configured {live[key]!r}")
    return problems


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
    the hyper-parameters of saved ``param_groups`` (when present), the parameter
    keys, each parameter's state entries, and the type, dtype kind and shape of
    every tensor. The live optimizer's state must be initialised (the
    optimizers of this package's builders create it before it is read).
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
    saved_groups = state_dict.get("param_groups")
    if saved_groups is not None and not problems:
        problems += hyper_parameter_problems(list(optimizer.param_groups), saved_groups)
    new_state = state_dict["state"]
    live_state = {k: optimizer.state[p] for k, p in optimizer.params.items() if p in optimizer.state}
    missing = sorted(set(live_state) - set(map(str, new_state)))
    extra = sorted(set(map(str, new_state)) - set(optimizer.params))
    if missing:
        problems.append(f"parameters missing from the state: {_limited(missing)}")
    if extra:
        problems.append(f"parameters the live optimizer does not have: {_limited(extra)}")
    for key in sorted(set(optimizer.params) & set(map(str, new_state))):
        if key in live_state:
            _compare_entries(key, live_state[key], new_state[key], problems)
        elif new_state[key]:
            problems.append(
                f"{key}: the live optimizer keeps no state for it, the saved state has {sorted(new_state[key])}"
            )
    return problems


def _positions(state_dict: Mapping[str, Any], groups: list[Any], params: list[torch.Tensor]) -> dict[Any, int]:
    """Saved parameter id -> position in the live optimizer, as torch's ``load_state_dict`` pairs them.

    torch pairs the ids listed in the saved groups with the live parameters in
    order, whatever the ids are: integers (torch's own format) or parameter
    names (DCP's ``get_state_dict``).
    """
    saved_ids = [i for g in groups if isinstance(g, Mapping) for i in g.get("params", [])]
    return {saved: position for position, saved in enumerate(saved_ids[: len(params)])}


def guard_load_state_dict(optimizer: torch.optim.Optimizer, entries: Collection[str]) -> None:
    """Makes ``optimizer.load_state_dict`` refuse a state of another optimizer, before changing anything.

    The check compares the group count and ``"name"`` entries, the
    hyper-parameters of each group (:data:`HYPER_PARAMETERS`: the config is the
    truth), the per-parameter state entries against ``entries`` (the state names
    of the optimizer's algorithm, e.g. ``{"step", "exp_avg", "exp_avg_sq"}`` for
    Adam: all of them must be there), and the type, dtype kind and shape of
    every state tensor against its parameter. A group whose learning rate is a
    tensor keeps that tensor object through the load (its value becomes the
    saved one), so a compiled step that reads it is not invalidated.

    Args:
        optimizer: a torch optimizer.
        entries: the state entries a parameter of this optimizer has.
    """
    required = set(entries)
    owner = f"{type(optimizer).__name__}.load_state_dict"
    live_lrs: list[Any] = []

    def check(opt: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
        problems: list[str] = []
        groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
        state = state_dict.get("state") if isinstance(state_dict, Mapping) else None
        if not isinstance(groups, list) or not isinstance(state, Mapping):
            raise ValueError(
                f"{owner}: expected a dict with 'state' and 'param_groups', got {type(state_dict).__name__}"
            )
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
        else:
            problems += hyper_parameter_problems(list(opt.param_groups), groups)
        positions = _positions(state_dict, groups, params)
        for index, entry in state.items():
            if not isinstance(entry, Mapping):
                problems.append(f"state[{index!r}] is not a dict")
                continue
            have = set(map(str, entry))
            unknown, absent = sorted(have - required), sorted(required - have)
            if unknown:
                problems.append(f"state[{index!r}] has entries {unknown}, expected only {sorted(required)}")
            if absent and not unknown:
                problems.append(f"state[{index!r}] lacks the entries {absent}")
            position = positions.get(index)
            if position is None:
                problems.append(f"state[{index!r}] names no parameter of the live optimizer ({len(params)} parameters)")
                continue
            param = params[position]
            for key, value in entry.items():
                if key == _STEP:
                    if not (_is_tensor_like(value) and _shape(value) == ()) and (
                        isinstance(value, bool) or not isinstance(value, int | float)
                    ):
                        problems.append(f"state[{index!r}]['step'] must be a number or a 0-dim tensor, got {value!r}")
                    continue
                if value is None and key == "momentum_buffer":
                    continue
                problem = _value_problem(f"state[{index!r}][{key!r}]", param, value)
                if problem:
                    problems.append(problem.replace("the live", "the parameter"))
        if problems:
            raise ValueError(
                f"{owner}: the state belongs to another optimizer (nothing was loaded): " + "; ".join(problems)
            )
        live_lrs[:] = [g.get("lr") for g in opt.param_groups]

    def keep_tensor_lrs(opt: torch.optim.Optimizer) -> None:
        # torch replaces each param group by the saved one: put a tensor learning rate back in place.
        for group, live in zip(opt.param_groups, live_lrs, strict=False):
            if isinstance(live, torch.Tensor) and live is not group.get("lr"):
                live.fill_(float(group["lr"]))
                group["lr"] = live
        live_lrs.clear()

    optimizer.register_load_state_dict_pre_hook(check)
    optimizer.register_load_state_dict_post_hook(keep_tensor_lrs)
