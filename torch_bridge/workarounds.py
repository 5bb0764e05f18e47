"""What torch and torchrec do not do for us, fixed in one place.

Each function names the upstream behaviour it works around, so that it can be
deleted here (and nowhere else) when upstream changes.

* :func:`set_fused_kernel_learning_rates`: torchrec's fused (TBE) embedding
  optimizers copy ``param_groups[0]["lr"]`` into their kernel only in their own
  ``zero_grad()`` and ``step()``, and the kernel updates the rows inside
  ``backward``. A scheduler that only writes ``param_groups`` is then right for
  one loop order alone (``zero_grad`` first); the schedulers of this package
  call this after every write, so every loop order trains the same.
* :func:`initialise_state`: torch's Adam and SGD create their state lazily at
  the first ``step()``; torchrec's ``KeyedOptimizer.load_state_dict`` copies a
  checkpoint only into state that already exists, so a freshly built keyed
  optimizer (what Lightning, the HF ``Trainer`` and DCP load into) refuses every
  checkpoint, and DCP's in-place ``load`` fills only the state that a fresh
  ``state_dict()`` already holds. The state is created exactly as torch's first
  step would create it: by :func:`torch_bridge.build_optimizer` when it builds,
  and by the recap optimizer when its ``state`` is first read (its
  ``state_dict``, ``load_state_dict``, DCP), so building it costs no allocation.
* :func:`evaluate_closure_once`: torchrec's ``CombinedOptimizer.step(closure)``
  hands the closure to every child optimizer, so a training step runs once per
  child.
* :func:`set_kernel_grouping_key`: torchrec's sharder puts tables into one
  fused (TBE) kernel when their fused parameters are equal, and a kernel has one
  learning rate; tables with the same algorithm and step-0 rate but different
  schedules would share it. torchrec reads each table's fused parameters from
  the ``_optimizer_kwargs`` that ``apply_optimizer_in_backward`` attaches, groups
  by them, and drops the ``"_batch_key"`` entry before building the kernel; a key
  per schedule keeps such tables apart.
* :func:`fused_kernel_settings`: torchrec's fused optimizer exposes no public
  accessor for its kernel's algorithm and ``eps``; they are read from its
  ``_emb_module`` (fbgemm's ``SplitTableBatchedEmbeddingBagsCodegen``).
* :func:`keyed_from_positions`: DCP's ``get_state_dict`` renames the keys of a
  keyed optimizer's state to positions (it assumes torch's positional format and
  maps both ways), so a state saved through it comes back keyed by position.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = [
    "evaluate_closure_once",
    "fused_kernel_settings",
    "fused_leaves",
    "initialise_state",
    "keyed_from_positions",
    "optimizer_leaves",
    "set_fused_kernel_learning_rates",
    "set_kernel_grouping_key",
    "wrapped_optimizer",
]


def optimizer_leaves(optimizer: torch.optim.Optimizer) -> Iterator[tuple[torch.optim.Optimizer, bool]]:
    """The optimizers that own param groups, in ``param_groups`` order, with whether each is fused.

    torchrec's ``CombinedOptimizer`` is walked recursively; a leaf is "fused"
    when it is a torchrec ``FusedOptimizer`` (the in-backward TBE embedding
    optimizer of a ``DistributedModelParallel`` model). torchrec is consulted
    only when it is already imported: an optimizer of torchrec cannot exist
    otherwise, and importing it costs seconds.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> [(type(o).__name__, f) for o, f in optimizer_leaves(torch.optim.SGD([w], lr=0.1))]
        [('SGD', False)]
    """
    if "torchrec" not in sys.modules:
        yield optimizer, False
        return
    from torchrec.optim.fused import FusedOptimizer
    from torchrec.optim.keyed import CombinedOptimizer

    if isinstance(optimizer, CombinedOptimizer):
        for _, child in optimizer.optimizers:
            yield from optimizer_leaves(child)
    else:
        yield optimizer, isinstance(optimizer, FusedOptimizer)


def fused_leaves(optimizer: torch.optim.Optimizer) -> list[torch.optim.Optimizer]:
    """The torchrec fused (in-backward) optimizers inside ``optimizer``, in order."""
    return [leaf for leaf, fused in optimizer_leaves(optimizer) if fused]


def set_fused_kernel_learning_rates(leaves: Iterable[torch.optim.Optimizer]) -> None:
    """Hands each fused optimizer's ``param_groups[0]["lr"]`` to its kernel now.

    torchrec 1.8's fused optimizers (``EmbeddingFusedOptimizer`` and its
    key-value variants) copy the rate into the TBE kernel in ``zero_grad()``
    and ``step()`` and do nothing else there: the rows were already updated in
    ``backward`` and there are no gradients to clear. Calling ``zero_grad()`` is
    therefore the public way to set the kernel's rate (stored in float32).
    """
    for leaf in leaves:
        leaf.zero_grad()


def set_kernel_grouping_key(params: Iterable[torch.Tensor], key: str) -> None:
    """Makes torchrec's sharder put these parameters' tables only in a fused kernel with the same ``key``.

    Call it after torchrec's ``apply_optimizer_in_backward`` on ``params``: the key
    joins the fused parameters torchrec groups tables by (``"_batch_key"``, which
    torchrec 1.8 removes before it builds the kernel).
    """
    for param in params:
        kwargs = getattr(param, "_optimizer_kwargs", None)
        if not kwargs:
            raise ValueError("set_kernel_grouping_key: the parameter has no in-backward optimizer")
        kwargs[-1]["_batch_key"] = key


def wrapped_optimizer(leaf: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimizer a torchrec ``KeyedOptimizerWrapper`` wraps, or ``leaf`` itself.

    torchrec 1.8's ``KeyedOptimizerWrapper`` keeps it in ``_optimizer`` and has no
    public accessor; its algorithm (``torch.optim.Adam``, ``Adagrad``, ...) decides
    which state entries hold the moments.
    """
    return getattr(leaf, "_optimizer", leaf)


