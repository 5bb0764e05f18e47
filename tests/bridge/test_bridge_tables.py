"""Per-table optimizers and schedules on torchrec's fused kernels (DMP, gloo, world size 1) and without them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import table_toys as toys
import torch
from test_resume_clients import CHECKPOINTERS
from torch import nn

from functional_opt import config, table_config
from functional_opt.schedules import compute_lr
from torch_bridge import apply_table_optimizers, build_embedding_optimizer
from torch_bridge.workarounds import fused_kernel_settings, fused_leaves

DENSE = config.OptimizerConfig(sgd={"lr": 0.05})
STEPS = 30


def build_fused(tables: table_config.LargeEmbeddingsConfig, seed: int = 0):
    model = toys.TwhinToy(seed=seed)
    apply_table_optimizers(model, tables)
    sharded = toys.shard(model)
    opt, sched = build_embedding_optimizer(sharded, tables, DENSE)
    return sharded, opt, sched


def build_plain(tables: table_config.LargeEmbeddingsConfig, seed: int = 0):
    model = toys.TwhinToy(seed=seed)
    opt, sched = build_embedding_optimizer(model, tables, DENSE)
    return model, opt, sched


def train(model, opt, sched, batches, *, order: str = "zero_grad first", before_step: Callable | None = None) -> None:
    for k, batch in enumerate(batches):
        if order == "zero_grad first":
            opt.zero_grad()
        toys.loss_fn(model, batch).backward()
        if before_step is not None:
            before_step(k, batch)
        opt.step()
        if order == "zero_grad last":
            opt.zero_grad()
        sched.step()


def adagrad_tables() -> table_config.LargeEmbeddingsConfig:
    ramp = {"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": 4}}
    return table_config.LargeEmbeddingsConfig(
        tables=[
            toys.table("user", {"adagrad": {"lr": 0.2, "eps": 1e-8}, "learning_rate": ramp}),
            toys.table("tweet", {"rowwise_adagrad": {"lr": 0.1, "eps": 1e-6}}),
        ]
    )


def test_tables_with_different_schedules_get_their_own_kernel_and_named_groups(process_group: None) -> None:
    model, opt, sched = build_fused(toys.sgd_tables())
    leaves = fused_leaves(opt)
    assert len(leaves) == 2
    assert [fused_kernel_settings(leaf)[0] for leaf in leaves] == ["EXACT_SGD", "EXACT_SGD"]
    assert [g["name"] for g in opt.param_groups] == ["sgd", "user", "tweet"]
    rates = table_config.table_learning_rates(toys.sgd_tables())
    assert sched.get_last_lr() == [0.05, compute_lr(rates["user"], 0), compute_lr(rates["tweet"], 0)]
    assert set(opt.params) == {"all_trans_embs", "ebc.embedding_bags.user.weight", "ebc.embedding_bags.tweet.weight"}


def test_tables_with_one_schedule_and_algorithm_share_a_kernel(process_group: None) -> None:
    same = {"sgd": {"lr": 0.1}, "learning_rate": {"constant": 0.1}}
    tables = table_config.LargeEmbeddingsConfig(tables=[toys.table("user", same), toys.table("tweet", same)])
    _, opt, sched = build_fused(tables)
    assert len(fused_leaves(opt)) == 1
    assert [g["name"] for g in opt.param_groups] == ["sgd", "user+tweet"]
    assert sched.get_last_lr() == [0.05, 0.1]


def test_algorithms_reach_their_fused_kernels(process_group: None) -> None:
    _, opt, _ = build_fused(adagrad_tables())
    settings = [fused_kernel_settings(leaf) for leaf in fused_leaves(opt)]
    assert [s[0] for s in settings] == ["EXACT_ADAGRAD", "EXACT_ROWWISE_ADAGRAD"]
    assert [pytest.approx(s[1]) for s in settings] == [1e-8, 1e-6]


@pytest.mark.parametrize("order", ["zero_grad first", "zero_grad last"])
def test_each_table_moves_by_its_own_float32_rate_times_its_gradient_from_step_0(
    process_group: None, order: str
) -> None:
    model, opt, sched = build_fused(toys.sgd_tables())
    inner: toys.TwhinToy = model.module
    rates = table_config.table_learning_rates(toys.sgd_tables())
    expected_lr = {t: [compute_lr(rates[t], k) for k in range(STEPS)] for t in rates}
    assert expected_lr["user"][0] == 0.0 and len(set(expected_lr["user"][:6])) == 6
    before: dict[str, torch.Tensor] = {}
    checked = []

    def before_step(k: int, batch: toys.Batch) -> None:
        after = toys.table_weights(model)
        for j, table in enumerate(inner.tables):
            grad = torch.zeros_like(before[table])
            grad[batch.ids[table]] = inner.pooled.grad[:, j * toys.DIM : (j + 1) * toys.DIM]
            lr32 = torch.tensor(expected_lr[table][k], dtype=torch.float32)
            expected = (before[table].double() - lr32.double() * grad.double()).float()
            ulp = torch.nextafter(expected.abs(), torch.tensor(float("inf"))) - expected.abs()
            assert torch.all((after[table] - expected).abs() <= ulp), (table, k)
            untouched = torch.ones(len(grad), dtype=torch.bool)
            untouched[batch.ids[table]] = False
            assert torch.equal(after[table][untouched], before[table][untouched])
            if k and expected_lr[table][k] != expected_lr[table][k - 1]:
                big = grad.abs() > 1e-3
                implied = (before[table] - after[table])[big] / grad[big]
                # The rate implied by the move is this step's, not the previous one.
                assert torch.allclose(implied.double(), lr32.double(), rtol=1e-2), (table, k)
            checked.append((table, k))
        before.update(after)

    before.update(toys.table_weights(model))
    train(model, opt, sched, toys.make_batches(STEPS), order=order, before_step=before_step)
    assert len(checked) == 2 * STEPS
    assert sched.last_epoch == STEPS


@pytest.mark.parametrize("tables", [toys.sgd_tables, adagrad_tables], ids=["sgd", "adagrad+rowwise"])
def test_a_model_trains_the_same_with_fused_or_plain_tables(process_group: None, tables: Callable) -> None:
    batches = toys.make_batches(20)
    fused = build_fused(tables())
    plain = build_plain(tables())
    with torch.no_grad():  # the sharder initialises its tables itself: start from the same rows
        for name, rows in toys.table_weights(fused[0]).items():
            plain[0].ebc.embedding_bags[name].weight.copy_(rows)
        plain[0].all_trans_embs.copy_(fused[0].module.all_trans_embs)
    train(*fused, batches)
    train(*plain, batches)
    got, expected = toys.table_weights(fused[0]), toys.table_weights(plain[0])
    for name in expected:
        scale = float(expected[name].abs().max())
        assert float((got[name] - expected[name]).abs().max()) <= 1e-5 * scale, name
    assert fused[2].get_last_lr() == plain[2].get_last_lr()


def fused_accumulators(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for leaf in fused_leaves(opt):
        for key, entries in leaf.state_dict()["state"].items():
            for entry, value in entries.items():
                if hasattr(value, "local_shards"):
                    value = torch.cat([s.tensor for s in value.local_shards()])
                out[f"{key}.{entry}"] = value.detach().clone()
    return out


@pytest.mark.parametrize("checkpointer", ["torch.save", "dcp"])
def test_resume_keeps_fused_accumulators_bitwise(process_group: None, tmp_path: Path, checkpointer: str) -> None:
    batches = toys.make_batches(12)
    straight = build_fused(adagrad_tables())
    train(*straight, batches)
    first = build_fused(adagrad_tables())
    train(*first, batches[:6])
    saved = fused_accumulators(first[1])
    assert saved and all(float(v.abs().max()) > 0 for v in saved.values())
    fresh = build_fused(adagrad_tables(), seed=7)
    CHECKPOINTERS[checkpointer](*first, fresh, tmp_path / "ckpt")
    restored = fused_accumulators(fresh[1])
    assert list(restored) == list(saved)
    for key in saved:
        assert torch.equal(restored[key], saved[key]), key
    train(*fresh, batches[6:])
    for name, value in toys.table_weights(straight[0]).items():
        assert torch.equal(toys.table_weights(fresh[0])[name], value), name
    for key, value in fused_accumulators(straight[1]).items():
        assert torch.equal(fused_accumulators(fresh[1])[key], value), key
    assert fresh[2].get_last_lr() == straight[2].get_last_lr()


# --- refusals -----------------------------------------------------------------------------------------------


def test_a_table_without_config_or_a_config_without_table_is_refused_naming_it() -> None:
    model = toys.TwhinToy()
    only_user = table_config.LargeEmbeddingsConfig(tables=toys.sgd_tables().tables[:1])
    with pytest.raises(ValueError, match=r"tables \['tweet'\] of the model have no config"):
        apply_table_optimizers(model, only_user)
    extra = table_config.LargeEmbeddingsConfig(
        tables=[*toys.sgd_tables().tables, toys.table("video", {"sgd": {"lr": 0.1}}, rows=3)]
    )
    with pytest.raises(ValueError, match=r"tables \['video'\] of the config have no parameter"):
        build_embedding_optimizer(model, extra, DENSE)
    assert not any(hasattr(p, "_optimizer_classes") for p in model.parameters())


@pytest.mark.parametrize(
    ("optimizer", "message"),
    [
        ({"adam": {"lr": 0.1}}, "adam has no fused CPU kernel"),
        ({"sgd": {"lr": 0.1, "momentum": 0.9}}, "momentum=0.9 has no fused kernel"),
        ({"adagrad": {"lr": 0.1, "lr_decay": 0.1}}, r"adagrad \{'lr_decay': 0.1\} have no fused kernel"),
    ],
)
def test_an_algorithm_without_a_kernel_is_refused_and_nothing_is_applied(optimizer: dict, message: str) -> None:
    model = toys.TwhinToy()
    tables = table_config.LargeEmbeddingsConfig(tables=[toys.sgd_tables().tables[0], toys.table("tweet", optimizer)])
    with pytest.raises(ValueError, match=message):
        apply_table_optimizers(model, tables)
    assert not any(hasattr(p, "_optimizer_classes") for p in model.parameters())
    with pytest.raises(ValueError, match=message):
        build_embedding_optimizer(model, tables, DENSE)


def test_applying_twice_is_refused() -> None:
    model = toys.TwhinToy()
    apply_table_optimizers(model, toys.sgd_tables())
    kwargs = [dict(p._optimizer_kwargs[-1]) for p in model.ebc.parameters()]
    with pytest.raises(ValueError, match=r"tables \['user', 'tweet'\] already have an in-backward optimizer"):
        apply_table_optimizers(model, toys.sgd_tables())
    assert [dict(p._optimizer_kwargs[-1]) for p in model.ebc.parameters()] == kwargs


def test_tables_sharing_a_kernel_with_different_schedules_are_refused_naming_them(process_group: None) -> None:
    from torchrec.optim import apply_optimizer_in_backward

    model = toys.TwhinToy()
    apply_optimizer_in_backward(torch.optim.SGD, model.ebc.parameters(), {"lr": 0.1})  # one kernel for both
    sharded = toys.shard(model)
    with pytest.raises(ValueError, match=r"tables \['user', 'tweet'\] share one fused kernel"):
        build_embedding_optimizer(sharded, toys.sgd_tables(), DENSE)


def test_a_kernel_running_another_algorithm_than_the_config_is_refused(process_group: None) -> None:
    model = toys.TwhinToy()
    apply_table_optimizers(model, adagrad_tables())
    sharded = toys.shard(model)
    with pytest.raises(ValueError, match=r"tables \['user'\] run EXACT_ADAGRAD .* config asks for sgd"):
        build_embedding_optimizer(sharded, toys.sgd_tables(), DENSE)


def test_dense_parameters_need_a_dense_optimizer_and_a_name_of_their_own() -> None:
    model = toys.TwhinToy()
    with pytest.raises(ValueError, match=r"parameters \['all_trans_embs'\] are not tables; give a dense_optimizer"):
        build_embedding_optimizer(model, toys.sgd_tables())
    with pytest.raises(ValueError, match="dense_name 'user' is also a table's name"):
        build_embedding_optimizer(model, toys.sgd_tables(), DENSE, dense_name="user")
    with pytest.raises(TypeError, match="EmbeddingBagConfig"):
        build_embedding_optimizer(model, [config.LearningRate(constant=1.0)], DENSE)
    with pytest.raises(TypeError, match="dense_optimizer must be an OptimizerConfig"):
        build_embedding_optimizer(model, toys.sgd_tables(), config.LearningRate(constant=1.0))


def test_plain_tables_get_one_torch_optimizer_each() -> None:
    model, opt, sched = build_plain(adagrad_tables())
    children = [type(o._optimizer).__name__ for _, o in opt.optimizers]
    assert children == ["SGD", "Adagrad", "RowWiseAdagrad"]
    assert [g["name"] for g in opt.param_groups] == ["sgd", "user", "tweet"]
    assert [g["eps"] for g in opt.param_groups[1:]] == [1e-8, 1e-6]
    assert sched.get_last_lr() == [0.05, 0.0, 0.1]
    assert isinstance(model, nn.Module)
