"""The flat recap step: ``build_recap_optimizer(flat=True)`` against one flat fused Adam and the memory floor.

For each model size, on one recap-shaped model (:class:`bench_optimizer.RecapShapedModel`),
these are timed side by side, interleaved, ``optimizer.step()`` only, with fixed gradients:

* ``bridge flat``: :func:`torch_bridge.build_recap_optimizer` with ``flat=True``: the
  towers' and backbone's Adam groups in one :class:`~torch_bridge.flat_adam.FlatAdam`,
  the ``dense_ebc`` tables on torch's SGD;
* ``bridge per group``: the default build: one ``Adam(fused=True)`` with a param group
  per tower, and the SGD;
* ``flat fused Adam``: what the hardware allows torch: ONE ``Adam(fused=True)`` over one
  contiguous tensor with as many elements as the Adam groups, and one SGD over one
  tensor with as many as the tables (no per-tower rates at all);
* ``memory floor``: an in-place ``a.add_(b)`` over float32 tensors sized so that it
  moves exactly the bytes the step must move at least: 28 per Adam element (read
  parameter, gradient and both moments, write back three) and 12 per table
  element (read parameter and gradient, write back one). An in-place add reads
  two streams and writes back lines it has just read, as the Adam step does (a
  copy into another tensor would also read its target first, and run slower
  than the floor it stands for).

The sizes are those of the flat-step issue: 12 towers of the default layers
(~170 k Adam elements), 100 and 1000 towers of small layers (~118 k, ~1.1 M),
and 12 towers of big layers (~10 M). One thread (``torch.set_num_threads(1)``):
the compiled loop runs on one core, as torch's fused kernel does then.

Run ``python benchmarks/bench_flat.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import torch
from bench_common import interleave, paired_ratio, stats
from bench_optimizer import RecapShapedModel, emb_config, recap_config
from bench_scale import SMALL_BACKBONE, SMALL_TOWERS

# name -> (towers, tower dims, backbone dims)
SIZES: dict[str, tuple[int, Any, Any]] = {
    "12 towers": (12, None, None),
    "100 towers": (100, SMALL_TOWERS, SMALL_BACKBONE),
    "1000 towers": (1000, SMALL_TOWERS, SMALL_BACKBONE),
    "12 towers, big layers": (12, ((640, 1), (640, 64, 1)), (2048, 1024)),
}
FLAT_BAR = 1.5  # bridge flat / flat fused Adam, at every size but the big one
FLOOR_BAR = 1.5  # bridge flat / memory floor, at the big size
FLOOR_SIZE = "12 towers, big layers"
ADAM_BYTES, SGD_BYTES, ADD_BYTES = 28, 12, 12


def make_steppers(num_towers: int, tower_dims: Any, backbone_dims: Any) -> tuple[dict[str, Callable[[], None]], int]:
    """(name -> step, Adam elements) of the contenders for one model."""
    from torch_bridge import build_recap_optimizer

    options = {k: v for k, v in (("tower_dims", tower_dims), ("backbone_dims", backbone_dims)) if v is not None}
    model = RecapShapedModel(num_towers, **options)
    flat, _ = build_recap_optimizer(model, recap_config(num_towers), emb_config(), flat=True)
    per_group, _ = build_recap_optimizer(model, recap_config(num_towers), emb_config())
    tables = {n for n, _ in model.ebc.named_parameters(prefix="ebc")}
    adam_elements = sum(p.numel() for n, p in model.named_parameters() if n not in tables)
    sgd_elements = sum(p.numel() for n, p in model.named_parameters() if n in tables)

    flat_param = torch.nn.Parameter(torch.randn(adam_elements) * 1e-2)
    flat_param.grad = torch.randn_like(flat_param) * 1e-2
    table_param = torch.nn.Parameter(torch.randn(sgd_elements) * 1e-2)
    table_param.grad = torch.randn_like(table_param) * 1e-2
    adam = torch.optim.Adam([flat_param], lr=1e-3, fused=True)
    sgd = torch.optim.SGD([table_param], lr=0.01)
    floor_elements = (ADAM_BYTES * adam_elements + SGD_BYTES * sgd_elements) // ADD_BYTES
    added, addend = torch.zeros(floor_elements), torch.zeros(floor_elements)

    def flat_fused() -> None:
        adam.step()
        sgd.step()

    steppers = {
        # Through the optimizers: their schedulers (dropped here) wrap the bound step methods.
        "bridge flat": lambda: flat.step(),
        "bridge per group": lambda: per_group.step(),
        "flat fused Adam": flat_fused,
        "memory floor": lambda: added.add_(addend),
    }
    return steppers, adam_elements


def _plan(adam_elements: int, quick: bool) -> tuple[int, int]:
    """(repeats, steps per repeat) for a size."""
    if quick:
        return 2, 2
    if adam_elements >= 5_000_000:
        return 15, 3
    if adam_elements >= 500_000:
        return 20, 5
    return 30, 20


def run(sizes: Sequence[str] = tuple(SIZES), threads: int | None = 1, quick: bool = False) -> dict[str, Any]:
    """Times the contenders at each size.

    Args:
        sizes: keys of :data:`SIZES`.
        threads: torch intra-op threads during the run (None: leave torch's setting).
        quick: a handful of steps per size (a smoke run; the numbers mean nothing).

    Returns:
        ``{"threads", "sizes": {name: {"towers", "adam_elements", "repeats", "steps_per_repeat",
        "us_per_step": {contender: stats}, "ratios": {"bridge flat / flat fused Adam", "bridge flat /
        floor", "bridge per group / flat fused Adam": stats}}}}``.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "sizes": {}}
    try:
        for name in sizes:
            towers, tower_dims, backbone_dims = SIZES[name]
            steppers, adam_elements = make_steppers(towers, tower_dims, backbone_dims)
            repeats, steps = _plan(adam_elements, quick)
            samples = interleave(steppers, repeats, steps)
            out["sizes"][name] = {
                "towers": towers,
                "adam_elements": adam_elements,
                "repeats": repeats,
                "steps_per_repeat": steps,
                "us_per_step": {k: stats(v) for k, v in samples.items()},
                "ratios": {
                    "bridge flat / flat fused Adam": paired_ratio(samples["bridge flat"], samples["flat fused Adam"]),
                    "bridge flat / floor": paired_ratio(samples["bridge flat"], samples["memory floor"]),
                    "bridge per group / flat fused Adam": paired_ratio(
                        samples["bridge per group"], samples["flat fused Adam"]
                    ),
                    "bridge per group / bridge flat": paired_ratio(samples["bridge per group"], samples["bridge flat"]),
                },
            }
            del steppers
    finally:
        torch.set_num_threads(previous_threads)
    return out


def passes(results: dict[str, Any]) -> dict[str, bool]:
    """``"<size>: <ratio>"`` -> whether its median holds the bar."""
    out = {}
    for name, entry in results["sizes"].items():
        if name == FLOOR_SIZE:
            out[f"{name}: bridge flat / floor"] = entry["ratios"]["bridge flat / floor"]["median"] <= FLOOR_BAR
        else:
            ratio = entry["ratios"]["bridge flat / flat fused Adam"]["median"]
            out[f"{name}: bridge flat / flat fused Adam"] = ratio <= FLAT_BAR
    return out


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`run`'s results."""
    lines = [f"flat recap step, {results['threads']} thread(s), us per step (median), ratios (median of paired)"]
    for name, entry in results["sizes"].items():
        us = ", ".join(f"{k} {v['median']:.0f}" for k, v in entry["us_per_step"].items())
        ratios = ", ".join(f"{k} {v['median']:.2f}" for k, v in entry["ratios"].items())
        lines.append(f"{name} ({entry['adam_elements']:,} Adam elements): {us}; {ratios}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 keeps torch's default")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.sizes, args.threads or None, args.quick)
    print(format_results(results))
    print(passes(results))


if __name__ == "__main__":
    main()
