"""Every embedding table on its own optimizer and schedule, on torchrec's fused kernels or not.

Two calls, as in TML's TwHIN project (whose scheduler is dropped there):

1. :func:`apply_table_optimizers` before ``DistributedModelParallel``: each
   table of the model gets its algorithm in backward (torchrec's
   ``apply_optimizer_in_backward``): ``sgd`` -> ``torch.optim.SGD`` (fbgemm's
   exact SGD), ``adagrad`` -> ``torch.optim.Adagrad`` (exact Adagrad),
   ``rowwise_adagrad`` -> torchrec's ``RowWiseAdagrad`` (exact row-wise Adagrad),
   created at its schedule's step-0 rate. Tables whose schedules or
   hyper-parameters differ are put in different fused kernels; tables with the
   same schedule and hyper-parameters may share one.
2. :func:`build_embedding_optimizer` after sharding: the model's fused optimizer
   (one param group per kernel, named after its tables), a torch optimizer per
   table that is not fused (the same algorithm, one group named after the
   table), and the dense optimizer over every other parameter, in one
   :class:`~torch_bridge.keyed.RecapOptimizer`; and an
   :class:`~torch_bridge.schedulers.LRShim` that drives each group with its
   table's schedule (and sets each fused kernel's rate itself, whatever the loop
   order).

A model whose tables are not sharded (no ``apply_table_optimizers``) trains with
the same rules through the per-table torch optimizers.

Example:
    >>> import torch
    >>> from functional_opt import config, table_config
    >>> from torch_bridge import build_embedding_optimizer
    >>> model = torch.nn.Module()
    >>> model.embedding_bags = torch.nn.ModuleDict({"user": torch.nn.EmbeddingBag(10, 4)})
    >>> model.translation = torch.nn.Linear(4, 4)
    >>> tables = table_config.LargeEmbeddingsConfig(tables=[{
    ...     "name": "user", "num_embeddings": 10, "embedding_dim": 4, "data_type": "fp32",
    ...     "optimizer": {"rowwise_adagrad": {"lr": 0.1}}}])
    >>> opt, sched = build_embedding_optimizer(model, tables, config.OptimizerConfig(sgd={"lr": 0.5}))
    >>> [(g["name"], g["lr"]) for g in opt.param_groups]
    [('sgd', 0.5), ('user', 0.1)]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad

from functional_opt import config as config_lib
from functional_opt import grouping, schedule_plan, table_config
from functional_opt.grouping import table_of
from torch_bridge.keyed import RecapOptimizer
from torch_bridge.optimizers import make_torch_optimizer
from torch_bridge.schedulers import LRShim
from torch_bridge.workarounds import fused_kernel_settings, fused_leaves, set_kernel_grouping_key

if TYPE_CHECKING:
    from torchrec.optim.keyed import KeyedOptimizer

__all__ = [
    "KERNELS",
    "KERNEL_OPTIMIZERS",
    "TableParts",
    "apply_table_optimizers",
    "build_embedding_optimizer",
    "check_in_backward",
    "fused_optimizer_of",
    "sharded_tables",
    "table_parts",
]

TablesLike = table_config.LargeEmbeddingsConfig | Sequence[table_config.EmbeddingBagConfig]

# The fused kernel each algorithm runs (fbgemm's optimizer type names).
KERNELS = {"sgd": "EXACT_SGD", "adagrad": "EXACT_ADAGRAD", "rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD"}


KERNEL_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
    "rowwise_adagrad": RowWiseAdagrad,
}


def _options(owner: str, table: table_config.EmbeddingBagConfig) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The torch optimizer class and hyper-parameters (without ``lr``) of a table, refused when no kernel runs it."""
    algorithm, options = table_config.fused_options(owner, table)
    return KERNEL_OPTIMIZERS[algorithm], options


def _step0(tables: Sequence[table_config.EmbeddingBagConfig]) -> dict[str, float]:
    """Every table's schedule at step 0, in one evaluation."""
    rates = [config_lib.learning_rate_of(t.optimizer) for t in tables]
    values = schedule_plan.evaluate(rates, np.zeros(1, dtype=np.int64))[0]
    return {t.name: float(v) for t, v in zip(tables, values, strict=True)}


