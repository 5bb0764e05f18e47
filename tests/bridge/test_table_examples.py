"""The example files with per-table optimizers load, train on torchrec's fused kernels and resume bitwise."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import table_toys as toys
import torch
from test_resume_clients import CHECKPOINTERS, Case, max_gaps

from functional_opt import demo_model, table_config
from functional_opt.config_file import load_config_file
from functional_opt.schedules import compute_lr
from torch_bridge import apply_table_optimizers, build_embedding_optimizer, build_recap_optimizer
from torch_bridge import demo_model as torch_demo
from torch_bridge.workarounds import fused_kernel_settings, fused_leaves

REPO = Path(__file__).resolve().parents[2]
STEPS = 8


def small(tables: table_config.LargeEmbeddingsConfig, rows: dict[str, int]) -> table_config.LargeEmbeddingsConfig:
    """The file's tables, with the rows of the test model (the files' tables hold millions)."""
    return table_config.LargeEmbeddingsConfig(
        tables=[t.model_copy(update={"num_embeddings": rows[t.name]}) for t in tables.tables]
    )


@pytest.mark.parametrize("checkpointer", ["torch.save", "dcp"])
def test_the_twhin_example_trains_each_table_on_its_schedule_and_resumes(
    process_group: None, tmp_path: Path, checkpointer: str
) -> None:
    loaded = load_config_file(REPO / "examples" / "twhin.yaml")
    tables = small(loaded.tables, toys.ROWS)
    batches = toys.make_batches(2 * STEPS)

    def build(seed: int):
        model = toys.TwhinToy(seed=seed)
        apply_table_optimizers(model, tables)
        sharded = toys.shard(model)
        optimizer, scheduler = build_embedding_optimizer(sharded, tables, loaded.optimizer)
        return sharded, optimizer, scheduler

    def train(model, optimizer, scheduler, start, stop):
        for batch in batches[start:stop]:
            optimizer.zero_grad()
            toys.loss_fn(model, batch).backward()
            optimizer.step()
            scheduler.step()

    model, optimizer, scheduler = build(0)
    assert [fused_kernel_settings(leaf)[0] for leaf in fused_leaves(optimizer)] == ["EXACT_SGD", "EXACT_SGD"]
    train(model, optimizer, scheduler, 0, STEPS)
    rates = loaded.learning_rates()
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == {
        name: compute_lr(rates[name], STEPS) for name in ("sgd", "user", "tweet")
    }
    gaps = max_gaps(Case(build, train, toys.table_weights), CHECKPOINTERS[checkpointer], tmp_path / "ckpt")
    assert gaps == (0.0, 0.0)


def test_the_recap_example_trains_towers_and_tables_and_resumes(process_group: None, tmp_path: Path) -> None:
    loaded = load_config_file(REPO / "examples" / "recap_tables.yaml")
    towers = tuple(loaded.optimizer.multi_task_learning_rates.tower_learning_rates)
    spec = dataclasses.replace(
        demo_model.ModelSpec(tasks=towers), tables=tuple((t.name, 50) for t in loaded.tables.tables), embedding_dim=8
    )
    tables = small(loaded.tables, dict(spec.tables))
    batches = demo_model.make_batches(spec, 2 * STEPS, batch_size=16, seed=2)

    def build(seed: int):
        model = torch_demo.shard_with_fused_embeddings(torch_demo.DemoRankingModel(spec, seed=seed), 0.0, tables=tables)
        optimizer, scheduler = build_recap_optimizer(model, loaded.optimizer, tables=tables)
        return model, optimizer, scheduler

    def train(model, optimizer, scheduler, start, stop):
        for batch in batches[start:stop]:
            dense, features, labels = torch_demo.to_torch(batch, spec)
            optimizer.zero_grad()
            torch_demo.loss_fn(model(dense, features), labels).backward()
            optimizer.step()
            scheduler.step()

    model, optimizer, _ = build(0)
    kernels = [fused_kernel_settings(leaf)[0] for leaf in fused_leaves(optimizer)]
    assert kernels == ["EXACT_ROWWISE_ADAGRAD", "EXACT_ADAGRAD", "EXACT_SGD"]
    assert [g["name"] for g in optimizer.param_groups][-3:] == ["user_id", "tweet_id", "author_id"]

    def params(m: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v) for k, v in torch_demo.named_arrays(m).items()}

    assert max_gaps(Case(build, train, params), CHECKPOINTERS["dcp"], tmp_path / "ckpt") == (0.0, 0.0)
