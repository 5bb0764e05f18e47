"""Reading and checking the state of this library's optimizers, through any optax wrapper.

The states of :mod:`functional_opt.torch_rules` (``TorchAdamState``,
``TorchAdagradState``, ``ScaleByLearningRateState``) are found wherever they
sit in a state pytree: under ``optax.chain``, ``optax.MultiSteps``,
``optax.apply_if_finite``, ``optax.inject_hyperparams``, ``optax.masked``,
nested ``optax.partition`` / ``multi_transform``, or in the ``opt_state`` of
flax's ``nnx.Optimizer`` (whose leaves are flax variables: their values are
read). The search is ``jax.tree_util``'s flattening, so any pytree wrapper
works without special cases.

* :func:`learning_rate` reads the one rate of a single-group optimizer;
* :func:`group_learning_rates` reads every group's rate, keyed by the label of
  the ``optax.partition`` the group sits in;
* :func:`check_state` refuses a restored state built from another config.

Rates are off by one, as ``optax.inject_hyperparams``: after ``n >= 1``
updates a state holds ``schedule(n - 1)``, the rate the last update used;
right after ``init`` it holds ``schedule(0)``.

Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from functional_opt import torch_rules
    >>> tx = optax.MultiSteps(optax.chain(optax.clip(1.0), torch_rules.torch_adam(0.1)), every_k_schedule=2)
    >>> round(float(learning_rate(tx.init(jnp.zeros(2)))), 6)
    0.1
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from functional_opt import grouping, recap_rules, table_rules, torch_rules

__all__ = ["check_state", "group_learning_rates", "learning_rate"]

_LIBRARY_STATES = (
    torch_rules.TorchAdamState,
    torch_rules.TorchAdagradState,
    torch_rules.ScaleByLearningRateState,
    recap_rules.RecapState,
    table_rules.FusedAdagradState,
)
_INJECT_STATES = (optax.InjectHyperparamsState, optax.InjectStatefulHyperparamsState)
_RECORD = "built_from"
_LAYOUT = "recap_layout"


def _holds_library_state(tree: Any) -> bool:
    leaves = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, _LIBRARY_STATES))
    return any(isinstance(leaf, _LIBRARY_STATES) for leaf in leaves)


def _is_rate_source(node: Any) -> bool:
    """A library state, or an injecting state with a ``learning_rate`` and no library state inside."""
    if isinstance(node, _LIBRARY_STATES):
        return True
    return (
        isinstance(node, _INJECT_STATES)
        and "learning_rate" in node.hyperparams
        and not _holds_library_state(node.inner_state)
    )


def _value(leaf: Any) -> Any:
    """A leaf's array; a flax variable (``nnx.Optimizer``'s ``opt_state``) is read through ``get_value``."""
    get_value = getattr(leaf, "get_value", None)
    return get_value() if callable(get_value) and not isinstance(leaf, jax.Array | np.ndarray) else leaf


def _rates(opt_state: optax.OptState) -> list[tuple[tuple[Any, ...], str | None, jax.Array]]:
    """``(key path, group, rate)`` of every rate the state holds, in ``jax.tree_util`` order.

    ``group`` is the group's name within a recap state, ``None`` elsewhere.
    """
    found = jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=_is_rate_source)[0]
    out: list[tuple[tuple[Any, ...], str | None, jax.Array]] = []
    for path, node in found:
        if isinstance(node, recap_rules.RecapState):
            rates = _value(node.learning_rates.values)
            out.extend((path, name, rates[g]) for g, name in enumerate(node.learning_rates.names))
        elif isinstance(node, _LIBRARY_STATES):
            out.append((path, None, _value(node.learning_rate)))
        elif isinstance(node, _INJECT_STATES):
            out.append((path, None, _value(node.hyperparams["learning_rate"])))
    return out


def _partition_labels(path: Sequence[Any]) -> list[str]:
    """The labels of the ``optax.partition`` / ``multi_transform`` states a path goes through, outermost first."""
    labels = []
    for previous, key in itertools.pairwise(path):
        if getattr(previous, "name", None) == "inner_states" and isinstance(key, jax.tree_util.DictKey):
            labels.append(str(key.key))
    return labels


def learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The learning rate of the last update, from the state of a single-group optimizer.

    The state may be wrapped in any optax wrapper. Where it holds no state of
    this library, an ``optax.inject_hyperparams`` state's ``learning_rate`` is
    read instead. After ``n >= 1`` updates this is ``schedule(n - 1)``; right
    after ``init`` it is ``schedule(0)``.

    Args:
        opt_state: the state of one of this library's transformations, of
            :func:`functional_opt.optimizers.build_optimizer`'s, or of a wrapper of one.

    Returns:
        A scalar in JAX's default float type.

    Raises:
        KeyError: the state holds no learning rate, or more than one (use
            :func:`group_learning_rates` for the recap optimizer).

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from functional_opt import torch_rules
        >>> tx = optax.apply_if_finite(torch_rules.torch_sgd(0.25, momentum=0.9), max_consecutive_errors=3)
        >>> float(learning_rate(tx.init(jnp.zeros(1))))
        0.25
    """
    found = _rates(opt_state)
    if len(found) != 1:
        where = [jax.tree_util.keystr(path) + (f" (group {group!r})" if group else "") for path, group, _ in found]
        raise KeyError(
            f"learning_rate: expected one learning rate in the optimizer state, found {len(found)}"
            + (f" (at {where}); for build_recap_optimizer use group_learning_rates" if found else "")
        )
    return found[0][2]


