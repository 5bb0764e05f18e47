"""Moving a run whose embedding tables have optimizers of their own between torch and JAX.

The torch side is ``torch_bridge.build_recap_optimizer(model, recap, tables=...)``
or :func:`torch_bridge.build_embedding_optimizer` (each table on its own
optimizer and schedule, on torchrec's fused TBE kernels or not, the other
parameters on the dense optimizer) with its
:class:`~torch_bridge.schedulers.LRShim`; the JAX side is
:func:`functional_opt.optimizers.build_table_optimizer` for the same table
configs and dense optimizer, whose state is optax's ``PartitionState`` keyed by
table name (and ``"dense"``). By table algorithm:

* ``adagrad``: fbgemm's ``momentum1`` (one value per element) on a fused kernel,
  ``torch.optim.Adagrad``'s ``sum`` otherwise, is the accumulator of
  :class:`~functional_opt.table_rules.FusedAdagradState`;
* ``rowwise_adagrad``: ``momentum1`` (one value per row), or torchrec
  ``RowWiseAdagrad``'s ``sum`` (``(rows, 1)``), is the row-wise accumulator;
* ``sgd``: rows only.

A fused kernel's rows and accumulators are ``ShardedTensor`` s: read whole from
every shard, written back into each local shard. The dense parameters move as
with :func:`torch_bridge.build_optimizer` (an ``OptimizerConfig``) or the recap
optimizer (a ``RecapOptimizerConfig``). The configs are given, as the JAX side
needs them; a torch side built from other schedules is refused, naming them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch

from functional_opt import config as config_lib
from functional_opt import grouping, optimizers, table_config
from functional_opt.grouping import table_of
from functional_opt.table_optimizers import DENSE, DenseLike, TablesLike
from functional_opt.table_rules import FusedAdagradState
from torch_bridge import recap_transfer, state_transfer
from torch_bridge import transfer_parts as tp
from torch_bridge.schedulers import LRShim
from torch_bridge.tables import KERNEL_OPTIMIZERS, KERNELS
from torch_bridge.workarounds import fused_kernel_settings, optimizer_leaves, wrapped_optimizer

__all__ = ["Holder", "export_table_state", "import_table_state"]


def _unwrapped(name: str) -> str:
    return name.removeprefix(tp.WRAPPER_PREFIX)


class Holder(NamedTuple):
    """Where a parameter's optimizer state lives: its keyed optimizer, the state's key, whether it is fused."""

    leaf: torch.optim.Optimizer
    key: Any
    fused: bool


def _holders(optimizer: torch.optim.Optimizer) -> dict[str, Holder]:
    """Each parameter's :class:`Holder`, by name and by table.

    torchrec's fused optimizers name their tables relative to the sharded module
    (``embedding_bags.<table>.weight``), so a table is also found by its name.
    """
    out = {}
    for leaf, fused in optimizer_leaves(optimizer):
        for name, param in getattr(leaf, "params", {}).items():
            out[_unwrapped(name)] = Holder(leaf, param, fused)
            table = table_of(name)
            if table is not None:
                out[table] = Holder(leaf, param, fused)
    return out


def _check_algorithms(owner: str, holders: Mapping[str, Holder], configs: Mapping[str, Any]) -> None:
    """Refuses tables whose torch optimizer (or fused kernel) runs another algorithm than their config."""
    problems = []
    for name, table in configs.items():
        if name not in holders:  # held by another rank
            continue
        holder, algorithm = holders[name], table.optimizer.algorithm_name
        if holder.fused:
            runs = fused_kernel_settings(holder.leaf)[0]
            ok = runs == KERNELS[algorithm]
        else:
            inner = wrapped_optimizer(holder.leaf)
            runs = type(inner).__name__
            ok = type(inner) is KERNEL_OPTIMIZERS[algorithm]
        if not ok:
            problems.append(f"table {name!r}: torch runs {runs}, its config asks for {algorithm}")
    if problems:
        raise ValueError(f"{owner}: the torch optimizer was built from other configs: " + "; ".join(problems[:5]))


def _check_schedules(
    owner: str, scheduler: LRShim, configs: Mapping[str, table_config.EmbeddingBagConfig], dense: DenseLike
) -> None:
    """Refuses a scheduler whose groups' schedules are not those of the table configs and the dense config."""
    if not isinstance(scheduler, LRShim):
        raise TypeError(f"{owner}: scheduler must be the LRShim of the table optimizer, got {type(scheduler).__name__}")
    expected: dict[str, config_lib.LearningRate] = {}
    if isinstance(dense, config_lib.RecapOptimizerConfig):
        rates = dense.multi_task_learning_rates
        if rates is not None:
            expected.update(rates.tower_learning_rates)
            if rates.backbone_learning_rate is not None:
                expected[grouping.BACKBONE] = rates.backbone_learning_rate
        if dense.single_task_learning_rate is not None:
            expected[grouping.SINGLE_TASK] = dense.single_task_learning_rate
    problems = []
    for name, rate in scheduler.lr_dict.items():
        parts = name.split("+")
        if all(p in configs for p in parts):
            wanted = {p: config_lib.learning_rate_of(configs[p].optimizer) for p in parts}
        elif isinstance(dense, config_lib.OptimizerConfig):  # the one dense group, whatever its name
            wanted = {name: config_lib.learning_rate_of(dense)}
        elif name in expected:
            wanted = {name: expected[name]}
        else:
            problems.append(f"group {name!r} is neither a table nor a group of the dense config")
            continue
        problems += [f"{p}: torch's schedule {rate}, the config's {w}" for p, w in wanted.items() if rate != w]
    if problems:
        raise ValueError(f"{owner}: the torch optimizer was built from other configs: " + "; ".join(problems[:5]))


