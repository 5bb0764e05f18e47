"""A small multi-task ranking model in JAX, its initial weights and synthetic batches.

The same model is written in torch in ``torch_bridge.demo_model`` with the
same parameter names, the same forward maths and the same initial weights,
so the two frameworks can be trained side by side (parity tests, the
``functional-opt check`` command). This module never imports torch.

The model, for a batch of ``B`` samples::

    pooled_t = sum of the rows of table t looked up by sample b's ids      (B, dim) per table
    h = relu(... relu(concat(dense, pooled_0, pooled_1, ...) @ W0.T + b0) ...)  backbone
    logit_task = tower_task(h)    (Linear + ReLU ..., last Linear to 1 output)
    loss = sum over tasks of mean over the batch of BCE(logit_task, label_task)

with ``BCE(x, y) = (1 - y) * x - log_sigmoid(x)`` (torch's
``binary_cross_entropy_with_logits``).

Parameter names (leaves of the params pytree joined with ``"."``, as in
:func:`functional_opt.grouping.named_leaves`)::

    ebc.embedding_bags.<table>.weight        (num_embeddings, embedding_dim)
    backbone.layers.<i>.weight / .bias        torch.nn.Linear layout: (out, in)
    towers.<sanitized task>.layers.<i>.weight / .bias

A tower's name is the task name with ``"."`` replaced by ``"__"``
(:func:`functional_opt.grouping.sanitize`), so the recap grouping puts each
tower in its task's group, the backbone in ``backbone`` and the tables in
``dense_ebc``.

Example:
    >>> import jax
    >>> from functional_opt import demo_model
    >>> spec = demo_model.ModelSpec()
    >>> params = demo_model.init_params(spec, seed=0)
    >>> batch = demo_model.make_batches(spec, num_batches=1, batch_size=4, seed=0)[0]
    >>> demo_model.logits(params, demo_model.to_jax(batch), spec).shape
    (4, 2)
    >>> sorted({name.split(".")[0] for name, _ in demo_model.named_arrays(params).items()})
    ['backbone', 'ebc', 'towers']
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import grouping

__all__ = [
    "EMBEDDING_ATTR",
    "Batch",
    "ModelSpec",
    "init_arrays",
    "init_params",
    "logits",
    "loss",
    "make_batches",
    "named_arrays",
    "params_from_arrays",
    "to_jax",
]

EMBEDDING_ATTR = "ebc"
"""Attribute of the embedding tables: their names start ``ebc.embedding_bags.``."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Sizes of the demo model (hashable, so it can be a static argument of ``jax.jit``).

    Attributes:
        tasks: task names; each gets a tower (dots allowed, sanitized in module names).
        num_dense_features: number of dense input features.
        tables: ``(table name, num_embeddings)``; table ``t`` is looked up by feature ``t``.
        embedding_dim: width of every table.
        backbone_sizes: output widths of the backbone's layers (each followed by ReLU).
        tower_sizes: hidden widths of each tower (ReLU after each; a last layer outputs 1 logit).
        max_ids_per_sample: a sample looks up 0 to this many ids per feature.
    """

    tasks: tuple[str, ...] = ("recap.is_clicked", "recap.is_replied")
    num_dense_features: int = 8
    tables: tuple[tuple[str, int], ...] = (("user_id", 40), ("tweet_id", 30))
    embedding_dim: int = 4
    backbone_sizes: tuple[int, ...] = (16, 16)
    tower_sizes: tuple[int, ...] = (8,)
    max_ids_per_sample: int = 3

    def __post_init__(self) -> None:
        if not self.tasks or not self.tables or not self.backbone_sizes:
            raise ValueError(f"ModelSpec: tasks, tables and backbone_sizes must not be empty, got {self}")
        if len({grouping.sanitize(t) for t in self.tasks}) != len(self.tasks):
            raise ValueError(f"ModelSpec: tasks={self.tasks} must have distinct sanitized names")
        sizes = (self.num_dense_features, self.embedding_dim, self.max_ids_per_sample, *self.backbone_sizes)
        if min(sizes + self.tower_sizes + tuple(n for _, n in self.tables)) <= 0:
            raise ValueError(f"ModelSpec: every size must be > 0, got {self}")

    @property
    def input_width(self) -> int:
        """Width of the backbone's input: dense features plus one pooled embedding per table."""
        return self.num_dense_features + self.embedding_dim * len(self.tables)

    def layer_shapes(self) -> dict[str, tuple[int, ...]]:
        """Parameter name -> shape, in the torch model's registration order."""
        shapes: dict[str, tuple[int, ...]] = {}
        for table, rows in self.tables:
            shapes[f"{EMBEDDING_ATTR}.embedding_bags.{table}.weight"] = (rows, self.embedding_dim)
        widths = [self.input_width, *self.backbone_sizes]
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            shapes[f"backbone.layers.{i}.weight"] = (fan_out, fan_in)
            shapes[f"backbone.layers.{i}.bias"] = (fan_out,)
        for task in self.tasks:
            widths = [self.backbone_sizes[-1], *self.tower_sizes, 1]
            for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
                prefix = f"towers.{grouping.sanitize(task)}.layers.{i}"
                shapes[f"{prefix}.weight"] = (fan_out, fan_in)
                shapes[f"{prefix}.bias"] = (fan_out,)
        return shapes


