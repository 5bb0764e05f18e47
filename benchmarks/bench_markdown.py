"""Markdown helpers shared by the benchmark report's sections."""

from __future__ import annotations

__all__ = ["ratio_cells", "table", "us_cells", "verdict"]


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    """A GitHub markdown table; ``align`` holds one of ``l``/``r`` per column (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def us_cells(s: dict[str, float], digits: int = 1) -> list[str]:
    """Median and min – max cells of a :func:`bench_common.stats` record."""
    return [f"{s['median']:.{digits}f}", f"{s['min']:.{digits}f} – {s['max']:.{digits}f}"]


def ratio_cells(r: dict[str, float]) -> list[str]:
    """Median and min – max cells of a ratio record."""
    return [f"{r['median']:.3f}", f"{r['min']:.2f} – {r['max']:.2f}"]


def verdict(ok: bool) -> str:
    """The PASS / FAIL cell of a bar."""
    return "**PASS**" if ok else "**FAIL**"
