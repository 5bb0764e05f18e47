"""optax optimizers that follow torch's update rules, driven by the config's schedules.

optax's own ``adam``, ``sgd`` and ``adagrad`` differ from torch's in small but
visible ways (where ``eps`` goes, Adagrad's initial accumulator, when the
learning rate is applied). The transformations here reproduce
``torch.optim.Adam``, ``torch.optim.SGD`` and ``torch.optim.Adagrad``
(their single-tensor code paths, without weight decay, AMSGrad, Nesterov or
dampening) operation for operation:

* :func:`torch_adam`, with ``t`` the 1-based step::

      m = lerp(m, g, 1 - b1)                   # m + (1 - b1) * (g - m)
      v = v * b2 + (1 - b2) * g * g
      update = (-(lr / (1 - b1**t)) * m) / (sqrt(v) / sqrt(1 - b2**t) + eps)

* :func:`torch_sgd`: ``buf = g`` at the first step, then ``buf = momentum * buf + g``;
  ``update = -lr * buf`` (``update = -lr * g`` when ``momentum == 0``).
* :func:`torch_adagrad`: ``s`` starts at ``initial_accumulator_value``; ``s = s + g * g``;
  ``clr = lr / (1 + (t - 1) * lr_decay)``; ``update = (-clr * g) / (sqrt(s) + eps)``.

``lr`` is ``schedule(count)`` where ``count`` is the number of updates already
applied, so the k-th update (k = 0, 1, ...) uses ``schedule(k)``, as the torch
bridge does. Apply the result with ``optax.apply_updates`` (``p + update``).

Precision: the scalars (``lr``, the bias corrections, ``clr``) are computed
in JAX's default float type and cast to each parameter's dtype, as torch
computes them in Python floats and casts them. In float32, Adam's bias
corrections are computed without the cancellation of ``1 - b**t`` (for
``b2 = 0.999`` the plain float32 expression is 1.3e-5 relative off at the
first step, which moves Adam's step by 6e-6 relative). In float64 the two sides agree to a few units in the last place
per step, not bitwise: torch's vectorised CPU ``sqrt`` is not correctly
rounded and XLA turns a division by a scalar into a multiplication by its
reciprocal.

The learning rate is part of each optimizer's state: :func:`learning_rate`
reads it from the state of :func:`build_optimizer`'s transformation and
:func:`group_learning_rates` reads every group's from the state of
:func:`build_recap_optimizer`'s. Off by one, as ``optax.inject_hyperparams``:
after ``n >= 1`` updates the state holds ``schedule(n - 1)``, the rate the
last update used; right after ``init`` it holds ``schedule(0)``, the rate the
first update will use.

Example:
    >>> import jax.numpy as jnp
    >>> import optax
    >>> from functional_opt import config, optimizers
    >>> cfg = config.OptimizerConfig(
    ...     sgd={"lr": 0.1, "momentum": 0.9},
    ...     learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 4}})
    >>> tx = optimizers.build_optimizer(cfg)
    >>> params = {"w": jnp.ones(2)}
    >>> state = tx.init(params)
    >>> for _ in range(3):
    ...     updates, state = tx.update({"w": jnp.ones(2)}, state)
    ...     params = optax.apply_updates(params, updates)
    >>> round(float(optimizers.learning_rate(state)), 6)  # the third update used schedule(2)
    0.05
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from functional_opt import config as config_lib
from functional_opt import grouping, schedules

__all__ = [
    "ScaleByLearningRateState",
    "TorchAdagradState",
    "TorchAdamState",
    "build_optimizer",
    "build_recap_optimizer",
    "group_learning_rates",
    "learning_rate",
    "recap_labels",
    "scale_by_learning_rate",
    "torch_adagrad",
    "torch_adam",
    "torch_sgd",
]

LearningRateLike = float | schedules.Schedule


class TorchAdamState(NamedTuple):
    """State of :func:`torch_adam`.

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (``schedule(0)`` before the first).
        mu: first moments ``m``.
        nu: second moments ``v``.
    """

    count: jax.Array
    learning_rate: jax.Array
    mu: optax.Updates
    nu: optax.Updates


class TorchAdagradState(NamedTuple):
    """State of :func:`torch_adagrad`.

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (``schedule(0)`` before the first).
        sum_of_squares: the accumulator ``s``.
    """

    count: jax.Array
    learning_rate: jax.Array
    sum_of_squares: optax.Updates


class ScaleByLearningRateState(NamedTuple):
    """State of :func:`scale_by_learning_rate`.

    Attributes:
        count: number of updates applied (int32).
        learning_rate: the rate of the last update (``schedule(0)`` before the first).
    """

    count: jax.Array
    learning_rate: jax.Array


def _as_schedule(name: str, learning_rate: LearningRateLike) -> schedules.Schedule:
    """A schedule as it is, a number as :func:`schedules.constant` (validated)."""
    if callable(learning_rate):
        return learning_rate
    try:
        return schedules.constant(learning_rate)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: learning_rate: {exc}") from None


def _check(name: str, checker: Any, value: float, field: str) -> float:
    try:
        return checker(float(value), field)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _lr_at(schedule: schedules.Schedule, count: jax.Array) -> jax.Array:
    """``schedule(count)`` as a scalar in JAX's default float type."""
    return jnp.asarray(schedule(count), dtype=jnp.result_type(float))


