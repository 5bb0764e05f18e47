"""The text, CSV and JSON tables of ``functional-opt table``.

Names are escaped for the terminal in the text table (:func:`~functional_opt.cli_args.printable`);
CSV and JSON are written by Python's ``csv`` and ``json`` writers, which quote
and escape whatever a name holds.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from functional_opt.cli_args import MAX_TABLE_STEP, printable
from functional_opt.config_file import LoadedConfig, schedule_horizon

__all__ = ["default_table_steps", "render_table"]


def default_table_steps(loaded: LoadedConfig) -> list[int]:
    """0, 1, every power of ten up to the schedules' horizon, the horizon, and the next power of ten."""
    horizon = max(schedule_horizon(lr) for lr in loaded.learning_rates().values())
    steps = {0, 1, horizon}
    power = 10
    while power <= horizon:
        steps.add(power)
        power *= 10
    steps.add(max(power, 1000))
    return sorted(s for s in steps if s <= MAX_TABLE_STEP)


def _format_value(value: float) -> str:
    return f"{value:.6g}"


def render_table(rows: dict[str, list[float]], steps: Sequence[int], fmt: str) -> str:
    """The table of ``rows`` (group -> LR per step) as ``text``, ``csv`` or ``json``.

    Example:
        >>> print(render_table({"tower": [0.0, 0.5]}, [0, 10], "text"))
        group  step 0  step 10
        tower       0      0.5
    """
    if fmt == "json":
        return json.dumps({"steps": list(steps), "learning_rates": rows}, indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["group", *steps])
        for name, values in rows.items():
            writer.writerow([name, *(repr(v) for v in values)])
        return buffer.getvalue().rstrip("\n")
    header = ["group", *(f"step {s}" for s in steps)]
    body = [[printable(name), *(_format_value(v) for v in values)] for name, values in rows.items()]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *body]
    ]
    return "\n".join(line.rstrip() for line in lines)
