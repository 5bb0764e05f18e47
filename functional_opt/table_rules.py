"""fbgemm's fused embedding-table (TBE) optimizers as optax transformations.

The update rules of fbgemm_gpu 1.8's CPU ``SplitTableBatchedEmbeddingBagsCodegen``
(what torchrec's FUSED compute kernel runs), as found in fbgemm's sources:
``fbgemm_gpu/codegen/genscript/optimizers.py`` (``sgd()``, ``adagrad()``,
``rowwise_adagrad()``: their ``split_weight_update_cpu``),
``codegen/training/backward/embedding_backward_split_cpu_template.cpp`` (the
CPU backward) and, for row-wise Adagrad on a float32 table, fbgemm's own
``GenerateSparseAdaGrad(D, rowwise=true)`` kernel (``rowwise_sparse_adagrad_ref``
in ``src/RefImplementations.cc``). With ``g`` a row's gradient and
``lr = float32(schedule(count))`` (a float64 table: ``schedule(count)``):

* ``EXACT_SGD`` (:func:`fused_exact_sgd`): ``w -= lr * g``.
* ``EXACT_ADAGRAD`` (:func:`fused_exact_adagrad`): per element ``m += g * g``,
  then ``w -= lr * g / (sqrt(m) + eps)``.
* ``EXACT_ROWWISE_ADAGRAD`` (:func:`fused_exact_rowwise_adagrad`): one ``m``
  per row, ``m += mean(g * g)`` over the embedding dimension, then
  ``w -= (lr / (sqrt(m) + eps)) * g``.

Exact: the kernel first sums the gradients of every occurrence of a row in
the batch (``csr2csc``, then one sum per row), then updates the row once. The
dense gradient of the pooled lookup (``jax.grad`` through a gather and a
segment sum) is that per-row sum, and rows that were not looked up get
``g = 0``. With ``eps > 0`` and a finite ``lr``, a zero ``g`` leaves the row
and its accumulator exactly unchanged: ``m + 0 = m``, and the update is
``-0.0`` (``-(lr * 0) / (sqrt(m) + eps)``, ``-(lr / (sqrt(m) + eps)) * 0``),
and ``w + (-0.0) == w`` bit for bit for every ``w``. So applying these rules to
the dense gradient equals fbgemm's sparse update. ``eps = 0`` is refused:
a never-looked-up row would get ``0 / 0``.

The learning rate: update k uses ``schedule(k)``, as :mod:`functional_opt.torch_rules`.
fbgemm keeps it in a float32 tensor (``learning_rate_tensor``, written by
``set_learning_rate``) and the kernel reads ``learning_rate_tensor.item<float>()``,
so for a table of 32 bits or fewer the rules round ``schedule(k)`` to float32
before use, whatever JAX's default float type. A float64 table (which no fused
kernel runs; its torch optimizer reads torch's float64 rate) takes the rate
unrounded. The state's ``learning_rate`` is ``schedule(k)`` in JAX's default
float type, as torch's param group holds it. fbgemm's
accumulators (``momentum1``) start at 0 (``torch.zeros`` in its
``apply_split_helper``) and are float32; its ``eps`` defaults to ``1e-8``. The
rules compute in the parameter's dtype, which for float32 tables is not bitwise
fbgemm's (measured): its row-wise kernel sums a row's squares in eight SIMD lanes,
and its exact Adagrad accumulates ``m`` with a fused multiply-add and takes the square
root, adds ``eps`` and divides in double precision before rounding the weight. The two
sides differ by float32 rounding, about 1e-7 relative over 100 steps.

torchrec 1.8: ``apply_optimizer_in_backward(torch.optim.Adagrad, ...)`` maps to
``EXACT_ADAGRAD`` and ``torchrec.optim.RowWiseAdagrad`` to ``EXACT_ROWWISE_ADAGRAD``
(``torchrec/distributed/utils.py``); ``merge_fused_params`` renames ``lr`` to
``learning_rate`` and passes every other keyword to the TBE constructor. An ``eps``
left out is fbgemm's ``1e-8``, not torch's ``1e-10``. ``initial_accumulator_value`` and
``lr_decay`` (even 0) make sharding fail with ``TypeError: ... unexpected keyword
argument``: the fused kernels have neither. RowWiseAdagrad's ``weight_decay``
reaches the TBE, but its ``weight_decay_mode`` stays ``NONE`` and the kernel ignores it;
even with ``L2`` or ``DECOUPLE``, the CPU float32 path of a table not shared between
features calls fbgemm's kernel with a weight decay of 0.

torch's own optimizers on a dense gradient (no weight decay):
``torch.optim.Adagrad`` with ``lr_decay = 0`` and ``initial_accumulator_value = 0``
is :func:`fused_exact_adagrad` (eps after the square root too), up to the float32
rounding of ``lr`` and ``addcdiv``'s order (``w - lr * (g / (sqrt(m) + eps))``); it
differs by its default eps (``1e-10``), by ``lr_decay`` (``lr / (1 + (t - 1) * lr_decay)``
with ``t`` the global step, not the row's) and by ``initial_accumulator_value``.
``torchrec.optim.RowWiseAdagrad`` (non-fused) is :func:`fused_exact_rowwise_adagrad`
(the mean over ``axis=1``, eps after the square root) with the same differences, and
its ``weight_decay`` applies to every row every step, where fbgemm's would apply to
looked-up rows only. With ``eps = 0`` (and accumulators from 0) both turn the rows never
looked up into NaN (``0 / 0``).

Example:
    >>> import jax.numpy as jnp
    >>> table = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    >>> both, only_row_0 = jnp.array([[0.5, -1.0], [2.0, 1.0]]), jnp.array([[0.5, -1.0], [0.0, 0.0]])
    >>> def row_1_kept(tx):  # row 1 is looked up in the first batch, not in the second
    ...     updates, first = tx.update(both, tx.init(table))
    ...     table_1 = table + updates
    ...     updates, second = tx.update(only_row_0, first)
    ...     kept = bool(((table_1 + updates)[1] == table_1[1]).all())
    ...     if isinstance(second, FusedAdagradState):
    ...         kept = kept and bool((second.accumulator[1] == first.accumulator[1]).all())
    ...     return kept
    >>> [row_1_kept(tx) for tx in (fused_exact_sgd(0.1), fused_exact_adagrad(0.1), fused_exact_rowwise_adagrad(0.1))]
    [True, True, True]
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_opt import config as config_lib
from functional_opt import torch_rule_parts as parts
from functional_opt.torch_rules import ScaleByLearningRateState

__all__ = [
    "FusedAdagradState",
    "fused_exact_adagrad",
    "fused_exact_rowwise_adagrad",
    "fused_exact_sgd",
]

HyperParameter = parts.HyperParameter
LearningRateLike = parts.LearningRateLike


class FusedAdagradState(NamedTuple):
    """State of :func:`fused_exact_adagrad` and :func:`fused_exact_rowwise_adagrad`.

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (before the first:
            ``schedule(0)``), in JAX's default float type, before a table's rounding.
        accumulator: fbgemm's ``momentum1``: one value per element, or per row
            (the parameter's shape without its last axis) for the row-wise rule.
        built_from: ``eps``, ``rowwise`` (1 for the row-wise rule, 0 otherwise) and
            ``learning_rate`` (the schedule at :data:`~functional_opt.torch_rules.PROBE_STEPS`).
    """

    count: jax.Array
    learning_rate: jax.Array
    accumulator: optax.Updates
    built_from: dict[str, jax.Array]


def _check_positive_eps(value: float, field: str) -> float:
    value = config_lib._check_eps(value, field)
    if value == 0.0:
        raise ValueError(
            f"{field}={value!r} must be > 0: with eps = 0 a row that was not looked up (zero gradient, zero "
            "accumulator) would get 0/0 = nan, where fbgemm's sparse kernel leaves it unchanged"
        )
    return value


def _check_no_weight_decay(value: float, field: str) -> float:
    if value != 0.0:
        raise ValueError(
            f"{field}={value!r} is not supported: fbgemm's default weight_decay_mode NONE ignores it, and its CPU "
            "float32 kernel ignores L2 and DECOUPLE too for a table not shared between features; only 0 is exact"
        )
    return 0.0


def _lr_for(lr: jax.Array, x: jax.Array) -> jax.Array:
    """The rate a table of ``x``'s dtype runs with: float32 for 32 bits or fewer (fbgemm's
    ``learning_rate_tensor``), float64 for a float64 table (which no fused kernel runs: its torch
    optimizer takes torch's float64 rate)."""
    return lr.astype(jnp.promote_types(jnp.float32, x.dtype)).astype(x.dtype)


def _rows(name: str, params: optax.Params) -> optax.Params:
    """Zeros of each leaf's shape without its last axis; a leaf with fewer than 2 axes is refused, naming it."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.ndim(leaf) < 2:
            raise ValueError(
                f"{name}: the parameter at {jax.tree_util.keystr(path) or '(top level)'} has shape "
                f"{jnp.shape(leaf)}; a table needs at least 2 axes (rows..., embedding dimension)"
            )
    return jax.tree.map(lambda p: jnp.zeros(p.shape[:-1], p.dtype), params)


def fused_exact_sgd(learning_rate: LearningRateLike) -> optax.GradientTransformation:
    """fbgemm's ``EXACT_SGD`` fused table optimizer as an optax transformation.

    With ``lr = float32(schedule(count))`` (a float64 table: ``schedule(count)``)::

        update = -lr * g                           # fbgemm: w -= learning_rate * g

    This is :func:`functional_opt.torch_rules.scale_by_learning_rate` (and
    ``torch_sgd`` without momentum), but for the float32 rounding of the rate that
    fbgemm's ``learning_rate_tensor`` applies (float64 tables: none); the state is the same
    :class:`~functional_opt.torch_rules.ScaleByLearningRateState`.

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.

    Returns:
        An ``optax.GradientTransformation`` whose state is ``ScaleByLearningRateState``.

    Raises:
        ValueError: ``learning_rate`` is negative or not finite.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = fused_exact_sgd(0.1)
        >>> state = tx.init(jnp.zeros((2, 2)))
        >>> updates, state = tx.update(jnp.array([[1.0, -2.0], [0.0, 0.0]]), state)
        >>> updates.tolist(), float(state.learning_rate) == float(jnp.float32(0.1))
        ([[-0.10000000149011612, 0.20000000298023224], [-0.0, -0.0]], True)
    """
    schedule = parts.as_schedule("fused_exact_sgd", learning_rate)

    def init_fn(params: optax.Params) -> ScaleByLearningRateState:
        del params
        return ScaleByLearningRateState(
            count=parts.zero_count(),
            learning_rate=parts.lr_at(schedule, parts.zero_count()),
            built_from={"learning_rate": parts.recorded_schedule(learning_rate, schedule)},
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByLearningRateState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByLearningRateState]:
        del params
        lr = parts.lr_at(schedule, state.count)
        new_updates = jax.tree.map(lambda g: parts.sgd_step(g, _lr_for(lr, g)), updates)
        return new_updates, state._replace(count=optax.safe_increment(state.count), learning_rate=lr)

    return optax.GradientTransformation(init_fn, update_fn)


def _adagrad(
    name: str, learning_rate: LearningRateLike, eps: HyperParameter, *, rowwise: bool
) -> optax.GradientTransformation:
    """The two Adagrad rules: one accumulator per element, or per row (``rowwise``)."""
    schedule = parts.as_schedule(name, learning_rate)
    eps = parts.hyper_parameter(name, _check_positive_eps, eps, "eps")

    def init_fn(params: optax.Params) -> FusedAdagradState:
        return FusedAdagradState(
            count=parts.zero_count(),
            learning_rate=parts.lr_at(schedule, parts.zero_count()),
            accumulator=_rows(name, params) if rowwise else optax.tree.zeros_like(params),
            built_from={
                "eps": parts.recorded(eps),
                "learning_rate": parts.recorded_schedule(learning_rate, schedule),
                "rowwise": parts.recorded(1.0 if rowwise else 0.0),
            },
        )

    def element_step(g: jax.Array, m: jax.Array, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
        m = m + g * g
        return (-(_lr_for(lr, g) * g)) / (jnp.sqrt(m) + parts.like(eps, m)), m

    def row_step(g: jax.Array, m: jax.Array, lr: jax.Array) -> tuple[jax.Array, jax.Array]:
        m = m + jnp.mean(g * g, axis=-1)
        multiplier = _lr_for(lr, g) / (jnp.sqrt(m) + parts.like(eps, m))
        return -multiplier[..., None] * g, m

    step = row_step if rowwise else element_step

    def update_fn(
        updates: optax.Updates, state: FusedAdagradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, FusedAdagradState]:
        del params
        lr = parts.lr_at(schedule, state.count)
        leaves, treedef = jax.tree.flatten(updates)
        pairs = [step(g, m, lr) for g, m in zip(leaves, treedef.flatten_up_to(state.accumulator), strict=True)]
        new_updates = treedef.unflatten([u for u, _ in pairs])
        accumulator = treedef.unflatten([m for _, m in pairs])
        return new_updates, state._replace(
            count=optax.safe_increment(state.count), learning_rate=lr, accumulator=accumulator
        )

    return optax.GradientTransformation(init_fn, update_fn)


def fused_exact_adagrad(learning_rate: LearningRateLike, eps: HyperParameter = 1e-8) -> optax.GradientTransformation:
    """fbgemm's ``EXACT_ADAGRAD`` fused table optimizer as an optax transformation.

    With ``lr = float32(schedule(count))`` (a float64 table: ``schedule(count)``), per element::

        m = m + g * g                              # m starts at 0
        update = (-(lr * g)) / (sqrt(m) + eps)     # fbgemm: w -= lr * g / (sqrt(m) + eps)

    ``eps`` is added after the square root, as in ``torch.optim.Adagrad`` (optax's
    ``adagrad`` adds it inside and starts ``m`` at 0.1). There is no ``lr_decay``
    and no initial accumulator value: fbgemm has neither.

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.
        eps: added to ``sqrt(m)``, ``> 0`` (fbgemm's default ``1e-8``); a number or a scalar array.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`FusedAdagradState`.

    Raises:
        ValueError: ``learning_rate`` is negative or not finite, or ``eps`` is not
            ``> 0`` (an array is checked when concrete).

    Example:
        >>> import jax.numpy as jnp
        >>> tx = fused_exact_adagrad(0.5, eps=1e-8)
        >>> state = tx.init(jnp.zeros((1, 2)))
        >>> updates, state = tx.update(jnp.array([[2.0, -4.0]]), state)
        >>> [round(float(u), 6) for u in updates[0]], state.accumulator.tolist()
        ([-0.5, 0.5], [[4.0, 16.0]])
    """
    return _adagrad("fused_exact_adagrad", learning_rate, eps, rowwise=False)


def fused_exact_rowwise_adagrad(
    learning_rate: LearningRateLike, eps: HyperParameter = 1e-8, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """fbgemm's ``EXACT_ROWWISE_ADAGRAD`` fused table optimizer as an optax transformation.

    With ``lr = float32(schedule(count))`` (a float64 table: ``schedule(count)``), for each row ``g`` of ``D`` elements
    (the last axis is the embedding dimension, every other axis indexes rows)::

        m = m + sum(g * g) / D                     # one m per row, starting at 0
        update = -(lr / (sqrt(m) + eps)) * g       # fbgemm: w += g * (-lr / (sqrt(m) + eps))

    The accumulator sums the row's MEAN square, not its sum; ``eps`` is added
    after the square root. Weight decay is refused (see ``weight_decay``).

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.
        eps: added to ``sqrt(m)``, ``> 0`` (fbgemm's default ``1e-8``); a number or a scalar array.
        weight_decay: must be 0, fbgemm's default. fbgemm's default ``weight_decay_mode``
            (``NONE``) ignores any other value, and so does its CPU float32 kernel under
            ``L2`` and ``DECOUPLE`` for a table not shared between features.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`FusedAdagradState`
        (its accumulator has each parameter's shape without the last axis).

    Raises:
        ValueError: ``learning_rate`` is negative or not finite, ``eps`` is not
            ``> 0``, ``weight_decay`` is not 0; at ``init``, a parameter with fewer than 2 axes.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = fused_exact_rowwise_adagrad(0.5)
        >>> state = tx.init(jnp.zeros((2, 2)))
        >>> updates, state = tx.update(jnp.array([[3.0, -4.0], [0.0, 0.0]]), state)
        >>> state.accumulator.tolist()  # (9 + 16) / 2 for row 0; row 1 was not looked up
        [12.5, 0.0]
        >>> [round(float(u), 4) for u in updates[0]], updates[1].tolist()  # -0.5 / sqrt(12.5) * g
        ([-0.4243, 0.5657], [-0.0, -0.0])
    """
    name = "fused_exact_rowwise_adagrad"
    parts.hyper_parameter(name, _check_no_weight_decay, weight_decay, "weight_decay")
    return _adagrad(name, learning_rate, eps, rowwise=True)