def group_learning_rates(opt_state: optax.OptState) -> dict[str, jax.Array]:
    """Each group's learning rate of the last update, keyed by its ``optax.partition`` label.

    A group of :func:`functional_opt.optimizers.build_recap_optimizer` is
    named as it is there; any other optimizer's rate by the label of the
    innermost ``optax.partition`` (or ``multi_transform``) around it. Where two groups
    would share a name (one recap optimizer nested twice in an outer
    partition), every enclosing label is kept, joined with ``"/"``. After
    ``n >= 1`` updates group ``g`` holds ``schedule_g(n - 1)``; right after
    ``init`` it holds ``schedule_g(0)``.

    Args:
        opt_state: the state of a partition of this library's transformations,
            possibly inside any optax wrapper.

    Returns:
        Group name -> scalar.

    Raises:
        TypeError: the state holds no recap state and no learning rate inside an ``optax.partition``.
        ValueError: a learning rate outside any partition beside partitioned
            ones, or two learning rates in one group.

    Example:
        >>> import jax.numpy as jnp
        >>> import optax
        >>> from functional_opt import torch_rules
        >>> inner = optax.partition({"a": torch_rules.torch_adam(0.1), "b": torch_rules.torch_sgd(0.2)}, ("a", "b"))
        >>> tx = optax.chain(optax.clip_by_global_norm(1.0), inner)
        >>> {k: round(float(v), 6) for k, v in group_learning_rates(tx.init((jnp.zeros(1), jnp.zeros(1)))).items()}
        {'a': 0.1, 'b': 0.2}
    """
    found = [
        (path, _partition_labels(path) + ([group] if group is not None else []), rate)
        for path, group, rate in _rates(opt_state)
    ]
    if not any(labels for _, labels, _ in found):
        raise TypeError(
            "group_learning_rates: expected the state of build_recap_optimizer (or learning rates inside an "
            f"optax.partition), got {type(opt_state).__name__} with {len(found)} learning rate(s) outside any "
            "partition; use learning_rate for a single-group optimizer"
        )
    outside = [jax.tree_util.keystr(path) for path, labels, _ in found if not labels]
    if outside:
        raise ValueError(f"group_learning_rates: learning rates outside any optax.partition at {outside}")
    innermost = [labels[-1] for _, labels, _ in found]
    names = [labels[-1] if innermost.count(labels[-1]) == 1 else "/".join(labels) for _, labels, _ in found]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        paths = [jax.tree_util.keystr(path) for path, _, _ in found]
        where = {n: [p for p, m in zip(paths, names, strict=True) if m == n] for n in duplicates}
        raise ValueError(f"group_learning_rates: more than one learning rate in groups {duplicates}: {where}")
    return {name: rate for name, (_, _, rate) in zip(names, found, strict=True)}