def _zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _lerp(start: jax.Array, end: jax.Array, weight: float) -> jax.Array:
    """torch's ``start.lerp(end, weight)`` for a Python-float weight, same branch, same order."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1.0 - weight)


def _bias_correction(beta: float, step: jax.Array) -> jax.Array:
    """``1 - beta**step``, torch's bias correction, accurate in float32 too.

    In float64 this is torch's own expression. torch evaluates it in float64
    even for float32 parameters; in float32, ``1 - beta**step`` cancels
    (for ``beta = 0.999`` and ``step = 1`` it is off by 1.3e-5 relative), so
    it is computed as ``-expm1(step * log(beta))`` with ``log(beta)`` taken in
    float64, which is within a few float32 ulps of torch's value.
    """
    if step.dtype == jnp.float64:
        return 1 - beta**step
    if beta == 0.0:
        return jnp.ones_like(step)
    return -jnp.expm1(step * math.log(beta))


def torch_adam(
    learning_rate: LearningRateLike, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-7
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
        learning_rate: a number or a schedule of the update count.
        b1: decay of the first moment, in ``[0, 1)``.
        b2: decay of the second moment, in ``[0, 1)``.
        eps: added to the denominator, ``>= 0``.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`TorchAdamState`.

    Raises:
        ValueError: a hyper-parameter is out of range.

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
    b1 = _check(name, config_lib._check_beta, b1, "b1")
    b2 = _check(name, config_lib._check_beta, b2, "b2")
    eps = _check(name, config_lib._check_eps, eps, "eps")

    def init_fn(params: optax.Params) -> TorchAdamState:
        return TorchAdamState(
            count=_zero_count(),
            learning_rate=_lr_at(schedule, _zero_count()),
            mu=optax.tree.zeros_like(params),
            nu=optax.tree.zeros_like(params),
        )

    def update_fn(
        updates: optax.Updates, state: TorchAdamState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, TorchAdamState]:
        del params
        lr = _lr_at(schedule, state.count)
        count = optax.safe_increment(state.count)
        step = count.astype(lr.dtype)
        bias_correction1 = _bias_correction(b1, step)
        bias_correction2 = _bias_correction(b2, step)
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        mu = jax.tree.map(lambda g, m: _lerp(m, g, 1 - b1), updates, state.mu)
        nu = jax.tree.map(lambda g, v: v * b2 + (1 - b2) * g * g, updates, state.nu)

        def step_of(m: jax.Array, v: jax.Array) -> jax.Array:
            denom = jnp.sqrt(v) / bias_correction2_sqrt.astype(v.dtype) + eps
            return (-step_size.astype(m.dtype) * m) / denom

        new_updates = jax.tree.map(step_of, mu, nu)
        return new_updates, TorchAdamState(count=count, learning_rate=lr, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


def torch_adagrad(
    learning_rate: LearningRateLike,
    lr_decay: float = 0.0,
    eps: float = 0.0,
    initial_accumulator_value: float = 0.0,
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
        learning_rate: a number or a schedule of the update count.
        lr_decay: torch's learning-rate decay, ``>= 0``.
        eps: added to ``sqrt(s)``, ``>= 0`` (with ``eps = 0`` a coordinate whose
            accumulator is still 0 gives NaN, as in torch).
        initial_accumulator_value: the accumulator's start, ``>= 0``.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`TorchAdagradState`.

    Raises:
        ValueError: a hyper-parameter is out of range.

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
    lr_decay = _check(name, config_lib._check_eps, lr_decay, "lr_decay")
    eps = _check(name, config_lib._check_eps, eps, "eps")
    initial_accumulator_value = _check(
        name, config_lib._check_eps, initial_accumulator_value, "initial_accumulator_value"
    )

    def init_fn(params: optax.Params) -> TorchAdagradState:
        return TorchAdagradState(
            count=_zero_count(),
            learning_rate=_lr_at(schedule, _zero_count()),
            sum_of_squares=jax.tree.map(lambda p: jnp.full_like(p, initial_accumulator_value), params),
        )

    def update_fn(
        updates: optax.Updates, state: TorchAdagradState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, TorchAdagradState]:
        del params
        lr = _lr_at(schedule, state.count)
        count = optax.safe_increment(state.count)
        step = count.astype(lr.dtype)
        clr = lr / (1 + (step - 1) * lr_decay)
        sums = jax.tree.map(lambda g, s: s + g * g, updates, state.sum_of_squares)
        new_updates = jax.tree.map(lambda g, s: (-clr.astype(g.dtype) * g) / (jnp.sqrt(s) + eps), updates, sums)
        return new_updates, TorchAdagradState(count=count, learning_rate=lr, sum_of_squares=sums)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_learning_rate(learning_rate: LearningRateLike) -> optax.GradientTransformation:
    """``update = -lr * g`` with ``lr = schedule(count)``, keeping ``lr`` in the state.

    Like ``optax.scale_by_learning_rate`` (same sign, same step count), but
    the state records the rate the last update used.

    Args:
        learning_rate: a number or a schedule of the update count.

    Returns:
        An ``optax.GradientTransformation`` whose state is :class:`ScaleByLearningRateState`.

    Example:
        >>> import jax.numpy as jnp
        >>> tx = scale_by_learning_rate(lambda count: 0.5 * (count + 1))
        >>> state = tx.init(jnp.zeros(1))
        >>> updates, state = tx.update(jnp.ones(1), state)
        >>> float(updates[0]), float(state.learning_rate)
        (-0.5, 0.5)
    """
    schedule = _as_schedule("scale_by_learning_rate", learning_rate)

    def init_fn(params: optax.Params) -> ScaleByLearningRateState:
        del params
        return ScaleByLearningRateState(count=_zero_count(), learning_rate=_lr_at(schedule, _zero_count()))

    def update_fn(
        updates: optax.Updates, state: ScaleByLearningRateState, params: optax.Params | None = None
    ) -> tuple[optax.Updates, ScaleByLearningRateState]:
        del params
        lr = _lr_at(schedule, state.count)
        new_updates = jax.tree.map(lambda g: -lr.astype(g.dtype) * g, updates)
        return new_updates, ScaleByLearningRateState(count=optax.safe_increment(state.count), learning_rate=lr)

    return optax.GradientTransformation(init_fn, update_fn)


def torch_sgd(learning_rate: LearningRateLike, momentum: float = 0.0) -> optax.GradientTransformation:
    """``torch.optim.SGD`` (dampening 0, no Nesterov, no weight decay) as an optax transformation.

    ``optax.chain(optax.trace(momentum), scale_by_learning_rate(lr))``;
    ``optax.trace`` starts its buffer at 0, so its first step gives
    ``buf = g`` exactly as torch's. Without momentum only the scaling is used::

        buf = g                      (first step)
        buf = momentum * buf + g     (later steps)
        update = -lr * buf

    Args:
        learning_rate: a number or a schedule of the update count.
        momentum: ``>= 0``; 0 keeps no buffer.

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
    momentum = _check(name, config_lib._check_eps, momentum, "momentum")
    scale = scale_by_learning_rate(_as_schedule(name, learning_rate))
    if momentum == 0.0:
        return scale
    return optax.chain(optax.trace(decay=momentum, nesterov=False), scale)