def apply_table_optimizers(model: torch.nn.Module, tables: TablesLike) -> None:
    """Gives every table of ``model`` its algorithm in backward, before ``DistributedModelParallel`` shards it.

    Each table of a torchrec ``EmbeddingBagCollection`` (or ``EmbeddingCollection``)
    gets torchrec's ``apply_optimizer_in_backward`` with its algorithm (see the
    module docstring) at its schedule's step-0 rate; the sharder turns it into the
    table's fused kernel. Other tables (a plain ``torch.nn.EmbeddingBag``) are left
    as they are: the builder gives each its own torch optimizer. Tables are grouped into
    kernels by algorithm, hyper-parameters and schedule, so tables that share a
    kernel (and so its one learning rate) share a schedule.

    Args:
        model: the unsharded model; its tables are the parameters named
            ``...embedding_bags.<table>.weight``.
        tables: the tables' configs (names as in the model).

    Raises:
        ValueError: a table has no config or a config no table, a table already
            has an in-backward optimizer, or an algorithm or option has no fused
            kernel (each named); nothing is changed then.
        TypeError: ``tables`` are not table configs.
    """
    from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection
    from torchrec.optim import apply_optimizer_in_backward

    owner = "apply_table_optimizers"
    configs = table_config.table_configs(owner, tables)
    named = dict(model.named_parameters())
    found = grouping.match_tables(owner, list(named), configs)
    # Only torchrec's collections become fused kernels; other tables keep their torch optimizer (the builder's).
    collections = (EmbeddingBagCollection, EmbeddingCollection)
    shardable = {
        f"{prefix}.{n}" if prefix else n
        for prefix, module in model.named_modules()
        if isinstance(module, collections)
        for n, _ in module.named_parameters()
    }
    found = {t: [n for n in names if n in shardable] for t, names in found.items()}
    applied = [t for t in configs if any(hasattr(named[n], "_optimizer_classes") for n in found[t])]
    if applied:
        raise ValueError(f"{owner}: tables {applied} already have an in-backward optimizer; apply it once")
    options = {name: _options(owner, table) for name, table in configs.items()}
    starts = _step0(list(configs.values()))
    for name, table in configs.items():
        optimizer_class, kwargs = options[name]
        params = [named[n] for n in found[name]]
        if not params:
            continue
        apply_optimizer_in_backward(optimizer_class, params, {"lr": starts[name], **kwargs})
        key = config_lib.learning_rate_of(table.optimizer).model_dump_json(exclude_none=True)
        set_kernel_grouping_key(params, f"{table.optimizer.algorithm_name}:{sorted(kwargs.items())}:{key}")


def sharded_tables(model: torch.nn.Module) -> set[str]:
    """Every table a ``DistributedModelParallel`` model's sharding plan places, on any rank (empty otherwise)."""
    plan = getattr(getattr(model, "plan", None), "plan", None)
    if not isinstance(plan, Mapping):
        return set()
    return {str(t) for module_plan in plan.values() if isinstance(module_plan, Mapping) for t in module_plan}


def fused_optimizer_of(model: torch.nn.Module) -> KeyedOptimizer | None:
    """The model's fused (in-backward) embedding optimizer, or None when it has none or an empty one."""
    fused = getattr(model, "fused_optimizer", None)
    if fused is None or not list(fused.param_groups):
        return None
    return fused


def check_in_backward(owner: str, in_backward: Sequence[str], fused: KeyedOptimizer | None) -> None:
    """In-backward parameters must belong to the fused optimizer, or their LR could not be scheduled."""
    if not in_backward:
        return
    exposed = set(fused.params) if fused is not None else set()
    hidden = [n for n in in_backward if n not in exposed]
    if hidden:
        where = "model.fused_optimizer does not hold them" if fused is not None else "the model has no fused_optimizer"
        raise ValueError(
            f"{owner}: parameters {hidden} are updated by an in-backward optimizer but {where}, "
            "so their learning rate cannot be scheduled; shard them with DistributedModelParallel "
            "(FUSED kernel) or drop apply_optimizer_in_backward"
        )