def _template(params: Any, tables: TablesLike, dense: DenseLike) -> Any:
    return optimizers.build_table_optimizer(params, tables, dense).init(params)


def _dense_groups(params: Any, dense: config_lib.RecapOptimizerConfig) -> list[grouping.ParamGroup]:
    names = [n for n in tp.leaves_by_name(params) if table_of(n) is None]
    return grouping.recap_groups(names, dense)


def _accumulator(table: str, leaf: torch.optim.Optimizer, key: Any) -> tuple[dict[str, Any], str]:
    """The torch state holding a table's accumulator and its entry: fbgemm's ``momentum1``, else torch's ``sum``."""
    state = leaf.state[key]
    fused = f"{table}.momentum1"
    return state, fused if fused in state else "sum"


def _accumulator_pieces(
    table: str, holders: Mapping[str, Holder], shape: tuple[int, ...]
) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """The rows of a table's accumulator this rank holds (none when another rank holds the table).

    torch's ``RowWiseAdagrad`` keeps its row sums as ``(rows, 1)``, fbgemm as
    ``(rows,)``: a plain tensor is reshaped to the JAX accumulator's ``shape``.
    """
    if table not in holders:
        return []
    entries, entry = _accumulator(table, holders[table].leaf, holders[table].key)
    found = entries.get(entry)
    if found is not None and not hasattr(found, "local_shards"):
        found = found.reshape(shape)
    return tp.local_pieces(found)


def export_table_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRShim,
    tables: TablesLike,
    dense: DenseLike = None,
) -> tuple[dict[str, Any], Any, int]:
    """The torch run as ``(params, opt_state, step)`` of ``build_table_optimizer(params, tables, dense)``.

    See :func:`torch_bridge.state_transfer.export_state`.
    """
    owner = "export_state"
    configs = table_config.table_configs(owner, tables)
    _check_schedules(owner, scheduler, configs, dense)
    step = int(scheduler.last_epoch)
    tensors = tp.trained_tensors(model)
    arrays = {n: tp.whole_array(t) for n, t in tensors.items()}
    tp.check_counts(owner, optimizer, step)
    holders = _holders(optimizer)
    _check_algorithms(owner, holders, configs)
    with jax.enable_x64(tp.is_float64(owner, arrays)):
        params = tp.nest(arrays)
        template = _template(params, tables, dense)
        inner = {label: masked.inner_state for label, masked in template.inner_states.items()}
        moved = {}
        for label, state in inner.items():
            if label == DENSE:
                moved[label] = _dense_state(state, params, dense, optimizer, holders, tensors, arrays, step)
                continue
            rate = jnp.asarray(
                tp.rate_before([config_lib.learning_rate_of(configs[label].optimizer)], step)[0],
                state.learning_rate.dtype,
            )
            state = state._replace(count=jnp.asarray(step, jnp.int32), learning_rate=rate)
            if isinstance(state, FusedAdagradState):
                ((name, like),) = tp.leaves_by_name(state.accumulator).items()
                values = tp.assembled(_accumulator_pieces(label, holders, like.shape), like.shape, like.dtype)
                state = state._replace(accumulator=tp.filled(state.accumulator, {name: values}))
            moved[label] = state
        opt_state = template._replace(
            inner_states={
                label: masked._replace(inner_state=moved[label]) for label, masked in template.inner_states.items()
            }
        )
    return params, opt_state, step