class Batch(NamedTuple):
    """A synthetic batch as arrays (a pytree, so it can be passed to a jitted function).

    Ids are padded to a fixed length so every batch of a run has the same shapes.

    Attributes:
        dense: ``(B, num_dense_features)`` dense features.
        labels: ``(B, num_tasks)`` 0/1 labels, in ``spec.tasks`` order.
        lengths: ``(num_tables, B)`` number of ids of each sample per feature.
        ids: ``(num_tables, B * max_ids_per_sample)`` ids, sample by sample, then zeros as padding.
        segment_ids: like ``ids``: the sample of each id, ``B`` for padding.
    """

    dense: Any
    labels: Any
    lengths: Any
    ids: Any
    segment_ids: Any


def init_arrays(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic float64 initial weights, by parameter name.

    Linear layers draw from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (torch's
    default bound), tables from ``N(0, 0.1**2)``, all from one
    ``numpy.random.default_rng(seed)`` in :meth:`ModelSpec.layer_shapes` order.

    Args:
        spec: the model's sizes.
        seed: the seed.

    Returns:
        Parameter name -> float64 array.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for name, shape in spec.layer_shapes().items():
        if ".embedding_bags." in name:
            arrays[name] = rng.normal(0.0, 0.1, size=shape)
        else:
            fan_in = shape[1] if len(shape) == 2 else arrays[name.replace(".bias", ".weight")].shape[1]
            bound = 1.0 / np.sqrt(fan_in)
            arrays[name] = rng.uniform(-bound, bound, size=shape)
    return arrays


def _listify(node: Any) -> Any:
    """Turns dicts keyed ``"0", "1", ...`` into lists, recursively."""
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items) and sorted(int(k) for k in items) == list(range(len(items))):
        return [items[str(i)] for i in range(len(items))]
    return items


