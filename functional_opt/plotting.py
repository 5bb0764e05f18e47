"""Learning-rate curves: evaluation over a step range and matplotlib figures.

matplotlib is imported only inside the functions that draw, with the
non-interactive ``Agg`` backend, so importing this module costs nothing and
works on a machine without a display.

Example:
    >>> from functional_opt import config
    >>> from functional_opt.plotting import lr_curves
    >>> rates = {"tower": config.LearningRate(linear_ramp_to_constant=dict(learning_rate=1.0, num_ramp_steps=4))}
    >>> steps, curves = lr_curves(rates, 8, max_points=9)
    >>> steps.tolist(), curves["tower"].tolist()
    ([0, 1, 2, 3, 4, 5, 6, 7, 8], [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedule_plan
from functional_opt.cli_args import printable

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FIGURE_FORMATS",
    "MAX_LABELLED_CURVES",
    "draw_learning_rates",
    "lr_curves",
    "new_figure",
    "plain_text",
    "save_figure",
]

_TOTAL_POINTS = 160_000
_MIN_POINTS = 256

MAX_LABELLED_CURVES = 40
"""Beyond this many schedules in one panel, the lines are drawn as one collection with one legend entry."""

FIGURE_FORMATS = ("png", "svg", "pdf")
"""File formats :func:`save_figure` writes, chosen by the file's suffix."""


def lr_curves(
    learning_rates: Mapping[str, config_lib.LearningRate], num_steps: int, *, max_points: int = 4001
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Every schedule evaluated in float64 on steps ``0 .. num_steps``.

    At most ``max_points`` evenly spread steps are used (fewer with many
    schedules: about 160,000 points in all, at least 256 per schedule), plus
    every breakpoint in range and the step before each (so ramps and jumps
    are drawn sharp).

    Args:
        learning_rates: label -> schedule config.
        num_steps: last step (>= 1).
        max_points: how many evenly spread steps at most.

    Returns:
        ``(steps, {label: values})``, steps as int64 and values as float64 arrays.
    """
    # Many schedules share the points (a few hundred each, breakpoints kept): the figure stays quick to draw.
    max_points = min(max_points, max(_MIN_POINTS, _TOTAL_POINTS // max(1, len(learning_rates))))
    grid = np.unique(np.linspace(0, num_steps, min(num_steps + 1, max_points)).round().astype(np.int64))
    extra = [
        s + d for lr in learning_rates.values() for s in lr.breakpoints for d in (-1, 0) if 0 <= s + d <= num_steps
    ]
    steps = np.unique(np.concatenate([grid, np.asarray(extra, dtype=np.int64)]))
    # All schedules in one evaluation as data (one per kind in use): nothing compiles per schedule.
    values = schedule_plan.evaluate(list(learning_rates.values()), steps)
    return steps, {label: values[:, i] for i, label in enumerate(learning_rates)}


def plain_text(text: str) -> str:
    """``text`` as matplotlib draws it literally: control characters escaped, ``$`` not starting math.

    Example:
        >>> print(plain_text("a$b" + chr(27)))
        a\\$b\\x1b
    """
    return printable(text).replace("$", r"\$")


def new_figure(rows: int = 1, *, width: float = 10.0, height_per_row: float = 4.5) -> tuple[Figure, list[Axes]]:
    """A figure with ``rows`` stacked axes sharing the step axis, on the ``Agg`` backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(width, height_per_row * rows), sharex=True, squeeze=False)
    return fig, list(axes[:, 0])


def draw_learning_rates(
    ax: Axes,
    steps: Sequence[int] | np.ndarray,
    curves: Mapping[str, Sequence[float] | np.ndarray],
    *,
    log_scale: bool = False,
    title: str | None = None,
    first_color: int = 0,
) -> None:
    """Draws one line per schedule on ``ax``, labelled, with the legend to the right.

    Beyond :data:`MAX_LABELLED_CURVES` schedules the lines are one collection
    in one colour, with one legend entry ("N groups").

    Args:
        ax: the axes.
        steps: x values.
        curves: label -> y values.
        log_scale: logarithmic LR axis (zero values are left out of the line).
        title: the axes title.
        first_color: index in the colour cycle of the first line (to keep colours distinct across axes).
    """
    import matplotlib

    colors: Any = matplotlib.colormaps["tab10" if first_color + len(curves) <= 10 else "tab20"].colors
    styles = ("-", "--", "-.", ":")
    if len(curves) > MAX_LABELLED_CURVES:
        # One artist for all the lines, one legend entry: thousands of labelled lines take minutes to draw.
        from matplotlib.collections import LineCollection

        x = np.asarray(steps, dtype=np.float64)
        lines = []
        for values in curves.values():
            y = np.asarray(values, dtype=np.float64)
            lines.append(np.column_stack([x, np.where(y > 0, y, np.nan) if log_scale else y]))
        color = colors[first_color % len(colors)]
        ax.add_collection(
            LineCollection(lines, colors=[color], linewidths=0.8, alpha=0.4, label=f"{len(curves)} groups")
        )
        ax.autoscale_view()
    for i, (label, values) in enumerate(
        curves.items() if len(curves) <= MAX_LABELLED_CURVES else (), start=first_color
    ):
        ax.plot(
            steps,
            values,
            label=plain_text(label),
            color=colors[i % len(colors)],
            linestyle=styles[i % len(styles)],
            linewidth=1.6,
        )
    if log_scale:
        ax.set_yscale("log")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(plain_text(title))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Saves ``fig`` in the format its suffix names (PNG, SVG or PDF) and closes it.

    Returns:
        The path written.
    """
    import matplotlib.pyplot as plt

    out = Path(path)
    fig.savefig(out, format=out.suffix.lstrip(".").lower(), dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
