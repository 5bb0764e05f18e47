"""Shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

# Doctests run over the packages and the test helpers; the conftest files are not test modules
# (collecting two files named conftest.py as modules would clash).
collect_ignore = ["conftest.py", "bridge/conftest.py"]


@pytest.fixture
def x64() -> Iterator[None]:
    """Runs the test with JAX's x64 mode enabled (float64 by default)."""
    import jax

    with jax.enable_x64(True):
        yield


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread: the tensors are tiny and extra threads only spin on 2 shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
