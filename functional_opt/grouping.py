"""The one rule that maps a parameter name to its optimizer group (TML recap).

A parameter belongs to tower ``t`` when ``"." + sanitize(t) + "."`` occurs in
its name (``sanitize`` replaces ``"."`` by ``"__"``, as TML names its tower
modules). A parameter matching two towers is an error. Parameters that match
no tower go to ``dense_ebc`` when their name contains ``"embedding_bags"``
(plain SGD driven by the embedding learning rate, like the fused embedding
optimizer) and to ``backbone`` otherwise. With a single-task config every
non-embedding parameter goes to ``single_task``.

The rule is TML's substring match, and it has a pitfall: a tower named ``"0"``
has the pattern ``".0."``, which ``"backbone.layers.0.weight"`` contains, so
that backbone parameter trains with the tower's schedule. Tower names are
therefore checked when the config is read (no reserved group name, no empty
name, no whitespace or control characters), and a tower whose pattern captures
an embedding table's parameters (``embedding_bags``) is an error here.

JAX parameters are named by joining their pytree path with ``"."`` (dict keys,
attribute names, sequence indices), so one model written in torch and in JAX
gets the same names and the same groups.

Both ``functional_opt.optimizers.build_recap_optimizer`` and
``torch_bridge.build_recap_optimizer`` call :func:`recap_groups`; neither
re-implements it.

Example:
    >>> from functional_opt import config, grouping
    >>> cfg = config.RecapOptimizerConfig(
    ...     adam={},
    ...     multi_task_learning_rates={
    ...         "tower_learning_rates": {"recap.is_clicked": {"constant": 0.1}},
    ...         "backbone_learning_rate": {"constant": 0.01},
    ...     },
    ... )
    >>> names = ["towers.recap__is_clicked.w", "backbone.w", "ebc.embedding_bags.t0.weight"]
    >>> emb = config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.5})
    >>> [(g.name, g.param_names, g.algorithm) for g in grouping.recap_groups(names, cfg, emb)]
    [('recap.is_clicked', ('towers.recap__is_clicked.w',), 'adam'), ('backbone', ('backbone.w',), 'adam'), \
('dense_ebc', ('ebc.embedding_bags.t0.weight',), 'sgd')]
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import jax

from functional_opt import config as config_lib

__all__ = [
    "BACKBONE",
    "DENSE_EMBEDDINGS",
    "EMBEDDING_MARKER",
    "SINGLE_TASK",
    "ParamGroup",
    "assign_group",
    "match_tables",
    "named_leaves",
    "path_to_name",
    "recap_groups",
    "sanitize",
    "table_of",
]

BACKBONE = "backbone"
DENSE_EMBEDDINGS = "dense_ebc"
SINGLE_TASK = "single_task"
EMBEDDING_MARKER = "embedding_bags"
_TABLE_PARAM = re.compile(r"(?:^|\.)embedding_bags\.(?P<table>[^.]+)\.weight$")


def table_of(param_name: str) -> str | None:
    """The embedding table a parameter belongs to, by name (``...embedding_bags.<table>.weight``), or None.

    torchrec's ``EmbeddingBagCollection`` names its tables so; a JAX model whose
    pytree path spells the same name gets the same table.

    Example:
        >>> table_of("module.ebc.embedding_bags.user.weight"), table_of("translation.weight")
        ('user', None)
    """
    match = _TABLE_PARAM.search(param_name)
    return None if match is None else match["table"]


def match_tables(
    owner: str, names: Iterable[str], tables: Iterable[str], elsewhere: Iterable[str] = (), what: str = "parameter"
) -> dict[str, list[str]]:
    """Parameter names by table (:func:`table_of`); every table named needs a config and every config a table.

    Args:
        owner: the caller, for messages.
        names: parameter (or leaf) names.
        tables: the configured table names.
        elsewhere: tables the model has without a local parameter (held by other ranks).
        what: ``"parameter"`` or ``"leaf"``, for messages.

    Raises:
        ValueError: tables without a config or configs without a table, all named.

    Example:
        >>> match_tables("build", ["ebc.embedding_bags.user.weight", "w"], ["user"])
        {'user': ['ebc.embedding_bags.user.weight']}
    """
    configured = list(tables)
    found: dict[str, list[str]] = {}
    for name in names:
        table = table_of(name)
        if table is not None:
            found.setdefault(table, []).append(name)
    away = set(elsewhere)
    missing = [t for t in configured if t not in found and t not in away]
    unknown = [t for t in found if t not in configured]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"tables {missing} of the config have no {what} embedding_bags.<table>.weight")
        if unknown:
            parts.append(f"tables {unknown} of the model have no config")
        raise ValueError(f"{owner}: " + "; ".join(parts) + f" (config tables: {configured})")
    return found


def sanitize(task_name: str) -> str:
    """TML's module-name form of a tower name: ``"recap.is_clicked"`` -> ``"recap__is_clicked"``."""
    return task_name.replace(".", "__")


