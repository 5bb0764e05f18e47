"""Which param group is which: names and labels of a torch optimizer's groups, for the schedulers' checks and logs.

A group is named by its ``"name"`` entry (the builders of this package set one),
else by its ``lr_dict`` name, else by its first parameters; the groups of a
torchrec fused (in-backward) embedding optimizer are ``"embeddings"``
(``"embeddings.<i>"`` when there are several).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> group_labels(torch.optim.SGD([w], lr=0.1), ["all"])
    ['all']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim import Optimizer

from torch_bridge.scheduler_records import differences
from torch_bridge.workarounds import optimizer_leaves

__all__ = ["check_names", "fused_flags", "group_label", "group_labels", "param_keys"]


def param_keys(optimizer: Optimizer) -> dict[int, str]:
    """``id(param) -> key`` for a keyed (torchrec) optimizer; empty for a plain one."""
    params = getattr(optimizer, "params", None)
    if not isinstance(params, Mapping):
        return {}
    return {id(p): str(k) for k, p in params.items()}


def group_label(index: int, group: Mapping[str, Any], keys: Mapping[int, str]) -> str:
    """A readable name for one param group: its ``"name"`` entry, else its parameters."""
    name = group.get("name")
    if isinstance(name, str):
        return name
    params = list(group.get("params", []))
    shown = [keys.get(id(p), f"<{type(p).__name__} {tuple(getattr(p, 'shape', ()))}>") for p in params[:3]]
    more = f", ... ({len(params)} params)" if len(params) > 3 else ""
    return f"param_groups[{index}]: [{', '.join(shown)}{more}]"


def group_labels(optimizer: Optimizer, names: Sequence[str]) -> list[str]:
    """One name per param group: its ``"name"`` entry, else its ``lr_dict`` name (fused groups: ``embeddings``)."""
    groups = list(optimizer.param_groups)
    fused = fused_flags(optimizer)
    if len(fused) != len(groups):
        fused = [False] * len(groups)
    dense_names = iter(names)
    num_fused = sum(fused)
    labels = []
    for i, (group, is_fused) in enumerate(zip(groups, fused, strict=True)):
        default = (
            ("embeddings" if num_fused == 1 else f"embeddings.{sum(fused[:i])}")
            if is_fused
            else next(dense_names, f"param_groups[{i}]")
        )
        name = group.get("name")
        labels.append(name if isinstance(name, str) else default)
    return labels


def check_names(owner: str, groups: Sequence[Mapping[str, Any]], labels: Sequence[str], names: Sequence[str]) -> None:
    """When every group has a ``"name"``, ``names`` must be those names in order."""
    group_names = [g.get("name") for g in groups]
    if not group_names or not all(isinstance(n, str) for n in group_names):
        return
    if list(group_names) != list(names):
        raise ValueError(
            f"{owner}: lr_dict names {list(names)} do not match the optimizer's param group names "
            f"{list(labels)} ({differences(list(labels), list(names))})"
        )


def fused_flags(optimizer: Optimizer) -> list[bool]:
    """For each param group of ``optimizer`` (in order): does a torchrec fused optimizer hold it?"""
    return [fused for leaf, fused in optimizer_leaves(optimizer) for _ in leaf.param_groups]
