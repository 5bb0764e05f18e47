"""The learning-rate curves of the example configs (``examples/*.yaml``, TML's format), as a figure.

Each YAML file is either a generic optimizer config (``learning_rate`` + one
algorithm) or a recap one (``multi_task_learning_rates`` /
``single_task_learning_rate``), alone or under TML's top-level ``optimizer:``
key. Every schedule is evaluated with :func:`functional_opt.schedules.schedule_from_config`
(the functions both the optax and the torch side use), under
``jax.jit(jax.vmap(...))`` in float64, and drawn twice: over the whole run and
over its first steps (the ramps).

Run ``python benchmarks/plot_lr_curves.py [OUT.png]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config, schedules

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POINTS = 4000


def learning_rates(path: Path) -> dict[str, config.LearningRate]:
    """Curve label -> schedule, for one example YAML file.

    Raises:
        ValueError: the file holds no optimizer config this function recognises.
    """
    data: Any = config.read_yaml(path)
    section = data.get("optimizer", data) if isinstance(data, dict) else None
    if not isinstance(section, dict):
        raise ValueError(f"{path}: no optimizer section")
    if "multi_task_learning_rates" in section or "single_task_learning_rate" in section:
        recap = config.RecapOptimizerConfig.model_validate(section)
        if recap.single_task_learning_rate is not None:
            return {"single_task": recap.single_task_learning_rate}
        mtl = recap.multi_task_learning_rates
        if mtl is None:  # unreachable for a validated RecapOptimizerConfig
            raise ValueError(f"{path}: no learning rates")
        rates = dict(mtl.tower_learning_rates)
        if mtl.backbone_learning_rate is not None:
            rates["backbone"] = mtl.backbone_learning_rate
        return rates
    generic = config.OptimizerConfig.model_validate(section)
    algorithm = config.get_optimizer_algorithm_config(generic)
    return {"learning_rate": generic.learning_rate or config.LearningRate(constant=algorithm.lr)}


def _breakpoints(lr: config.LearningRate) -> list[int]:
    if lr.linear_ramp_to_cosine is not None:
        return [lr.linear_ramp_to_cosine.num_ramp_steps, lr.linear_ramp_to_cosine.final_num_steps]
    if lr.linear_ramp_to_constant is not None:
        return [lr.linear_ramp_to_constant.num_ramp_steps]
    if lr.piecewise_constant is not None:
        return list(lr.piecewise_constant.learning_rate_boundaries or [])
    return []


def _steps(end: int, marks: list[int]) -> np.ndarray:
    """Integer steps in ``[0, end]``: an even grid plus every breakpoint and its neighbours."""
    grid = np.linspace(0, end, POINTS).round().astype(np.int64)
    extra = [s + d for s in marks for d in (-1, 0, 1) if 0 <= s + d <= end]
    return np.unique(np.concatenate([grid, np.asarray(extra, dtype=np.int64)]))


def curves(rates: dict[str, config.LearningRate], end: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The steps and each schedule's float64 values over ``[0, end]``."""
    marks = [b for lr in rates.values() for b in _breakpoints(lr)]
    steps = _steps(end, marks)
    with jax.enable_x64(True):
        values = {
            name: np.asarray(jax.jit(jax.vmap(schedules.schedule_from_config(lr)))(jnp.asarray(steps)))
            for name, lr in rates.items()
        }
    return steps, values


def plot(path: str | Path, examples: Path = EXAMPLES) -> tuple[Path, list[Path]]:
    """Draws every example config's curves (whole run, and ramps) into ``path``; returns it and the configs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(examples.glob("*.yaml"))
    if not files:
        raise ValueError(f"plot_lr_curves: no *.yaml in {examples}")
    fig, axes = plt.subplots(len(files), 2, figsize=(12, 3.8 * len(files)), squeeze=False, constrained_layout=True)
    for row, file in zip(axes, files, strict=True):
        rates = learning_rates(file)
        marks = [b for lr in rates.values() for b in _breakpoints(lr)]
        full = int(max(marks, default=1000) * 1.15)
        ramps = [b for lr in rates.values() for b in _breakpoints(lr)[:1]]
        zoom = int(max(ramps, default=full) * 1.5)
        for ax, end, title in ((row[0], full, "whole run"), (row[1], min(zoom, full), "first steps")):
            steps, values = curves(rates, end)
            for name, v in values.items():
                ax.plot(steps, v, label=name, linewidth=1.4)
            ax.set_title(f"{file.name}: {title}")
            ax.set_xlabel("step")
            ax.set_ylabel("learning rate")
            ax.grid(True, alpha=0.3)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        row[0].legend(fontsize=7, loc="best")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", type=Path, default=ROOT / "docs" / "benchmarks_lr_curves.png")
    args = parser.parse_args(argv)
    out, files = plot(args.output)
    print(f"wrote {out} ({len(files)} configs)")


if __name__ == "__main__":
    main()