def _fused_groups(
    owner: str, fused: KeyedOptimizer, configs: Mapping[str, table_config.EmbeddingBagConfig]
) -> list[tuple[dict[str, Any], str, config_lib.LearningRate]]:
    """Each fused kernel's param group with its name (its tables joined by ``+``) and its tables' one schedule."""
    out = []
    for leaf in fused_leaves(fused):
        names = [table_of(k) for k in leaf.params]
        unknown = [k for k, t in zip(leaf.params, names, strict=True) if t is None or t not in configs]
        if unknown:
            raise ValueError(f"{owner}: fused tables {unknown} have no config (config tables: {list(configs)})")
        tables = [configs[t] for t in names if t is not None]
        schedules = {config_lib.learning_rate_of(t.optimizer).model_dump_json() for t in tables}
        algorithms = {t.optimizer.algorithm_name for t in tables}
        if len(schedules) > 1 or len(algorithms) > 1:
            raise ValueError(
                f"{owner}: tables {[t.name for t in tables]} share one fused kernel (one learning rate) but their "
                "configs give different schedules or algorithms; call apply_table_optimizers before sharding"
            )
        kernel, eps = fused_kernel_settings(leaf)
        table = tables[0]
        expected = KERNELS.get(table.optimizer.algorithm_name)
        wanted_eps = getattr(config_lib.get_optimizer_algorithm_config(table.optimizer), "eps", None)
        if kernel != expected or (wanted_eps is not None and not np.float32(eps) == np.float32(wanted_eps)):
            raise ValueError(
                f"{owner}: tables {[t.name for t in tables]} run {kernel} (eps {eps}) in their fused kernel but their "
                f"config asks for {table.optimizer.algorithm_name} (eps {wanted_eps}); call apply_table_optimizers "
                "before sharding"
            )
        name = "+".join(t.name for t in tables)
        out += [(group, name, config_lib.learning_rate_of(table.optimizer)) for group in leaf.param_groups]
    return out


class TableParts(NamedTuple):
    """The tables' share of an optimizer: their optimizers (fused last), schedules by group, parameter names.

    ``fused_names``: each fused kernel's param group and the name it takes (its tables
    joined by ``+``); :meth:`name_fused_groups` writes them, once the build cannot fail.
    """

    optimizers: list[KeyedOptimizer]
    learning_rates: dict[str, config_lib.LearningRate]
    param_names: set[str]
    fused_names: list[tuple[dict[str, Any], str]]

    def name_fused_groups(self) -> None:
        for group, name in self.fused_names:
            group["name"] = name


def table_parts(
    owner: str,
    named: Mapping[str, torch.Tensor],
    fused: KeyedOptimizer | None,
    tables: TablesLike,
    elsewhere: Collection[str] = (),
) -> TableParts:
    """A torch optimizer per table that is not fused, then the fused optimizer with a group per kernel, checked.

    Args:
        owner: the builder's name, for messages.
        named: the parameters outside in-backward optimizers, by name.
        fused: the model's fused optimizer, or None.
        tables: every table's config; each must name a table of ``named``, of
            ``fused`` or of ``elsewhere``.
        elsewhere: the model's tables sharded to other ranks (:func:`sharded_tables`).
    """
    configs = table_config.table_configs(owner, tables)
    fused_names = list(fused.params) if fused is not None else []
    by_table = grouping.match_tables(owner, [*named, *fused_names], configs, elsewhere)
    fused_tables = {table_of(n) for n in fused_names}
    options = {name: _options(owner, table) for name, table in configs.items()}
    fused_groups = _fused_groups(owner, fused, configs) if fused is not None else []
    starts = _step0(list(configs.values()))
    optimizers: list[KeyedOptimizer] = []
    lr_dict: dict[str, config_lib.LearningRate] = {}
    for name, table in configs.items():
        if name in fused_tables or name not in by_table:  # fused, or held by other ranks only
            continue
        optimizer_class, kwargs = options[name]
        params = {n: named[n] for n in by_table[name]}
        group = {"params": list(params.values()), "lr": starts[name], "name": name}
        optimizers.append(KeyedOptimizerWrapper(params, lambda _, c=optimizer_class, g=group, k=kwargs: c([g], **k)))
        lr_dict[name] = config_lib.learning_rate_of(table.optimizer)
    if fused is not None:
        optimizers.append(fused)
        lr_dict.update({name: rate for _, name, rate in fused_groups})
    param_names = {n for t, names in by_table.items() if t not in fused_tables for n in names}
    return TableParts(optimizers, lr_dict, param_names, [(group, name) for group, name, _ in fused_groups])