def fused_kernel_settings(leaf: torch.optim.Optimizer) -> tuple[str, float | None]:
    """The fbgemm algorithm name (e.g. ``"EXACT_SGD"``) and ``eps`` of a torchrec fused optimizer's kernel."""
    module = getattr(leaf, "_emb_module", None)
    algorithm = getattr(module, "optimizer", None)
    if algorithm is None:
        return type(leaf).__name__, None
    args = getattr(module, "optimizer_args", None)
    return str(getattr(algorithm, "name", algorithm)), getattr(args, "eps", None)


def initialise_state(optimizer: torch.optim.Optimizer) -> None:
    """Creates now the state torch's Adam or SGD (with momentum) would create at its first step.

    Adam: the entries of ``torch.optim.Adam._init_group`` (torch 2.13): ``step`` a
    0-dim zero (float32 on the parameter's device when the group is fused or
    capturable, else on the CPU in the scalar dtype), ``exp_avg`` and
    ``exp_avg_sq`` (and ``max_exp_avg_sq`` with ``amsgrad``) zeros like the
    parameter. SGD with momentum: a zero ``momentum_buffer`` (torch clones the
    first gradient into it; ``0 * momentum + grad`` is that gradient).
    Adagrad creates its state in its constructor already; other optimizers are
    left alone. The first step computes exactly what it computes from lazy
    state. Parameters that already have state are left alone.

    Example:
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.Adam([w], lr=0.1)
        >>> initialise_state(opt)
        >>> sorted(opt.state[w]), float(opt.state[w]["step"])
        (['exp_avg', 'exp_avg_sq', 'step'], 0.0)
    """
    if isinstance(optimizer, torch.optim.Adam):
        _initialise_adam(optimizer)
    elif isinstance(optimizer, torch.optim.SGD):
        for group in optimizer.param_groups:
            if group.get("momentum", 0):
                for p in group["params"]:
                    state = optimizer.state[p]
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _initialise_adam(optimizer: torch.optim.Adam) -> None:
    scalar = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    for group in optimizer.param_groups:
        on_device = bool(group.get("capturable")) or bool(group.get("fused"))
        for p in group["params"]:
            state = optimizer.state[p]
            if state:
                continue
            if on_device:
                state["step"] = torch.zeros((), dtype=torch.float32 if group.get("fused") else scalar, device=p.device)
            else:
                state["step"] = torch.tensor(0.0, dtype=scalar, device="cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group.get("amsgrad"):
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def evaluate_closure_once(closure: Callable[[], Any] | None) -> tuple[Any, Callable[[], Any] | None]:
    """Runs ``closure`` once (with gradients enabled), as ``torch.optim.Optimizer.step`` does.

    Returns:
        ``(loss, None)``: the closure's result, and the closure to hand each child
        optimizer (none: it has already run).
    """
    if closure is None:
        return None, None
    with torch.enable_grad():
        loss = closure()
    return loss, None


def keyed_from_positions(
    state_dict: Mapping[str, Any], keys_in_order: Sequence[str]
) -> tuple[dict[str, Any], list[str]]:
    """A positional optimizer state (integer keys) rewritten with parameter keys.

    Position ``i`` is the ``i``-th parameter of the live optimizer's
    ``param_groups`` (``keys_in_order[i]``), which is how DCP's ``get_state_dict``
    numbers a keyed optimizer's parameters. Keys that are already strings are
    kept; "param_groups" entries are rewritten the same way.

    Returns:
        ``(state_dict, problems)``: the rewritten copy (shallow) and a list of
        integer keys that name no parameter (empty when all fit).
    """
    problems: list[str] = []

    def name(key: Any) -> Any:
        if isinstance(key, bool) or not isinstance(key, int):
            return key
        if 0 <= key < len(keys_in_order):
            return keys_in_order[key]
        problems.append(f"position {key} names no parameter (the optimizer has {len(keys_in_order)})")
        return key

    out = dict(state_dict)
    state = state_dict.get("state")
    if isinstance(state, Mapping):
        out["state"] = {name(k): v for k, v in state.items()}
    groups = state_dict.get("param_groups")
    if isinstance(groups, list):
        out["param_groups"] = [
            {**g, "params": [name(k) for k in g.get("params", [])]} if isinstance(g, Mapping) else g for g in groups
        ]
    return out, problems
