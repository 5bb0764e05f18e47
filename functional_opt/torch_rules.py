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

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_opt import config as config_lib
from functional_opt import schedules
from functional_opt import torch_rule_parts as parts

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

HyperParameter = parts.HyperParameter
LearningRateLike = parts.LearningRateLike
PROBE_STEPS = parts.PROBE_STEPS


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
    schedule = parts.as_schedule(name, learning_rate)
    b1 = parts.hyper_parameter(name, config_lib._check_beta, b1, "b1")
    b2 = parts.hyper_parameter(name, config_lib._check_beta, b2, "b2")
    eps = parts.hyper_parameter(name, config_lib._check_eps, eps, "eps")

    def init_fn(params: optax.Params) -> TorchAdamState:
        return TorchAdamState(
            count=parts.zero_count(),
            learning_rate=parts.lr_at(schedule, parts.zero_count()),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
            built_from={
                "b1": parts.recorded(b1),
                "b2": parts.recorded(b2),
                "eps": parts.recorded(eps),
                "learning_rate": parts.recorded_schedule(learning_rate, schedule),
            },
        )

    def update_fn(
        updates: optax.Updates, state: TorchAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, TorchAdamState]:
        del params
        lr = parts.lr_at(schedule, state.count)
        count = optax.safe_increment(state.count)
        bias_correction1, bias_correction2_sqrt = parts.adam_corrections(b1, b2, count.astype(lr.dtype))
        step_size = lr / bias_correction1
        mu = jax.tree.map(lambda g, m: parts.adam_first_moment(g, m, b1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: parts.adam_second_moment(g, v, b2), updates, state.nu)
        new_updates = jax.tree.map(lambda m, v: parts.adam_step(m, v, step_size, bias_correction2_sqrt, eps), mu, nu)
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
    schedule = parts.as_schedule(name, learning_rate)
    lr_decay = parts.hyper_parameter(name, config_lib._check_eps, lr_decay, "lr_decay")
    eps = parts.hyper_parameter(name, config_lib._check_eps, eps, "eps")
    initial_accumulator_value = parts.hyper_parameter(
        name, config_lib._check_eps, initial_accumulator_value, "initial_accumulator_value"
    )

    def init_fn(params: optax.Params) -> TorchAdagradState:
        return TorchAdagradState(
            count=parts.zero_count(),
            learning_rate=parts.lr_at(schedule, parts.zero_count()),
            sum_of_squares=jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params),
            built_from={
                "eps": parts.recorded(eps),
                "initial_accumulator_value": parts.recorded(initial_accumulator_value),
                "learning_rate": parts.recorded_schedule(learning_rate, schedule),
                "lr_decay": parts.recorded(lr_decay),
            },
        )

    def update_fn(
        updates: optax.Updates, state: TorchAdagradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, TorchAdagradState]:
        del params
        lr = parts.lr_at(schedule, state.count)
        count = optax.safe_increment(state.count)
        step = count.astype(lr.dtype)
        clr = lr / (1 + (step - 1) * parts.like(lr_decay, step))
        sums = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        new_updates = jax.tree.map(
            lambda g, s: (-clr.astype(g.dtype) * g) / (jnp.sqrt(s) + parts.like(eps, s)), updates, sums
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
            count=parts.zero_count(),
            learning_rate=parts.lr_at(schedule, parts.zero_count()),
            built_from={
                "learning_rate": parts.recorded_schedule(learning_rate, schedule),
                **{key: parts.recorded(value) for key, value in record.items()},
            },
        )

    def update_fn(
        updates: optax.Updates, state: ScaleByLearningRateState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByLearningRateState]:
        del params
        lr = parts.lr_at(schedule, state.count)
        new_updates = jax.tree.map(lambda g: parts.sgd_step(g, lr), updates)
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
    return _scale(learning_rate, parts.as_schedule("scale_by_learning_rate", learning_rate))


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
    momentum = parts.hyper_parameter(name, config_lib._check_eps, momentum, "momentum")
    scale = _scale(learning_rate, parts.as_schedule(name, learning_rate), {"momentum": momentum})
    if not parts.is_array(momentum) and momentum == 0.0:
        return scale
    return optax.chain(optax.trace(decay=momentum, nesterov=False), scale)
