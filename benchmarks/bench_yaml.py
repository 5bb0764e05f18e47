"""Reading hostile and big YAML files: the library's reader against plain libyaml, side by side.

* **alias bomb**: the time :func:`functional_opt.config_file.load_config_file`
  takes to refuse a 342-byte "billion laughs" file, before anything is expanded
  (no contender: expanding it is what the reader refuses to do).
* **5 MB config**: a whole TML config with a long ``train_data`` list,
  loaded by the library (duplicate-key and alias checks, environment
  substitution, validation) against ``yaml.load(..., CSafeLoader)`` alone: the
  ratio says what the checks cost over libyaml's own parsing.

Run ``python benchmarks/bench_yaml.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import yaml

from functional_opt import config_file
from functional_opt.cli import example_config_path

BOMB = "\n".join(
    [f'a: &a [{",".join(["lol"] * 9)}]']
    + [f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)


def _big_file(path: Path, size: int = 5 * 2**20) -> Path:
    lines = [example_config_path().read_text(encoding="utf-8"), "train_data:\n  files:\n"]
    total, index = sum(map(len, lines)), 0
    while total < size:
        line = f"    - {{path: gs://bucket/part-{index:08d}.tfrecord, weight: 0.5, tags: [a, b, c]}}\n"
        lines.append(line)
        total += len(line)
        index += 1
    path.write_text("".join(lines), encoding="utf-8")
    return path


def _seconds(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _library(path: Path) -> None:
    try:
        config_file.load_config_file(path)
    except config_file.ConfigFileError:
        pass


def run(repeats: int = 3, size: int = 5 * 2**20) -> dict[str, Any]:
    """Medians over ``repeats`` of each load, and the library / plain-libyaml ratio of a file of ``size`` bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(BOMB + "\n", encoding="utf-8")
        big = _big_file(Path(tmp) / "big.yaml", size)
        bomb_s = statistics.median(_seconds(lambda: _library(bomb)) for _ in range(repeats))
        ratios, library, plain = [], [], []
        for _ in range(repeats):
            ours = _seconds(lambda: _library(big))
            theirs = _seconds(lambda: yaml.load(big.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader))
            library.append(ours)
            plain.append(theirs)
            ratios.append(ours / theirs)
        return {
            "bomb_bytes": bomb.stat().st_size,
            "bomb_refusal_ms": 1e3 * bomb_s,
            "big_mib": big.stat().st_size / 2**20,
            "big_library_s": statistics.median(library),
            "big_plain_libyaml_s": statistics.median(plain),
            "big_ratio": statistics.median(ratios),
        }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