def params_from_arrays(named: Mapping[str, Any], dtype: Any = None) -> dict[str, Any]:
    """The params pytree from ``{dotted name: array}`` (e.g. a torch model's weights as numpy).

    Names are split at ``"."``; levels keyed ``0, 1, ...`` become lists, so
    :func:`functional_opt.grouping.named_leaves` gives back the same names.

    Args:
        named: parameter name -> array-like.
        dtype: the leaves' dtype (default: JAX's default float type).

    Returns:
        Nested dicts and lists of ``jax.Array``.

    Example:
        >>> params = params_from_arrays({"a.layers.0.w": [1.0], "a.layers.1.w": [2.0]})
        >>> list(named_arrays(params))
        ['a.layers.0.w', 'a.layers.1.w']
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    tree: dict[str, Any] = {}
    for name, value in named.items():
        *parents, leaf = name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jnp.asarray(np.asarray(value), dtype=dtype)
    return _listify(tree)


def named_arrays(params: Any) -> dict[str, np.ndarray]:
    """``{dotted name: numpy array}`` of a params pytree (the inverse of :func:`params_from_arrays`)."""
    return {name: np.asarray(leaf) for name, leaf in grouping.named_leaves(params)}


def init_params(spec: ModelSpec, seed: int = 0, dtype: Any = None) -> dict[str, Any]:
    """The params pytree with :func:`init_arrays` weights (the torch model's for the same seed).

    Args:
        spec: the model's sizes.
        seed: the seed.
        dtype: the leaves' dtype (default: JAX's default float type).

    Returns:
        The params pytree.
    """
    return params_from_arrays(init_arrays(spec, seed), dtype)


def make_batches(spec: ModelSpec, num_batches: int, batch_size: int, seed: int = 0) -> list[Batch]:
    """Deterministic synthetic batches as numpy arrays (float64 features, int64 ids).

    Dense features are standard normal; each feature looks up 0 to
    ``spec.max_ids_per_sample`` ids, skewed towards low ids; each task's label
    is 1 when a fixed random linear function of the dense features plus the
    number of looked-up ids plus noise is positive.

    Args:
        spec: the model's sizes.
        num_batches: how many batches.
        batch_size: samples per batch.
        seed: the seed.

    Returns:
        ``num_batches`` :class:`Batch` of numpy arrays.

    Raises:
        ValueError: ``num_batches`` or ``batch_size`` is not positive.
    """
    if num_batches <= 0 or batch_size <= 0:
        raise ValueError(f"make_batches: num_batches={num_batches} and batch_size={batch_size} must be > 0")
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(spec.num_dense_features, len(spec.tasks)))
    width = batch_size * spec.max_ids_per_sample
    batches = []
    for _ in range(num_batches):
        dense = rng.normal(size=(batch_size, spec.num_dense_features))
        lengths = rng.integers(0, spec.max_ids_per_sample + 1, size=(len(spec.tables), batch_size))
        ids = np.zeros((len(spec.tables), width), dtype=np.int64)
        segment_ids = np.full((len(spec.tables), width), batch_size, dtype=np.int32)
        for t, (_, rows) in enumerate(spec.tables):
            total = int(lengths[t].sum())
            ids[t, :total] = np.floor(rows * rng.random(total) ** 2).astype(np.int64)
            segment_ids[t, :total] = np.repeat(np.arange(batch_size), lengths[t])
        score = dense @ teacher + 0.3 * (lengths.sum(axis=0)[:, None] - spec.max_ids_per_sample * len(spec.tables) / 2)
        labels = (score + rng.normal(size=score.shape) > 0).astype(np.float64)
        batches.append(Batch(dense=dense, labels=labels, lengths=lengths, ids=ids, segment_ids=segment_ids))
    return batches


def to_jax(batch: Batch, dtype: Any = None) -> Batch:
    """The batch as ``jax.Array`` with features and labels in ``dtype`` (default: JAX's default float)."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return Batch(
        dense=jnp.asarray(batch.dense, dtype=dtype),
        labels=jnp.asarray(batch.labels, dtype=dtype),
        lengths=jnp.asarray(batch.lengths, dtype=jnp.int32),
        ids=jnp.asarray(batch.ids, dtype=jnp.int32),
        segment_ids=jnp.asarray(batch.segment_ids, dtype=jnp.int32),
    )


def _linear(layer: Mapping[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ layer["weight"].T + layer["bias"]


def logits(params: Mapping[str, Any], batch: Batch, spec: ModelSpec) -> jax.Array:
    """The model's logits, ``(B, num_tasks)`` in ``spec.tasks`` order.

    Args:
        params: the params pytree (:func:`init_params` or :func:`params_from_arrays`).
        batch: a batch (:func:`to_jax`).
        spec: the model's sizes.

    Returns:
        The logits.
    """
    batch_size = batch.dense.shape[0]
    tables = params[EMBEDDING_ATTR]["embedding_bags"]
    pooled = [
        jax.ops.segment_sum(
            tables[table]["weight"][batch.ids[t]], batch.segment_ids[t], num_segments=batch_size, mode="drop"
        )
        for t, (table, _) in enumerate(spec.tables)
    ]
    h = jnp.concatenate([batch.dense, *pooled], axis=1)
    for layer in params["backbone"]["layers"]:
        h = jax.nn.relu(_linear(layer, h))
    outputs = []
    for task in spec.tasks:
        layers = params["towers"][grouping.sanitize(task)]["layers"]
        z = h
        for i, layer in enumerate(layers):
            z = _linear(layer, z)
            if i < len(layers) - 1:
                z = jax.nn.relu(z)
        outputs.append(z[:, 0])
    return jnp.stack(outputs, axis=1)


def loss(params: Mapping[str, Any], batch: Batch, spec: ModelSpec) -> jax.Array:
    """Sum over tasks of the mean binary cross-entropy with logits.

    ``BCE(x, y) = (1 - y) * x - log_sigmoid(x)``, torch's formula.

    Args:
        params: the params pytree.
        batch: a batch (:func:`to_jax`).
        spec: the model's sizes.

    Returns:
        A scalar.
    """
    x = logits(params, batch, spec)
    y = batch.labels
    per_sample = (1 - y) * x - jax.nn.log_sigmoid(x)
    return jnp.sum(jnp.mean(per_sample, axis=0))
