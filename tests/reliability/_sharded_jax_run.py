"""Trains the demo model with the JAX recap optimizer on two devices and on one; prints a JSON report.

Run by ``test_distributed_jax.py`` in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the flag must be set
before JAX starts). Parameters and the optax state are placed with a
``NamedSharding`` on a 2-device ``Mesh``: every array whose first axis is even
is split along it, the rest (and the scalar counts and learning rates) is
replicated; each batch's dense features, labels and lengths are split by
sample (the flat id lists are replicated). The same model, data and
optimizer then run with everything on one device. The report holds, per
precision, the largest parameter difference after ``STEPS`` updates, the
largest parameter, and the largest gap between each group's learning rate in
the optimizer state and ``compute_lr`` at every step.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from functional_opt import config, demo_model, optimizers, schedules

STEPS = 50
BATCH = 8
SPEC = demo_model.ModelSpec(tasks=("recap.engagement.is_favorited", "recap.engagement.is_replied"))

RECAP_CONFIG = config.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        "multi_task_learning_rates": {
            "tower_learning_rates": {
                SPEC.tasks[0]: {
                    "linear_ramp_to_cosine": {
                        "learning_rate": 0.05,
                        "final_learning_rate": 0.005,
                        "num_ramp_steps": 10,
                        "final_num_steps": 40,
                    }
                },
                SPEC.tasks[1]: {"linear_ramp_to_constant": {"learning_rate": 0.03, "num_ramp_steps": 20}},
            },
            "backbone_learning_rate": {
                "piecewise_constant": {
                    "learning_rate_boundaries": [15, 30],
                    "learning_rate_values": [0.02, 0.01, 0.004],
                }
            },
        },
    }
)
EMB_CONFIG = config.EmbeddingOptimizerConfig(
    learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.5, "num_ramp_steps": 25}}
)
LR_CONFIGS = {
    **RECAP_CONFIG.multi_task_learning_rates.tower_learning_rates,
    "backbone": RECAP_CONFIG.multi_task_learning_rates.backbone_learning_rate,
    "dense_ebc": EMB_CONFIG.learning_rate,
}


def sharding_for(mesh: Mesh, leaf: Any) -> NamedSharding:
    """Split the first axis over the mesh when it divides evenly; replicate otherwise."""
    shape = np.shape(leaf)
    if shape and shape[0] % mesh.size == 0:
        return NamedSharding(mesh, PartitionSpec("x", *([None] * (len(shape) - 1))))
    return NamedSharding(mesh, PartitionSpec())


def train(dtype: Any, mesh: Mesh | None) -> tuple[dict[str, Any], float]:
    """STEPS updates; returns the final parameters (as numpy) and the largest LR gap to compute_lr."""
    params = demo_model.init_params(SPEC, seed=0, dtype=dtype)
    batches = [demo_model.to_jax(b, dtype) for b in demo_model.make_batches(SPEC, STEPS, batch_size=BATCH, seed=1)]
    tx = optimizers.build_recap_optimizer(params, RECAP_CONFIG, EMB_CONFIG)
    state = tx.init(params)
    if mesh is None:
        device = jax.devices()[0]
        params, state = jax.device_put((params, state), device)
        param_shardings = state_shardings = data_shardings = None
    else:
        param_shardings = jax.tree.map(lambda x: sharding_for(mesh, x), params)
        state_shardings = jax.tree.map(lambda x: sharding_for(mesh, x), state)
        params = jax.device_put(params, param_shardings)
        state = jax.device_put(state, state_shardings)
        rows, replicated = NamedSharding(mesh, PartitionSpec("x", None)), NamedSharding(mesh, PartitionSpec())
        data_shardings = demo_model.Batch(
            dense=rows,
            labels=rows,
            lengths=NamedSharding(mesh, PartitionSpec(None, "x")),
            ids=replicated,
            segment_ids=replicated,
        )
        check_sharded(params, mesh)
        check_sharded(state, mesh)

    def step(params: Any, state: Any, data: demo_model.Batch) -> tuple[Any, Any]:
        grads = jax.grad(demo_model.loss)(params, data, SPEC)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    if mesh is None:
        step_fn = jax.jit(step)
    else:
        step_fn = jax.jit(
            step,
            in_shardings=(param_shardings, state_shardings, data_shardings),
            out_shardings=(param_shardings, state_shardings),
        )

    lr_gap = 0.0
    for k in range(STEPS):
        data = batches[k]
        if data_shardings is not None:
            data = jax.device_put(data, data_shardings)
        params, state = step_fn(params, state, data)
        used = optimizers.group_learning_rates(state)
        if set(used) != set(LR_CONFIGS):
            raise AssertionError(f"groups {sorted(used)} != {sorted(LR_CONFIGS)}")
        for group, lr_config in LR_CONFIGS.items():
            expected = schedules.compute_lr(lr_config, k)
            lr_gap = max(lr_gap, abs(float(used[group]) - expected) / max(1.0, abs(expected)))
    if mesh is not None:
        check_sharded(params, mesh)
        check_sharded(state, mesh)
    return jax.tree.map(np.asarray, params), lr_gap


def check_sharded(tree: Any, mesh: Mesh) -> None:
    """Every even-first-axis array really lies in two halves on the two devices."""
    split = 0
    for leaf in jax.tree.leaves(tree):
        if not isinstance(leaf, jax.Array):
            continue
        devices = {shard.device for shard in leaf.addressable_shards}
        if devices != set(mesh.devices.flat):
            raise AssertionError(f"array of shape {leaf.shape} is not on both devices: {devices}")
        if leaf.ndim and leaf.shape[0] % mesh.size == 0:
            shapes = {shard.data.shape for shard in leaf.addressable_shards}
            if shapes != {(leaf.shape[0] // mesh.size, *leaf.shape[1:])}:
                raise AssertionError(f"array of shape {leaf.shape} is not split in halves: {shapes}")
            split += 1
    if split == 0:
        raise AssertionError("no array was split across the devices")


def compare(dtype: Any) -> dict[str, float]:
    mesh = Mesh(np.array(jax.devices()[:2]), ("x",))
    sharded, sharded_gap = train(dtype, mesh)
    single, single_gap = train(dtype, None)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), sharded, single))
    scale = max(float(np.max(np.abs(p))) for p in jax.tree.leaves(single))
    finite = all(np.all(np.isfinite(p)) for p in jax.tree.leaves(sharded))
    init = jax.tree.leaves(demo_model.init_params(SPEC, seed=0, dtype=dtype))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(single), init, strict=True))
    return {
        "max_abs_diff": max(diffs),
        "max_abs_param": scale,
        "max_move_from_init": moved,
        "finite": bool(finite),
        "max_lr_gap": max(sharded_gap, single_gap),
        "dtype": str(np.dtype(dtype)),
    }


def main() -> None:
    if jax.device_count() < 2:
        raise SystemExit(f"expected 2 host devices, got {jax.devices()} (set XLA_FLAGS before starting)")
    report = {"devices": jax.device_count(), "steps": STEPS, "float32": compare(jnp.float32)}
    with jax.enable_x64(True):
        report["float64"] = compare(jnp.float64)
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