def build_embedding_optimizer(
    model: torch.nn.Module,
    tables: TablesLike,
    dense_optimizer: config_lib.OptimizerConfig | None = None,
    *,
    dense_name: str | None = None,
) -> tuple[RecapOptimizer, LRShim]:
    """The optimizer of a model whose tables each have their own algorithm and schedule, and its scheduler.

    Args:
        model: the model, usually a ``DistributedModelParallel`` whose tables got
            :func:`apply_table_optimizers` before sharding; tables that are not
            fused get a torch optimizer each.
        tables: every table's config.
        dense_optimizer: the optimizer of every parameter that is not a table
            (TwHIN's ``translation_optimizer``); required when there are any.
        dense_name: the dense group's name (default: its algorithm, as ``table`` shows it).

    Returns:
        ``(optimizer, scheduler)``: a :class:`~torch_bridge.keyed.RecapOptimizer`
        holding the dense optimizer, one per unfused table, then the fused
        optimizer; an :class:`~torch_bridge.schedulers.LRShim` whose groups are
        the dense group, each table, and each fused kernel (named after its tables).

    Raises:
        ValueError: tables and configs do not match, a fused kernel's tables have
            different schedules or its algorithm differs from the config, dense
            parameters without a dense optimizer, in-backward parameters outside
            the fused optimizer (each named).
        TypeError: configs of the wrong type.
    """
    owner = "build_embedding_optimizer"
    configs = table_config.table_configs(owner, tables)
    if dense_optimizer is not None and not isinstance(dense_optimizer, config_lib.OptimizerConfig):
        raise TypeError(f"{owner}: dense_optimizer must be an OptimizerConfig or None, got {type(dense_optimizer)}")
    every = list(model.named_parameters())
    named = dict(in_backward_optimizer_filter(every, include=False))
    in_backward = [n for n, p in in_backward_optimizer_filter(every, include=True) if p.numel()]
    fused = fused_optimizer_of(model)
    check_in_backward(owner, in_backward, fused)
    parts = table_parts(owner, named, fused, tables, sharded_tables(model))
    optimizers: list[KeyedOptimizer] = []
    lr_dict: dict[str, config_lib.LearningRate] = {}
    dense = {n: p for n, p in named.items() if n not in parts.param_names}
    if dense:
        if dense_optimizer is None:
            raise ValueError(f"{owner}: parameters {list(dense)} are not tables; give a dense_optimizer for them")
        name = dense_name or dense_optimizer.algorithm_name
        if name in configs:
            raise ValueError(f"{owner}: dense_name {name!r} is also a table's name; give another dense_name")
        rate = config_lib.learning_rate_of(dense_optimizer)
        start = float(schedule_plan.evaluate([rate], np.zeros(1, dtype=np.int64))[0, 0])
        group = {"params": list(dense.values()), "lr": start, "name": name}
        optimizers.append(KeyedOptimizerWrapper(dense, lambda _, g=group: make_torch_optimizer([g], dense_optimizer)))
        lr_dict[name] = rate
    optimizers += parts.optimizers
    lr_dict.update(parts.learning_rates)
    parts.name_fused_groups()
    optimizer = RecapOptimizer(optimizers)
    return optimizer, LRShim(optimizer, lr_dict)
