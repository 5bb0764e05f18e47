"""build_recap_optimizer on a DistributedModelParallel model whose EBC uses torchrec's FUSED kernel.

gloo, world size 1, one process (the ``process_group`` fixture); the tables
are sharded table-wise and updated by a fused SGD inside ``backward``.
"""

from __future__ import annotations

import bridge_toys as toys
import pytest
import torch
from torch import nn
from torchrec.optim.fused import FusedOptimizer
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from functional_opt import config
from functional_opt.schedules import compute_lr
from torch_bridge import RecapLRShim, build_recap_optimizer

STEPS = 50
FUSED_TABLES = [f"ebc.embedding_bags.{t}.weight" for t, _, _ in toys.TABLES]


def tables(model: nn.Module) -> dict[str, torch.Tensor]:
    state = toys.dense_state(model)
    return {name: state[name] for name in FUSED_TABLES}


def test_structure_fused_optimizer_last_and_excluded_from_dense_groups(fused_model: nn.Module) -> None:
    opt, sched = build_recap_optimizer(fused_model, toys.recap_config(), toys.emb_config())
    parts = [o for _, o in opt.optimizers]
    assert [type(o) for o in parts[:2]] == [KeyedOptimizerWrapper, KeyedOptimizerWrapper]
    assert parts[2] is fused_model.fused_optimizer
    fused_groups = parts[2].param_groups
    assert len(fused_groups) >= 1
    assert [g.get("name") for g in opt.param_groups[: -len(fused_groups)]] == list(toys.dense_group_learning_rates())
    dense_names = set(parts[0].params) | set(parts[1].params)
    assert not dense_names & set(FUSED_TABLES)
    assert set(opt.params) == dense_names | set(FUSED_TABLES)
    assert sched.group_names == list(toys.dense_group_learning_rates())
    assert sched.emb_learning_rate == toys.emb_learning_rate()
    emb0 = compute_lr(toys.emb_learning_rate(), 0)
    assert [g["lr"] for g in fused_groups] == [emb0] * len(fused_groups)
    assert sched.get_last_lr()[-len(fused_groups) :] == [emb0] * len(fused_groups)