def assign_group(param_name: str, towers: Sequence[str], *, default: str = BACKBONE) -> str:
    """The group of one parameter.

    Args:
        param_name: the parameter's dotted name.
        towers: tower names (unsanitized, as in the config).
        default: group of a non-embedding parameter that matches no tower.

    Returns:
        A tower name, ``default`` or ``"dense_ebc"``.

    Raises:
        ValueError: the parameter matches more than one tower.

    Example:
        >>> assign_group("model.towers.a__b.0.weight", ["a.b", "c"])
        'a.b'
        >>> assign_group("model.embedding_bags.t.weight", ["a.b"])
        'dense_ebc'
    """
    return _assign(param_name, _tower_index(towers), default)


def _tower_index(towers: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """``sanitize(tower) -> [(position, tower), ...]``: the towers by the name component they match."""
    index: dict[str, list[tuple[int, str]]] = {}
    for position, tower in enumerate(towers):
        index.setdefault(sanitize(tower), []).append((position, tower))
    return index


def _assign(param_name: str, index: Mapping[str, list[tuple[int, str]]], default: str) -> str:
    """TML's rule: tower ``t`` when ``"." + sanitize(t) + "."`` is in the name.

    A sanitized name holds no ``"."``, so that substring occurs exactly when
    ``sanitize(t)`` is one of the name's interior dot-separated components: a
    set lookup per component instead of a scan of every tower.
    """
    components = param_name.split(".")[1:-1]
    found = sorted({hit for c in components for hit in index.get(c, ())})
    matches = [tower for _, tower in found]
    if len(matches) > 1:
        raise ValueError(f"Parameter {param_name!r} matched multiple towers: {matches}")
    if matches:
        return matches[0]
    return DENSE_EMBEDDINGS if EMBEDDING_MARKER in param_name else default


@dataclasses.dataclass(frozen=True)
class ParamGroup:
    """One optimizer group of the recap optimizer.

    Attributes:
        name: tower name, ``"backbone"``, ``"single_task"`` or ``"dense_ebc"``.
        param_names: the parameters of the group, in model order.
        learning_rate: the group's schedule.
        algorithm: ``"adam"`` for dense groups, ``"sgd"`` for ``dense_ebc``.
    """

    name: str
    param_names: tuple[str, ...]
    learning_rate: config_lib.LearningRate
    algorithm: Literal["adam", "sgd"]


def recap_groups(
    param_names: Iterable[str],
    recap_config: config_lib.RecapOptimizerConfig,
    emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None = None,
) -> list[ParamGroup]:
    """Splits parameters into the recap optimizer's groups, each with its schedule.

    Groups come in this order: towers (config order), ``backbone`` (or
    ``single_task``), then ``dense_ebc``; empty groups are left out.

    Args:
        param_names: parameter names in model order (fused embedding tables excluded).
        recap_config: the recap optimizer config.
        emb_optimizer_config: the embedding optimizer config; its ``learning_rate``
            drives ``dense_ebc``.

    Returns:
        The groups.

    Raises:
        ValueError: a tower matches no parameter or captures an embedding table's
            (``embedding_bags``) parameters, a parameter matches two towers,
            a group has no learning rate (missing) or a learning rate has no group
            (extra); the message lists the names.
    """
    names = list(param_names)
    # A set, not collections.Counter: Counter's first isinstance(list, Mapping) walks every registered Mapping.
    seen: set[str] = set()
    repeated: set[str] = set()
    for n in names:
        (repeated if n in seen else seen).add(n)
    duplicates = sorted(repeated)
    if duplicates:
        raise ValueError(f"recap_groups: duplicate parameter names {duplicates}")
    multi = recap_config.multi_task_learning_rates
    towers = list(multi.tower_learning_rates) if multi is not None else []
    default = BACKBONE if multi is not None else SINGLE_TASK
    reserved = [t for t in towers if t in (BACKBONE, DENSE_EMBEDDINGS, SINGLE_TASK)]
    if reserved:
        raise ValueError(f"tower_learning_rates: tower names {reserved} are reserved for built-in groups")

    members: dict[str, list[str]] = {t: [] for t in towers}
    index = _tower_index(towers)
    for name in names:
        members.setdefault(_assign(name, index, default), []).append(name)

    captured = {t: [n for n in members[t] if EMBEDDING_MARKER in n] for t in towers}
    captured = {t: found for t, found in captured.items() if found}
    if captured:
        tower, found = next(iter(captured.items()))
        raise ValueError(
            f"Tower {tower!r} (pattern {'.' + sanitize(tower) + '.'!r}) captures embedding-table parameters "
            f"{found[:3]}: embedding tables train with the embedding optimizer, never with a tower's Adam; "
            "rename the tower so that its pattern matches only its own parameters"
        )

    unmatched = [t for t in towers if not members[t]]
    if unmatched:
        raise ValueError(
            f"Towers {unmatched} match no parameter: a tower's parameters must contain "
            f"'.<tower name with '.' replaced by '__'>.' in their name, e.g. "
            f"{['.' + sanitize(t) + '.' for t in unmatched]}"
        )

    rates: dict[str, config_lib.LearningRate] = {}
    if multi is not None:
        rates.update(multi.tower_learning_rates)
        if multi.backbone_learning_rate is not None:
            rates[BACKBONE] = multi.backbone_learning_rate
    elif recap_config.single_task_learning_rate is not None:
        rates[SINGLE_TASK] = recap_config.single_task_learning_rate
    if members.get(DENSE_EMBEDDINGS) and emb_optimizer_config is not None:
        if emb_optimizer_config.learning_rate is not None:
            rates[DENSE_EMBEDDINGS] = emb_optimizer_config.learning_rate

    order = [*towers, default, DENSE_EMBEDDINGS]
    groups_with_params = [g for g in order if members.get(g)]
    missing = [g for g in groups_with_params if g not in rates]
    extra = [g for g in rates if g not in groups_with_params]
    if missing or extra:
        parts = []
        if missing:
            detail = {g: members[g][:3] for g in missing}
            parts.append(f"groups with parameters but no learning rate: {missing} (e.g. {detail})")
            if DENSE_EMBEDDINGS in missing:
                parts.append("dense_ebc needs emb_optimizer_config.learning_rate")
            if BACKBONE in missing:
                parts.append("backbone needs multi_task_learning_rates.backbone_learning_rate")
        if extra:
            parts.append(f"learning rates for groups with no parameters: {extra}")
        raise ValueError("Learning rates do not match parameter groups: " + "; ".join(parts))

    return [
        ParamGroup(
            name=g,
            param_names=tuple(members[g]),
            learning_rate=rates[g],
            algorithm="sgd" if g == DENSE_EMBEDDINGS else "adam",
        )
        for g in groups_with_params
    ]


def _key_name(key: Any) -> str:
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_to_name(path: Sequence[Any]) -> str:
    """Joins a pytree key path with ``"."``: ``("towers", "a__b", 0, "w")`` -> ``"towers.a__b.0.w"``.

    Example:
        >>> import jax
        >>> [path_to_name(p) for p, _ in jax.tree_util.tree_leaves_with_path({"a": [1, {"b": 2}]})]
        ['a.0', 'a.1.b']
    """
    return ".".join(_key_name(k) for k in path)


def named_leaves(params: Any) -> list[tuple[str, Any]]:
    """``(name, leaf)`` for every leaf of a pytree, in ``jax.tree_util`` order."""
    return [(path_to_name(p), leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(params)]