_Record = np.ndarray | recap_rules.GroupValues


def _records(opt_state: Any) -> dict[tuple[str, ...], dict[str, _Record]]:
    """``{path of a state: {field: value}}`` for every ``built_from`` record, typed or restored as plain dicts.

    A typed recap state's per-group record is a :class:`~functional_opt.recap_rules.GroupValues`
    of numpy rows; restored as plain dicts it is its ``values`` array, under ``<field>.values``.
    """
    out: dict[tuple[str, ...], dict[str, _Record]] = {}
    is_group_values = lambda x: isinstance(x, recap_rules.GroupValues)  # noqa: E731
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state, is_leaf=is_group_values)[0]:
        names = tuple(grouping.path_to_name((key,)) for key in path)
        if _RECORD in names[:-1]:
            at = len(names) - 1 - names[::-1].index(_RECORD)
            value: _Record
            if is_group_values(leaf):
                value = recap_rules.GroupValues(np.asarray(_value(leaf.values)), leaf.names)
            else:
                value = np.asarray(_value(leaf))
            out.setdefault(names[:at], {})[".".join(names[at + 1 :])] = value
    return out


def _as_configured(saved: dict[str, _Record], configured: dict[str, _Record]) -> dict[str, _Record]:
    """``saved`` with a per-group record restored as plain dicts (``<field>.values``) under its field's name."""
    out = dict(saved)
    for field, value in configured.items():
        plain = f"{field}.values"
        if isinstance(value, recap_rules.GroupValues) and field not in out and plain in out:
            out[field] = out.pop(plain)
    return out


def _layouts(opt_state: Any) -> dict[tuple[str, ...], int]:
    """``{path of a recap state: its layout version}``, typed or restored as plain dicts."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        names = tuple(grouping.path_to_name((key,)) for key in path)
        if names and names[-1] == _LAYOUT:
            out[names[:-1]] = int(np.asarray(_value(leaf)))
    return out


def _check_layouts(opt_state: Any, fresh_state: Any) -> None:
    """Refuses a recap state saved in another layout than the live optimizer's, saying which."""
    saved = _layouts(opt_state)
    for where, version in _layouts(fresh_state).items():
        found = saved.get(where, 1)  # layout 1 recorded no version
        if found != version:
            raise ValueError(
                f"check_state: the saved recap optimizer state at {'.'.join(where) or '(top level)'} has "
                f"{recap_rules.describe_layout(found)}, the live optimizer {recap_rules.describe_layout(version)}; "
                "this version cannot resume it: start from tx.init(params), or resume with the version that saved it"
            )


def _where(names: tuple[str, ...], group: str | None = None) -> str:
    """A record's place: its group (the labels after ``inner_states``, then a recap group's name) and its path."""
    path = ".".join(names + ((_RECORD,) if group is not None else ())) or "(top level)"
    labels = [key for previous, key in itertools.pairwise(names) if previous == "inner_states"]
    labels += [group] if group is not None else []
    return f"group {'/'.join(labels)!r} ({path})" if labels else f"state at {path}"


def _differs(saved: np.ndarray, configured: np.ndarray) -> bool:
    if saved.shape != configured.shape:
        return True
    return not np.array_equal(saved.astype(configured.dtype), configured, equal_nan=True)


