"""What every benchmark here shares: interleaved timing, paired ratios, the machine's description.

Every figure in BENCHMARKS.md is a ratio of two contenders timed side by side
in one process. :func:`interleave` runs the contenders in turn, repeat after
repeat, rotating which one goes first, so a slow drift of the machine's load
hits them all alike; :func:`paired_ratio` is the median over repeats of the
ratio of the two timings of the same repeat.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "Samples",
    "cpu_model",
    "interleave",
    "machine",
    "paired_ratio",
    "stats",
    "versions",
]

Samples = dict[str, list[float]]
"""Contender name -> one timing per repeat (microseconds per step)."""


def interleave(
    steppers: Mapping[str, Callable[[], Any]],
    repeats: int,
    steps_per_repeat: int,
    *,
    warmup_steps: int | None = None,
    sync: Callable[[], None] | None = None,
) -> Samples:
    """Times ``steps_per_repeat`` consecutive calls of each contender, ``repeats`` times, in turn.

    The contenders run one after the other within a repeat, starting with a
    different one each repeat; the garbage collector is off while timing.

    Args:
        steppers: name -> zero-argument function doing one step.
        repeats: timed runs per contender.
        steps_per_repeat: calls per timed run.
        warmup_steps: untimed calls of each contender first (default ``steps_per_repeat``).
        sync: called after each run before reading the clock (e.g. ``torch.cuda.synchronize``).

    Returns:
        name -> microseconds per call, one value per repeat.
    """
    done = sync or (lambda: None)
    names = list(steppers)
    for name in names:
        step = steppers[name]
        for _ in range(steps_per_repeat if warmup_steps is None else warmup_steps):
            step()
    done()
    samples: Samples = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for repeat in range(repeats):
            shift = repeat % len(names)
            for name in names[shift:] + names[:shift]:
                step = steppers[name]
                start = time.perf_counter()
                for _ in range(steps_per_repeat):
                    step()
                done()
                samples[name].append((time.perf_counter() - start) / steps_per_repeat * 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def stats(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max"}`` of ``values``."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """The ratios of two contenders' timings repeat by repeat: median, min and max.

    The median is the figure reported against a bar; it is robust to the
    slow load drifts of a shared machine because both timings of a pair were
    taken back to back.
    """
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return stats(ratios)


def cpu_model() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, logical cores (and those this process may use), OS, Python build."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    try:
        load: tuple[float, ...] | None = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 0,
        "usable_cores": usable,
        "os": platform.platform(),
        "load_average": load,
    }


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries measured here."""
    found = {"python": sys.version.split()[0]}
    for package in ("torch", "torchrec", "fbgemm-gpu-cpu", "jax", "jaxlib", "optax", "numpy", "matplotlib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found
