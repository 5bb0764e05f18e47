"""Tensor learning rates: a ``torch.compile``'d optimizer step follows the schedule without recompiling.

With ``tensor_lr=True`` the builders put every dense group's learning rate in a
0-dim tensor and the shim updates it in place (``fill_``). The compiled
``optimizer.step`` then reads a new value each step from the same tensor, so
dynamo's guards keep holding. The counts come from torch's own counters:
``torch._dynamo.utils.counters["frames"]["total"]`` (one per frame dynamo
compiles), ``counters["stats"]["unique_graphs"]``, the compilation metrics
(``torch._dynamo.utils.get_compilation_metrics``), and
``torch._dynamo.config.error_on_recompile``, which raises on any recompilation.

The ``eager`` backend is used: recompilations are decided by dynamo's guards,
whatever backend compiles the captured graphs, and it keeps the test short.

The schedules start at exactly 0 (linear ramps) and the models have embedding
rows that never get a gradient: the case where the Adam that torch.compile
traces writes NaN (pytorch/pytorch#126514), which the builders avoid by
keeping Adam fused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import bridge_toys as toys
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

from functional_opt import config
from functional_opt.schedules import compute_lr
from torch_bridge import build_optimizer, build_recap_optimizer

pytestmark = pytest.mark.slow

STEPS = 100  # compiled steps after the first
RAMP = config.LearningRate(
    linear_ramp_to_cosine={
        "learning_rate": 0.05,
        "final_learning_rate": 0.005,
        "num_ramp_steps": 30,
        "final_num_steps": 90,
    }
)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    counters.clear()
    clear_compilation_metrics()
    yield
    torch._dynamo.reset()


def compiled_counts() -> tuple[int, int, int]:
    """(frames compiled, graphs captured, compilation-metrics entries) so far."""
    return counters["frames"]["total"], counters["stats"]["unique_graphs"], len(get_compilation_metrics())


def run_compiled(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    backward: Callable[[int], None],
    steps: int,
    warmup: int = 1,
) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """``warmup`` compiled steps, then ``steps`` more under ``error_on_recompile``; the counts after each phase.

    ``steps`` counts the steps after the first, whatever ``warmup`` is.
    """
    step = torch.compile(optimizer.step, backend="eager", fullgraph=False)
    for k in range(warmup):
        optimizer.zero_grad()
        backward(k)
        step()
        scheduler.step()
    first = compiled_counts()
    clear_compilation_metrics()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for k in range(warmup, steps + 1):
            optimizer.zero_grad()
            backward(k)
            step()
            scheduler.step()
    frames, graphs, _ = compiled_counts()
    return first, (frames - first[0], graphs - first[1], len(get_compilation_metrics()))


def run_eager(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    backward: Callable[[int], None],
    steps: int,
) -> None:
    for k in range(steps + 1):
        optimizer.zero_grad()
        backward(k)
        optimizer.step()
        scheduler.step()


class SmallModel(torch.nn.Module):
    """An embedding table (rows ``ROWS_USED`` and up never get a gradient) and a small MLP."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(16, 4)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def forward(self, ids: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.table(ids)[:, :2], x[:, 2:]], dim=1))


ROWS_USED = 8


def small_backward(model: SmallModel) -> Callable[[int], None]:
    gen = torch.Generator().manual_seed(5)
    data = [
        (
            torch.randint(0, ROWS_USED, (4,), generator=gen),
            torch.randn(4, 6, generator=gen),
            torch.randn(4, 1, generator=gen),
        )
        for _ in range(STEPS + 1)
    ]

    def backward(k: int) -> None:
        ids, x, y = data[k]
        torch.nn.functional.mse_loss(model(ids, x), y).backward()

    return backward


def recap_backward(model: toys.RecapToyModel, batches: Sequence[toys.Batch]) -> Callable[[int], None]:
    def backward(k: int) -> None:
        toys.loss_fn(model, batches[k]).backward()

    return backward


def assert_close_params(a: torch.nn.Module, b: torch.nn.Module, *, exact: bool) -> None:
    """Bitwise equal, or equal to float32 rounding accumulated over the run (a few ulps)."""
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.isfinite(p).all(), f"{name} is not finite"
        if exact:
            assert torch.equal(p, q), name
        else:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6, msg=name)


