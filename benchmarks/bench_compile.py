"""torch.compile: recompilations of a compiled ``optimizer.step`` while the schedule moves.

For each optimizer the builders make (generic Adam, SGD with momentum,
Adagrad; the recap ``CombinedOptimizer``), built once with float learning
rates and once with ``tensor_lr=True``, ``optimizer.step`` is wrapped in
``torch.compile(backend=..., fullgraph=False)`` and run for a warm-up and then
100 more steps, each followed by the shim's ``step()``, under a schedule whose
value changes every step. The counts come from torch's own counters:
``torch._dynamo.utils.counters["frames"]["total"]`` (one per frame dynamo
compiles, recompilations included) and ``counters["stats"]["unique_graphs"]``.

The warm-up is one step, or two for SGD with momentum: torch's SGD creates its
momentum buffer inside its first step, so that step is compiled once without
the buffer and once with it, whatever the learning rate.

It also checks the reason the builders keep Adam fused under ``tensor_lr``:
the Adam that torch.compile traces (torch 2.13) writes NaN into parameters
whose gradient is zero when the learning rate is exactly 0, where every
linear ramp starts (pytorch/pytorch#126514).

Run ``python benchmarks/bench_compile.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import torch
import torch._dynamo
from bench_optimizer import RecapShapedModel, emb_config, recap_config
from torch._dynamo.utils import counters

from functional_opt import config

STEPS = 100  # compiled steps after the warm-up
NUM_TOWERS = 4
RAMP = config.LearningRate(
    linear_ramp_to_cosine={
        "learning_rate": 0.01,
        "final_learning_rate": 0.001,
        "num_ramp_steps": 30,
        "final_num_steps": 90,
    }
)
GENERIC = {
    "Adam": config.OptimizerConfig(adam={"lr": 0.01}, learning_rate=RAMP),
    "SGD (momentum 0.9)": config.OptimizerConfig(sgd={"lr": 0.01, "momentum": 0.9}, learning_rate=RAMP),
    "Adagrad": config.OptimizerConfig(adagrad={"lr": 0.01, "eps": 1e-8}, learning_rate=RAMP),
}
RECAP = "recap CombinedOptimizer"
CASES = (*GENERIC, RECAP)


def _counts() -> tuple[int, int]:
    return counters["frames"]["total"], counters["stats"]["unique_graphs"]


def _build(case: str, tensor_lr: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    from torch_bridge import build_optimizer, build_recap_optimizer

    model = RecapShapedModel(NUM_TOWERS, tower_dims=((8, 1), (8, 4, 1)), backbone_dims=(16,))
    if case == RECAP:
        optimizer, scheduler = build_recap_optimizer(model, recap_config(NUM_TOWERS), emb_config(), tensor_lr=tensor_lr)
    else:
        optimizer, scheduler = build_optimizer(model, GENERIC[case], tensor_lr=tensor_lr)
    return model, optimizer, scheduler


def count_recompiles(case: str, tensor_lr: bool, steps: int = STEPS, backend: str = "eager") -> dict[str, Any]:
    """Compiles ``optimizer.step`` of one case and counts what dynamo compiles during and after the warm-up.

    Args:
        case: a key of :data:`GENERIC` or :data:`RECAP`.
        tensor_lr: build with tensor learning rates.
        steps: steps after the warm-up.
        backend: torch.compile backend.

    Returns:
        ``{"warmup_steps", "warmup_frames", "warmup_graphs", "frames_after", "graphs_after", "finite",
        "lr_followed"}``: ``frames_after`` counts the frames compiled after the warm-up (recompilations).
    """
    from functional_opt.schedules import compute_lr

    torch._dynamo.reset()
    counters.clear()
    model, optimizer, scheduler = _build(case, tensor_lr)
    step = torch.compile(optimizer.step, backend=backend, fullgraph=False)
    warmup = 2 if case.startswith("SGD") else 1
    for _ in range(warmup):
        step()
        scheduler.step()
    warm_frames, warm_graphs = _counts()
    for _ in range(steps):
        step()
        scheduler.step()
    frames, graphs = _counts()
    expected = compute_lr(RAMP if case != RECAP else config.LearningRate(constant=0.01), warmup + steps)
    last = optimizer.param_groups[-1]["lr"]
    torch._dynamo.reset()
    return {
        "warmup_steps": warmup,
        "warmup_frames": warm_frames,
        "warmup_graphs": warm_graphs,
        "frames_after": frames - warm_frames,
        "graphs_after": graphs - warm_graphs,
        "finite": all(bool(torch.isfinite(p).all()) for p in model.parameters()),
        "lr_followed": abs(float(last) - expected) <= 1e-12 * max(1.0, expected),
    }


def traced_adam_nan_at_zero_lr(backend: str = "eager") -> dict[str, bool]:
    """Whether a compiled non-fused / fused ``torch.optim.Adam`` at ``lr = 0`` writes NaN (one zero gradient)."""
    out = {}
    for name, fused in (("Adam (traced, single-tensor)", None), ("Adam (fused)", True)):
        torch._dynamo.reset()
        param = torch.nn.Parameter(torch.ones(3))
        optimizer = torch.optim.Adam([param], lr=torch.tensor(0.0, dtype=torch.float64), fused=fused)
        param.grad = torch.tensor([1.0, 0.0, -1.0])
        torch.compile(optimizer.step, backend=backend)()
        out[name] = bool(torch.isnan(param).any())
    torch._dynamo.reset()
    return out


def run(
    steps: int = STEPS, backend: str = "eager", threads: int | None = 1, cases: tuple[str, ...] = CASES
) -> dict[str, Any]:
    """Recompile counts for every case, float and tensor learning rates.

    Args:
        steps: compiled steps after the warm-up.
        backend: torch.compile backend (recompilations are decided by dynamo's guards, whatever the backend).
        threads: torch intra-op threads during the run (None: leave torch's setting).
        cases: which optimizers (keys of :data:`GENERIC` and :data:`RECAP`).

    Returns:
        ``{"steps", "backend", "torch", "cases": {case: {"float": counts, "tensor": counts}},
        "nan_at_zero_lr": {...}}`` with the counts of :func:`count_recompiles`.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        cases = {
            case: {
                "float": count_recompiles(case, False, steps, backend),
                "tensor": count_recompiles(case, True, steps, backend),
            }
            for case in cases
        }
        nan = traced_adam_nan_at_zero_lr(backend)
    finally:
        torch.set_num_threads(previous_threads)
    return {"steps": steps, "backend": backend, "torch": torch.__version__, "cases": cases, "nan_at_zero_lr": nan}


def passes(results: dict[str, Any]) -> dict[str, bool]:
    """Case -> whether, with tensor learning rates, nothing was recompiled and the values are right."""
    return {
        case: c["tensor"]["frames_after"] == 0
        and c["tensor"]["graphs_after"] == 0
        and c["tensor"]["finite"]
        and c["tensor"]["lr_followed"]
        for case, c in results["cases"].items()
    }


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`run`'s results."""
    lines = [
        f"torch.compile(optimizer.step, backend={results['backend']!r}), {results['steps']} steps after the "
        "warm-up: frames (graphs) compiled",
        f"{'':26s} {'lr':>6s} {'warm-up':>9s} {'after':>9s} {'finite':>7s}",
    ]
    for case, by_kind in results["cases"].items():
        for kind, c in by_kind.items():
            warm = f"{c['warmup_frames']} ({c['warmup_graphs']})"
            after = f"{c['frames_after']} ({c['graphs_after']})"
            lines.append(f"{case:26s} {kind:>6s} {warm:>9s} {after:>9s} {c['finite']!s:>7s}")
    for name, nan in results["nan_at_zero_lr"].items():
        lines.append(f"{name} at lr=0 writes NaN: {nan}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--backend", default="eager", help="torch.compile backend (eager, aot_eager, inductor)")
    args = parser.parse_args(argv)
    print(format_results(run(args.steps, args.backend)))


if __name__ == "__main__":
    main()
