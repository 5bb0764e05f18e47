"""The recap optimizer as one transformation: every group's rate in one call per kind, torch's rules per leaf.

:func:`grouped_torch_rules` takes the recap groups (:class:`~functional_opt.grouping.ParamGroup`)
and returns one ``optax.GradientTransformation`` for all of them. Each update

1. evaluates the schedules of all groups with one vectorised call per kind of
   schedule in use (the formula of :mod:`functional_opt.schedule_kinds` over
   the groups' stacked parameters, held as constants), so the traced function
   holds no schedule subgraph per group;
2. applies torch's Adam (groups with ``algorithm == "adam"``) or plain SGD
   (``"sgd"``, the ``dense_ebc`` group) to each leaf with its group's rate,
   through the same per-leaf code as :func:`~functional_opt.torch_rules.torch_adam`
   and :func:`~functional_opt.torch_rules.torch_sgd`.

With ``t = count + 1``, ``lr_g = schedule_g(count)`` for the leaf's group ``g``::

    adam: m = lerp(m, g, 1 - b1); v = v * b2 + (1 - b2) * g * g
          update = (-(lr_g / (1 - b1**t)) * m) / (sqrt(v) / sqrt(1 - b2**t) + eps)
    sgd:  update = -lr_g * g

The state is a :class:`RecapState`: ``inner_states`` keyed by group name, each
a :class:`RecapGroupState` whose ``inner_state`` is the group's
``TorchAdamState`` (its ``mu`` / ``nu`` hold the group's own leaves, in
parameter order) or ``ScaleByLearningRateState``, with the same ``built_from``
records as the single-group transformations; ``recap_layout`` marks the
layout, so a state of the earlier layout (an ``optax.partition`` holding one
masked copy of the whole tree per group) is refused with a clear message.
Every group shares one step count.

Example:
    >>> import jax.numpy as jnp
    >>> from functional_opt import config, grouping
    >>> groups = [grouping.ParamGroup("a", ("w",), config.LearningRate(constant=0.1), "adam"),
    ...           grouping.ParamGroup("b", ("v",), config.LearningRate(constant=0.2), "sgd")]
    >>> tx = grouped_torch_rules(groups)
    >>> params = {"w": jnp.ones(2), "v": jnp.ones(1)}
    >>> updates, state = tx.update({"w": jnp.array([1.0, -2.0]), "v": jnp.ones(1)}, tx.init(params))
    >>> [round(float(u), 4) for u in updates["w"]], round(float(updates["v"][0]), 4)
    ([-0.1, 0.1], -0.2)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_opt import config as config_lib
from functional_opt import grouping, torch_rules
from functional_opt import schedule_kinds as kinds
from functional_opt import torch_rule_parts as parts

__all__ = ["RECAP_LAYOUT", "RecapGroupState", "RecapState", "grouped_torch_rules"]

_MASKED = optax.MaskedNode()
RECAP_LAYOUT = 2
"""The version of :class:`RecapState`'s layout (1 was one ``optax.partition`` entry per group)."""


class RecapGroupState(NamedTuple):
    """One group's part of :class:`RecapState`.

    Attributes:
        inner_state: a ``TorchAdamState`` (``mu`` and ``nu``: tuples of the
            group's leaves) or, for SGD, a ``ScaleByLearningRateState``.
    """

    inner_state: torch_rules.TorchAdamState | torch_rules.ScaleByLearningRateState


class RecapState(NamedTuple):
    """State of :func:`grouped_torch_rules`.

    Attributes:
        inner_states: group name -> :class:`RecapGroupState`.
        recap_layout: :data:`RECAP_LAYOUT`, as an int32 array (it survives checkpoints).
    """

    inner_states: dict[str, RecapGroupState]
    recap_layout: jax.Array


def _flax_variable(node: Any) -> bool:
    """Whether ``node`` is a flax ``nnx.Variable`` (only possible once flax is imported)."""
    nnx = sys.modules.get("flax.nnx")
    variable = getattr(nnx, "Variable", None)
    return variable is not None and isinstance(node, variable)


