"""Resume into a freshly built optimizer, as every framework does, through the checkpointers users have.

Each case trains 2N steps straight, and N steps, a checkpoint, a fresh build
(other initial weights: everything must come from the checkpoint) and N more
steps: parameters and learning rates must be bitwise equal. Covered: both
builders, float and tensor learning rates, with and without a ``dense_ebc``
group, DMP fused tables; ``torch.save`` + ``torch.load(weights_only=True)``,
``torch.distributed.checkpoint`` ``save`` / ``load`` and its ``get_state_dict`` /
``set_state_dict``. Lightning and the Hugging Face ``Trainer`` are in
``test_training_frameworks.py``.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bridge_toys as toys
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

import torch_bridge
from functional_opt import config, grouping

N = 6
TOWERS = ("task.a", "task.b")


class Small(nn.Module):
    """Towers on a backbone over dense features, optionally with an ``embedding_bags`` table (``dense_ebc``)."""

    def __init__(self, seed: int, embeddings: bool = True) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embedding_bags = nn.ModuleDict({"t": nn.EmbeddingBag(10, 3, mode="sum")}) if embeddings else None
        self.backbone = nn.Linear(4 + (3 if embeddings else 0), 6)
        self.towers = nn.ModuleDict({grouping.sanitize(t): nn.Linear(6, 1) for t in TOWERS})

    def forward(self, x: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.embedding_bags is not None:
            x = torch.cat([x, self.embedding_bags["t"](ids.view(-1, 1))], dim=1)
        h = torch.relu(self.backbone(x))
        logits = torch.cat([tower(h) for tower in self.towers.values()], dim=1)
        return {"loss": nn.functional.binary_cross_entropy_with_logits(logits, labels)}


def small_batches(num: int, size: int = 4, seed: int = 3) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        {
            "x": torch.randn(size, 4, generator=gen),
            "ids": torch.randint(0, 10, (size,), generator=gen),
            "labels": torch.randint(0, 2, (size, len(TOWERS)), generator=gen).float(),
        }
        for _ in range(num)
    ]


def small_recap_config() -> config.RecapOptimizerConfig:
    return config.RecapOptimizerConfig(
        adam={"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-6},
        multi_task_learning_rates={
            "tower_learning_rates": {
                "task.a": {"linear_ramp_to_constant": {"learning_rate": 0.05, "num_ramp_steps": N + 2}},
                "task.b": {
                    "piecewise_constant": {"learning_rate_boundaries": [N], "learning_rate_values": [0.02, 0.01]}
                },
            },
            "backbone_learning_rate": {
                "linear_ramp_to_cosine": {
                    "learning_rate": 0.03,
                    "final_learning_rate": 0.001,
                    "num_ramp_steps": 3,
                    "final_num_steps": 2 * N,
                }
            },
        },
    )


SMALL_EMB = config.EmbeddingOptimizerConfig(
    learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": N + 1}}
)
GENERIC = {
    "adam": config.OptimizerConfig(
        adam={"lr": 0.1, "betas": (0.8, 0.95), "eps": 1e-6},
        learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.05, "num_ramp_steps": N + 2}},
    ),
    "sgd": config.OptimizerConfig(
        sgd={"lr": 0.1, "momentum": 0.9},
        learning_rate={"piecewise_constant": {"learning_rate_boundaries": [N], "learning_rate_values": [0.05, 0.02]}},
    ),
    "adagrad": config.OptimizerConfig(adagrad={"lr": 0.1, "lr_decay": 0.01}),
}


@dataclass
class Case:
    """How to build one run and train it for some steps."""

    build: Callable[[int], tuple[nn.Module, torch.optim.Optimizer, Any]]
    train: Callable[[nn.Module, torch.optim.Optimizer, Any, int, int], None]
    params: Callable[[nn.Module], dict[str, torch.Tensor]]


def small_case(builder: str, tensor_lr: bool, embeddings: bool = True) -> Case:
    batches = small_batches(2 * N)

    def build(seed: int):
        model = Small(seed, embeddings)
        if builder == "recap":
            opt, sched = torch_bridge.build_recap_optimizer(
                model, small_recap_config(), SMALL_EMB if embeddings else None, tensor_lr=tensor_lr
            )
        else:
            opt, sched = torch_bridge.build_optimizer(model, GENERIC[builder], tensor_lr=tensor_lr)
        return model, opt, sched

    def train(model, opt, sched, start, stop):
        for batch in batches[start:stop]:
            opt.zero_grad()
            model(**batch)["loss"].backward()
            opt.step()
            sched.step()

    return Case(build, train, lambda m: {n: p.detach().clone() for n, p in m.state_dict().items()})


def dmp_case() -> Case:
    batches = toys.make_batches(2 * N)

    def build(seed: int):
        model = toys.shard_fused(toys.RecapToyModel(seed=seed))
        opt, sched = torch_bridge.build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
        return model, opt, sched

    def train(model, opt, sched, start, stop):
        toys.train(model, opt, sched, batches[start:stop])

    return Case(build, train, toys.dense_state)


def _reload(obj: Any, weights_only: bool) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=weights_only)


def _sharded(state: Any) -> bool:
    if isinstance(state, dict):
        return any(_sharded(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return any(_sharded(v) for v in state)
    return hasattr(state, "local_shards")


def via_torch_save(model, opt, sched, fresh, path: Path) -> None:
    model_state, opt_state = model.state_dict(), opt.state_dict()
    # A DMP model's own state (and a fused optimizer's accumulators) hold torchrec ShardedTensors, which
    # torch.load takes only with weights_only=False.
    sharded = _sharded(model_state)
    checkpoint = _reload(
        {"optimizer": opt_state, "scheduler": sched.state_dict()}, weights_only=not _sharded(opt_state)
    )
    model2, opt2, sched2 = fresh
    model2.load_state_dict(_reload(model_state, weights_only=not sharded))
    opt2.load_state_dict(checkpoint["optimizer"])
    sched2.load_state_dict(checkpoint["scheduler"])


def via_dcp(model, opt, sched, fresh, path: Path) -> None:
    dcp.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, checkpoint_id=str(path))
    scheduler_state = sched.state_dict()
    model2, opt2, sched2 = fresh
    target = {"model": model2.state_dict(), "optimizer": opt2.state_dict()}
    dcp.load(target, checkpoint_id=str(path))
    model2.load_state_dict(target["model"])
    opt2.load_state_dict(target["optimizer"])
    sched2.load_state_dict(scheduler_state)


def via_dcp_state_dict(model, opt, sched, fresh, path: Path) -> None:
    model_state, optim_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=str(path))
    scheduler_state = sched.state_dict()
    model2, opt2, sched2 = fresh
    model_target, optim_target = get_state_dict(model2, opt2)
    target = {"model": model_target, "optimizer": optim_target}
    dcp.load(target, checkpoint_id=str(path))
    set_state_dict(model2, opt2, model_state_dict=target["model"], optim_state_dict=target["optimizer"])
    sched2.load_state_dict(scheduler_state)


CHECKPOINTERS = {"torch.save": via_torch_save, "dcp": via_dcp, "dcp.get_state_dict": via_dcp_state_dict}


def max_gaps(case: Case, checkpointer: Callable, path: Path) -> tuple[float, float]:
    """(max |Δparam|, max |Δlr|) of the resumed run against the straight one; asserts bitwise equality."""
    straight = case.build(0)
    case.train(*straight, 0, 2 * N)
    first = case.build(0)
    case.train(*first, 0, N)
    fresh = case.build(7)
    checkpointer(*first, fresh, path)
    assert fresh[2].last_epoch == N
    case.train(*fresh, N, 2 * N)
    expected, got = case.params(straight[0]), case.params(fresh[0])
    assert list(expected) == list(got)
    dparam = max(float((expected[n].double() - got[n].double()).abs().max()) for n in expected)
    dlr = max(abs(a - b) for a, b in zip(straight[2].get_last_lr(), fresh[2].get_last_lr(), strict=True))
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert [float(v) for v in straight[2].get_last_lr()] == [float(v) for v in fresh[2].get_last_lr()]
    return dparam, float(dlr)


SMALL_CASES = {
    "recap": ("recap", False, True),
    "recap-tensor_lr": ("recap", True, True),
    "recap-no-dense_ebc": ("recap", False, False),
    "adam": ("adam", False, True),
    "adam-tensor_lr": ("adam", True, True),
    "sgd": ("sgd", False, True),
    "adagrad": ("adagrad", False, True),
}


@pytest.mark.parametrize("checkpointer", list(CHECKPOINTERS))
@pytest.mark.parametrize("case", list(SMALL_CASES))
def test_resume_into_a_fresh_build_is_bitwise_equal(
    process_group: None, tmp_path: Path, case: str, checkpointer: str
) -> None:
    gaps = max_gaps(small_case(*SMALL_CASES[case]), CHECKPOINTERS[checkpointer], tmp_path / "ckpt")
    assert gaps == (0.0, 0.0)


@pytest.mark.parametrize("checkpointer", ["torch.save", "dcp"])
def test_resume_with_dmp_fused_tables_is_bitwise_equal(process_group: None, tmp_path: Path, checkpointer: str) -> None:
    assert max_gaps(dmp_case(), CHECKPOINTERS[checkpointer], tmp_path / "ckpt") == (0.0, 0.0)


def test_a_fresh_recap_optimizer_takes_its_own_state_and_refuses_another_config_naming_it() -> None:
    model, opt, sched = small_case("recap", False).build(0)
    fresh = small_case("recap", False).build(1)
    fresh[1].load_state_dict(opt.state_dict())  # never stepped on either side

    other = Small(0)
    cfg = small_recap_config().model_copy(
        update={"adam": config.RecapAdamConfig(beta_1=0.5, beta_2=0.99, epsilon=1e-6)}
    )
    other_opt, _ = torch_bridge.build_recap_optimizer(other, cfg, SMALL_EMB)
    before = {k: {e: v.clone() for e, v in s.items()} for k, s in opt.state_dict()["state"].items()}
    with pytest.raises(ValueError, match=r"param group 'task.a': betas saved \(0.5, 0.99\), configured \(0.9, 0.99\)"):
        opt.load_state_dict(other_opt.state_dict())
    after = opt.state_dict()["state"]
    assert all(torch.equal(after[k][e], v) for k, s in before.items() for e, v in s.items())
    assert [g["betas"] for g in opt.param_groups if "betas" in g] == [(0.9, 0.99)] * 3


@pytest.mark.parametrize(
    ("field", "update", "message"),
    [
        ("betas", {"adam": {"lr": 0.1, "betas": (0.5, 0.95), "eps": 1e-6}}, r"betas saved \[0.5, 0.95\], configured"),
        ("eps", {"adam": {"lr": 0.1, "betas": (0.8, 0.95), "eps": 1e-3}}, r"eps saved 0.001, configured 1e-06"),
        ("momentum", {"sgd": {"lr": 0.1, "momentum": 0.5}}, r"momentum saved 0.5, configured 0.9"),
        ("lr_decay", {"adagrad": {"lr": 0.1, "lr_decay": 0.5}}, r"lr_decay saved 0.5, configured 0.01"),
    ],
)
def test_generic_optimizer_refuses_a_state_with_other_hyper_parameters(field: str, update: dict, message: str) -> None:
    algorithm = next(iter(update))
    live_model = Small(0)
    live, _ = torch_bridge.build_optimizer(live_model, GENERIC[algorithm])
    saved_cfg = GENERIC[algorithm].model_copy(
        update={algorithm: type(getattr(GENERIC[algorithm], algorithm))(**update[algorithm])}
    )
    other, _ = torch_bridge.build_optimizer(Small(1), saved_cfg)
    state = other.state_dict()
    if field == "betas":
        state["param_groups"][0]["betas"] = list(state["param_groups"][0]["betas"])  # as JSON or YAML would hold it
    before = live.state_dict()
    with pytest.raises(ValueError, match=message):
        live.load_state_dict(state)
    assert live.state_dict()["param_groups"] == before["param_groups"]


def test_dcp_keyed_state_of_the_generic_optimizer_loads_and_a_foreign_one_is_refused(process_group: None) -> None:
    model, opt, _ = small_case("adam", False).build(0)
    _, optim_state = get_state_dict(model, opt)
    assert all(isinstance(k, str) for k in optim_state["state"])
    fresh_model, fresh_opt, _ = small_case("adam", False).build(1)
    fresh_opt.load_state_dict(optim_state)
    optim_state["state"]["not.a.parameter"] = optim_state["state"].pop(next(iter(optim_state["state"])))
    with pytest.raises(ValueError, match=r"state\['not.a.parameter'\] names no parameter"):
        fresh_opt.load_state_dict(optim_state)


def test_recap_optimizer_evaluates_a_closure_once_and_returns_its_loss() -> None:
    model, opt, _ = small_case("recap", False).build(0)
    calls = []
    batch = small_batches(1)[0]

    def closure() -> torch.Tensor:
        calls.append(1)
        opt.zero_grad()
        loss = model(**batch)["loss"]
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    assert len(opt.optimizers) == 2  # Adam and dense_ebc's SGD: torchrec alone would run the closure twice
