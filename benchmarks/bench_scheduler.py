"""Scheduler step cost: LRShim / RecapLRShim against torch's LambdaLR and a bare loop.

All four drive the same optimizer (12 param groups) with the same
linear-ramp-to-cosine schedule, measured side by side in one process,
interleaved repeat by repeat so that machine noise hits all of them alike:

* ``LRShim.step()`` on a ``torch.optim.Adam`` with 12 groups;
* ``RecapLRShim.step()`` on a torchrec ``CombinedOptimizer`` whose keyed Adam
  holds the same 12 groups (as :func:`torch_bridge.build_recap_optimizer` builds it);
* ``LambdaLR.step()`` with the schedule written as a plain Python function
  (what a torch user writes today);
* the floor: a bare loop assigning ``group["lr"]`` from a precomputed list, on
  the plain optimizer and on the ``CombinedOptimizer`` (whose ``param_groups``
  is a property that builds a new list on each access).

Each timing covers a run of consecutive steps, so the shim's table refills
(one JAX call per 2048 steps) are included at their real rate.

Run ``python benchmarks/bench_scheduler.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from functional_opt import config

NUM_GROUPS = 12
LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE = 1e-5
NUM_RAMP_STEPS = 1000
FINAL_NUM_STEPS = 100_000


def cosine_lr(step: int) -> float:
    """The schedule as a torch user writes it by hand (linear ramp, then half cosine)."""
    if step < NUM_RAMP_STEPS:
        return LEARNING_RATE / NUM_RAMP_STEPS * step
    if step <= FINAL_NUM_STEPS:
        progress = (step - NUM_RAMP_STEPS) / (FINAL_NUM_STEPS - NUM_RAMP_STEPS)
        return FINAL_LEARNING_RATE + (LEARNING_RATE - FINAL_LEARNING_RATE) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return FINAL_LEARNING_RATE


def lr_config() -> config.LearningRate:
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


def make_steppers(num_groups: int = NUM_GROUPS) -> dict[str, Callable[[], None]]:
    """One zero-argument ``step`` per contender, each on its own optimizer with ``num_groups`` groups."""
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    from torch_bridge import LRShim, RecapLRShim

    names = _names(num_groups)
    cfg = lr_config()

    def adam(groups: list[list[torch.nn.Parameter]]) -> torch.optim.Adam:
        return torch.optim.Adam(
            [{"params": ps, "lr": LEARNING_RATE, "name": n} for n, ps in zip(names, groups, strict=True)],
            fused=True,
        )

    lambda_opt = adam(_params(num_groups))
    lambda_sched = torch.optim.lr_scheduler.LambdaLR(lambda_opt, lambda s: cosine_lr(s) / LEARNING_RATE)

    shim_opt = adam(_params(num_groups))
    shim = LRShim(shim_opt, dict.fromkeys(names, cfg))

    keyed_groups = _params(num_groups)
    keyed_params = {f"towers.{i}.{j}": p for i, ps in enumerate(keyed_groups) for j, p in enumerate(ps)}
    combined = CombinedOptimizer([KeyedOptimizerWrapper(keyed_params, lambda _: adam(keyed_groups))])
    recap = RecapLRShim(combined, dict.fromkeys(names, cfg), None)

    bare_opt = adam(_params(num_groups))
    bare_state = {"step": 0}
    values = [cosine_lr(0)] * num_groups

    def bare_loop() -> None:
        bare_state["step"] += 1
        for group, lr in zip(bare_opt.param_groups, values, strict=True):
            group["lr"] = lr

    bare_groups = _params(num_groups)
    bare_keyed = {f"towers.{i}.{j}": p for i, ps in enumerate(bare_groups) for j, p in enumerate(ps)}
    bare_combined = CombinedOptimizer([KeyedOptimizerWrapper(bare_keyed, lambda _: adam(bare_groups))])

    def bare_loop_combined() -> None:
        bare_state["step"] += 1
        for group, lr in zip(bare_combined.param_groups, values, strict=True):
            group["lr"] = lr

    for opt in (lambda_opt, shim_opt, combined):
        opt.step()  # no gradients: a no-op that tells the schedulers the optimizer has stepped
    return {
        "bare loop": bare_loop,
        "bare loop (combined)": bare_loop_combined,
        "LRShim": shim.step,
        "RecapLRShim": recap.step,
        "LambdaLR": lambda_sched.step,
    }


def run(repeats: int = 60, steps_per_repeat: int = 1024, num_groups: int = NUM_GROUPS) -> dict[str, Any]:
    """Times one ``step()`` of each contender.

    Args:
        repeats: number of timed runs per contender (interleaved).
        steps_per_repeat: consecutive steps per timed run.
        num_groups: param groups of each optimizer.

    Returns:
        ``{"num_groups", "repeats", "steps_per_repeat", "us_per_step": {name: {"median", "min", "max"}},
        "ratio_to_lambdalr": {name: ratio}, "ratio_to_lambdalr_of_min": {name: ratio}}``; times in
        microseconds per step. ``ratio_to_lambdalr`` is the median over repeats of the ratio of
        back-to-back timings (robust to slow load drifts), the other the ratio of the minimums.
    """
    steppers = make_steppers(num_groups)
    for step in steppers.values():  # warm-up: first table block, caches
        for _ in range(steps_per_repeat):
            step()
    samples: dict[str, list[float]] = {name: [] for name in steppers}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, step in steppers.items():
                start = time.perf_counter()
                for _ in range(steps_per_repeat):
                    step()
                samples[name].append((time.perf_counter() - start) / steps_per_repeat * 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    stats = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in samples.items()}
    base = samples["LambdaLR"]
    return {
        "num_groups": num_groups,
        "repeats": repeats,
        "steps_per_repeat": steps_per_repeat,
        "us_per_step": stats,
        "ratio_to_lambdalr": {
            name: statistics.median(a / b for a, b in zip(v, base, strict=True)) for name, v in samples.items()
        },
        "ratio_to_lambdalr_of_min": {name: s["min"] / stats["LambdaLR"]["min"] for name, s in stats.items()},
    }


def format_results(results: dict[str, Any]) -> str:
    lines = [
        f"scheduler step, {results['num_groups']} param groups, {results['repeats']} repeats x "
        f"{results['steps_per_repeat']} steps (us per step)",
        f"{'':20s} {'median':>8s} {'min':>8s} {'max':>8s} {'/ LambdaLR':>11s} {'(of min)':>9s}",
    ]
    for name, s in results["us_per_step"].items():
        ratio = results["ratio_to_lambdalr"][name]
        of_min = results["ratio_to_lambdalr_of_min"][name]
        lines.append(f"{name:20s} {s['median']:8.3f} {s['min']:8.3f} {s['max']:8.3f} {ratio:11.3f} {of_min:9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--groups", type=int, default=NUM_GROUPS)
    args = parser.parse_args(argv)
    print(format_results(run(args.repeats, args.steps, args.groups)))


if __name__ == "__main__":
    main()
