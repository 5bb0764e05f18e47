"""The learning-rate curves of the example configs (``examples/*.yaml``, TML's format), as a figure.

Each YAML file is either a generic optimizer config (``learning_rate`` + one
algorithm) or a recap one (``multi_task_learning_rates`` /
``single_task_learning_rate``), alone or under TML's top-level ``optimizer:``
key. Every schedule is evaluated by :func:`functional_opt.plotting.lr_curves` (the
functions both the optax and the torch side use, under ``jax.jit(jax.vmap(...))``
in float64), and drawn twice: over the whole run and
over its first steps (the ramps).

Run ``python benchmarks/plot_lr_curves.py [OUT.png]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from functional_opt import config
from functional_opt.config_file import load_config_file
from functional_opt.plotting import lr_curves

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
POINTS = 4000


def learning_rates(path: Path) -> dict[str, config.LearningRate]:
    """Curve label -> schedule, for one example YAML file (see :meth:`LoadedConfig.learning_rates`)."""
    return load_config_file(path).learning_rates()


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
        marks = [b for lr in rates.values() for b in lr.breakpoints]
        full = int(max(marks, default=1000) * 1.15)
        ramps = [b for lr in rates.values() for b in lr.breakpoints[:1]]
        zoom = int(max(ramps, default=full) * 1.5)
        for ax, end, title in ((row[0], full, "whole run"), (row[1], min(zoom, full), "first steps")):
            steps, values = lr_curves(rates, end, max_points=POINTS)
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
