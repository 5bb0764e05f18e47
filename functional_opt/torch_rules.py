"""torch's update rules (Adam, SGD, Adagrad) as optax transformations.

The transformations reproduce ``torch.optim.Adam``, ``torch.optim.SGD`` and
``torch.optim.Adagrad`` (their single-tensor code paths, without weight
decay, AMSGrad, Nesterov or dampening) operation for operation; see each
factory for its formula. ``lr`` is ``schedule(count)`` where ``count`` is the
number of updates already applied, so the k-th update (k = 0, 1, ...) uses
``schedule(k)``.

Hyper-parameters are Python numbers (validated at build time) or scalar
arrays, which is what ``optax.inject_hyperparams`` passes: a concrete array
is validated like a number, a traced one (inside ``jax.jit``) cannot be and is
used as it is. With numbers the factories fold them into the computation as
torch does; with arrays the same operations run on the arrays, so in float64
an injected optimizer gives bitwise the same steps as the plain one.

Each state records what its transformation was built from in
``built_from``: the numeric hyper-parameters and the learning rate at the
steps :data:`PROBE_STEPS`, as arrays (``nan`` for a hyper-parameter given as
an array: the injecting state holds it). The record survives any checkpointer
that saves arrays; :func:`functional_opt.opt_state.check_state` compares a
restored state's record with a fresh one.

Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> tx = optax.inject_hyperparams(torch_adam)(learning_rate=0.1, b1=0.9)
    >>> state = tx.init(jnp.zeros(2))
    >>> updates, state = jax.jit(tx.update)(jnp.array([1.0, -2.0]), state)
    >>> [round(float(u), 4) for u in updates]
    [-0.1, 0.1]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from functional_opt import config as config_lib
from functional_opt import schedules

__all__ = [
    "PROBE_STEPS",
    "ScaleByLearningRateState",
    "TorchAdagradState",
    "TorchAdamState",
    "scale_by_learning_rate",
    "torch_adagrad",
    "torch_adam",
    "torch_sgd",
]

HyperParameter = float | jax.Array
LearningRateLike = float | jax.Array | schedules.Schedule

PROBE_STEPS: tuple[int, ...] = (
    0,
    1,
    2,
    3,
    5,
    10,
    20,
    50,
    100,
    200,
    500,
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    10_000_000,
    100_000_000,
)
"""The steps at which a state records its learning rate (``built_from["learning_rate"]``)."""


class TorchAdamState(NamedTuple):
    """State of :func:`torch_adam`.

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (``schedule(0)`` before the first).
        mu: first moments ``m``.
        nu: second moments ``v``.
        built_from: ``b1``, ``b2``, ``eps`` and ``learning_rate`` (the schedule at
            :data:`PROBE_STEPS`) the transformation was built with.
    """

    count: jax.Array
    learning_rate: jax.Array
    mu: optax.Updates
    nu: optax.Updates
    built_from: dict[str, jax.Array]


class TorchAdagradState(NamedTuple):
    """State of :func:`torch_adagrad`.

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (``schedule(0)`` before the first).
        sum_of_squares: the accumulator ``s``.
        built_from: ``lr_decay``, ``eps``, ``initial_accumulator_value`` and
            ``learning_rate`` (the schedule at :data:`PROBE_STEPS`).
    """

    count: jax.Array
    learning_rate: jax.Array
    sum_of_squares: optax.Updates
    built_from: dict[str, jax.Array]


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate` (and of :func:`torch_sgd`'s scaling).

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (``schedule(0)`` before the first).
        built_from: ``learning_rate`` (the schedule at :data:`PROBE_STEPS`), and
            ``momentum`` for :func:`torch_sgd`.
    """

    count: jax.Array
    learning_rate: jax.Array
    built_from: dict[str, jax.Array]


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | np.ndarray | jax.core.Tracer)


def _hyper_parameter(name: str, checker: Callable[[float, str], float], value: Any, field: str) -> HyperParameter:
    """A number validated to a Python float; a scalar array validated when concrete and kept as an array."""
    if _is_array(value):
        if np.ndim(value) != 0:
            raise ValueError(f"{name}: {field} must be a scalar, got an array of shape {np.shape(value)}")
        if not jnp.issubdtype(value.dtype, jnp.number) or jnp.issubdtype(value.dtype, jnp.complexfloating):
            raise ValueError(f"{name}: {field} must be a real number, got an array of dtype {value.dtype}")
        if not isinstance(value, jax.core.Tracer):
            try:
                checker(float(value), field)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        return jnp.asarray(value)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name}: {field}={value!r} must be a number, got {type(value).__name__}")
    try:
        return checker(float(value), field)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _as_schedule(name: str, learning_rate: LearningRateLike) -> schedules.Schedule:
    """A schedule as it is, an array as a constant of it, a number as :func:`schedules.constant`."""
    if callable(learning_rate):
        return learning_rate
    if _is_array(learning_rate):
        value = _hyper_parameter(name, config_lib._check_learning_rate, learning_rate, "learning_rate")
        return lambda count: value
    try:
        return schedules.constant(learning_rate)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: learning_rate: {exc}") from None


