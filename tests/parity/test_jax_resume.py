"""Resume in JAX: params and optax state saved to ``.npz`` at step k continue bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from parity_harness import EMB, RECAP, SPEC, batches

from functional_opt import demo_model, optimizers

STEPS = 40
SAVE_AT = 17


def save_npz(path: Path, tree: Any) -> None:
    """Every leaf of ``tree`` under its pytree path, in one ``.npz`` file."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    np.savez(path, **{jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in leaves})


def load_npz(path: Path, like: Any) -> Any:
    """The tree saved by :func:`save_npz`, shaped like ``like`` (same paths, dtypes and shapes)."""
    with np.load(path) as data:
        loaded = dict(data)
    paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    keys = [jax.tree_util.keystr(p) for p, _ in paths_and_leaves]
    assert sorted(keys) == sorted(loaded), sorted(set(keys) ^ set(loaded))
    leaves = []
    for key, (_, leaf) in zip(keys, paths_and_leaves, strict=True):
        value = loaded[key]
        assert value.dtype == np.asarray(leaf).dtype and value.shape == np.shape(leaf), key
        leaves.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def bits(tree: Any) -> list[bytes]:
    return [np.asarray(leaf).tobytes() for leaf in jax.tree_util.tree_leaves(tree)]


def training(jdtype: Any) -> tuple[Any, optax.GradientTransformation, list[demo_model.Batch], Any]:
    """The demo model's initial params, the recap optimizer, the batches and a jitted train step, in ``jdtype``."""
    params = demo_model.init_params(SPEC, seed=0, dtype=jdtype)
    tx = optimizers.build_recap_optimizer(params, RECAP, EMB)
    data = [demo_model.to_jax(b, jdtype) for b in batches()[:STEPS]]

    @jax.jit
    def train_step(params: Any, state: Any, batch: demo_model.Batch) -> Any:
        grads = jax.grad(demo_model.loss)(params, batch, SPEC)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return params, tx, data, train_step


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_from_npz_is_bitwise_equal(tmp_path: Path, dtype: str) -> None:
    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        params, tx, data, train_step = training(jdtype)

        state = tx.init(params)
        uninterrupted = (params, state)
        for k in range(STEPS):
            if k == SAVE_AT:
                save_npz(tmp_path / "checkpoint.npz", uninterrupted)
            uninterrupted = train_step(*uninterrupted, data[k])

        fresh_params = demo_model.init_params(SPEC, seed=1, dtype=jdtype)
        resumed = load_npz(tmp_path / "checkpoint.npz", (fresh_params, tx.init(fresh_params)))
        lrs = optimizers.group_learning_rates(resumed[1])
        expected_lrs = {name: float(lr) for name, lr in lrs.items()}
        for k in range(SAVE_AT, STEPS):
            resumed = train_step(*resumed, data[k])

    assert bits(resumed) == bits(uninterrupted)
    assert jax.tree_util.tree_structure(resumed) == jax.tree_util.tree_structure(uninterrupted)
    # The checkpoint holds the state after SAVE_AT updates: the last rate used is schedule(SAVE_AT - 1).
    assert expected_lrs["dense_ebc"] == pytest.approx(0.5 / 25 * (SAVE_AT - 1), rel=1e-6)
    assert int(resumed[1].count) == STEPS


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_from_orbax_is_bitwise_equal_and_refuses_another_config(tmp_path: Path, dtype: str) -> None:
    """orbax's StandardCheckpointer at step SAVE_AT: the same config continues bit for bit, another is refused."""
    import orbax.checkpoint as ocp

    with jax.enable_x64(dtype == "float64"):
        jdtype = jnp.dtype(dtype)
        params, tx, data, train_step = training(jdtype)

        checkpointer = ocp.StandardCheckpointer()
        uninterrupted = (params, tx.init(params))
        for k in range(STEPS):
            if k == SAVE_AT:
                checkpointer.save(tmp_path / "orbax", {"params": uninterrupted[0], "opt_state": uninterrupted[1]})
                checkpointer.wait_until_finished()
            uninterrupted = train_step(*uninterrupted, data[k])

        fresh_params = demo_model.init_params(SPEC, seed=1, dtype=jdtype)
        other_recap = RECAP.model_copy(update={"adam": RECAP.adam.model_copy(update={"epsilon": 1e-3})})
        other = optimizers.build_recap_optimizer(fresh_params, other_recap, EMB)
        target = {"params": fresh_params, "opt_state": other.init(fresh_params)}
        restored = checkpointer.restore(tmp_path / "orbax", target)
        with pytest.raises(ValueError, match=r"state at \(top level\): eps: saved 1e-0?7, configured 0\.001"):
            optimizers.check_state(restored["opt_state"], target["opt_state"])

        target = {"params": fresh_params, "opt_state": tx.init(fresh_params)}
        restored = checkpointer.restore(tmp_path / "orbax", target)
        optimizers.check_state(restored["opt_state"], target["opt_state"])
        resumed = (restored["params"], restored["opt_state"])
        for k in range(SAVE_AT, STEPS):
            resumed = train_step(*resumed, data[k])

    assert bits(resumed) == bits(uninterrupted)
