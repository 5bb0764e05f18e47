"""Scale: scheduler-step and optimizer-step cost as the number of towers grows.

For each number of towers (1, 4, 12, 48, 192 by default), on one recap-shaped
model with small layers (:class:`bench_optimizer.RecapShapedModel`), three
structures are timed side by side, interleaved:

* ``bridge``: :func:`torch_bridge.build_recap_optimizer` and its ``RecapLRShim``;
* ``torch``: torch's own: one ``Adam(fused=True)`` with a group per tower plus an
  SGD, each driven by a ``LambdaLR`` whose function is the schedule written in
  Python;
* ``TML``: TML's structure: one ``KeyedOptimizerWrapper(Adam)`` per tower in a
  ``CombinedOptimizer``, driven by TML's ``LRShim``, which recomputes every
  group's rate in Python each step (``compute_lr`` per group, through torch's
  ``LRScheduler.step``).

Groups: one per tower, ``backbone`` and ``dense_ebc``. The optimizers step the
same parameters (see :mod:`bench_optimizer`). Few repeats at the big sizes
keep the run short; the ratios are still taken repeat by repeat.

Run ``python benchmarks/bench_scale.py``; :func:`run` returns the numbers and
:func:`plot` draws them.
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import torch
from bench_common import interleave, paired_ratio, stats
from bench_optimizer import RecapShapedModel, emb_config, recap_config, tml_structure, torch_fused
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from functional_opt import config

TOWERS = (1, 4, 12, 48, 192)
SMALL_TOWERS = ((16, 1), (16, 8, 1))
SMALL_BACKBONE = (64,)
CONTENDERS = ("bridge", "torch", "TML")


def python_lr(lr: config.LearningRate, step: int) -> float:
    """TML's ``compute_lr``: the schedule in plain Python floats."""
    if lr.constant is not None:
        return lr.constant
    if lr.piecewise_constant is not None:
        boundaries = lr.piecewise_constant.learning_rate_boundaries or []
        return (lr.piecewise_constant.learning_rate_values or [])[bisect.bisect_right(boundaries, step)]
    if lr.linear_ramp_to_constant is not None:
        ramp = lr.linear_ramp_to_constant
        return min(ramp.learning_rate, ramp.learning_rate / ramp.num_ramp_steps * step)
    cos = lr.linear_ramp_to_cosine
    if cos is None:
        raise ValueError(f"python_lr: no schedule in {lr!r}")
    if step < cos.num_ramp_steps:
        return cos.learning_rate / cos.num_ramp_steps * step
    if step <= cos.final_num_steps:
        progress = (step - cos.num_ramp_steps) / (cos.final_num_steps - cos.num_ramp_steps)
        return cos.final_learning_rate + (cos.learning_rate - cos.final_learning_rate) * 0.5 * (
            1 + math.cos(math.pi * progress)
        )
    return cos.final_learning_rate


class TmlLRShim(LRScheduler):
    """TML's ``LRShim``: every group's rate recomputed in Python at every step (closed form)."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_dict: dict[str, config.LearningRate]) -> None:
        self.lr_dict = lr_dict
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return self._get_closed_form_lr()

    def _get_closed_form_lr(self) -> list[float]:
        return [python_lr(lr, self.last_epoch) for lr in self.lr_dict.values()]


def _learning_rates(num_towers: int) -> dict[str, config.LearningRate]:
    """Group name -> schedule, in the groups' order (towers, backbone, dense_ebc)."""
    from functional_opt import grouping

    model = RecapShapedModel(num_towers, tower_dims=SMALL_TOWERS, backbone_dims=SMALL_BACKBONE)
    names = [n for n, _ in model.named_parameters()]
    return {g.name: g.learning_rate for g in grouping.recap_groups(names, recap_config(num_towers), emb_config())}


def make_steppers(num_towers: int) -> tuple[dict[str, Callable[[], None]], dict[str, Callable[[], None]]]:
    """(scheduler steppers, optimizer steppers) of the three structures for ``num_towers`` towers."""
    from torch_bridge import build_recap_optimizer
    from torch_bridge.schedulers import BLOCK_SIZE

    model = RecapShapedModel(num_towers, tower_dims=SMALL_TOWERS, backbone_dims=SMALL_BACKBONE)
    rates = _learning_rates(num_towers)

    bridge, bridge_sched = build_recap_optimizer(model, recap_config(num_towers), emb_config())
    adam, sgd = torch_fused(model, num_towers)
    dense = [lr for name, lr in rates.items() if name != "dense_ebc"]
    adam_sched = LambdaLR(adam, [lambda s, lr=lr: python_lr(lr, s) / 1e-3 for lr in dense])
    sgd_sched = LambdaLR(sgd, lambda s: python_lr(rates["dense_ebc"], s) / 0.01)
    tml = tml_structure(model, num_towers)
    tml_sched = TmlLRShim(tml, rates)
    for opt in (bridge, adam, sgd, tml):
        opt.zero_grad(set_to_none=False)  # zero gradients: this first step leaves the parameters alone
        opt.step()
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-2
    for _ in range(2 * BLOCK_SIZE + 1):  # past the table fills that compile JAX functions
        bridge_sched.step()

    def torch_sched_step() -> None:
        adam_sched.step()
        sgd_sched.step()

    def torch_opt_step() -> None:
        adam.step()
        sgd.step()

    def bridge_opt_step() -> None:
        bridge.step()

    schedulers = {"bridge": bridge_sched.step, "torch": torch_sched_step, "TML": tml_sched.step}
    optimizers = {"bridge": bridge_opt_step, "torch": torch_opt_step, "TML": tml.step}
    return schedulers, optimizers


