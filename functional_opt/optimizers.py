"""optax optimizers that follow torch's update rules, driven by the config's schedules.

This module is the one import for the JAX side: :func:`build_optimizer` lives
here; the torch-rule transformations live in :mod:`functional_opt.torch_rules`,
the recap builder in :mod:`functional_opt.recap` and the state readers and
checks in :mod:`functional_opt.opt_state`, all re-exported here.

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
:func:`build_recap_optimizer`'s, through any optax wrapper around them. Off by one, as ``optax.inject_hyperparams``:
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

import optax

from functional_opt import config as config_lib
from functional_opt import schedules
from functional_opt.opt_state import check_state, group_learning_rates, learning_rate
from functional_opt.recap import build_recap_optimizer, recap_labels
from functional_opt.table_optimizers import build_table_optimizer, table_labels
from functional_opt.table_rules import (
    FusedAdagradState,
    fused_exact_adagrad,
    fused_exact_rowwise_adagrad,
    fused_exact_sgd,
)
from functional_opt.torch_rules import (
    PROBE_STEPS,
    ScaleByLearningRateState,
    TorchAdagradState,
    TorchAdamState,
    scale_by_learning_rate,
    torch_adagrad,
    torch_adam,
    torch_sgd,
)

__all__ = [
    "PROBE_STEPS",
    "FusedAdagradState",
    "ScaleByLearningRateState",
    "TorchAdagradState",
    "TorchAdamState",
    "build_optimizer",
    "build_recap_optimizer",
    "build_table_optimizer",
    "check_state",
    "fused_exact_adagrad",
    "fused_exact_rowwise_adagrad",
    "fused_exact_sgd",
    "group_learning_rates",
    "learning_rate",
    "recap_labels",
    "scale_by_learning_rate",
    "table_labels",
    "torch_adagrad",
    "torch_adam",
    "torch_sgd",
]


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
