"""Scheduler step cost: LRShim / RecapLRShim against torch's LambdaLR and a bare loop.

All contenders drive optimizers of the same shape (12 param groups) with the
same linear-ramp-to-cosine schedule, timed side by side in one process,
interleaved repeat by repeat:

* ``LRShim.step()`` on a ``torch.optim.Adam`` with 12 groups;
* ``RecapLRShim.step()`` on a torchrec ``CombinedOptimizer`` whose one keyed Adam
  holds the 12 groups (as :func:`torch_bridge.build_recap_optimizer` builds it);
* ``LambdaLR.step()`` with the schedule written as a plain Python function
  (what a torch user writes today), on a plain Adam;
* the floor: a bare loop assigning ``group["lr"]`` from a precomputed list, on
  the plain optimizer and on the ``CombinedOptimizer`` (whose ``param_groups``
  is a property that builds a new list on each access).

With ``tensor_lr=True`` every group's ``"lr"`` is a 0-dim tensor and every
contender writes it in place (``fill_``), as torch's own schedulers do.

Each timing covers a run of consecutive steps, so the shims' table refills
(one JAX call per 2048 steps) are included at their real rate.

Run ``python benchmarks/bench_scheduler.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import torch
from bench_common import interleave, paired_ratio, stats

from functional_opt import config

NUM_GROUPS = 12
LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE = 1e-5
NUM_RAMP_STEPS = 1000
FINAL_NUM_STEPS = 100_000
BAR = 0.6  # the shims' time / LambdaLR's time must not exceed this
SHIMS = ("LRShim", "RecapLRShim")


def cosine_lr(step: int) -> float:
    """The schedule as a torch user writes it by hand (linear ramp, then half cosine)."""
    if step < NUM_RAMP_STEPS:
        return LEARNING_RATE / NUM_RAMP_STEPS * step
    if step <= FINAL_NUM_STEPS:
        progress = (step - NUM_RAMP_STEPS) / (FINAL_NUM_STEPS - NUM_RAMP_STEPS)
        return FINAL_LEARNING_RATE + (LEARNING_RATE - FINAL_LEARNING_RATE) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return FINAL_LEARNING_RATE


def lr_config() -> config.LearningRate:
    """:func:`cosine_lr` as a config."""
    return config.LearningRate(
        linear_ramp_to_cosine={
            "learning_rate": LEARNING_RATE,
            "final_learning_rate": FINAL_LEARNING_RATE,
            "num_ramp_steps": NUM_RAMP_STEPS,
            "final_num_steps": FINAL_NUM_STEPS,
        }
    )


def _params(num_groups: int) -> list[list[torch.nn.Parameter]]:
    return [[torch.nn.Parameter(torch.zeros(4, 4)), torch.nn.Parameter(torch.zeros(4))] for _ in range(num_groups)]


def _names(num_groups: int) -> list[str]:
    return [f"recap.engagement.task_{i}" for i in range(num_groups)]


def _lr(value: float, tensor_lr: bool) -> float | torch.Tensor:
    return torch.tensor(value, dtype=torch.float64) if tensor_lr else value


def make_steppers(num_groups: int = NUM_GROUPS, tensor_lr: bool = False) -> dict[str, Callable[[], None]]:
    """One zero-argument ``step`` per contender, each on its own optimizer with ``num_groups`` groups.

    Args:
        num_groups: param groups of each optimizer.
        tensor_lr: hold every learning rate in a 0-dim float64 tensor.

    Returns:
        name -> step.
    """
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    from torch_bridge import LRShim, RecapLRShim

    names = _names(num_groups)
    cfg = lr_config()

    def adam(groups: list[list[torch.nn.Parameter]]) -> torch.optim.Adam:
        pairs = zip(names, groups, strict=True)
        return torch.optim.Adam(
            [{"params": ps, "lr": _lr(LEARNING_RATE, tensor_lr), "name": n} for n, ps in pairs], fused=True
        )

    def combined(groups: list[list[torch.nn.Parameter]]) -> CombinedOptimizer:
        keyed = {f"towers.{i}.{j}": p for i, ps in enumerate(groups) for j, p in enumerate(ps)}
        return CombinedOptimizer([KeyedOptimizerWrapper(keyed, lambda _: adam(groups))])

    lambda_opt = adam(_params(num_groups))
    lambda_sched = torch.optim.lr_scheduler.LambdaLR(lambda_opt, lambda s: cosine_lr(s) / LEARNING_RATE)
    shim_opt = adam(_params(num_groups))
    shim = LRShim(shim_opt, dict.fromkeys(names, cfg))
    recap_opt = combined(_params(num_groups))
    recap = RecapLRShim(recap_opt, dict.fromkeys(names, cfg), None)

    bare_opt = adam(_params(num_groups))
    bare_combined = combined(_params(num_groups))
    values = [cosine_lr(0)] * num_groups

    def assign(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        if tensor_lr:

            def step() -> None:
                for group, lr in zip(optimizer.param_groups, values, strict=True):
                    group["lr"].fill_(lr)

        else:

            def step() -> None:
                for group, lr in zip(optimizer.param_groups, values, strict=True):
                    group["lr"] = lr

        return step

    for opt in (lambda_opt, shim_opt, recap_opt):
        opt.step()  # no gradients: a no-op that tells the schedulers the optimizer has stepped
    return {
        "bare loop": assign(bare_opt),
        "bare loop (combined)": assign(bare_combined),
        "LRShim": shim.step,
        "RecapLRShim": recap.step,
        "LambdaLR": lambda_sched.step,
    }


def run(
    repeats: int = 60, steps_per_repeat: int = 1024, num_groups: int = NUM_GROUPS, tensor_lr: bool = False
) -> dict[str, Any]:
    """Times one ``step()`` of each contender.

    Args:
        repeats: timed runs per contender (interleaved).
        steps_per_repeat: consecutive steps per timed run.
        num_groups: param groups of each optimizer.
        tensor_lr: hold every learning rate in a 0-dim tensor.

    Returns:
        ``{"num_groups", "tensor_lr", "repeats", "steps_per_repeat", "us_per_step": {name: {"median", "min",
        "max"}}, "ratio_to_lambdalr": {name: {"median", "min", "max"}}, "bar"}``: times in microseconds per
        step; each ratio is taken repeat by repeat between timings made back to back.
    """
    from torch_bridge.schedulers import BLOCK_SIZE

    # Warm-up past the second table block: the first two fills compile JAX functions.
    warmup = 2 * BLOCK_SIZE + 1
    samples = interleave(make_steppers(num_groups, tensor_lr), repeats, steps_per_repeat, warmup_steps=warmup)
    return {
        "num_groups": num_groups,
        "tensor_lr": tensor_lr,
        "repeats": repeats,
        "steps_per_repeat": steps_per_repeat,
        "us_per_step": {name: stats(v) for name, v in samples.items()},
        "ratio_to_lambdalr": {name: paired_ratio(v, samples["LambdaLR"]) for name, v in samples.items()},
        "bar": BAR,
    }


def passes(results: dict[str, Any]) -> dict[str, bool]:
    """Shim name -> whether its median ratio to ``LambdaLR`` is within the bar (float learning rates)."""
    return {name: results["ratio_to_lambdalr"][name]["median"] <= results["bar"] for name in SHIMS}


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`run`'s results."""
    kind = "tensor" if results["tensor_lr"] else "float"
    lines = [
        f"scheduler step, {results['num_groups']} param groups, {kind} lr, {results['repeats']} repeats x "
        f"{results['steps_per_repeat']} steps (us per step)",
        f"{'':20s} {'median':>8s} {'min':>8s} {'max':>8s} {'/ LambdaLR':>11s}",
    ]
    for name, s in results["us_per_step"].items():
        ratio = results["ratio_to_lambdalr"][name]["median"]
        lines.append(f"{name:20s} {s['median']:8.3f} {s['min']:8.3f} {s['max']:8.3f} {ratio:11.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--groups", type=int, default=NUM_GROUPS)
    parser.add_argument("--tensor-lr", action="store_true", help="learning rates in 0-dim tensors")
    args = parser.parse_args(argv)
    print(format_results(run(args.repeats, args.steps, args.groups, args.tensor_lr)))


if __name__ == "__main__":
    main()
