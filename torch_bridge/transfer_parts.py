"""What every move between torch and JAX needs: whole parameters by name, their fit, the scheduler's step.

A torch model's parameters are named by ``model.named_parameters()``, less the
``"module."`` prefix of a ``DistributedModelParallel`` (or DDP) wrapper; the
JAX side names a leaf by its pytree path joined with ``"."`` (the one naming
rule), so the two sets of names must be equal. A table that torchrec shards
(a ``ShardedTensor`` in the model's ``state_dict``) is read whole: its local
shards, and on several ranks every rank's shards (an all-gather), each placed
at its offsets; writing it back puts each local shard's rows in place.

Example:
    >>> import torch
    >>> arrays = whole_arrays(torch.nn.Linear(2, 1))
    >>> sorted(arrays), arrays["weight"].shape
    (['bias', 'weight'], (1, 2))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from functional_opt import config as config_lib
from functional_opt import demo_model, grouping, schedule_plan

__all__ = [
    "assembled",
    "check_counts",
    "check_fit",
    "filled",
    "fit_problems",
    "is_float64",
    "leaves_by_name",
    "local_pieces",
    "nest",
    "rate_before",
    "set_step",
    "trained_tensors",
    "whole_array",
    "whole_arrays",
    "write_step",
    "write_whole",
]

WRAPPER_PREFIX = "module."


def _unwrapped(name: str) -> str:
    return name.removeprefix(WRAPPER_PREFIX)


def trained_tensors(model: torch.nn.Module) -> dict[str, Any]:
    """``{parameter name: tensor}``: a sharded table as its ``ShardedTensor``, every other parameter itself.

    torchrec's sharded modules expose a table's local rows as a parameter and
    the whole table only in ``state_dict`` (a ``ShardedTensor`` whose local
    shards are views of the kernel's rows), so a table is taken from there; on
    several ranks, each rank's ``state_dict`` holds every table, its own shards
    and none of the others'.
    """
    params = {_unwrapped(n): p for n, p in model.named_parameters()}
    for name, value in model.state_dict(keep_vars=True).items():
        if hasattr(value, "local_shards"):  # a table; on several ranks, also one that lives on another rank only
            params[_unwrapped(name)] = value
    return params


def _shape(tensor: Any) -> tuple[int, ...]:
    if hasattr(tensor, "local_shards"):
        return tuple(tensor.metadata().size)
    return tuple(tensor.shape)


def local_pieces(tensor: Any) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """A tensor's rows this rank holds, as ``(offsets, numpy copy)``: a ``ShardedTensor``'s local shards, a
    plain tensor whole (at offset 0), None as nothing."""
    if tensor is None:
        return []
    if not hasattr(tensor, "local_shards"):
        array = tensor.detach().cpu().numpy().copy()
        return [((0,) * array.ndim, array)]
    return [(tuple(s.metadata.shard_offsets), s.tensor.detach().cpu().numpy().copy()) for s in tensor.local_shards()]


def assembled(pieces: list[tuple[tuple[int, ...], np.ndarray]], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """The whole array of shape ``shape`` from every rank's pieces.

    On several ranks this is a collective (an all-gather of the pieces): every
    rank calls it for every sharded table, in the same order, with its own
    pieces (none for a table it does not hold).
    """
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, pieces)
        pieces = [piece for rank in gathered for piece in rank]
    out = np.zeros(shape, dtype=dtype)
    for offsets, piece in pieces:
        out[tuple(slice(o, o + n) for o, n in zip(offsets, piece.shape, strict=True))] = piece
    return out


def whole_array(tensor: Any) -> np.ndarray:
    """A parameter as one numpy array; a ``ShardedTensor`` gathered from every rank's shards (:func:`assembled`)."""
    if not hasattr(tensor, "local_shards"):
        return tensor.detach().cpu().numpy().copy()
    dtype = torch.empty(0, dtype=tensor.metadata().tensor_properties.dtype).numpy().dtype
    return assembled(local_pieces(tensor), tuple(tensor.metadata().size), dtype)


def whole_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """``{parameter name: numpy copy}``, each sharded table whole (see the module docstring)."""
    return {name: whole_array(t) for name, t in trained_tensors(model).items()}


@torch.no_grad()
def write_whole(tensor: Any, array: Any) -> None:
    """Copies a whole array into a parameter; into a ``ShardedTensor``, each local shard its own rows."""
    array = np.asarray(array)
    if not hasattr(tensor, "local_shards"):
        tensor.copy_(torch.as_tensor(np.array(array)))
        return
    for shard in tensor.local_shards():
        offsets, sizes = shard.metadata.shard_offsets, shard.metadata.shard_sizes
        piece = array[tuple(slice(o, o + n) for o, n in zip(offsets, sizes, strict=True))]
        shard.tensor.copy_(torch.as_tensor(np.array(piece)))


def fit_problems(tensors: Mapping[str, Any], leaves: Mapping[str, Any]) -> list[str]:
    """Why the JAX leaves ``{name: array}`` do not fit the model's parameters: the first differences, or ``[]``."""
    missing, extra = sorted(set(tensors) - set(leaves)), sorted(set(leaves) - set(tensors))
    if missing or extra:
        return [f"names differ: the model has {missing[:5]} that params lacks, params has {extra[:5]} more"]
    shapes = [
        f"{n}: params {tuple(np.shape(leaves[n]))}, model {_shape(t)}"
        for n, t in tensors.items()
        if tuple(np.shape(leaves[n])) != _shape(t)
    ]
    return shapes[:5]


def check_fit(owner: str, tensors: Mapping[str, Any], params: Any, opt_state: Any, template_of: Any, what: str) -> None:
    """Refuses a JAX run that does not fit the model, before anything changes.

    The names and shapes of ``params`` must be the model's; ``opt_state`` must
    have the structure of ``template_of(params)`` (the live JAX optimizer's
    ``init``) and pass :func:`functional_opt.opt_state.check_state` against it.

    Raises:
        ValueError: naming the first differences (``what`` names the JAX optimizer).
    """
    import jax

    from functional_opt import optimizers

    problems = fit_problems(tensors, leaves_by_name(params))
    if not problems:
        with jax.enable_x64(any(t.dtype == torch.float64 for t in tensors.values())):
            template = template_of(params)
            if jax.tree_util.tree_structure(template) != jax.tree_util.tree_structure(opt_state):
                problems.append(f"opt_state is not the state of {what} over these params")
            else:
                optimizers.check_state(opt_state, template)
    if problems:
        raise ValueError(f"{owner}: the JAX run does not fit this model (nothing was changed): " + "; ".join(problems))


def nest(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``{dotted name: array}`` as the params pytree (one dtype: the arrays')."""
    dtypes = {a.dtype for a in arrays.values()}
    return demo_model.params_from_arrays(arrays, dtypes.pop() if len(dtypes) == 1 else None)


def filled(template: Any, arrays: Mapping[str, Any]) -> Any:
    """``template`` with each leaf replaced by the array of its name, in the leaf's dtype (masked leaves stay)."""
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: jnp.asarray(arrays[grouping.path_to_name(path)], leaf.dtype), template
    )


def leaves_by_name(tree: Any) -> dict[str, Any]:
    """``{dotted name: leaf}`` of a pytree (the one naming rule)."""
    return dict(grouping.named_leaves(tree))


def rate_before(learning_rates: Sequence[config_lib.LearningRate], step: int) -> np.ndarray:
    """Each schedule's rate of the last of ``step`` updates, as a JAX state holds it (``schedule(0)`` before any)."""
    return schedule_plan.evaluate(list(learning_rates), np.asarray([max(step - 1, 0)]))[0]


def set_step(scheduler: Any, count: int) -> None:
    """Moves a scheduler of this library to step ``count``: the next ``optimizer.step()`` runs with ``schedule(count)``.

    ``load_state_dict`` writes the rates of the step into the optimizer's groups
    (and every fused kernel), so nothing else needs setting.
    """
    saved = scheduler.state_dict()
    scheduler.load_state_dict({**saved, "last_epoch": int(count), "_step_count": int(count) + 1})


def check_counts(owner: str, optimizer: torch.optim.Optimizer, step: int) -> None:
    """Refuses an optimizer whose per-parameter ``"step"`` counts are not the scheduler's ``step``."""
    counts = {int(s["step"]) for s in optimizer.state.values() if isinstance(s, Mapping) and "step" in s}
    if counts and counts != {step}:
        raise ValueError(
            f"{owner}: the optimizer's parameters have taken {sorted(counts)} steps and the scheduler {step}; "
            "export after optimizer.step() and scheduler.step()"
        )


def is_float64(owner: str, arrays: Mapping[str, np.ndarray]) -> bool:
    """Whether the parameters are float64 (else float32); refuses other or mixed types."""
    dtypes = {a.dtype for a in arrays.values()}
    if not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)} or len(dtypes) != 1:
        raise ValueError(
            f"{owner}: parameters of dtypes {sorted(map(str, dtypes))}; a model of one float type "
            "(float32 or float64) moves"
        )
    return dtypes == {np.dtype(np.float64)}


def write_step(state: dict[str, Any], count: int, group: Mapping[str, Any], param: torch.Tensor) -> None:
    """Sets torch's per-parameter ``"step"`` to ``count`` as torch makes it: a float32 0-dim tensor on the
    parameter's device for a fused or capturable group, a CPU one (the default float type) otherwise."""
    old = state.get("step")
    if isinstance(old, torch.Tensor):
        like = old
    elif group.get("fused") or group.get("capturable"):
        like = torch.zeros((), dtype=torch.float32, device=param.device)
    else:
        like = torch.zeros(())
    state["step"] = torch.full((), float(count), dtype=like.dtype, device=like.device)
