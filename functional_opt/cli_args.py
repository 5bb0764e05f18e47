"""Argument types and limits of the ``functional-opt`` command line, and the escaping of what it prints.

Every option value is checked here, before a command runs: a bad one is an
``argparse.ArgumentTypeError``, which the parser prints as one line (exit code
2). The limits:

* ``plot --steps``: 1 .. :data:`MAX_PLOT_STEPS` (``2**53``: a figure's step
  axis is float64, exact for every integer up to there);
* ``table --steps``: 0 .. :data:`MAX_TABLE_STEP` (``2**63 - 1``, int64);
* ``check`` / ``demo`` ``--steps`` and ``--log-every``: 1 .. :data:`MAX_TRAIN_STEPS`;
* ``--seed``: 0 .. :data:`MAX_SEED` (numpy's seed range).

Text from the input (file names, keys, tower names, option values) may hold
control characters or ANSI escape sequences; :func:`printable` writes them as
escapes before they reach a terminal.

Example:
    >>> printable("tower\\x1b[31m red")
    'tower\\\\x1b[31m red'
    >>> step_list("0,10,1000")
    [0, 10, 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = [
    "FIGURE_SUFFIXES",
    "MAX_PLOT_STEPS",
    "MAX_SEED",
    "MAX_TABLE_STEP",
    "MAX_TRAIN_STEPS",
    "figure_path",
    "plot_steps",
    "printable",
    "seed",
    "step_list",
    "train_steps",
]

MAX_PLOT_STEPS = 2**53
"""Largest last step of a plot: float64, the type of a figure's axis, is exact for integers up to 2**53."""
MAX_TABLE_STEP = 2**63 - 1
"""Largest step ``table`` evaluates (int64)."""
MAX_TRAIN_STEPS = 100_000
"""Most training steps of ``check`` and ``demo`` (their batches are made up front)."""
MAX_SEED = 2**32 - 1
"""Largest seed (numpy's ``default_rng`` and torch take any 0 .. 2**32 - 1)."""
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")
SHOWN = 60
"""Most characters of an option value shown in a message."""


def printable(text: str) -> str:
    """``text`` with control and format characters (ANSI escapes, bidi overrides, newlines) written as escapes."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _shown(text: str) -> str:
    shown = repr(printable(text[:SHOWN]))
    return shown if len(text) <= SHOWN else shown[:-1] + "...'"


def _integer(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:  # garbage, or more digits than Python converts
        raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}")
    return value


def plot_steps(text: str) -> int:
    """``plot --steps``: 1 .. MAX_PLOT_STEPS."""
    return _integer(
        text, 1, MAX_PLOT_STEPS, f"a positive integer up to 2**53 = {MAX_PLOT_STEPS} (what a plot can show)"
    )


def train_steps(text: str) -> int:
    """``check`` / ``demo`` ``--steps`` and ``--log-every``: 1 .. MAX_TRAIN_STEPS."""
    return _integer(text, 1, MAX_TRAIN_STEPS, f"a positive integer up to {MAX_TRAIN_STEPS}")


def seed(text: str) -> int:
    """``--seed``: 0 .. MAX_SEED."""
    return _integer(text, 0, MAX_SEED, f"an integer from 0 to 2**32 - 1 = {MAX_SEED}")


def step_list(text: str) -> list[int]:
    """``table --steps``: comma-separated integers 0 .. MAX_TABLE_STEP."""
    what = f"comma-separated non-negative integers up to 2**63 - 1 = {MAX_TABLE_STEP}"
    steps = []
    for part in text.split(","):
        try:
            steps.append(_integer(part, 0, MAX_TABLE_STEP, what))
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {_shown(text)}") from None
    return steps


def figure_path(text: str) -> Path:
    """``-o``: a file name ending in .png, .svg or .pdf."""
    path = Path(text)
    if path.suffix.lower() not in FIGURE_SUFFIXES:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)}: the file name must end in {', '.join(FIGURE_SUFFIXES)} (it selects the format)"
        )
    return path