def _field_problems(where: tuple[str, ...], field: str, old: _Record, new: _Record) -> list[str]:
    """What differs between a saved and a configured record of one field, one line per group where grouped."""
    label = _where(where)
    at_steps = f" (at steps {list(torch_rules.PROBE_STEPS)})" if field == "learning_rate" else ""
    if not isinstance(new, recap_rules.GroupValues):
        if isinstance(old, recap_rules.GroupValues) or _differs(np.asarray(old), new):
            return [f"{label}: {field}: saved {_show(np.asarray(getattr(old, 'values', old)))}, configured "
                    f"{_show(new)}{at_steps}"]  # fmt: skip
        return []
    names = new.names
    if isinstance(old, recap_rules.GroupValues):
        if old.names != names:
            return [f"{label}: groups: saved {list(old.names)}, configured {list(names)}"]
        old = old.values
    if old.shape != new.values.shape:
        return [
            f"{label}: {field}: saved records of shape {old.shape}, configured {new.values.shape} (groups "
            f"{list(names)})"
        ]
    return [
        f"{_where(where, name)}: {field}: saved {_show(old[g])}, configured {_show(new.values[g])}{at_steps}"
        for g, name in enumerate(names)
        if _differs(old[g], new.values[g])
    ]


def _show(value: np.ndarray) -> str:
    """Each value in the shortest form that its own dtype reads back (float32's ``0.9``, not ``0.8999999761``)."""
    shown = [str(x) for x in value.reshape(-1)]
    return shown[0] if value.ndim == 0 else "[" + ", ".join(shown) + "]"


def check_state(opt_state: optax.OptState, fresh_state: optax.OptState) -> None:
    """Refuses a restored optimizer state built from another config than the live one.

    Every state of this library records what it was built from
    (``built_from``: hyper-parameters, and the learning rate at
    :data:`functional_opt.torch_rules.PROBE_STEPS`). This compares the records
    of ``opt_state`` (restored from a checkpoint) with those of
    ``fresh_state`` (``tx.init(params)`` of the live optimizer, the target an
    orbax restore needs anyway), group by group and field by field, and raises
    on the first config that differs. It reads both states and changes
    neither. ``opt_state`` may be typed (restored into a target) or plain
    nested dicts and lists (restored without one).

    Args:
        opt_state: the state to resume from.
        fresh_state: a state of the live optimizer, e.g. ``tx.init(params)``.

    Raises:
        ValueError: the states hold different groups, or a group's
            hyper-parameter or learning rate differs; the message names the
            group's path, the field, the saved value and the configured one.
            Also a recap optimizer state of another layout
            (:data:`functional_opt.recap_rules.RECAP_LAYOUT`) than the live one.

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import torch_rules
        >>> saved = torch_rules.torch_adam(0.1, b1=0.5).init(jnp.zeros(2))
        >>> check_state(saved, torch_rules.torch_adam(0.1, b1=0.5).init(jnp.zeros(2)))
        >>> try:
        ...     check_state(saved, torch_rules.torch_adam(0.1, b1=0.75).init(jnp.zeros(2)))
        ... except ValueError as exc:
        ...     print(str(exc).removeprefix("check_state: "))
        the state was built from another config: state at (top level): b1: saved 0.5, configured 0.75
    """
    saved, configured = _records(opt_state), _records(fresh_state)
    if not configured:
        raise ValueError(
            "check_state: fresh_state holds no state of this library's optimizers; pass tx.init(params) of the "
            "live optimizer"
        )
    _check_layouts(opt_state, fresh_state)
    problems = []
    if set(saved) != set(configured):
        only_saved = [_where(w) for w in sorted(set(saved) - set(configured))]
        only_configured = [_where(w) for w in sorted(set(configured) - set(saved))]
        problems.append(
            f"states in the saved state only: {only_saved}; states in the live optimizer only: {only_configured}"
        )
    for where in sorted(set(saved) & set(configured)):
        label = _where(where)
        new = configured[where]
        old = _as_configured(saved[where], new)
        for field in sorted(set(old) | set(new)):
            if field not in old or field not in new:
                problems.append(f"{label}: {field}: {'not in the saved state' if field in new else 'not configured'}")
            else:
                problems.extend(_field_problems(where, field, old[field], new[field]))
    if problems:
        raise ValueError("check_state: the state was built from another config: " + "; ".join(problems))
