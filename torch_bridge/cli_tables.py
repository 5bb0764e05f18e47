"""``functional-opt check`` for a config whose embedding tables carry their own optimizers.

The demo model takes the config's tables (names and widths, at most
:data:`~torch_bridge.cli_shared.MAX_TABLE_ROWS` rows each). In float32 the
torch side shards them with ``DistributedModelParallel`` onto torchrec's FUSED
kernels (each table's algorithm in backward, :func:`torch_bridge.apply_table_optimizers`);
in float64, which the fused kernels do not run, each table gets its own torch
optimizer (``torch.nn.EmbeddingBag`` tables). The dense parameters take the
file's optimizer: the recap optimizer (``build_recap_optimizer(..., tables=...)``)
or a generic one (``build_embedding_optimizer``, TwHIN's translation optimizer).
The JAX side is :func:`functional_opt.optimizers.build_table_optimizer`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from functional_opt import config as config_lib
from functional_opt import demo_model, grouping
from functional_opt.config_file import LoadedConfig
from torch_bridge.cli_shared import MAX_TABLE_ROWS

__all__ = [
    "jax_table_optimizer",
    "table_groups",
    "table_notes",
    "tables_in_torch",
    "torch_labels",
    "torch_table_optimizer",
]


def table_groups(loaded: LoadedConfig, names: Sequence[str]) -> dict[str, list[str]]:
    """Label -> parameter names: each table by name, the rest by the recap rule or as one group."""
    tables = {name: [n for n in names if grouping.table_of(n) == name] for name in loaded.table_optimizers}
    dense = [n for n in names if grouping.table_of(n) not in tables]
    opt = loaded.optimizer
    if isinstance(opt, config_lib.RecapOptimizerConfig):
        groups = {g.name: list(g.param_names) for g in grouping.recap_groups(dense, opt)}
    else:
        groups = {opt.algorithm_name: dense}
    return {**groups, **tables}


def torch_table_optimizer(
    loaded: LoadedConfig, model: torch.nn.Module, fused: bool
) -> tuple[torch.nn.Module, Any, Any]:
    """``(model, optimizer, scheduler)``: ``model`` sharded onto fused kernels when ``fused``, else as it is."""
    from torch_bridge import build_embedding_optimizer, build_recap_optimizer
    from torch_bridge import demo_model as torch_demo

    if fused:
        model = torch_demo.shard_with_fused_embeddings(model, 0.0, tables=loaded.tables)
    opt = loaded.optimizer
    if isinstance(opt, config_lib.RecapOptimizerConfig):
        optimizer, scheduler = build_recap_optimizer(model, opt, tables=loaded.tables)
    else:
        optimizer, scheduler = build_embedding_optimizer(model, loaded.tables, opt)
    return model, optimizer, scheduler


def torch_labels(group: Mapping[str, Any], tables: Sequence[str]) -> list[str]:
    """The labels of a torch param group: its name, or each table of a fused kernel named ``a+b``."""
    name = str(group.get("name"))
    parts = name.split("+")
    return parts if all(p in tables for p in parts) else [name]


def jax_table_optimizer(loaded: LoadedConfig, params: Any) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
    """The optax optimizer of ``loaded`` for ``params`` and a function reading every group's last rate."""
    from functional_opt import optimizers
    from functional_opt.table_optimizers import DENSE

    tx = optimizers.build_table_optimizer(params, loaded.tables, loaded.optimizer)
    recap = isinstance(loaded.optimizer, config_lib.RecapOptimizerConfig)
    algorithm = None if recap else loaded.optimizer.algorithm_name

    def lrs_of(state: Any) -> dict[str, Any]:
        inner = {label: getattr(s, "inner_state", s) for label, s in state.inner_states.items()}
        rates = {name: optimizers.learning_rate(inner[name]) for name in loaded.table_optimizers}
        if DENSE in inner:
            dense = inner[DENSE]
            rates.update(
                optimizers.group_learning_rates(dense) if recap else {algorithm: optimizers.learning_rate(dense)}
            )
        return rates

    return tx, lrs_of


def tables_in_torch(dtype: str, fused: bool) -> str:
    """How the check's torch side holds the tables."""
    if fused:
        return "torchrec EmbeddingBagCollection on fused kernels, DistributedModelParallel"
    return "torch.nn.EmbeddingBag" if dtype == "float64" else "torchrec EmbeddingBagCollection"


def table_notes(loaded: LoadedConfig, spec: demo_model.ModelSpec, fused: bool) -> list[str]:
    """What ``check`` changes of a config's tables for the demo model, said."""
    notes = []
    capped = [t.name for t in loaded.tables.tables if t.num_embeddings > MAX_TABLE_ROWS]
    if capped:
        notes.append(f"note: tables {capped} get {MAX_TABLE_ROWS} rows in the demo model (their config has more)")
    if len({t.embedding_dim for t in loaded.tables.tables}) > 1:
        notes.append(f"note: the demo model's tables all have width {spec.embedding_dim}")
    half = [t.name for t in loaded.tables.tables if t.data_type.value == "fp16"]
    if half:
        notes.append(f"note: tables {half} are fp16 in the config and trained in the check's float type here")
    if not fused:
        notes.append("note: float64 has no fused kernel: each table trains with its own torch optimizer")
    return notes
