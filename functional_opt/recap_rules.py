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

The state is a :class:`RecapState`: one step count for every group, the
groups' last rates as one vector (:class:`GroupValues`, named by group), the
Adam groups' moments (each group's own leaves, in parameter order) and one
``built_from`` record of the hyper-parameters and of every group's schedule,
so its number of leaves is about a single optimizer's over the same
parameters whatever the number of groups. ``recap_layout`` marks the layout
(:data:`RECAP_LAYOUT`): a state of an earlier layout is refused with a clear
message.

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
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_opt import config as config_lib
from functional_opt import grouping, schedule_plan
from functional_opt import torch_rule_parts as parts
from functional_opt.recap_state import RECAP_LAYOUT, GroupValues, RecapState, describe_layout
from functional_opt.schedule_steps import EXACT_JNP

__all__ = ["RECAP_LAYOUT", "GroupValues", "RecapState", "describe_layout", "grouped_torch_rules"]

_MASKED = optax.MaskedNode()


def _flax_variable(node: Any) -> bool:
    """Whether ``node`` is a flax ``nnx.Variable`` (only possible once flax is imported)."""
    nnx = sys.modules.get("flax.nnx")
    variable = getattr(nnx, "Variable", None)
    return variable is not None and isinstance(node, variable)


def leaf_names(tree: Any) -> list[str]:
    """The parameter names of a tree's leaves (a flax variable is one leaf, named by its path)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_flax_variable)[0]
    return [grouping.path_to_name(path) for path, _ in leaves]


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


def _group_rates(plan: schedule_plan.Plan, count: jax.Array) -> jax.Array:
    """Every group's rate at the update count ``count``, one formula call per kind of schedule: shape ``(G,)``."""
    return plan.values(
        EXACT_JNP, count, jnp.result_type(float), clip=lambda params: _integer_piecewise(params, count.dtype)
    )


_SPLIT_CHUNK = 32


def _split_groups(vector: jax.Array) -> list[jax.Array]:
    """A ``(G,)`` vector as ``G`` scalars that XLA keeps as separate buffers, made by a few kernels.

    XLA fuses a slice into the fused kernel that consumes it, with its offset
    as a constant of the kernel, and compiles (and keeps in memory) one kernel
    per distinct fused computation: slicing each group's rate out of one
    vector makes every group's per-leaf update a kernel of its own (measured
    at 100 groups: about 5x the compile time of the same updates at one rate,
    and about 1.2 MiB of resident memory per kernel), and so does slicing
    each scalar into a buffer of its own first. A variadic reduction returns
    its outputs as separate buffers from one kernel: for each chunk of
    :data:`_SPLIT_CHUNK` groups, output ``g`` is the sum of the chunk with
    every element but ``g`` replaced by 0, which is exactly element ``g``
    (adding zeros changes no value but the sign of a zero). The per-leaf updates
    of same-shaped leaves are then one fused computation, compiled once, as
    with a single rate; the chunks' kernels are the only per-group code, of
    size ``G * _SPLIT_CHUNK``.
    """
    out: list[jax.Array] = []
    zero = jnp.zeros((), vector.dtype)
    for start in range(0, vector.shape[0], _SPLIT_CHUNK):
        chunk = vector[start : start + _SPLIT_CHUNK]
        keep = np.eye(chunk.shape[0], dtype=bool)
        operands = [jnp.where(keep[g], chunk, zero) for g in range(chunk.shape[0])]
        out.extend(jax.lax.reduce(operands, [zero] * len(operands), lambda a, b: tuple(map(jnp.add, a, b)), (0,)))
    return out


def _zeros(x: Any) -> Any:
    return x if isinstance(x, optax.MaskedNode) else jnp.zeros_like(x)


def _per_leaf(fn: Any, *leaves: Any) -> Any:
    """``fn(*leaves)``, or the MaskedNode of a parameter the tree lacks."""
    return leaves[0] if isinstance(leaves[0], optax.MaskedNode) else fn(*leaves)


