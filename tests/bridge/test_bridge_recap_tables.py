"""build_recap_optimizer with per-table optimizers: towers and backbone on Adam, every table on its own rule."""

from __future__ import annotations

from pathlib import Path

import bridge_toys as toys
import pytest
import torch
from test_resume_clients import CHECKPOINTERS, Case, max_gaps

from functional_opt import config, table_config
from functional_opt.schedules import compute_lr
from torch_bridge import build_recap_optimizer
from torch_bridge.schedulers import LRShim
from torch_bridge.workarounds import fused_kernel_settings, fused_leaves

STEPS = 20


RAMP = {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 6}}
STAIRS = {"piecewise_constant": {"learning_rate_boundaries": [4, 11], "learning_rate_values": [0.3, 0.1, 0.05]}}


def tables() -> table_config.LargeEmbeddingsConfig:
    def table(name: str, rows: int, optimizer: dict) -> dict:
        return {
            "name": name,
            "num_embeddings": rows,
            "embedding_dim": toys.EMB_DIM,
            "data_type": "fp32",
            "optimizer": optimizer,
        }

    return table_config.LargeEmbeddingsConfig(
        tables=[
            table("t0", 32, {"rowwise_adagrad": {"lr": 0.1, "eps": 1e-8}, "learning_rate": RAMP}),
            table("t1", 24, {"sgd": {"lr": 0.3}, "learning_rate": STAIRS}),
            table("t2", toys.SIDE_ROWS, {"adagrad": {"lr": 0.05, "eps": 1e-8}}),
        ]
    )


def build(seed: int = 0, fused: bool = True):
    model = toys.RecapToyModel(seed=seed)
    if fused:
        model = toys.shard_fused(model, tables=tables())
    opt, sched = build_recap_optimizer(model, toys.recap_config(), tables=tables())
    return model, opt, sched


def test_groups_kernels_and_step0_rates(process_group: None) -> None:
    model, opt, sched = build()
    assert isinstance(sched, LRShim)
    dense = list(toys.dense_group_learning_rates())[:-1]  # towers and backbone; no dense_ebc with tables
    assert [g["name"] for g in opt.param_groups] == [*dense, "t2", "t0", "t1"]
    assert [fused_kernel_settings(leaf)[0] for leaf in fused_leaves(opt)] == ["EXACT_ROWWISE_ADAGRAD", "EXACT_SGD"]
    rates = table_config.table_learning_rates(tables())
    assert sched.get_last_lr()[-3:] == [compute_lr(rates[t], 0) for t in ("t2", "t0", "t1")]
    children = [type(getattr(o, "_optimizer", o)).__name__ for _, o in opt.optimizers]
    assert children[:2] == ["Adam", "Adagrad"]


def test_every_group_and_kernel_follows_its_schedule(process_group: None) -> None:
    model, opt, sched = build()
    rates = {**toys.dense_group_learning_rates(), **table_config.table_learning_rates(tables())}
    seen = []

    def before_step(k: int, _: toys.Batch) -> None:
        for group in opt.param_groups:
            assert toys.close(group["lr"], compute_lr(rates[group["name"]], k)), (group["name"], k)
        for leaf in fused_leaves(opt):
            name = leaf.param_groups[0]["name"]
            # The rate the kernel held in this step's backward (torchrec exposes no public accessor).
            held = float(leaf._emb_module.get_learning_rate())
            assert held == float(torch.tensor(compute_lr(rates[name], k), dtype=torch.float32)), (name, k)
            seen.append(name)

    toys.train(model, opt, sched, toys.make_batches(STEPS), before_step=before_step)
    assert len(seen) == 2 * STEPS


def test_fused_and_plain_tables_train_the_same(process_group: None) -> None:
    fused, plain = build(), build(fused=False)
    with torch.no_grad():  # the sharder initialises its tables itself: start from the same rows
        start = toys.dense_state(fused[0])
        for name, p in plain[0].named_parameters():
            p.copy_(start[name])
    batches = toys.make_batches(STEPS)
    toys.train(*fused, batches)
    toys.train(*plain, batches)
    got, expected = toys.dense_state(fused[0]), toys.dense_state(plain[0])
    assert sorted(got) == sorted(expected)
    for name in expected:
        scale = max(1.0, float(expected[name].abs().max()))
        assert float((got[name] - expected[name]).abs().max()) <= 1e-5 * scale, name


# torch's get_state_dict cannot walk a DistributedModelParallel model's submodules (as for the recap DMP tests).
@pytest.mark.parametrize("checkpointer", ["torch.save", "dcp"])
def test_resume_is_bitwise_equal(process_group: None, tmp_path: Path, checkpointer: str) -> None:
    batches = toys.make_batches(12)

    def train(model, opt, sched, start, stop):
        toys.train(model, opt, sched, batches[start:stop])

    assert max_gaps(Case(build, train, toys.dense_state), CHECKPOINTERS[checkpointer], tmp_path / "ckpt") == (0, 0)


def test_tables_and_one_embedding_optimizer_together_are_refused() -> None:
    with pytest.raises(ValueError, match="either as emb_optimizer_config .* or as tables"):
        build_recap_optimizer(toys.RecapToyModel(), toys.recap_config(), toys.emb_config(), tables=tables())


def test_a_table_named_like_a_dense_group_is_refused() -> None:
    model = torch.nn.Module()
    model.embedding_bags = torch.nn.ModuleDict({"backbone": torch.nn.EmbeddingBag(4, 2)})
    model.towers = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1)})
    model.mlp = torch.nn.Linear(2, 2)
    recap = config.RecapOptimizerConfig(
        adam={},
        multi_task_learning_rates={
            "tower_learning_rates": {"a": {"constant": 0.1}},
            "backbone_learning_rate": {"constant": 0.01},
        },
    )
    clash = table_config.LargeEmbeddingsConfig(
        tables=[{"name": "backbone", "num_embeddings": 4, "embedding_dim": 2, "data_type": "fp32",
                 "optimizer": {"sgd": {"lr": 0.1}}}]
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"tables \['backbone'\] are named like a tower or backbone"):
        build_recap_optimizer(model, recap, tables=clash)
