"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture
def x64():
    """Runs the test with JAX's x64 mode enabled (float64 by default)."""
    import jax

    with jax.enable_x64(True):
        yield