def _size_plan(num_towers: int, quick: bool) -> tuple[int, int, int, int]:
    """(scheduler repeats, scheduler steps, optimizer repeats, optimizer steps) for a size."""
    if quick:
        return 2, 5, 1, 2
    if num_towers <= 12:
        return 30, 200, 40, 10
    if num_towers <= 48:
        return 15, 100, 20, 5
    return 8, 50, 10, 3


def run(towers: Sequence[int] = TOWERS, threads: int | None = 1, quick: bool = False) -> dict[str, Any]:
    """Times both steps of the three structures at each size.

    Args:
        towers: the numbers of towers.
        threads: torch intra-op threads during the run (None: leave torch's setting).
        quick: a handful of steps per size (a smoke run; the numbers mean nothing).

    Returns:
        ``{"towers", "threads", "scheduler": {n: {...}}, "optimizer": {n: {...}}}`` where each entry holds
        ``"groups"``, ``"repeats"``, ``"steps_per_repeat"``, ``"us_per_step": {name: {"median", "min", "max"}}``
        and ``"ratio_to_bridge": {name: {"median", "min", "max"}}``.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    out: dict[str, Any] = {"towers": list(towers), "threads": torch.get_num_threads(), "scheduler": {}, "optimizer": {}}
    try:
        for n in towers:
            schedulers, optimizers = make_steppers(n)
            s_rep, s_steps, o_rep, o_steps = _size_plan(n, quick)
            for part, steppers, repeats, steps in (
                ("scheduler", schedulers, s_rep, s_steps),
                ("optimizer", optimizers, o_rep, o_steps),
            ):
                samples = interleave(steppers, repeats, steps)
                out[part][n] = {
                    "groups": n + 2,
                    "repeats": repeats,
                    "steps_per_repeat": steps,
                    "us_per_step": {name: stats(v) for name, v in samples.items()},
                    "ratio_to_bridge": {name: paired_ratio(v, samples["bridge"]) for name, v in samples.items()},
                }
    finally:
        torch.set_num_threads(previous_threads)
    return out


def plot(results: dict[str, Any], path: str | Path) -> Path:
    """Draws median microseconds per step against towers (log-log), one panel per step kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    titles = {"scheduler": "scheduler.step()", "optimizer": "optimizer.step()"}
    labels = {
        "bridge": "bridge (RecapLRShim / build_recap_optimizer)",
        "torch": "torch (LambdaLR / one fused Adam)",
        "TML": "TML (LRShim / one Adam per tower)",
    }
    for ax, part in zip(axes, ("scheduler", "optimizer"), strict=True):
        towers = [int(n) for n in results[part]]
        for name in CONTENDERS:
            medians = [results[part][n]["us_per_step"][name]["median"] for n in results[part]]
            lows = [results[part][n]["us_per_step"][name]["min"] for n in results[part]]
            highs = [results[part][n]["us_per_step"][name]["max"] for n in results[part]]
            ax.plot(towers, medians, marker="o", label=labels[name])
            ax.fill_between(towers, lows, highs, alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(towers, [str(n) for n in towers])
        ax.set_xlabel("towers")
        ax.set_ylabel("microseconds per step (median; band: min-max)")
        ax.set_title(titles[part])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`run`'s results."""
    lines = []
    for part in ("scheduler", "optimizer"):
        lines.append(f"{part} step (us, median) vs towers; x bridge in brackets")
        lines.append(f"{'towers':>7s} " + " ".join(f"{name:>20s}" for name in CONTENDERS))
        for n, entry in results[part].items():
            cells = []
            for name in CONTENDERS:
                median = entry["us_per_step"][name]["median"]
                ratio = entry["ratio_to_bridge"][name]["median"]
                cells.append(f"{median:11.1f} ({ratio:5.2f}x)")
            lines.append(f"{n:>7} " + " ".join(f"{c:>20s}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", type=int, nargs="+", default=list(TOWERS))
    parser.add_argument("--plot", type=Path, default=None, help="write the figure here")
    args = parser.parse_args(argv)
    results = run(args.towers)
    print(format_results(results))
    if args.plot is not None:
        print(f"wrote {plot(results, args.plot)}")


if __name__ == "__main__":
    main()