def _check_state(state: Any, names: tuple[str, ...]) -> None:
    """Refuses, with the reason, a state that is not a :class:`RecapState` for these groups."""
    if isinstance(state, optax.PartitionState):
        raise ValueError(
            f"build_recap_optimizer: this state has the earlier {describe_layout(1)} of the recap optimizer, this "
            f"version {describe_layout(RECAP_LAYOUT)}; it cannot resume it: start from tx.init(params), or resume "
            "with the version that saved it"
        )
    if isinstance(state, Mapping) and "recap_layout" in state:
        raise TypeError(
            "build_recap_optimizer: expected a RecapState, got a mapping of "
            f"{describe_layout(int(state['recap_layout']))}; restore it into tx.init(params) as the "
            "target (check it with check_state first)"
        )
    if not isinstance(state, RecapState):
        raise TypeError(
            f"build_recap_optimizer: expected a RecapState (layout {RECAP_LAYOUT}), got {type(state).__name__}"
        )
    if state.learning_rates.names != names:
        raise ValueError(
            f"build_recap_optimizer: the state holds groups {list(state.learning_rates.names)}, the optimizer "
            f"{list(names)}"
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
    names = tuple(group.name for group in groups)
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
    adam_groups = [g for g in range(len(groups)) if is_adam[g]]
    adam_mask = np.asarray(is_adam)
    plan = schedule_plan.Plan([group.learning_rate for group in groups])
    # The records: every group's rate at PROBE_STEPS, compute_lr's float64 values (numpy: nothing to compile).
    probe_rates = schedule_plan.evaluate([group.learning_rate for group in groups], parts.PROBE_STEPS)
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
        records = jnp.asarray(probe_rates, dtype=jnp.result_type(float))  # (P, G)
        leaves = by_group(arrays, places)
        moments = {names[g]: tuple(_zeros(x) for x in leaves[g]) for g in adam_groups}
        return RecapState(
            count=parts.zero_count(),
            learning_rates=GroupValues(records[0], names),  # PROBE_STEPS[0] == 0: the rate before the first update
            mu=moments,
            nu=jax.tree.map(jnp.zeros_like, moments),
            built_from={
                "b1": parts.recorded(b1),
                "b2": parts.recorded(b2),
                "eps": parts.recorded(eps),
                "learning_rate": GroupValues(records.T, names),
            },
            recap_layout=jnp.asarray(RECAP_LAYOUT, jnp.int32),
        )

    def update_fn(
        updates: optax.Updates, state: RecapState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, RecapState]:
        del params
        _check_state(state, names)
        arrays, treedef, places = layout(updates)
        rates = _group_rates(plan, state.count)  # (G,)
        count = optax.safe_increment(state.count)
        step = count.astype(jnp.result_type(float))
        bias_correction1, bias_correction2_sqrt = parts.adam_corrections(b1, b2, step)
        # Each group's one scalar: Adam's step size lr / (1 - b1**t), SGD's rate.
        scales = _split_groups(jnp.where(adam_mask, rates / bias_correction1, rates))
        grads = by_group(arrays, places)

        def adam_m(x: jax.Array, m: jax.Array) -> jax.Array:
            return parts.adam_first_moment(x, m, b1)

        def adam_v(x: jax.Array, v: jax.Array) -> jax.Array:
            return parts.adam_second_moment(x, v, b2)

        def adam_step(m: jax.Array, v: jax.Array, step_size: jax.Array) -> jax.Array:
            return parts.adam_step(m, v, step_size, bias_correction2_sqrt, eps)

        new_grads: list[list[Any]] = []
        mu, nu = {}, {}
        for g, leaves in enumerate(grads):
            if is_adam[g]:
                name_g = names[g]
                mu[name_g] = tuple(_per_leaf(adam_m, x, m) for x, m in zip(leaves, state.mu[name_g], strict=True))
                nu[name_g] = tuple(_per_leaf(adam_v, x, v) for x, v in zip(leaves, state.nu[name_g], strict=True))
                new_grads.append(
                    [_per_leaf(adam_step, m, v, scales[g]) for m, v in zip(mu[name_g], nu[name_g], strict=True)]
                )
            else:
                new_grads.append([_per_leaf(parts.sgd_step, x, scales[g]) for x in leaves])
        out = [new_grads[g][position] for g, position in places]
        new_state = state._replace(count=count, learning_rates=GroupValues(rates, names), mu=mu, nu=nu)
        return jax.tree_util.tree_unflatten(treedef, out), new_state

    return optax.GradientTransformation(init_fn, update_fn)
