"""The demo model's training steps on each side, for the tests that move a run between torch and JAX."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
import torch

from functional_opt import demo_model
from torch_bridge import demo_model as torch_demo

SPEC = demo_model.ModelSpec()


def torch_steps(built: tuple, data: list[demo_model.Batch], dtype: torch.dtype) -> None:
    """TML's loop over ``data`` for ``(model, optimizer, scheduler)``."""
    model, optimizer, scheduler = built
    for batch in data:
        dense, features, labels = torch_demo.to_torch(batch, SPEC, dtype)
        optimizer.zero_grad()
        torch_demo.loss_fn(model(dense, features), labels).backward()
        optimizer.step()
        scheduler.step()


def jax_steps(tx: optax.GradientTransformation, params: Any, state: Any, data: list) -> tuple[Any, Any]:
    """``tx`` over ``data`` from ``(params, state)``, one jitted step per batch, in the params' float type."""
    dtype = jax.tree.leaves(params)[0].dtype

    @jax.jit
    def step(params: Any, state: Any, batch: demo_model.Batch) -> tuple[Any, Any]:
        updates, state = tx.update(jax.grad(demo_model.loss)(params, batch, SPEC), state, params)
        return optax.apply_updates(params, updates), state

    for batch in data:
        params, state = step(params, state, demo_model.to_jax(batch, dtype))
    return params, state


def gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """max over parameters of max |a - b|, in float64."""
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[n].astype(np.float64) - b[n]).max()) for n in a)
