"""The compiled Adam loop of :class:`torch_bridge.flat_adam.FlatAdam`: built once per machine, loaded with ctypes.

torch has no CPU kernel that applies Adam with a different learning rate per
part of one tensor: ``Adam(fused=True)`` takes one ``lr`` per call, so a model
with one param group per tower pays a call (and torch's Python per group) per
tower. ``flat_adam_kernel.c`` is that loop: one pass over a whole buffer,
segment by segment, each segment with its own step size and bias correction.

It is compiled with the C compiler of the machine (``$CC``, else ``cc``) the
first time it is needed and cached under ``$FUNCTIONAL_OPT_CACHE`` (default
``~/.cache/functional_opt``), keyed by the source and the flags, so later
processes load it in about a millisecond. Where no compiler works,
:func:`adam_kernel` returns None and says why in :func:`kernel_problem`; the
optimizer then steps with torch's own Adam.

Example:
    >>> import torch
    >>> kernel = adam_kernel(torch.float64)
    >>> kernel is None or callable(kernel)
    True
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["SOURCE", "adam_kernel", "kernel_problem"]

SOURCE = Path(__file__).with_name("flat_adam_kernel.c")
# -march=native first (the library is built on the machine that runs it), then portable flags.
_FLAG_SETS = (
    ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"),
    ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fPIC", "-shared"),
)
_SYMBOLS = {torch.float32: "flat_adam_float32", torch.float64: "flat_adam_float64"}
_ARGTYPES = [ctypes.c_void_p] * 8 + [ctypes.c_int64] + [ctypes.c_double] * 4 + [ctypes.c_int32]


def _cache_dir() -> Path:
    return Path(os.environ.get("FUNCTIONAL_OPT_CACHE") or Path.home() / ".cache" / "functional_opt")


def _compile(source: bytes, flags: tuple[str, ...]) -> Path:
    """The shared library built from ``source`` with ``flags`` (built now unless cached); raises OSError."""
    compiler = os.environ.get("CC") or "cc"
    if shutil.which(compiler) is None:
        raise OSError(f"no C compiler: {compiler!r} is not on PATH (set $CC)")
    key = hashlib.sha256(source + repr((compiler, flags)).encode()).hexdigest()[:16]
    target = _cache_dir() / f"flat_adam_{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: concurrent processes never load a half-written file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [compiler, *flags, "-x", "c", "-", "-o", str(built)],
            input=source,
            capture_output=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise OSError(f"{compiler} {' '.join(flags)} failed: {result.stderr.decode(errors='replace')[-500:]}")
        os.replace(built, target)
    return target


@functools.cache
def _library() -> tuple[Any, str | None]:
    """``(library, None)``, or ``(None, why)`` when no flag set builds and loads."""
    try:
        source = SOURCE.read_bytes()
    except OSError as error:
        return None, f"cannot read {SOURCE}: {error}"
    problems = []
    for flags in _FLAG_SETS:
        try:
            library = ctypes.CDLL(str(_compile(source, flags)))
        except (OSError, subprocess.SubprocessError) as error:
            problems.append(str(error))
            continue
        for symbol in _SYMBOLS.values():
            function = getattr(library, symbol)
            function.restype = None
            function.argtypes = _ARGTYPES
        return library, None
    return None, "; ".join(problems)


def adam_kernel(dtype: torch.dtype) -> Any | None:
    """The compiled segment Adam for buffers of ``dtype`` (float32 or float64), or None.

    Its arguments: pointers to the parameter, gradient, ``exp_avg`` and
    ``exp_avg_sq`` buffers, to the int64 segment starts and ends, to the float64
    step sizes and bias-correction square roots (one per segment); the number of
    segments; ``beta1``, ``beta2``, ``eps``, ``weight_decay``; ``maximize`` (0 or 1).
    """
    if dtype not in _SYMBOLS:
        return None
    library, _ = _library()
    return None if library is None else getattr(library, _SYMBOLS[dtype])


def kernel_problem() -> str | None:
    """Why the kernel cannot be used on this machine, or None when it can."""
    return _library()[1]