def _schedule_of(optimizer_config: config_lib.OptimizerConfig) -> schedules.Schedule:
    if optimizer_config.learning_rate is not None:
        return schedules.schedule_from_config(optimizer_config.learning_rate)
    return schedules.constant(config_lib.get_optimizer_algorithm_config(optimizer_config).lr)


def build_optimizer(optimizer_config: config_lib.OptimizerConfig) -> optax.GradientTransformation:
    """The optimizer an :class:`~functional_opt.config.OptimizerConfig` describes, with torch's rules.

    ``adam`` gives :func:`torch_adam`, ``sgd`` :func:`torch_sgd`, ``adagrad``
    :func:`torch_adagrad`. The schedule is ``learning_rate``; when that is
    null, the algorithm's ``lr`` as a constant. The k-th update uses
    ``schedule(k)``; :func:`learning_rate` reads the rate of the last update
    from the state (``schedule(n - 1)`` after ``n >= 1`` updates).

    Args:
        optimizer_config: the generic optimizer config.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        TypeError: ``optimizer_config`` is not an ``OptimizerConfig``.

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import config
        >>> cfg = config.OptimizerConfig(adagrad={"lr": 0.5, "eps": 1e-10})
        >>> tx = build_optimizer(cfg)
        >>> state = tx.init(jnp.zeros(1))
        >>> updates, state = tx.update(jnp.ones(1), state)
        >>> round(float(updates[0]), 6), float(learning_rate(state))
        (-0.5, 0.5)
    """
    if not isinstance(optimizer_config, config_lib.OptimizerConfig):
        raise TypeError(f"build_optimizer: expected an OptimizerConfig, got {type(optimizer_config).__name__}")
    schedule = _schedule_of(optimizer_config)
    if optimizer_config.adam is not None:
        adam = optimizer_config.adam
        return torch_adam(schedule, b1=adam.betas[0], b2=adam.betas[1], eps=adam.eps)
    if optimizer_config.sgd is not None:
        return torch_sgd(schedule, momentum=optimizer_config.sgd.momentum)
    adagrad = optimizer_config.adagrad
    if adagrad is None:  # unreachable for a validated OptimizerConfig
        raise ValueError(f"build_optimizer: no algorithm set in {optimizer_config!r}")
    return torch_adagrad(
        schedule,
        lr_decay=adagrad.lr_decay,
        eps=adagrad.eps,
        initial_accumulator_value=adagrad.initial_accumulator_value,
    )