GENERIC = {
    "adam": config.OptimizerConfig(adam={"lr": 0.1, "betas": (0.9, 0.99), "eps": 1e-6}, learning_rate=RAMP),
    "sgd": config.OptimizerConfig(sgd={"lr": 0.1, "momentum": 0.9}, learning_rate=RAMP),
    "adagrad": config.OptimizerConfig(adagrad={"lr": 0.1, "eps": 1e-8, "lr_decay": 0.01}, learning_rate=RAMP),
}


@pytest.mark.parametrize("algorithm", sorted(GENERIC))
def test_tensor_lr_matches_the_float_path_in_eager_mode(algorithm: str) -> None:
    """SGD and Adagrad run the same code: bit for bit. Adam turns fused: equal to float32 rounding."""
    cfg = GENERIC[algorithm]
    models = []
    for tensor_lr in (False, True):
        model = SmallModel()
        opt, sched = build_optimizer(model, cfg, tensor_lr=tensor_lr)
        assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) is tensor_lr
        run_eager(opt, sched, small_backward(model), 40)
        models.append(model)
    assert_close_params(*models, exact=algorithm != "adam")


def test_tensor_lr_is_float64_and_follows_the_schedule() -> None:
    opt, sched = build_optimizer(SmallModel(), GENERIC["adam"], tensor_lr=True)
    assert opt.defaults["fused"] is True
    lr = opt.param_groups[0]["lr"]
    assert lr.dtype == torch.float64 and lr.dim() == 0
    for k in range(5):
        assert opt.param_groups[0]["lr"] is lr  # updated in place, never replaced
        assert abs(float(lr) - compute_lr(RAMP, k)) <= 1e-12 * max(1.0, compute_lr(RAMP, k))
        opt.step()
        sched.step()


@pytest.mark.parametrize("algorithm", sorted(GENERIC))
def test_compiled_generic_step_does_not_recompile(algorithm: str) -> None:
    """After the first step, or the second for SGD with momentum.

    torch's SGD creates its momentum buffer inside the first step, so its
    step is compiled once with the buffer missing and once with it present,
    whatever the learning rate.
    """
    model = SmallModel()
    opt, sched = build_optimizer(model, GENERIC[algorithm], tensor_lr=True)
    lr = opt.param_groups[0]["lr"]
    warmup = 2 if algorithm == "sgd" else 1
    first, after = run_compiled(opt, sched, small_backward(model), STEPS, warmup)
    assert first[0] >= 1, "torch.compile compiled no frame of the optimizer step"
    assert after == (0, 0, 0), f"recompiled after the first step: frames, graphs, metrics = {after}"
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == pytest.approx(compute_lr(RAMP, STEPS + 1), rel=1e-12)

    eager = SmallModel()
    eager_opt, eager_sched = build_optimizer(eager, GENERIC[algorithm])
    run_eager(eager_opt, eager_sched, small_backward(eager), STEPS)
    assert_close_params(model, eager, exact=False)


def test_compiled_recap_step_does_not_recompile() -> None:
    batches = toys.make_batches(STEPS + 1)
    model = toys.RecapToyModel()
    opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config(), tensor_lr=True)
    dense = [g["lr"] for g in opt.param_groups]
    assert all(isinstance(lr, torch.Tensor) for lr in dense)
    first, after = run_compiled(opt, sched, recap_backward(model, batches), STEPS)
    assert first[1] >= 1, "torch.compile captured no graph of the optimizer step"  # the dense_ebc SGD
    assert after == (0, 0, 0), f"recompiled after the first step: frames, graphs, metrics = {after}"
    assert [g["lr"] for g in opt.param_groups] == dense  # the same tensors, updated in place
    rates = [*toys.tower_learning_rates().values(), config.LearningRate(constant=0.003), toys.emb_learning_rate()]
    assert [float(lr) for lr in dense] == pytest.approx([compute_lr(r, STEPS + 1) for r in rates], rel=1e-12)

    # Parity with the default (float) path, eager, on the same batches.
    eager = toys.RecapToyModel()
    eager_opt, eager_sched = build_recap_optimizer(eager, toys.recap_config(), toys.emb_config())
    run_eager(eager_opt, eager_sched, recap_backward(eager, batches), STEPS)
    assert_close_params(model, eager, exact=False)