def _dense_state(
    state: Any,
    params: Any,
    dense: DenseLike,
    optimizer: torch.optim.Optimizer,
    holders: Mapping[str, Holder],
    tensors: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    step: int,
) -> Any:
    if isinstance(dense, config_lib.RecapOptimizerConfig):
        return recap_transfer.recap_state(state, _dense_groups(params, dense), optimizer, tensors, arrays, step)
    if not isinstance(dense, config_lib.OptimizerConfig):
        raise TypeError(f"export_state: the dense optimizer must be a config to move, got {type(dense).__name__}")
    names = [n for n in tensors if table_of(n) is None]
    leaf = wrapped_optimizer(holders[names[0]][0])
    return state_transfer.generic_state(state, leaf, tensors, arrays, step, config_lib.learning_rate_of(dense))


def import_table_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRShim,
    params: Any,
    opt_state: Any,
    tables: TablesLike,
    dense: DenseLike = None,
) -> None:
    """Writes a JAX run of ``build_table_optimizer(params, tables, dense)`` into the torch model, optimizer, scheduler.

    See :func:`torch_bridge.state_transfer.import_state`.
    """
    owner = "import_state"
    configs = table_config.table_configs(owner, tables)
    _check_schedules(owner, scheduler, configs, dense)
    holders = _holders(optimizer)
    _check_algorithms(owner, holders, configs)
    tensors = tp.trained_tensors(model)
    leaves = tp.leaves_by_name(params)
    tp.check_fit(
        owner,
        tensors,
        params,
        opt_state,
        lambda p: _template(p, tables, dense),
        f"build_table_optimizer for tables {list(configs)}",
    )
    inner = {label: masked.inner_state for label, masked in opt_state.inner_states.items()}
    count = state_transfer.count_of(next(iter(inner.values())))
    with torch.no_grad():
        for name, tensor in tensors.items():
            tp.write_whole(tensor, leaves[name])
        for label, state in inner.items():
            if label == DENSE:
                if isinstance(dense, config_lib.RecapOptimizerConfig):
                    recap_transfer.write_recap(state, _dense_groups(params, dense), optimizer, tensors)
                else:
                    names = [n for n in tensors if table_of(n) is None]
                    leaf = wrapped_optimizer(holders[names[0]][0])
                    state_transfer.write_generic(leaf, {n: tensors[n] for n in names}, state)
                continue
            if isinstance(state, FusedAdagradState):
                ((name, values),) = tp.leaves_by_name(state.accumulator).items()
                if label not in holders:  # a table this rank does not hold
                    continue
                leaf, key, _ = holders[label]
                entries, entry = _accumulator(label, leaf, key)
                if entry in entries and hasattr(entries[entry], "local_shards"):
                    tp.write_whole(entries[entry], np.asarray(values))
                else:
                    old = entries.get(entry)
                    shape = tuple(old.shape) if old is not None else np.shape(values)
                    like = old if old is not None else tensors[name]
                    entries[entry] = torch.as_tensor(np.array(values).reshape(shape)).to(like)
                if "step" in entries:
                    tp.write_step(entries, int(state.count), leaf.param_groups[0], tensors[name])
    tp.set_step(scheduler, count)
