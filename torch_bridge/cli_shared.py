"""What ``functional-opt check`` and ``demo`` share on the torch side: the model spec, the embedding rate, quiet torch.

Example:
    >>> group_label({"name": "backbone"}, "recap", "adam")
    'backbone'
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from functional_opt import config as config_lib
from functional_opt import demo_model, grouping
from functional_opt.cli import CliError
from functional_opt.config_file import EMBEDDINGS, LoadedConfig

__all__ = [
    "DEFAULT_EMBEDDING_LR",
    "DEFAULT_TASKS",
    "MAX_TABLE_ROWS",
    "check_spec",
    "demo_spec",
    "embedding_config",
    "group_label",
    "quiet_torch",
]

DEFAULT_EMBEDDING_LR = 0.01
"""Constant embedding learning rate used when the file has none (the demo model always has tables)."""
DEFAULT_TASKS = ("recap.is_clicked", "recap.is_replied")


def _tasks(loaded: LoadedConfig) -> tuple[str, ...]:
    """The config's towers (multi-task), else two default tasks."""
    opt = loaded.optimizer
    if isinstance(opt, config_lib.RecapOptimizerConfig) and opt.multi_task_learning_rates is not None:
        return tuple(opt.multi_task_learning_rates.tower_learning_rates)
    return DEFAULT_TASKS


def check_spec(loaded: LoadedConfig) -> demo_model.ModelSpec:
    """The (small) demo model of ``check``: one tower per task of the config."""
    return _spec(loaded, demo_model.ModelSpec())


def demo_spec(loaded: LoadedConfig) -> demo_model.ModelSpec:
    """The demo model of ``demo``: one tower per task of the config, two larger tables."""
    base = demo_model.ModelSpec(
        tables=(("user_id", 1000), ("tweet_id", 500)), embedding_dim=8, backbone_sizes=(64, 32), tower_sizes=(16,)
    )
    return _spec(loaded, base)


MAX_TABLE_ROWS = 100
"""The demo model's tables take the config's names and widths, with at most this many rows each."""


def _spec(loaded: LoadedConfig, base: demo_model.ModelSpec) -> demo_model.ModelSpec:
    changes: dict[str, Any] = {"tasks": _tasks(loaded)}
    if loaded.table_optimizers:
        tables = loaded.tables.tables
        changes["tables"] = tuple((t.name, min(t.num_embeddings, MAX_TABLE_ROWS)) for t in tables)
        if len({t.embedding_dim for t in tables}) == 1:
            changes["embedding_dim"] = tables[0].embedding_dim
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as exc:
        raise CliError(f"{loaded.path}: cannot build the demo model: {exc}") from exc


def embedding_config(
    loaded: LoadedConfig,
) -> tuple[config_lib.EmbeddingOptimizerConfig, config_lib.LearningRate, str | None]:
    """The file's embedding optimizer and schedule, or a constant one and a note saying so."""
    if loaded.embedding is not None and loaded.embedding.learning_rate is not None:
        return loaded.embedding, loaded.embedding.learning_rate, None
    note = (
        f"note: {loaded.path} has no embedding learning rate; the demo model's embedding tables use a constant "
        f"{DEFAULT_EMBEDDING_LR} (set model.large_embeddings.optimizer.learning_rate or emb_optimizer.learning_rate)"
    )
    learning_rate = config_lib.LearningRate(constant=DEFAULT_EMBEDDING_LR)
    return config_lib.EmbeddingOptimizerConfig(learning_rate=learning_rate), learning_rate, note


@contextlib.contextmanager
def quiet_torch(threads: int = 1) -> Iterator[None]:
    """One intra-op thread, and torchrec's / torch's warnings about their own deprecations silenced."""
    previous = torch.get_num_threads()
    loggers = [logging.getLogger(name) for name in ("torchrec", "torch.distributed", "torch.fx")]
    levels = [lg.level for lg in loggers]
    torch.set_num_threads(threads)
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", module="torchrec")
            warnings.filterwarnings("ignore", module="fbgemm_gpu")
            yield
    finally:
        torch.set_num_threads(previous)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def group_label(group: Mapping[str, Any], kind: str, algorithm: str) -> str:
    """The CLI's label of a torch param group: its name, ``embeddings`` for fused groups."""
    name = group.get("name")
    if not isinstance(name, str):
        return EMBEDDINGS
    if name == "ALL_PARAMS" and kind == "generic":
        return algorithm
    return EMBEDDINGS if name == grouping.DENSE_EMBEDDINGS else name
