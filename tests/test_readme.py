"""README.md stays true: its first commands, its picture, and every ```python block runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[str]:
    """The fenced blocks of ``language`` in README order."""
    return [body for lang, body in BLOCK.findall(README) if lang == language]


PYTHON_BLOCKS = blocks("python")


def test_first_two_commands_are_make_demo_and_make_test() -> None:
    first = BLOCK.search(README)
    assert first is not None and first.group(1) == "bash"
    commands = [line.split("#")[0].strip() for line in first.group(2).splitlines() if line.strip()]
    assert commands[:2] == ["make demo", "make test"]


def test_readme_has_the_quickstarts() -> None:
    assert "## Quickstart: JAX" in README and "## Quickstart: PyTorch" in README
    assert len(PYTHON_BLOCKS) >= 3


def test_picture_is_committed_and_shown() -> None:
    assert "](docs/lr_curves.png)" in README
    assert (REPO / "docs" / "lr_curves.png").read_bytes().startswith(b"\x89PNG")


def test_linked_files_exist() -> None:
    prose = BLOCK.sub("", README)
    for target in re.findall(r"\]\(((?!https?://|#)[^)]+)\)", prose):
        if target != "BENCHMARKS.md":  # written by `make bench`
            assert (REPO / target).exists(), target
    for path in re.findall(r"`((?:examples|functional_opt|torch_bridge)/[\w./-]+)`", README):
        assert (REPO / path).exists(), path


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)), ids=lambda i: f"block{i}")
def test_python_block_runs(index: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PYTHON_BLOCKS[index]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"README python block {index} failed:\n{PYTHON_BLOCKS[index]}\n{result.stderr}"
