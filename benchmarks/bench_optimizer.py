"""Optimizer step cost: build_recap_optimizer against hand-written torch and TML's structure.

A recap-shaped model (``num_towers`` towers of 2-3 Linear layers, a backbone,
a dense torchrec ``EmbeddingBagCollection``) and optimizers doing the same
update (Adam with per-tower learning rates on the towers and the backbone,
plain SGD on the embedding tables):

* ``bridge``: :func:`torch_bridge.build_recap_optimizer`: a torchrec
  ``CombinedOptimizer`` holding ONE keyed ``Adam(fused=True)`` with one param
  group per tower, and a keyed SGD;
* ``torch fused``: (a) what one writes by hand in torch: one
  ``torch.optim.Adam(fused=True)`` with one param group per tower, and an SGD;
* ``TML``: (b) TML's structure: one ``KeyedOptimizerWrapper(Adam)`` per tower in
  a ``CombinedOptimizer``, and a keyed SGD;
* optionally ``bridge (tensor lr)``: the bridge built with ``tensor_lr=True``.

All contenders step the same parameters, with fixed gradients: each holds its
own optimizer state, and the cost of a step does not depend on the values, so
no contender gains from where its parameters happen to lie in memory (two
identical optimizers on two model copies differ by up to 5% on a CPU). Only
``optimizer.step()`` is timed, interleaved repeat by repeat in one process.

Run ``python benchmarks/bench_optimizer.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import torch
from bench_common import interleave, paired_ratio, stats
from torch import nn

from functional_opt import config, grouping

NUM_TOWERS = 12
DENSE_DIM = 64
EMB_DIM = 16
TABLES = (("user", 2000), ("item", 2000))
BACKBONE_DIMS = (256, 128)
TOWER_DIMS = ((64, 1), (64, 32, 1))  # hidden sizes of even / odd towers
BARS = {"bridge / torch fused": ("<=", 1.10), "TML / bridge": (">=", 2.5)}


def tower_names(num_towers: int) -> list[str]:
    """TML-style task names, with dots."""
    return [f"recap.engagement.task_{i}" for i in range(num_towers)]


class RecapShapedModel(nn.Module):
    """Dense EBC + dense features -> backbone -> ``num_towers`` towers of 2 or 3 Linear layers.

    Every parameter gets a fixed random gradient.

    Args:
        num_towers: number of towers.
        device: where the parameters live.
        seed: torch seed of the initialisation and the gradients.
        tower_dims: hidden and output sizes of the even and the odd towers.
        backbone_dims: output sizes of the backbone's layers.
    """

    def __init__(
        self,
        num_towers: int = NUM_TOWERS,
        device: str = "cpu",
        seed: int = 0,
        tower_dims: Sequence[Sequence[int]] = TOWER_DIMS,
        backbone_dims: Sequence[int] = BACKBONE_DIMS,
    ) -> None:
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
        for out in backbone_dims:
            layers += [nn.Linear(width, out), nn.ReLU()]
            width = out
        self.backbone = nn.Sequential(*layers)
        towers = {}
        for i, name in enumerate(tower_names(num_towers)):
            dims = (width, *tower_dims[i % len(tower_dims)])
            towers[grouping.sanitize(name)] = nn.Sequential(*[nn.Linear(a, b) for a, b in itertools.pairwise(dims)])
        self.towers = nn.ModuleDict(towers)
        self.to(device)
        for p in self.parameters():
            p.grad = torch.randn_like(p) * 1e-2


def recap_config(num_towers: int) -> config.RecapOptimizerConfig:
    """One linear-ramp-to-cosine schedule per tower, a constant backbone rate."""
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
    """The embedding tables' (``dense_ebc``) constant rate."""
    return config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.01})


def _groups(model: nn.Module, num_towers: int) -> list[grouping.ParamGroup]:
    names = [n for n, _ in model.named_parameters()]
    return grouping.recap_groups(names, recap_config(num_towers), emb_config())


def torch_fused(model: nn.Module, num_towers: int) -> tuple[torch.optim.Adam, torch.optim.SGD]:
    """(a): one ``Adam(fused=True)`` with one group per tower and the backbone, one SGD for the tables."""
    adam_cfg = config.RecapAdamConfig()
    params = dict(model.named_parameters())
    groups = _groups(model, num_towers)
    adam = torch.optim.Adam(
        [{"params": [params[n] for n in g.param_names], "lr": 1e-3} for g in groups if g.algorithm == "adam"],
        betas=(adam_cfg.beta_1, adam_cfg.beta_2),
        eps=adam_cfg.epsilon,
        fused=True,
    )
    sgd = torch.optim.SGD([params[n] for g in groups if g.algorithm == "sgd" for n in g.param_names], lr=0.01)
    return adam, sgd


def tml_structure(model: nn.Module, num_towers: int) -> torch.optim.Optimizer:
    """(b): TML's recap optimizer: one ``KeyedOptimizerWrapper(Adam)`` per group in a ``CombinedOptimizer``."""
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

    adam_cfg = config.RecapAdamConfig()
    params = dict(model.named_parameters())
    parts = []
    for g in _groups(model, num_towers):
        group_params = {n: params[n] for n in g.param_names}
        if g.algorithm == "adam":
            betas = (adam_cfg.beta_1, adam_cfg.beta_2)
            factory = functools.partial(torch.optim.Adam, lr=1e-3, betas=betas, eps=adam_cfg.epsilon)
        else:
            factory = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.0)
        parts.append(KeyedOptimizerWrapper(group_params, factory))
    return CombinedOptimizer(parts)