def leaf_names(tree: Any) -> list[str]:
    """The parameter names of a tree's leaves (a flax variable is one leaf, named by its path)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_flax_variable)[0]
    return [grouping.path_to_name(path) for path, _ in leaves]


class _KindTable(NamedTuple):
    """The groups of one schedule kind: their positions among the groups and their stacked parameters."""

    kind: kinds.Kind
    members: tuple[int, ...]
    params: dict[str, np.ndarray]


def _tables(groups: Sequence[grouping.ParamGroup]) -> list[_KindTable]:
    by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, group in enumerate(groups):
        kind, row = kinds.kind_of(group.learning_rate)
        by_kind.setdefault(kind.name, []).append((index, row))
    return [
        _KindTable(kinds.KINDS[name], tuple(i for i, _ in rows), kinds.stack(kinds.KINDS[name], [r for _, r in rows]))
        for name, rows in by_kind.items()
    ]


def _integer_piecewise(params: dict[str, np.ndarray], dtype: Any) -> dict[str, np.ndarray]:
    """Piecewise parameters for integer steps of ``dtype``, the same values as each schedule on its own.

    A boundary beyond ``dtype``'s range is never reached by such a step: it is
    clipped to the range and every value after it set to the last reachable
    one, so counting it (at the largest step) picks the same value.
    """
    top = int(np.iinfo(dtype).max)
    boundaries, values = params["learning_rate_boundaries"], params["learning_rate_values"].copy()
    reachable = (boundaries <= top).sum(axis=-1)
    for g, kept in enumerate(reachable):
        values[g, kept + 1 :] = values[g, kept]
    return {"learning_rate_boundaries": np.minimum(boundaries, top).astype(dtype), "learning_rate_values": values}


def _kind_rates(tables: Sequence[_KindTable], count: jax.Array) -> list[jax.Array]:
    """Each kind's rates at the integer step(s) ``count``, one formula call per kind: ``count``'s shape + ``(G_k,)``.

    ``count`` is a scalar (one update) or a column of steps ``(S, 1)`` (the records).
    """
    float_type = jnp.result_type(float)
    out = []
    for table in tables:
        if table.kind.ragged:
            params = _integer_piecewise(table.params, count.dtype)
            out.append(table.kind.formula(jnp, count, **params).astype(float_type))
        else:
            out.append(jnp.asarray(table.kind.formula(jnp, count.astype(float_type), **table.params), float_type))
    return out


def _per_group(tables: Sequence[_KindTable], values: Sequence[jax.Array], num_groups: int) -> list[jax.Array]:
    """The per-kind arrays of :func:`_kind_rates` split into one array per group, in group order."""
    out: list[Any] = [None] * num_groups
    for table, array in zip(tables, values, strict=True):
        for column, index in enumerate(table.members):
            out[index] = jax.lax.index_in_dim(array, column, axis=array.ndim - 1, keepdims=False)
    return out


def _zeros(x: Any) -> Any:
    return x if isinstance(x, optax.MaskedNode) else jnp.zeros_like(x)


def _per_leaf(fn: Any, *leaves: Any) -> Any:
    """``fn(*leaves)``, or the MaskedNode of a parameter the tree lacks."""
    return leaves[0] if isinstance(leaves[0], optax.MaskedNode) else fn(*leaves)


def _check_state(state: Any, names: Sequence[str]) -> None:
    """Refuses, with the reason, a state that is not a :class:`RecapState` for these groups."""
    if isinstance(state, optax.PartitionState):
        raise ValueError(
            "build_recap_optimizer: this state has the earlier layout of the recap optimizer (an optax.partition "
            f"holding one masked copy of the parameter tree per group; layout {RECAP_LAYOUT} keeps each group's own "
            "leaves), which this version does not read; start from tx.init(params), or resume with the version "
            "that saved it"
        )
    if not isinstance(state, RecapState):
        raise TypeError(f"build_recap_optimizer: expected a RecapState, got {type(state).__name__}")
    if sorted(state.inner_states) != sorted(names):
        raise ValueError(
            f"build_recap_optimizer: the state holds groups {sorted(state.inner_states)}, the optimizer {sorted(names)}"
        )


def grouped_torch_rules(
    groups: Sequence[grouping.ParamGroup], b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
) -> optax.GradientTransformation:
    """One transformation applying torch's Adam or SGD to every group's leaves at the group's own rate.

    Args:
        groups: the recap groups (:func:`functional_opt.grouping.recap_groups`):
            their parameter names, schedules and algorithms.
        b1: Adam's first-moment decay for every Adam group, in ``[0, 1)``.
        b2: Adam's second-moment decay for every Adam group, in ``[0, 1)``.
        eps: Adam's denominator term for every Adam group, ``>= 0``.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`RecapState`;
        ``init`` and ``update`` take trees whose leaves are named as the groups'
        parameters, in any wrapping (plain dicts, an ``nnx.State``).

    Raises:
        ValueError: at build time, a group with no parameters or a parameter in
            two groups; at ``init`` or ``update``, a tree with other parameters,
            or a state of another layout or other groups.

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import config, grouping
        >>> groups = [grouping.ParamGroup("a", ("w",), config.LearningRate(constant=0.5), "sgd")]
        >>> tx = grouped_torch_rules(groups)
        >>> float(tx.update({"w": jnp.ones(1)}, tx.init({"w": jnp.zeros(1)}))[0]["w"][0])
        -0.5
    """
    name = "build_recap_optimizer"
    b1 = parts.hyper_parameter(name, config_lib._check_beta, b1, "beta_1")
    b2 = parts.hyper_parameter(name, config_lib._check_beta, b2, "beta_2")
    eps = parts.hyper_parameter(name, config_lib._check_eps, eps, "epsilon")
    groups = list(groups)
    names = [group.name for group in groups]
    where: dict[str, tuple[int, int]] = {}
    for g, group in enumerate(groups):
        if not group.param_names:
            raise ValueError(f"{name}: group {group.name!r} has no parameters")
        for position, param in enumerate(group.param_names):
            if param in where:
                raise ValueError(
                    f"{name}: parameter {param!r} is in groups {names[where[param][0]]!r} and {group.name!r}"
                )
            where[param] = (g, position)
    is_adam = [group.algorithm == "adam" for group in groups]
    tables = _tables(groups)
    layouts: dict[Any, tuple[Any, list[tuple[int, int]]]] = {}

    def layout(tree: Any) -> tuple[list[jax.Array], Any, list[tuple[int, int]]]:
        """The tree's arrays, its treedef and each leaf's ``(group, position)``, checked once per treedef."""
        arrays, treedef = jax.tree_util.tree_flatten(tree)
        if treedef not in layouts:
            leaf_of = leaf_names(tree)
            unknown = [n for n in leaf_of if n not in where]
            if unknown:
                raise ValueError(
                    f"{name}: the optimizer was built for other parameters; unknown names {unknown[:5]}"
                    f"{' ...' if len(unknown) > 5 else ''} (it knows e.g. {sorted(where)[:3]}). Build it from the "
                    "tree you pass to init and update; with flax nnx, build_recap_optimizer(nnx.state(model, wrt), "
                    "...) with the wrt of nnx.Optimizer(model, tx, wrt=...)"
                )
            if len(leaf_of) != len(arrays):
                raise ValueError(
                    f"{name}: every parameter must be one array; got {len(arrays)} arrays in {len(leaf_of)}"
                )
            layouts[treedef] = (treedef, [where[n] for n in leaf_of])
        return arrays, treedef, layouts[treedef][1]

    def by_group(arrays: Sequence[jax.Array], places: Sequence[tuple[int, int]]) -> list[list[Any]]:
        """Each group's arrays in parameter order; a parameter the tree lacks (masked by a wrapper) is a MaskedNode."""
        out: list[list[Any]] = [[_MASKED] * len(group.param_names) for group in groups]
        for array, (g, position) in zip(arrays, places, strict=True):
            out[g][position] = array
        return out

    def init_fn(params: optax.Params) -> RecapState:
        arrays, _, places = layout(params)
        probe = jnp.asarray(parts.PROBE_STEPS, dtype=jnp.int32)[:, None]
        records = _per_group(tables, _kind_rates(tables, probe), len(groups))
        first = [record[0] for record in records]  # PROBE_STEPS[0] == 0: the rate before the first update
        count = jnp.zeros([], jnp.int32)
        states = {}
        for g, leaves in enumerate(by_group(arrays, places)):
            if is_adam[g]:
                inner: Any = torch_rules.TorchAdamState(
                    count=count,
                    learning_rate=first[g],
                    mu=tuple(_zeros(x) for x in leaves),
                    nu=tuple(_zeros(x) for x in leaves),
                    built_from={
                        "b1": parts.recorded(b1),
                        "b2": parts.recorded(b2),
                        "eps": parts.recorded(eps),
                        "learning_rate": records[g],
                    },
                )
            else:
                inner = torch_rules.ScaleByLearningRateState(
                    count=count,
                    learning_rate=first[g],
                    built_from={"learning_rate": records[g], "momentum": parts.recorded(0.0)},
                )
            states[names[g]] = RecapGroupState(inner)
        return RecapState(inner_states=states, recap_layout=jnp.asarray(RECAP_LAYOUT, jnp.int32))

    def update_fn(
        updates: optax.Updates, state: RecapState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, RecapState]:
        del params
        _check_state(state, names)
        arrays, treedef, places = layout(updates)
        inner = [state.inner_states[n].inner_state for n in names]
        old_count = inner[0].count  # every group shares one count
        kind_rates = _kind_rates(tables, old_count)
        count = optax.safe_increment(old_count)
        step = count.astype(jnp.result_type(float))
        bias_correction1, bias_correction2_sqrt = parts.adam_corrections(b1, b2, step)
        kind_step_sizes = [values / bias_correction1 for values in kind_rates]  # lr / (1 - b1**t), every group
        # The barrier keeps XLA from copying the schedules' arithmetic into every leaf's fused update.
        kind_rates, kind_step_sizes, bias_correction2_sqrt = jax.lax.optimization_barrier(
            (kind_rates, kind_step_sizes, bias_correction2_sqrt)
        )
        rates = _per_group(tables, kind_rates, len(groups))
        step_sizes = _per_group(tables, kind_step_sizes, len(groups))
        grads = by_group(arrays, places)

        def adam_m(x: jax.Array, m: jax.Array) -> jax.Array:
            return parts.adam_first_moment(x, m, b1)

        def adam_v(x: jax.Array, v: jax.Array) -> jax.Array:
            return parts.adam_second_moment(x, v, b2)

        def adam_step(m: jax.Array, v: jax.Array, step_size: jax.Array) -> jax.Array:
            return parts.adam_step(m, v, step_size, bias_correction2_sqrt, eps)

        new_grads: list[list[Any]] = []
        states = {}
        for g, leaves in enumerate(grads):
            lr, old = rates[g], inner[g]
            if is_adam[g]:
                mu = tuple(_per_leaf(adam_m, x, m) for x, m in zip(leaves, old.mu, strict=True))
                nu = tuple(_per_leaf(adam_v, x, v) for x, v in zip(leaves, old.nu, strict=True))
                new_grads.append([_per_leaf(adam_step, m, v, step_sizes[g]) for m, v in zip(mu, nu, strict=True)])
                new: Any = old._replace(count=count, learning_rate=lr, mu=mu, nu=nu)
            else:
                new_grads.append([_per_leaf(parts.sgd_step, x, lr) for x in leaves])
                new = old._replace(count=count, learning_rate=lr)
            states[names[g]] = RecapGroupState(new)
        out = [new_grads[g][position] for g, position in places]
        return jax.tree_util.tree_unflatten(treedef, out), state._replace(inner_states=states)

    return optax.GradientTransformation(init_fn, update_fn)
