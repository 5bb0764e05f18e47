"""The JAX side of ``functional-opt check``: the optax optimizer of a config file, trained in one ``lax.scan``.

:func:`jax_optimizer` builds the optimizer of a config for the demo model's
params (the recap, per-table or generic one) with a function that reads every
group's last rate from its state; :func:`train_jax` runs it over a list of
batches from any state, so a check can start JAX from ``tx.init`` or from a
state moved over from torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from functional_opt import config as config_lib
from functional_opt import demo_model, grouping
from functional_opt.config_file import EMBEDDINGS, LoadedConfig
from torch_bridge.cli_tables import jax_table_optimizer

__all__ = ["initial_params", "jax_optimizer", "train_jax"]


def jax_optimizer(
    loaded: LoadedConfig, emb: config_lib.EmbeddingOptimizerConfig, params: Any
) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
    """The optax optimizer of ``loaded`` for ``params``, and a function giving each group's last rate (by label)."""
    from functional_opt import optimizers

    opt = loaded.optimizer
    if loaded.table_optimizers:
        return jax_table_optimizer(loaded, params)
    if isinstance(opt, config_lib.RecapOptimizerConfig):
        tx = optimizers.build_recap_optimizer(params, opt, emb)

        def recap_rates(state: Any) -> dict[str, Any]:
            found = optimizers.group_learning_rates(state)
            return {(EMBEDDINGS if k == grouping.DENSE_EMBEDDINGS else k): v for k, v in found.items()}

        return tx, recap_rates
    tx = optimizers.build_optimizer(opt)
    algorithm = opt.algorithm_name

    def rate(state: Any) -> dict[str, Any]:
        return {algorithm: optimizers.learning_rate(state)}

    return tx, rate


def initial_params(initial: Mapping[str, np.ndarray], dtype: str) -> Any:
    """The params pytree of ``{name: array}`` in ``dtype`` (call under the matching ``jax.enable_x64``)."""
    # Cast in numpy first: a dtype conversion inside jnp.asarray compiles one XLA kernel per shape.
    return demo_model.params_from_arrays({k: np.asarray(v, dtype=dtype) for k, v in initial.items()}, dtype)


def train_jax(
    tx: Any,
    lrs_of: Callable[[Any], dict[str, Any]],
    params: Any,
    state: Any,
    batches: Sequence[demo_model.Batch],
    spec: demo_model.ModelSpec,
    dtype: str,
) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """``tx`` from ``(params, state)`` over ``batches`` in one jitted ``lax.scan``.

    Call under ``jax.enable_x64(dtype == "float64")``.

    Returns:
        ``(params, state, lrs)``: the final params and state, and each group's
        rate at every update (the rate that update used).
    """
    import jax
    import optax

    def step(carry: Any, batch: demo_model.Batch) -> Any:
        p, s = carry
        grads = jax.grad(demo_model.loss)(p, batch, spec)
        updates, s = tx.update(grads, s, p)
        return (optax.apply_updates(p, updates), s), lrs_of(s)

    def train(p: Any, s: Any, b: demo_model.Batch) -> Any:
        return jax.lax.scan(step, (p, s), b)

    stacked = demo_model.Batch(*(np.stack(xs) for xs in zip(*batches, strict=True)))
    stacked = demo_model.to_jax(
        stacked._replace(
            dense=stacked.dense.astype(dtype),
            labels=stacked.labels.astype(dtype),
            lengths=stacked.lengths.astype(np.int32),
            ids=stacked.ids.astype(np.int32),
            segment_ids=stacked.segment_ids.astype(np.int32),
        ),
        dtype,
    )
    (final, state), lrs = jax.jit(train)(params, state, stacked)
    return final, state, {k: np.asarray(v) for k, v in lrs.items()}
