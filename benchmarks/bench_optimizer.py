"""Optimizer step cost: build_recap_optimizer against hand-written torch and TML's structure.

A recap-shaped model (``num_towers`` towers of 2-3 Linear layers, a backbone,
a dense torchrec ``EmbeddingBagCollection``) and three optimizers doing the
same update (Adam with per-tower learning rates on the towers and the
backbone, plain SGD on the embedding tables):

* ``bridge``: :func:`torch_bridge.build_recap_optimizer`: a torchrec
  ``CombinedOptimizer`` holding ONE keyed ``Adam(fused=True)`` with one param
  group per tower, and a keyed SGD;
* ``torch fused``: (a) what one writes by hand in torch: one
  ``torch.optim.Adam(fused=True)`` with one param group per tower, and an SGD;
* ``TML``: (b) TML's structure: one ``KeyedOptimizerWrapper(Adam)`` per tower in
  a ``CombinedOptimizer``, and a keyed SGD.

Each contender owns a copy of the model with fixed gradients; only
``optimizer.step()`` is timed, interleaved repeat by repeat in one process.

Run ``python benchmarks/bench_optimizer.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

from functional_opt import config, grouping

NUM_TOWERS = 12
DENSE_DIM = 64
EMB_DIM = 16
TABLES = (("user", 2000), ("item", 2000))
BACKBONE_DIMS = (256, 128)


def tower_names(num_towers: int) -> list[str]:
    return [f"recap.engagement.task_{i}" for i in range(num_towers)]


class RecapShapedModel(nn.Module):
    """Dense EBC + dense features -> backbone -> ``num_towers`` towers of 2 or 3 Linear layers."""

    def __init__(self, num_towers: int = NUM_TOWERS, device: str = "cpu", seed: int = 0) -> None:
        from torchrec import EmbeddingBagCollection, EmbeddingBagConfig

        super().__init__()
        torch.manual_seed(seed)
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=t, embedding_dim=EMB_DIM, num_embeddings=rows, feature_names=[t])
                for t, rows in TABLES
            ],
            device=torch.device(device),
        )
        width = DENSE_DIM + EMB_DIM * len(TABLES)
        layers: list[nn.Module] = []
        for out in BACKBONE_DIMS:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.backbone = nn.Sequential(*layers)
        towers = {}
        for i, name in enumerate(tower_names(num_towers)):
            dims = (width, 64, 32, 1) if i % 2 else (width, 64, 1)
            towers[grouping.sanitize(name)] = nn.Sequential(*[nn.Linear(a, b) for a, b in itertools.pairwise(dims)])
        self.towers = nn.ModuleDict(towers)
        self.to(device)
        for p in self.parameters():
            p.grad = torch.randn_like(p) * 1e-2


def recap_config(num_towers: int) -> config.RecapOptimizerConfig:
    rates = {
        name: {
            "linear_ramp_to_cosine": {
                "learning_rate": 1e-3 * (1 + i / num_towers),
                "final_learning_rate": 1e-5,
                "num_ramp_steps": 100,
                "final_num_steps": 10_000,
            }
        }
        for i, name in enumerate(tower_names(num_towers))
    }
    return config.RecapOptimizerConfig(
        adam={},
        multi_task_learning_rates={"tower_learning_rates": rates, "backbone_learning_rate": {"constant": 1e-3}},
    )


def emb_config() -> config.EmbeddingOptimizerConfig:
    return config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.01})


def _groups(model: nn.Module, num_towers: int) -> list[grouping.ParamGroup]:
    names = [n for n, _ in model.named_parameters()]
    return grouping.recap_groups(names, recap_config(num_towers), emb_config())


def make_steppers(num_towers: int = NUM_TOWERS, device: str = "cpu") -> dict[str, Callable[[], None]]:
    """One zero-argument ``optimizer.step`` per contender, each on its own model copy."""
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    from torch_bridge import build_recap_optimizer

    adam_cfg = config.RecapAdamConfig()
    betas = (adam_cfg.beta_1, adam_cfg.beta_2)

    bridge_model = RecapShapedModel(num_towers, device)
    bridge, _ = build_recap_optimizer(bridge_model, recap_config(num_towers), emb_config())

    torch_model = RecapShapedModel(num_towers, device)
    params = dict(torch_model.named_parameters())
    groups = _groups(torch_model, num_towers)
    adam = torch.optim.Adam(
        [{"params": [params[n] for n in g.param_names], "lr": 1e-3} for g in groups if g.algorithm == "adam"],
        betas=betas,
        eps=adam_cfg.epsilon,
        fused=True,
    )
    sgd = torch.optim.SGD([params[n] for g in groups if g.algorithm == "sgd" for n in g.param_names], lr=0.01)

    def torch_step() -> None:
        adam.step()
        sgd.step()

    tml_model = RecapShapedModel(num_towers, device)
    params = dict(tml_model.named_parameters())
    parts = []
    for g in _groups(tml_model, num_towers):
        group_params = {n: params[n] for n in g.param_names}
        if g.algorithm == "adam":
            factory = functools.partial(torch.optim.Adam, lr=1e-3, betas=betas, eps=adam_cfg.epsilon)
        else:
            factory = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.0)
        parts.append(KeyedOptimizerWrapper(group_params, factory))
    tml = CombinedOptimizer(parts)

    def bridge_step() -> None:
        bridge.step()  # through the optimizer: its scheduler only holds a weak reference to it

    return {"bridge": bridge_step, "torch fused": torch_step, "TML": tml.step}


def run(
    repeats: int = 100,
    steps_per_repeat: int = 10,
    num_towers: int = NUM_TOWERS,
    device: str = "cpu",
    threads: int | None = 1,
) -> dict[str, Any]:
    """Times one optimizer step of each contender.

    Args:
        repeats: timed runs per contender (interleaved).
        steps_per_repeat: consecutive steps per timed run.
        num_towers: towers of the model.
        device: ``"cpu"`` or ``"cuda"`` (CUDA timings synchronise after each run).
        threads: torch intra-op threads during the run (None: leave torch's setting).

    Returns:
        ``{"num_towers", "device", "threads", "repeats", "steps_per_repeat",
        "us_per_step": {name: {"median", "min", "max"}}, "ratios": {...}, "ratios_of_min": {...}}``
        with ``bridge / torch fused`` and ``TML / bridge``: the median over repeats of
        the ratio of the two back-to-back timings, and the ratio of the minimums.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    try:
        steppers = make_steppers(num_towers, device)
        for step in steppers.values():
            for _ in range(steps_per_repeat):
                step()
        sync()
        samples: dict[str, list[float]] = {name: [] for name in steppers}
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(repeats):
                for name, step in steppers.items():
                    start = time.perf_counter()
                    for _ in range(steps_per_repeat):
                        step()
                    sync()
                    samples[name].append((time.perf_counter() - start) / steps_per_repeat * 1e6)
        finally:
            if gc_was_enabled:
                gc.enable()
    finally:
        torch.set_num_threads(previous_threads)
    stats = {name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in samples.items()}
    return {
        "num_towers": num_towers,
        "device": device,
        "threads": threads if threads is not None else previous_threads,
        "repeats": repeats,
        "steps_per_repeat": steps_per_repeat,
        "us_per_step": stats,
        "ratios": {
            "bridge / torch fused": _paired_ratio(samples["bridge"], samples["torch fused"]),
            "TML / bridge": _paired_ratio(samples["TML"], samples["bridge"]),
        },
        "ratios_of_min": {
            "bridge / torch fused": stats["bridge"]["min"] / stats["torch fused"]["min"],
            "TML / bridge": stats["TML"]["min"] / stats["bridge"]["min"],
        },
    }


def _paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over repeats of the ratio of two timings taken back to back (robust to slow load drifts)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def format_results(results: dict[str, Any]) -> str:
    lines = [
        f"optimizer step, {results['num_towers']} towers, {results['device']}, {results['threads']} thread(s), "
        f"{results['repeats']} repeats x {results['steps_per_repeat']} steps (us per step)",
        f"{'':12s} {'median':>9s} {'min':>9s} {'max':>9s}",
    ]
    for name, s in results["us_per_step"].items():
        lines.append(f"{name:12s} {s['median']:9.1f} {s['min']:9.1f} {s['max']:9.1f}")
    for name, ratio in results["ratios"].items():
        of_min = results["ratios_of_min"][name]
        lines.append(f"{name}: {ratio:.3f} (median of paired ratios; ratio of minimums {of_min:.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--towers", type=int, default=NUM_TOWERS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 keeps torch's default")
    args = parser.parse_args(argv)
    print(format_results(run(args.repeats, args.steps, args.towers, args.device, args.threads or None)))


if __name__ == "__main__":
    main()