def test_50_steps_every_lr_follows_its_schedule_and_fused_rows_move_by_lr_times_grad(
    fused_model: nn.Module,
) -> None:
    inner: toys.RecapToyModel = fused_model.module
    opt, sched = build_recap_optimizer(fused_model, toys.recap_config(), toys.emb_config())
    fused = [o for _, o in opt.optimizers][2]
    emb_cfg = toys.emb_learning_rate()
    dense = list(toys.dense_group_learning_rates().values())
    dense_expected = [[compute_lr(c, k) for k in range(STEPS)] for c in dense]
    emb_expected = [compute_lr(emb_cfg, k) for k in range(STEPS)]
    assert len(set(emb_expected)) == STEPS  # every step's rate differs from its neighbours'
    before: dict[str, torch.Tensor] = {}
    moved = []

    def before_forward(k: int, _: toys.Batch) -> None:
        # zero_grad has run: it handed the fused kernel the rate of this step.
        for group in fused.param_groups:
            assert toys.close(group["lr"], emb_expected[k])
        before.update(tables(fused_model))

    def before_step(k: int, batch: toys.Batch) -> None:
        for group, values in zip(opt.param_groups, dense_expected, strict=False):
            assert toys.close(group["lr"], values[k]), (group["name"], k)
        after = tables(fused_model)
        lr32 = torch.tensor(emb_expected[k], dtype=torch.float32)
        grad = inner.pooled.grad
        for j, (table, feature, _) in enumerate(toys.TABLES):
            name = f"ebc.embedding_bags.{table}.weight"
            rows = batch.ids[feature]
            g = torch.zeros_like(before[name])
            g[rows] = grad[:, j * toys.EMB_DIM : (j + 1) * toys.EMB_DIM]  # ids are distinct in a batch
            # The update w - lr * g, rounded once to float32 (the kernel fuses the multiply-add).
            expected = (before[name].double() - lr32.double() * g.double()).float()
            ulp = torch.nextafter(expected.abs(), torch.tensor(float("inf"))) - expected.abs()
            assert torch.all((after[name] - expected).abs() <= ulp), (name, k)
            untouched = torch.ones(len(g), dtype=torch.bool)
            untouched[rows] = False
            assert torch.equal(after[name][untouched], before[name][untouched])
            if k:
                # The rate implied by the move is schedule(k), not a neighbour's.
                big = g.abs() > 1e-2
                implied = (before[name] - after[name])[big] / g[big]
                assert torch.allclose(implied.double(), torch.tensor(emb_expected[k]).double(), rtol=1e-3)
                moved.append(name)

    toys.train(
        fused_model, opt, sched, toys.make_batches(STEPS), before_forward=before_forward, before_step=before_step
    )
    assert len(moved) == len(FUSED_TABLES) * (STEPS - 1)


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(process_group: None) -> None:
    batches = toys.make_batches(40)

    def build(seed: int = 0) -> tuple[nn.Module, CombinedOptimizer, RecapLRShim]:
        model = toys.shard_fused(toys.RecapToyModel(seed=seed))
        opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
        return model, opt, sched

    straight, opt, sched = build()
    toys.train(straight, opt, sched, batches)
    expected = toys.dense_state(straight)
    del straight, opt, sched

    first, opt, sched = build()
    toys.train(first, opt, sched, batches[:20])
    checkpoint = toys.roundtrip(
        {"model": first.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    )
    del first, opt, sched

    resumed, opt, sched = build(seed=7)  # different initial weights: all must come from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    opt.init_state()
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    fused_groups = [o for _, o in opt.optimizers][2].param_groups
    assert [g["lr"] for g in fused_groups] == [compute_lr(toys.emb_learning_rate(), 20)] * len(fused_groups)
    toys.train(resumed, opt, sched, batches[20:])

    for name, value in toys.dense_state(resumed).items():
        assert torch.equal(value, expected[name]), name


def test_fused_optimizer_without_embedding_learning_rate(fused_model: nn.Module) -> None:
    with pytest.raises(ValueError, match=r"fused embedding optimizer \(tables \['ebc.embedding_bags.t0.weight'"):
        build_recap_optimizer(fused_model, toys.recap_config(), config.EmbeddingOptimizerConfig())
    opt, _ = build_recap_optimizer(fused_model, toys.recap_config(), toys.emb_config())
    with pytest.raises(ValueError, match="fused embedding optimizer groups .* but emb_learning_rate is None"):
        RecapLRShim(opt, toys.dense_group_learning_rates(), None)


def test_fused_optimizer_without_any_embedding_config(fused_model: nn.Module) -> None:
    """No emb config at all: dense_ebc misses its rate too; the fused check speaks first."""
    with pytest.raises(ValueError, match="but no embedding learning rate"):
        build_recap_optimizer(fused_model, toys.recap_config())


def test_fused_groups_are_recognised_inside_nested_combined_optimizers(fused_model: nn.Module) -> None:
    assert isinstance(fused_model.fused_optimizer, CombinedOptimizer)
    leaves = []

    def walk(o: torch.optim.Optimizer) -> None:
        if isinstance(o, CombinedOptimizer):
            for _, child in o.optimizers:
                walk(child)
        else:
            leaves.append(o)

    walk(fused_model.fused_optimizer)
    assert leaves and all(isinstance(o, FusedOptimizer) for o in leaves)
    opt, sched = build_recap_optimizer(fused_model, toys.recap_config(), toys.emb_config())
    state = sched.state_dict()
    assert state["emb_learning_rate"] == {"config": toys.emb_learning_rate().model_dump(mode="json")}
    other = dict(state, emb_learning_rate={"config": config.LearningRate(constant=0.5).model_dump(mode="json")})
    with pytest.raises(ValueError, match=r"emb_learning_rate\['emb_learning_rate'\]: saved \{'constant': 0.5\}"):
        sched.load_state_dict(other)
