"""Every embedding table of a params pytree on its own fused-kernel rule and schedule.

A leaf is a table's when its name (pytree path joined with ``"."``) is
``...embedding_bags.<table>.weight``, the rule that names torchrec's tables
(:func:`functional_opt.grouping.table_of`), so one model written in both
frameworks gets the same tables. Each table gets the rule its fused kernel
runs (:mod:`functional_opt.table_rules`): ``sgd`` -> :func:`fused_exact_sgd`,
``adagrad`` -> :func:`fused_exact_adagrad`, ``rowwise_adagrad`` ->
:func:`fused_exact_rowwise_adagrad`, with the table's schedule (or its
constant ``lr``). Every other leaf goes to the dense optimizer: an
:class:`~functional_opt.config.OptimizerConfig` (torch's rules,
:func:`functional_opt.optimizers.build_optimizer`), a
:class:`~functional_opt.config.RecapOptimizerConfig` (the recap optimizer over
the other leaves, towers and backbone) or any optax transformation.

This is the JAX side of :func:`torch_bridge.build_embedding_optimizer` and of
``torch_bridge.build_recap_optimizer(..., tables=...)``.

Example:
    >>> import jax.numpy as jnp
    >>> from functional_opt import config, table_config
    >>> params = {"ebc": {"embedding_bags": {"user": {"weight": jnp.ones((3, 2))}}}, "w": jnp.ones(2)}
    >>> tables = table_config.LargeEmbeddingsConfig(tables=[{
    ...     "name": "user", "num_embeddings": 3, "embedding_dim": 2, "data_type": "fp32",
    ...     "optimizer": {"rowwise_adagrad": {"lr": 0.1, "eps": 1e-8}}}])
    >>> tx = build_table_optimizer(params, tables, config.OptimizerConfig(sgd={"lr": 0.5}))
    >>> grads = {"ebc": {"embedding_bags": {"user": {"weight": jnp.ones((3, 2))}}}, "w": jnp.ones(2)}
    >>> updates, _ = tx.update(grads, tx.init(params))
    >>> table_update = updates["ebc"]["embedding_bags"]["user"]["weight"]
    >>> [round(float(u), 4) for u in updates["w"]], round(float(table_update[0, 0]), 4)
    ([-0.5, -0.5], -0.1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import optax

from functional_opt import config as config_lib
from functional_opt import grouping, schedules, table_config, table_rules
from functional_opt.recap import build_recap_optimizer
from functional_opt.recap_rules import _flax_variable

__all__ = ["DENSE", "build_table_optimizer", "table_labels"]

DENSE = "dense"
"""The label of the leaves that are not tables."""

TablesLike = table_config.LargeEmbeddingsConfig | Sequence[table_config.EmbeddingBagConfig]
DenseLike = config_lib.OptimizerConfig | config_lib.RecapOptimizerConfig | optax.GradientTransformation | None


def table_labels(params: optax.Params, tables: TablesLike) -> Any:
    """``params`` with each leaf replaced by its table's name, or :data:`DENSE`.

    Raises:
        ValueError: a table of ``params`` has no config or a config no table (named).

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import table_config
        >>> t = table_config.EmbeddingBagConfig(name="t", num_embeddings=2, embedding_dim=2, data_type="fp32",
        ...                                     optimizer={"sgd": {"lr": 0.1}})
        >>> table_labels({"embedding_bags": {"t": {"weight": jnp.ones((2, 2))}}, "b": jnp.ones(1)}, [t])
        {'b': 'dense', 'embedding_bags': {'t': {'weight': 't'}}}
    """
    configs = table_config.table_configs("build_table_optimizer", tables)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=_flax_variable)
    names = [grouping.path_to_name(path) for path, _ in leaves]
    labels = [grouping.table_of(n) or DENSE for n in names]
    grouping.match_tables("build_table_optimizer", names, configs, what="leaf")
    if DENSE in configs:
        raise ValueError(f"build_table_optimizer: a table may not be named {DENSE!r} (the other leaves' label)")
    return jax.tree_util.tree_unflatten(treedef, labels)


_RULES = {
    "sgd": table_rules.fused_exact_sgd,
    "adagrad": table_rules.fused_exact_adagrad,
    "rowwise_adagrad": table_rules.fused_exact_rowwise_adagrad,
}


def _table_rule(table: table_config.EmbeddingBagConfig) -> optax.GradientTransformation:
    algorithm, options = table_config.fused_options("build_table_optimizer", table)
    schedule = schedules.schedule_from_config(config_lib.learning_rate_of(table.optimizer))
    return _RULES[algorithm](schedule, **options)


def _dense(params: optax.Params, labels: Any, dense: DenseLike) -> optax.GradientTransformation | None:
    is_dense = [label == DENSE for label in jax.tree_util.tree_leaves(labels)]
    if not any(is_dense):
        return None
    if dense is None:
        raise ValueError("build_table_optimizer: some leaves are not tables; give a dense optimizer for them")
    if isinstance(dense, config_lib.RecapOptimizerConfig):
        only_dense = jax.tree_util.tree_map(
            lambda p, label: p if label == DENSE else optax.MaskedNode(), params, labels, is_leaf=_flax_variable
        )
        return build_recap_optimizer(only_dense, dense)
    if isinstance(dense, config_lib.OptimizerConfig):
        from functional_opt.optimizers import build_optimizer  # it imports this module

        return build_optimizer(dense)
    if isinstance(dense, optax.GradientTransformation):
        return dense
    raise TypeError(
        "build_table_optimizer: dense must be an OptimizerConfig, a RecapOptimizerConfig, an optax "
        f"GradientTransformation or None, got {type(dense).__name__}"
    )


def build_table_optimizer(
    params: optax.Params, tables: TablesLike, dense: DenseLike = None
) -> optax.GradientTransformation:
    """Each table on its fused-kernel rule and schedule, the other leaves on ``dense``.

    Args:
        params: the parameters (their names fix the tables).
        tables: every table's config, each naming a leaf ``...embedding_bags.<table>.weight``.
        dense: the optimizer of the other leaves (see the module docstring); required when there are any.

    Returns:
        An ``optax.multi_transform`` keyed by table name (and :data:`DENSE`).

    Raises:
        ValueError: tables and configs do not match, an algorithm or option has no
            fused kernel, or dense leaves without a dense optimizer (each named).
        TypeError: configs of the wrong type.
    """
    labels = table_labels(params, tables)
    transforms = {
        name: _table_rule(table) for name, table in table_config.table_configs("build_table_optimizer", tables).items()
    }
    dense_tx = _dense(params, labels, dense)
    if dense_tx is not None:
        transforms[DENSE] = dense_tx
    return optax.multi_transform(transforms, labels)
