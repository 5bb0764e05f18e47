"""Byte-level fuzzing of the command line: mutated example files through ``table``, ``plot`` and ``check``.

Each run takes one of the shipped example configs, applies one to three
seeded mutations to its bytes (flipped bytes, truncations, duplicated,
deleted or swapped lines, huge or special numbers, booleans and quoted
numbers, deep nesting, aliases and alias bombs, control and invalid UTF-8
bytes, environment variables) and runs ``functional-opt`` on it in this
process (``functional_opt.cli.main``). Every run must:

* exit with 0, 1 or 2 (never raise);
* print no traceback;
* on exit code 2, print exactly one line on stderr, starting ``functional-opt``,
  and write no figure.

A third of the runs change only ordinary numbers, so that many files stay
valid and the commands run to the end (exit code 0, or 1 from ``check``).

CI runs a fixed seeded number of runs (:data:`CI_TABLE_RUNS` ``table``,
:data:`CI_PLOT_RUNS` ``plot``, :data:`CI_CHECK_RUNS` ``check --steps 2``).
``FUZZ_CLI_RUNS=N`` (``make fuzz``) runs N ``table`` runs, N / 4 ``plot`` runs
and N / 50 ``check`` runs from a random seed, printed to replay it with
``FUZZ_CLI_SEED``. The exit-code counts are printed at the end (``pytest -s``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from functional_opt.cli import example_config_path, main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = [example_config_path(), *sorted((REPO / "examples").glob("*.yaml"))]

CI_TABLE_RUNS = 150
CI_PLOT_RUNS = 30
CI_CHECK_RUNS = 4
CI_SEED = 20260601
RUNS = int(os.environ.get("FUZZ_CLI_RUNS") or 0)
SEED = int(os.environ.get("FUZZ_CLI_SEED") or (random.SystemRandom().randrange(2**32) if RUNS else CI_SEED))

NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?(?![\w.])")
REPLACEMENTS = [
    b"1" + b"0" * 400,
    b"-1",
    b"0",
    b"1e999",
    b".nan",
    b"-.inf",
    b"9223372036854775808",
    b"18446744073709551617",
    b"10.5",
    b"yes",
    b"on",
    b"'0.1'",
    b"null",
    b"[]",
    b"{}",
    b"~",
    b"$FUZZ_VAR",
    b"${FUZZ_VAR}",
    b"*undefined",
    b"!!python/object/apply:os.getcwd []",
    b'"\\e[31m"',
]
CONTROL_BYTES = [b"\x00", b"\x1b[2J", b"\x07", b"\xff", b"\xc3", b"\t", b"\r", b"\x85", b"\xe2\x80\xae"]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


def flip_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if out:
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data) + 1)]


def duplicate_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return b"".join(lines)


def delete_line(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[rng.randrange(len(lines))]
    return b"".join(lines)


def swap_lines(rng: random.Random, data: bytes) -> bytes:
    lines = _lines(data)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def replace_number(rng: random.Random, data: bytes) -> bytes:
    found = list(NUMBER.finditer(data))
    if not found:
        return data
    match = rng.choice(found)
    return data[: match.start()] + rng.choice(REPLACEMENTS) + data[match.end() :]


def tweak_number(rng: random.Random, data: bytes) -> bytes:
    """A number replaced by another ordinary one: the file often stays valid, so the commands run to the end."""
    found = list(NUMBER.finditer(data))
    if not found:
        return data
    match = rng.choice(found)
    value = rng.choice([str(rng.randint(1, 10**6)), f"{rng.random():.6g}", f"{rng.random() * 1e-3:.3e}", "1e-3"])
    return data[: match.start()] + value.encode() + data[match.end() :]


def deep_nesting(rng: random.Random, data: bytes) -> bytes:
    found = list(NUMBER.finditer(data))
    if not found:
        return data
    match = rng.choice(found)
    depth = rng.choice([50, 99, 101, 999, 1001, 5000])
    flow = rng.random() < 0.5
    nested = (b"[" * depth + match.group() + b"]" * depth) if flow else (b"{a: " * depth + b"1" + b"}" * depth)
    return data[: match.start()] + nested + data[match.end() :]


def add_aliases(rng: random.Random, data: bytes) -> bytes:
    kind = rng.choice(["bomb", "reuse", "recursive"])
    if kind == "bomb":
        levels = [b'l0: &l0 ["x","x","x","x","x","x","x","x","x"]\n']
        levels += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]\n".encode() for i in range(1, rng.randint(3, 9))]
        return b"".join(levels) + data
    if kind == "recursive":
        return data + b"loop: &loop [*loop]\n"
    lines = _lines(data)
    i = rng.randrange(len(lines))
    if b": " in lines[i] and not lines[i].rstrip().endswith(b":"):
        key, _, value = lines[i].partition(b": ")
        lines[i] = key + b": &fz " + value
        lines.insert(rng.randrange(i, len(lines)) + 1, key + b": *fz\n")
    return b"".join(lines)


def insert_bytes(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.choice(CONTROL_BYTES) + data[at:]


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    flip_bytes,
    truncate,
    duplicate_line,
    delete_line,
    swap_lines,
    replace_number,
    replace_number,
    deep_nesting,
    add_aliases,
    insert_bytes,
]


def mutated(rng: random.Random) -> tuple[bytes, list[str]]:
    """One example file with one to three mutations (a third of the time only ordinary numbers changed)."""
    source = rng.choice(EXAMPLES)
    data = source.read_bytes()
    applied = []
    mild = rng.random() < 1 / 3
    for _ in range(rng.randint(1, 3)):
        mutation = tweak_number if mild else rng.choice(MUTATIONS)
        data = mutation(rng, data)
        applied.append(mutation.__name__)
    return data, [source.name, *applied]


def run_once(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


COUNTS: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module", autouse=True)
def _report() -> object:
    yield
    for command, counts in sorted(COUNTS.items()):
        total = sum(counts.values())
        print(f"\nfuzzed CLI, {command}: {total} runs, exit codes {dict(sorted(counts.items()))} (seed {SEED})")


def fuzz(command: str, runs: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUZZ_VAR", "0.5\nadam: {lr: 100}")
    rng = random.Random(f"{SEED}-{command}")
    for index in range(runs):
        data, what = mutated(rng)
        path = tmp_path / f"fuzz-{index}.yaml"
        path.write_bytes(data)
        figure = tmp_path / f"fuzz-{index}.png"
        argv = {
            "table": ["table", str(path), "--format", rng.choice(["text", "csv", "json"])],
            "plot": ["plot", str(path), "-o", str(figure)],
            "check": ["check", str(path), "--steps", "2"],
        }[command]
        where = f"run {index} (seed {SEED}, {what}): functional-opt {' '.join(argv)}"
        try:
            code, out, err = run_once(argv)
        except BaseException as exc:  # anything escaping main is a failure
            raise AssertionError(f"{where}: raised {type(exc).__name__}: {exc}") from exc
        COUNTS[command][code] += 1
        assert code in (0, 1, 2), f"{where}: exit code {code}"
        assert "Traceback" not in out + err, f"{where}: {err}"
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("functional-opt"), f"{where}: {err!r}"
            assert len(lines[0]) < 1000, f"{where}: {len(lines[0])} characters"
            assert not figure.exists(), f"{where}: a figure was written"
        path.unlink()
        figure.unlink(missing_ok=True)


def test_fuzzed_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fuzz("table", RUNS or CI_TABLE_RUNS, tmp_path, monkeypatch)


def test_fuzzed_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fuzz("plot", max(1, RUNS // 4) if RUNS else CI_PLOT_RUNS, tmp_path, monkeypatch)


def test_fuzzed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fuzz("check", max(1, RUNS // 50) if RUNS else CI_CHECK_RUNS, tmp_path, monkeypatch)


def test_mutations_are_seeded() -> None:
    """The same seed gives the same inputs, so a failure can be replayed."""
    rng, again = random.Random("x"), random.Random("x")
    assert [mutated(rng) for _ in range(5)] == [mutated(again) for _ in range(5)]