def _recorded(value: HyperParameter) -> jax.Array:
    """A build-time number as an array of the default float type; ``nan`` for an array (held by its injector)."""
    return jnp.asarray(math.nan if _is_array(value) else value, dtype=jnp.result_type(float))


def _recorded_schedule(learning_rate: LearningRateLike, schedule: schedules.Schedule) -> jax.Array:
    """The schedule at :data:`PROBE_STEPS`, or ``nan`` there for a learning rate given as an array."""
    steps = jnp.asarray(PROBE_STEPS, dtype=jnp.int32)
    if _is_array(learning_rate):
        return jnp.full(steps.shape, math.nan, dtype=jnp.result_type(float))
    return jax.vmap(lambda step: _lr_at(schedule, step))(steps)


def _lr_at(schedule: schedules.Schedule, count: jax.Array) -> jax.Array:
    """``schedule(count)`` as a scalar in JAX's default float type."""
    return jnp.asarray(schedule(count), dtype=jnp.result_type(float))


def _zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _like(value: HyperParameter, x: jax.Array) -> HyperParameter:
    """An array hyper-parameter in ``x``'s dtype (a Python float is weakly typed already)."""
    return value.astype(x.dtype) if _is_array(value) else value


def _lerp(start: jax.Array, end: jax.Array, weight: HyperParameter) -> jax.Array:
    """torch's ``start.lerp(end, weight)`` for a scalar weight, same branch, same order."""
    if not _is_array(weight):
        if abs(weight) < 0.5:
            return start + weight * (end - start)
        return end - (end - start) * (1.0 - weight)
    weight = _like(weight, start)
    return jnp.where(jnp.abs(weight) < 0.5, start + weight * (end - start), end - (end - start) * (1.0 - weight))


def _bias_correction(beta: HyperParameter, step: jax.Array) -> jax.Array:
    """``1 - beta**step``, torch's bias correction, accurate in float32 too.

    In float64 this is torch's own expression. torch evaluates it in float64
    even for float32 parameters; in float32, ``1 - beta**step`` cancels
    (for ``beta = 0.999`` and ``step = 1`` it is off by 1.3e-5 relative), so
    it is computed as ``-expm1(step * log(beta))`` with ``log(beta)`` taken in
    float64 for a number (within a few float32 ulps of torch's value), in
    float32 for an array.
    """
    if step.dtype == jnp.float64:
        return 1 - _like(beta, step) ** step
    if _is_array(beta):
        return -jnp.expm1(step * jnp.log(_like(beta, step)))  # beta = 0: log gives -inf, the result 1
    if beta == 0.0:
        return jnp.ones_like(step)
    return -jnp.expm1(step * math.log(beta))


def _adam_corrections(b1: HyperParameter, b2: HyperParameter, step: jax.Array) -> tuple[jax.Array, jax.Array]:
    """torch Adam's ``1 - b1**t`` and ``sqrt(1 - b2**t)`` at the float step ``t`` (the count after the update)."""
    return _bias_correction(b1, step), _bias_correction(b2, step) ** 0.5


def _adam_first_moment(g: jax.Array, m: jax.Array, b1: HyperParameter) -> jax.Array:
    """torch Adam's ``m.lerp_(g, 1 - b1)`` for one leaf."""
    return _lerp(m, g, 1 - b1)


def _adam_second_moment(g: jax.Array, v: jax.Array, b2: HyperParameter) -> jax.Array:
    """torch Adam's ``v.mul_(b2).addcmul_(g, g, value=1 - b2)`` for one leaf."""
    return v * _like(b2, v) + (1 - _like(b2, v)) * g * g


def _adam_step(
    m: jax.Array, v: jax.Array, step_size: jax.Array, bias_correction2_sqrt: jax.Array, eps: HyperParameter
) -> jax.Array:
    """torch Adam's step for one leaf: ``(-step_size * m) / (sqrt(v) / sqrt(1 - b2**t) + eps)``."""
    denom = jnp.sqrt(v) / bias_correction2_sqrt.astype(v.dtype) + _like(eps, v)
    return (-step_size.astype(m.dtype) * m) / denom


def _sgd_step(g: jax.Array, lr: jax.Array) -> jax.Array:
    """The scaled SGD step for one leaf: ``-lr * g``."""
    return -lr.astype(g.dtype) * g


