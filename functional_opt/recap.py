"""The recap (multi-task) optimizer on a params pytree: torch's rules, one schedule per group.

Parameters are named by their pytree path joined with ``"."`` and grouped by
:func:`functional_opt.grouping.recap_groups` (towers, ``backbone`` or
``single_task``, ``dense_ebc``). The same rule names a flax model's
parameters: linen's ``variables["params"]`` is a dict of submodule names, and
an ``nnx.State`` names a parameter by its attribute path (the ``.value`` of
the flax variable that holds it is not part of the name). So a tower module
named ``towers.recap__is_clicked`` (or any ``...recap__is_clicked...`` path)
belongs to tower ``recap.is_clicked`` in both frameworks.

Example (flax nnx, the call a flax user writes)::

    model = MyModel(rngs=nnx.Rngs(0))
    tx = build_recap_optimizer(nnx.state(model, nnx.Param), recap_config, emb_config)
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    optimizer.update(model, grads)

``build_recap_optimizer(model, ...)`` with the ``nnx.Module`` itself does the
same (it takes the module's ``nnx.Param`` state).
"""

from __future__ import annotations

import sys
from typing import Any

import jax
import optax

from functional_opt import config as config_lib
from functional_opt import grouping, recap_rules

__all__ = ["build_recap_optimizer", "recap_labels"]


def _params_of(params: Any) -> Any:
    """An ``nnx.Module`` as its ``nnx.Param`` state; anything else as it is."""
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(params, nnx.Module):
        return nnx.state(params, nnx.Param)
    return params


def _named(tree: Any) -> tuple[list[str], Any]:
    """The names of a params pytree's parameters (a flax variable is one parameter) and its treedef."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree, is_leaf=recap_rules._flax_variable)
    return [grouping.path_to_name(path) for path, _ in leaves], treedef


def recap_labels(
    params: optax.Params,
    recap_config: config_lib.RecapOptimizerConfig,
    emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None = None,
) -> tuple[list[grouping.ParamGroup], Any]:
    """The recap groups of a params pytree and a pytree of group names shaped like it.

    Leaves are named by their pytree path joined with ``"."`` (as
    :func:`functional_opt.grouping.named_leaves`; a flax variable counts as one
    leaf, named by its attribute path) and grouped by
    :func:`functional_opt.grouping.recap_groups`.

    Args:
        params: the parameters (any pytree, an ``nnx.State`` or an ``nnx.Module``).
        recap_config: the recap optimizer config.
        emb_optimizer_config: the embedding optimizer config (drives ``dense_ebc``).

    Returns:
        ``(groups, labels)``: the groups in ``recap_groups`` order, and ``params``
        with every leaf replaced by its group's name.

    Raises:
        ValueError: as :func:`functional_opt.grouping.recap_groups`.

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import config
        >>> cfg = config.RecapOptimizerConfig(adam={}, single_task_learning_rate={"constant": 0.1})
        >>> params = {"mlp": {"w": jnp.zeros(2)}, "ebc": {"embedding_bags": {"t": jnp.zeros((3, 2))}}}
        >>> emb = config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.5})
        >>> recap_labels(params, cfg, emb)[1]
        {'ebc': {'embedding_bags': {'t': 'dense_ebc'}}, 'mlp': {'w': 'single_task'}}
    """
    names, treedef = _named(_params_of(params))
    groups = grouping.recap_groups(names, recap_config, emb_optimizer_config)
    group_of = {name: group.name for group in groups for name in group.param_names}
    return groups, jax.tree_util.tree_unflatten(treedef, [group_of[name] for name in names])


def build_recap_optimizer(
    params: optax.Params,
    recap_config: config_lib.RecapOptimizerConfig,
    emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None = None,
) -> optax.GradientTransformation:
    """The recap (multi-task) optimizer for a params pytree, with torch's rules.

    Groups come from :func:`functional_opt.grouping.recap_groups` on the names
    of the leaves (pytree path joined with ``"."``): each tower, ``backbone``
    (or ``single_task``) gets torch's Adam
    (:func:`~functional_opt.torch_rules.torch_adam`'s rule) with
    ``recap_config.adam`` and the group's own schedule; ``dense_ebc``
    (embedding tables that are not fused) gets plain SGD
    (:func:`~functional_opt.torch_rules.torch_sgd`'s rule) at the embedding
    learning rate. All groups are one transformation
    (:func:`functional_opt.recap_rules.grouped_torch_rules`): each update
    evaluates every group's rate with one vectorised call per kind of schedule
    and applies it per leaf, so its trace and compile time do not grow with
    the number of groups beyond what the per-leaf updates cost. Leaves are
    matched by name, so ``init`` and ``update`` accept these parameters in any
    wrapping (plain dicts, an ``nnx.State`` of variables or of arrays). The
    state's ``inner_states`` are keyed by group name and
    :func:`~functional_opt.opt_state.group_learning_rates` reads each group's
    last rate.

    Args:
        params: the parameters: any pytree (their names fix the groups), a
            flax ``nnx.State`` (``nnx.state(model, nnx.Param)``) or an
            ``nnx.Module`` (its ``nnx.Param`` state is taken).
        recap_config: the recap optimizer config, multi-task or single-task.
        emb_optimizer_config: the embedding optimizer config; its
            ``learning_rate`` is required when some leaf is an embedding table.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        ValueError: at build time, as :func:`functional_opt.grouping.recap_groups`:
            a tower that matches no parameter, a parameter matching two towers,
            a group with no learning rate or a learning rate with no group; at
            ``init`` or ``update``, a tree with parameters it was not built for.

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import config, opt_state
        >>> cfg = config.RecapOptimizerConfig(
        ...     adam={},
        ...     multi_task_learning_rates={
        ...         "tower_learning_rates": {"a.b": {"constant": 0.1}},
        ...         "backbone_learning_rate": {"constant": 0.01}})
        >>> params = {"towers": {"a__b": {"w": jnp.ones(2)}}, "backbone": {"w": jnp.ones(2)}}
        >>> tx = build_recap_optimizer(params, cfg)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(params, state)
        >>> {k: round(float(v), 6) for k, v in opt_state.group_learning_rates(state).items()}
        {'a.b': 0.1, 'backbone': 0.01}
    """
    params = _params_of(params)
    names, _ = _named(params)
    groups = grouping.recap_groups(names, recap_config, emb_optimizer_config)
    adam = recap_config.adam
    return recap_rules.grouped_torch_rules(groups, b1=adam.beta_1, b2=adam.beta_2, eps=adam.epsilon)