def make_steppers(
    num_towers: int = NUM_TOWERS,
    device: str = "cpu",
    *,
    tensor_lr: bool = False,
    model: nn.Module | None = None,
) -> dict[str, Callable[[], None]]:
    """One zero-argument ``optimizer.step`` per contender, all on the same parameters.

    Args:
        num_towers: towers of the model.
        device: where the model lives.
        tensor_lr: add the ``bridge (tensor lr)`` contender.
        model: the model (default: a new :class:`RecapShapedModel`).

    Returns:
        name -> step.
    """
    from torch_bridge import build_recap_optimizer

    model = model if model is not None else RecapShapedModel(num_towers, device)
    bridge, _ = build_recap_optimizer(model, recap_config(num_towers), emb_config())
    adam, sgd = torch_fused(model, num_towers)
    tml = tml_structure(model, num_towers)

    def bridge_step() -> None:
        bridge.step()  # through the optimizer: its scheduler only holds a weak reference to it

    def torch_step() -> None:
        adam.step()
        sgd.step()

    steppers = {"bridge": bridge_step, "torch fused": torch_step, "TML": tml.step}
    if tensor_lr:
        tensor_bridge, _ = build_recap_optimizer(model, recap_config(num_towers), emb_config(), tensor_lr=True)

        def tensor_bridge_step() -> None:
            tensor_bridge.step()

        steppers["bridge (tensor lr)"] = tensor_bridge_step
    return steppers


def run(
    repeats: int = 100,
    steps_per_repeat: int = 10,
    num_towers: int = NUM_TOWERS,
    device: str = "cpu",
    threads: int | None = 1,
    *,
    tensor_lr: bool = True,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """Times one optimizer step of each contender.

    Args:
        repeats: timed runs per contender (interleaved).
        steps_per_repeat: consecutive steps per timed run.
        num_towers: towers of the model.
        device: ``"cpu"`` or ``"cuda"`` (CUDA timings synchronise after each run).
        threads: torch intra-op threads during the run (None: leave torch's setting).
        tensor_lr: also time the bridge built with ``tensor_lr=True``.
        model: the model (default: a new :class:`RecapShapedModel` on ``device``).

    Returns:
        ``{"num_towers", "device", "threads", "repeats", "steps_per_repeat",
        "us_per_step": {name: {"median", "min", "max"}}, "ratios": {name: {"median", "min", "max"}}, "bars"}``
        with the ratios ``bridge / torch fused``, ``TML / bridge`` (and ``bridge (tensor lr) / bridge``),
        each taken repeat by repeat between timings made back to back.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    try:
        steppers = make_steppers(num_towers, device, tensor_lr=tensor_lr, model=model)
        samples = interleave(steppers, repeats, steps_per_repeat, sync=sync)
    finally:
        torch.set_num_threads(previous_threads)
    ratios = {
        "bridge / torch fused": paired_ratio(samples["bridge"], samples["torch fused"]),
        "TML / bridge": paired_ratio(samples["TML"], samples["bridge"]),
    }
    if "bridge (tensor lr)" in samples:
        ratios["bridge (tensor lr) / bridge"] = paired_ratio(samples["bridge (tensor lr)"], samples["bridge"])
    return {
        "num_towers": num_towers,
        "device": device,
        "threads": threads if threads is not None else previous_threads,
        "repeats": repeats,
        "steps_per_repeat": steps_per_repeat,
        "us_per_step": {name: stats(v) for name, v in samples.items()},
        "ratios": ratios,
        "bars": dict(BARS),
    }


def passes(results: dict[str, Any]) -> dict[str, bool]:
    """Ratio name -> whether its median holds the bar."""
    out = {}
    for name, (op, bar) in results["bars"].items():
        median = results["ratios"][name]["median"]
        out[name] = median <= bar if op == "<=" else median >= bar
    return out


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`run`'s results."""
    lines = [
        f"optimizer step, {results['num_towers']} towers, {results['device']}, {results['threads']} thread(s), "
        f"{results['repeats']} repeats x {results['steps_per_repeat']} steps (us per step)",
        f"{'':20s} {'median':>9s} {'min':>9s} {'max':>9s}",
    ]
    for name, s in results["us_per_step"].items():
        lines.append(f"{name:20s} {s['median']:9.1f} {s['min']:9.1f} {s['max']:9.1f}")
    for name, r in results["ratios"].items():
        lines.append(f"{name}: {r['median']:.3f} (median of paired ratios; min {r['min']:.3f}, max {r['max']:.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--towers", type=int, default=NUM_TOWERS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0 keeps torch's default")
    args = parser.parse_args(argv)
    results = run(args.repeats, args.steps, args.towers, args.device, args.threads or None)
    print(format_results(results))


if __name__ == "__main__":
    main()