def torch_adam(
    learning_rate: LearningRateLike,
    b1: HyperParameter = 0.9,
    b2: HyperParameter = 0.999,
    eps: HyperParameter = 1e-7,
) -> optax.GradientTransformation:
    """``torch.optim.Adam`` (no weight decay, no AMSGrad) as an optax transformation.

    With ``t = count + 1`` and ``lr = schedule(count)``::

        m = m + (1 - b1) * (g - m)                 # torch's lerp_, for b1 > 0.5
        v = v * b2 + (1 - b2) * g * g
        update = (-(lr / (1 - b1**t)) * m) / (sqrt(v) / sqrt(1 - b2**t) + eps)

    ``eps`` is added after the bias-corrected square root (optax's
    ``scale_by_adam`` adds it to ``sqrt(v_hat)`` too but applies the learning
    rate afterwards, which rounds differently). The defaults are TML's
    (``eps = 1e-7``, torch's own is ``1e-8``). The learning rate is folded into
    the step as torch does, so it is not a separate ``scale_by_learning_rate``.

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.
        b1: decay of the first moment, in ``[0, 1)``; a number or a scalar array.
        b2: decay of the second moment, in ``[0, 1)``; a number or a scalar array.
        eps: added to the denominator, ``>= 0``; a number or a scalar array.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`TorchAdamState`.

    Raises:
        ValueError: a hyper-parameter is out of range (an array is checked when concrete).

    Example:
        >>> import jax.numpy as jnp
        >>> tx = torch_adam(0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> updates, state = tx.update(jnp.array([1.0, -2.0]), state)
        >>> [round(float(u), 4) for u in updates]  # the first Adam step is about -lr * sign(g)
        [-0.1, 0.1]
    """
    name = "torch_adam"
    schedule = _as_schedule(name, learning_rate)
    b1 = _hyper_parameter(name, config_lib._check_beta, b1, "b1")
    b2 = _hyper_parameter(name, config_lib._check_beta, b2, "b2")
    eps = _hyper_parameter(name, config_lib._check_eps, eps, "eps")

    def init_fn(params: optax.Params) -> TorchAdamState:
        return TorchAdamState(
            count=_zero_count(),
            learning_rate=_lr_at(schedule, _zero_count()),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            built_from={
                "b1": _recorded(b1),
                "b2": _recorded(b2),
                "eps": _recorded(eps),
                "learning_rate": _recorded_schedule(learning_rate, schedule),
            },
        )

    def update_fn(
        updates: optax.Updates, state: TorchAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, TorchAdamState]:
        del params
        lr = _lr_at(schedule, state.count)
        count = optax.safe_increment(state.count)
        bias_correction1, bias_correction2_sqrt = _adam_corrections(b1, b2, count.astype(lr.dtype))
        step_size = lr / bias_correction1
        mu = jax.tree.map(lambda g, m: _adam_first_moment(g, m, b1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: _adam_second_moment(g, v, b2), updates, state.nu)
        new_updates = jax.tree.map(lambda m, v: _adam_step(m, v, step_size, bias_correction2_sqrt, eps), mu, nu)
        return new_updates, state._replace(count=count, learning_rate=lr, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def torch_adagrad(
    learning_rate: LearningRateLike,
    lr_decay: HyperParameter = 0.0,
    eps: HyperParameter = 0.0,
    initial_accumulator_value: HyperParameter = 0.0,
) -> optax.GradientTransformation:
    """``torch.optim.Adagrad`` (no weight decay) as an optax transformation.

    With ``t = count + 1`` and ``lr = schedule(count)``::

        s = s + g * g                              # s starts at initial_accumulator_value
        clr = lr / (1 + (t - 1) * lr_decay)
        update = (-clr * g) / (sqrt(s) + eps)

    Unlike ``optax.adagrad`` the accumulator starts at
    ``initial_accumulator_value`` (0 by default, optax uses 0.1) and ``eps`` is
    added after the square root.

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.
        lr_decay: torch's learning-rate decay, ``>= 0``.
        eps: added to ``sqrt(s)``, ``>= 0`` (with ``eps = 0`` a coordinate whose
            accumulator is still 0 gives NaN, as in torch).
        initial_accumulator_value: the accumulator's start, ``>= 0``.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`TorchAdagradState`.

    Raises:
        ValueError: a hyper-parameter is out of range (an array is checked when concrete).

    Example:
        >>> import jax.numpy as jnp
        >>> tx = torch_adagrad(0.5, eps=1e-10)
        >>> state = tx.init(jnp.zeros(2))
        >>> updates, state = tx.update(jnp.array([2.0, -4.0]), state)
        >>> [round(float(u), 6) for u in updates]
        [-0.5, 0.5]
    """
    name = "torch_adagrad"
    schedule = _as_schedule(name, learning_rate)
    lr_decay = _hyper_parameter(name, config_lib._check_eps, lr_decay, "lr_decay")
    eps = _hyper_parameter(name, config_lib._check_eps, eps, "eps")
    initial_accumulator_value = _hyper_parameter(
        name, config_lib._check_eps, initial_accumulator_value, "initial_accumulator_value"
    )

    def init_fn(params: optax.Params) -> TorchAdagradState:
        return TorchAdagradState(
            count=_zero_count(),
            learning_rate=_lr_at(schedule, _zero_count()),
            sum_of_squares=jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params),
            built_from={
                "eps": _recorded(eps),
                "initial_accumulator_value": _recorded(initial_accumulator_value),
                "learning_rate": _recorded_schedule(learning_rate, schedule),
                "lr_decay": _recorded(lr_decay),
            },
        )

    def update_fn(
        updates: optax.Updates, state: TorchAdagradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, TorchAdagradState]:
        del params
        lr = _lr_at(schedule, state.count)
        count = optax.safe_increment(state.count)
        step = count.astype(lr.dtype)
        clr = lr / (1 + (step - 1) * _like(lr_decay, step))
        sums = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        new_updates = jax.tree.map(
            lambda g, s: (-clr.astype(g.dtype) * g) / (jnp.sqrt(s) + _like(eps, s)), updates, sums
        )
        return new_updates, state._replace(count=count, learning_rate=lr, sum_of_squares=sums)

    return optax.GradientTransformation(init_fn, update_fn)


def _scale(
    learning_rate: LearningRateLike, schedule: schedules.Schedule, record: dict[str, HyperParameter] | None = None
) -> optax.GradientTransformation:
    """:func:`scale_by_learning_rate` whose record holds ``record`` too (``momentum`` for SGD)."""
    record = dict(record or {})

    def init_fn(params: optax.Params) -> ScaleByLearningRateState:
        del params
        return ScaleByLearningRateState(
            count=_zero_count(),
            learning_rate=_lr_at(schedule, _zero_count()),
            built_from={
                "learning_rate": _recorded_schedule(learning_rate, schedule),
                **{key: _recorded(value) for key, value in record.items()},
            },
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByLearningRateState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByLearningRateState]:
        del params
        lr = _lr_at(schedule, state.count)
        new_updates = jax.tree.map(lambda g: _sgd_step(g, lr), updates)
        return new_updates, state._replace(count=optax.safe_increment(state.count), learning_rate=lr)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(learning_rate: LearningRateLike) -> optax.GradientTransformation:
    """``update = -lr * g`` with ``lr = schedule(count)``, keeping ``lr`` in the state.

    Like ``optax.scale_by_learning_rate`` (same sign, same step count), but
    the state records the rate the last update used.

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`ScaleByLearningRateState`.

    Raises:
        ValueError: ``learning_rate`` is negative or not finite.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = scale_by_learning_rate(lambda count: 0.5 * (count + 1))
        >>> state = tx.init(jnp.zeros(1))
        >>> updates, state = tx.update(jnp.ones(1), state)
        >>> float(updates[0]), float(state.learning_rate)
        (-0.5, 0.5)
    """
    return _scale(learning_rate, _as_schedule("scale_by_learning_rate", learning_rate))


def torch_sgd(learning_rate: LearningRateLike, momentum: HyperParameter = 0.0) -> optax.GradientTransformation:
    """``torch.optim.SGD`` (dampening 0, no Nesterov, no weight decay) as an optax transformation.

    ``optax.chain(optax.trace(momentum), scale_by_learning_rate(lr))``;
    ``optax.trace`` starts its buffer at 0, so its first step gives
    ``buf = g`` exactly as torch's. With a momentum of the number 0 only the
    scaling is used (no buffer); a momentum given as an array always keeps the
    buffer, so the state has one structure whatever the array holds::

        buf = g                      (first step)
        buf = momentum * buf + g     (later steps)
        update = -lr * buf

    Args:
        learning_rate: a number, a scalar array or a schedule of the update count.
        momentum: ``>= 0``; a number or a scalar array.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        ValueError: ``momentum`` is negative or not finite.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = torch_sgd(0.1, momentum=0.5)
        >>> state = tx.init(jnp.zeros(1))
        >>> steps = []
        >>> for _ in range(3):
        ...     updates, state = tx.update(jnp.ones(1), state)
        ...     steps.append(round(float(updates[0]), 6))
        >>> steps
        [-0.1, -0.15, -0.175]
    """
    name = "torch_sgd"
    momentum = _hyper_parameter(name, config_lib._check_eps, momentum, "momentum")
    scale = _scale(learning_rate, _as_schedule(name, learning_rate), {"momentum": momentum})
    if not _is_array(momentum) and momentum == 0.0:
        return scale
    return optax.chain(optax.trace(decay=momentum, nesterov=False), scale)