def recap_labels(
    params: optax.Params,
    recap_config: config_lib.RecapOptimizerConfig,
    emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None = None,
) -> tuple[list[grouping.ParamGroup], Any]:
    """The recap groups of a params pytree and a pytree of group names shaped like it.

    Leaves are named by :func:`functional_opt.grouping.named_leaves` (the pytree
    path joined with ``"."``) and grouped by
    :func:`functional_opt.grouping.recap_groups`.

    Args:
        params: the parameters (any pytree).
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
    names = [name for name, _ in grouping.named_leaves(params)]
    groups = grouping.recap_groups(names, recap_config, emb_optimizer_config)
    group_of = {name: group.name for group in groups for name in group.param_names}
    treedef = jax.tree_util.tree_structure(params)
    labels = jax.tree_util.tree_unflatten(treedef, [group_of[name] for name in names])
    return groups, labels


def build_recap_optimizer(
    params: optax.Params,
    recap_config: config_lib.RecapOptimizerConfig,
    emb_optimizer_config: config_lib.EmbeddingOptimizerConfig | None = None,
) -> optax.GradientTransformation:
    """The recap (multi-task) optimizer for a params pytree, with torch's rules.

    Groups come from :func:`functional_opt.grouping.recap_groups` on the names
    of the leaves (pytree path joined with ``"."``): each tower, ``backbone``
    (or ``single_task``) gets :func:`torch_adam` with ``recap_config.adam``
    and the group's own schedule; ``dense_ebc`` (embedding tables that are
    not fused) gets :func:`torch_sgd` without momentum and the embedding
    learning rate. The groups are combined with ``optax.partition``; the
    state's ``inner_states`` are keyed by group name and
    :func:`group_learning_rates` reads each group's last rate.

    Args:
        params: the parameters (their names fix the groups; the same tree
            structure must be passed to ``init``).
        recap_config: the recap optimizer config, multi-task or single-task.
        emb_optimizer_config: the embedding optimizer config; its
            ``learning_rate`` is required when some leaf is an embedding table.

    Returns:
        An ``optax.GradientTransformation``.

    Raises:
        ValueError: at build time, as :func:`functional_opt.grouping.recap_groups`:
            a tower that matches no parameter, a parameter matching two towers,
            a group with no learning rate or a learning rate with no group.

    Example:
        >>> import jax.numpy as jnp
        >>> from functional_opt import config
        >>> cfg = config.RecapOptimizerConfig(
        ...     adam={},
        ...     multi_task_learning_rates={
        ...         "tower_learning_rates": {"a.b": {"constant": 0.1}},
        ...         "backbone_learning_rate": {"constant": 0.01}})
        >>> params = {"towers": {"a__b": {"w": jnp.ones(2)}}, "backbone": {"w": jnp.ones(2)}}
        >>> tx = build_recap_optimizer(params, cfg)
        >>> state = tx.init(params)
        >>> updates, state = tx.update(params, state)
        >>> {k: round(float(v), 6) for k, v in group_learning_rates(state).items()}
        {'a.b': 0.1, 'backbone': 0.01}
    """
    groups, labels = recap_labels(params, recap_config, emb_optimizer_config)
    adam = recap_config.adam
    transforms: dict[str, optax.GradientTransformation] = {}
    for group in groups:
        schedule = schedules.schedule_from_config(group.learning_rate)
        if group.algorithm == "sgd":
            transforms[group.name] = torch_sgd(schedule)
        else:
            transforms[group.name] = torch_adam(schedule, b1=adam.beta_1, b2=adam.beta_2, eps=adam.epsilon)
    return optax.partition(transforms, labels)


def learning_rate(opt_state: optax.OptState) -> jax.Array:
    """The learning rate of the last update, from the state of :func:`build_optimizer`'s optimizer.

    After ``n >= 1`` updates this is ``schedule(n - 1)``; right after ``init``
    it is ``schedule(0)``.

    Args:
        opt_state: the state of one of this module's transformations.

    Returns:
        A scalar in JAX's default float type.

    Raises:
        KeyError: the state holds no learning rate, or more than one (use
            :func:`group_learning_rates` for the recap optimizer).
    """
    found = optax.tree.get_all_with_path(opt_state, "learning_rate")
    if len(found) != 1:
        raise KeyError(
            f"learning_rate: expected one 'learning_rate' in the optimizer state, found {len(found)}"
            + ("; for build_recap_optimizer use group_learning_rates" if found else "")
        )
    return found[0][1]


def group_learning_rates(opt_state: optax.OptState) -> dict[str, jax.Array]:
    """Each group's learning rate of the last update, from :func:`build_recap_optimizer`'s state.

    After ``n >= 1`` updates group ``g`` holds ``schedule_g(n - 1)``; right
    after ``init`` it holds ``schedule_g(0)``.

    Args:
        opt_state: the state of an ``optax.partition`` of this module's transformations.

    Returns:
        Group name -> scalar.

    Raises:
        TypeError: ``opt_state`` has no ``inner_states`` mapping.
    """
    inner = getattr(opt_state, "inner_states", None)
    if not isinstance(inner, Mapping):
        raise TypeError(
            "group_learning_rates: expected the state of build_recap_optimizer (an optax.partition state), "
            f"got {type(opt_state).__name__}"
        )
    return {name: learning_rate(state) for name, state in inner.items()}
