"""torchrec's ``WarmupOptimizer`` as a config: one ``sequence`` segment per warmup stage.

``WarmupOptimizer`` writes one rate, ``lr * (multiplier * lr_scale)``, into every
param group. Its stage ``j`` covers the global iterations after the previous
stage's ``max_iters`` up to and including its own (``step()`` moves on once the
iteration passes ``max_iters``), and its policy reads the global iteration ``i``;
torchrec appends a ``NONE`` stage (the plain ``lr`` for ever), the last segment.
A segment therefore starts its schedule at ``from_step`` = the stage's first
iteration ``a``, except where the policy is rewritten in the segment's own steps:

=================================  ===============================================================
policy (multiplier at ``i``)       config
=================================  ===============================================================
``LINEAR`` ``v + (1 - v) i / M``   ``linear`` from ``lr v`` to ``lr`` over ``M`` (from 0: ``linear_ramp_to_constant``)
``CONSTANT``, ``NONE``             ``constant``
``POLY`` ``(1 - i / D) ** v``      ``warmup_stable_decay``, polynomial decay over ``D``, power ``v``
``STEP`` ``v ** (i // D)``         ``exponential_decay``, ``staircase``, ``transition_steps = D``
``INVSQRT`` ``1 / sqrt(i)``        ``inverse_sqrt``, ``timescale = a``, rate ``lr / sqrt(a)`` (``a >= 1``)
``COSINE_ANNEALING_WARM_RESTARTS`` ``cosine_restarts``, ``cycle_steps = sgdr_period``, ``cycle_mult = 1``
``INTERPOLATE`` (a line in ``i``)  ``linear`` from its value at ``a`` to its value at ``M``
=================================  ===============================================================

(``M`` is ``max_iters``, ``D`` ``decay_iters``, ``v`` ``value``; ``lr`` stands for
``lr * lr_scale``.) Refused, naming the stage and the field: a ``POLY`` stage that
runs past ``decay_iters`` (torchrec raises there or the rate rises again), a
negative ``POLY`` power, a negative ``STEP`` value, an ``INVSQRT`` first stage,
a non-positive ``sgdr_period``, an ``lr_param`` other than ``"lr"``.

Example:
    >>> import torch
    >>> from torchrec.optim.keyed import KeyedOptimizerWrapper
    >>> from torchrec.optim.warmup import WarmupOptimizer, WarmupPolicy, WarmupStage
    >>> from functional_opt import schedules
    >>> from torch_bridge import learning_rates_from_torch
    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> keyed = KeyedOptimizerWrapper({"w": w}, lambda ps: torch.optim.SGD(ps, lr=1.0))
    >>> stages = [WarmupStage(policy=WarmupPolicy.LINEAR, max_iters=4, value=0.0)]
    >>> cfg = learning_rates_from_torch(WarmupOptimizer(keyed, stages=stages, lr=1.0))["0"]
    >>> [schedules.compute_lr(cfg, k) for k in range(7)]
    [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import math
from typing import Any

from functional_opt import config
from torch_bridge.converted import (
    Converted,
    Where,
    factor,
    group_keys,
    integer,
    join,
    line,
    make,
    rate,
    staircase,
    warn_limits,
)

__all__ = ["warmup_learning_rates"]


def warmup_learning_rates(optimizer: Any) -> dict[str, config.LearningRate]:
    """The config of a torchrec ``WarmupOptimizer``, the same for each of its param groups.

    Called by :func:`torch_bridge.learning_rates_from_torch`, which documents the result.

    Raises:
        TypeError: ``optimizer`` is a subclass of ``WarmupOptimizer``.
        ValueError: a stage no config expresses (naming the stage and the field),
            stages whose ``max_iters`` do not increase, or ``lr_param`` is not ``"lr"``.
    """
    from torchrec.optim.warmup import WarmupOptimizer, WarmupPolicy

    owner = type(optimizer).__name__
    if type(optimizer) is not WarmupOptimizer:
        raise TypeError(
            f"learning_rates_from_torch: {owner} is a subclass of WarmupOptimizer, which may compute other rates: "
            "only the torchrec class itself is converted"
        )
    # WarmupOptimizer keeps its stages (with torchrec's NONE stage appended), lr and lr_param only in
    # private attributes (torchrec 1.8).
    stages, base, lr_param = list(optimizer._stages), optimizer._lr, optimizer._lr_param
    if lr_param != "lr":
        Where(owner, "").fail(f"lr_param={lr_param!r}: the configs drive a group's 'lr' only")
    if not stages or stages[-1].policy != WarmupPolicy.NONE:
        Where(owner, "").fail("its stages do not end with torchrec's NONE stage")
    keys = group_keys(optimizer.param_groups, owner)
    where = Where(owner, ", ".join(keys))
    lr = rate(base, "lr", where)
    parts = []
    first = 0
    for j, stage in enumerate(stages):
        stage_where = Where(f"{owner} stage {j} ({stage.policy.name})", where.group)
        if j == len(stages) - 1:
            last = None
        else:
            last = integer(stage.max_iters, "max_iters", stage_where)
            if last < first:
                stage_where.fail(f"max_iters={last} must be greater than the previous stage's ({first - 1})")
        converted, from_step = _stage(stage, first, last, lr, stage_where)
        tagged = tuple((step, f"{stage_where.owner}: {why}") for step, why in converted.limits)
        parts.append(
            (Converted(converted.learning_rate, tagged), None if last is None else last - first + 1, from_step)
        )
        first = 0 if last is None else last + 1
    joined = join(where, parts)
    warn_limits(owner, {limit: keys for limit in joined.limits})
    return dict.fromkeys(keys, joined.learning_rate)


def _stage(stage: Any, first: int, last: int | None, lr: float, where: Where) -> tuple[Converted, int]:
    """One stage over iterations ``first .. last`` (``None``: for ever): its config and its ``from_step``."""
    from torchrec.optim.warmup import WarmupPolicy as P

    policy = stage.policy
    scale = rate(stage.lr_scale, "lr_scale", where)
    value = rate(stage.value, "value", where)
    top = lr * scale
    if policy in (P.NONE, P.CONSTANT):
        return Converted(make(where, constant=lr * ((1.0 if policy == P.NONE else value) * scale))), 0
    if last is None:
        where.fail("only torchrec's NONE stage may run for ever")
    if policy == P.LINEAR:
        max_iters = integer(stage.max_iters, "max_iters", where, minimum=1)
        return Converted(line(where, lr * (value * scale), lr * (1.0 * scale), max_iters)), first
    if policy == P.POLY:
        decay_iters = integer(stage.decay_iters, "decay_iters", where, minimum=1)
        if decay_iters < last:
            where.fail(
                f"decay_iters={decay_iters} < max_iters={last}: past decay_iters 1 - i / decay_iters < 0, "
                "where torchrec raises (or the rate rises again, for an integral power)"
            )
        power = factor(value, "value", where)
        if power == 0:
            return Converted(make(where, constant=lr * (1.0 * scale))), 0
        wsd = {"learning_rate": top, "final_learning_rate": 0.0, "num_decay_steps": decay_iters}
        return Converted(make(where, warmup_stable_decay={**wsd, "decay_shape": "polynomial", "power": power})), first
    if policy == P.STEP:
        decay_iters = integer(stage.decay_iters, "decay_iters", where, minimum=1)
        return staircase(where, top, factor(value, "value", where), decay_iters), first
    if policy == P.INVSQRT:
        if first == 0:
            where.fail("an INVSQRT first stage is 1 / sqrt(0) at iteration 0 (torchrec raises)")
        return Converted(make(where, inverse_sqrt={"learning_rate": top / math.sqrt(first), "timescale": first})), 0
    if policy == P.COSINE_ANNEALING_WARM_RESTARTS:
        period = integer(stage.sgdr_period, "sgdr_period", where, minimum=1)
        cfg = {"learning_rate": top, "final_learning_rate": top * value, "cycle_steps": period, "cycle_mult": 1}
        return Converted(make(where, cosine_restarts=cfg)), first
    if policy == P.INTERPOLATE:
        start, end = stage.start_interpolating_iters, stage.end_value
        if start is None or end is None:
            where.fail("INTERPOLATE needs start_interpolating_iters and end_value")

        def at(i: int) -> float:  # torchrec's multiplier, operation for operation
            return lr * ((value + (end - value) * (i - start) / (last - start)) * scale)

        if last == first:
            return Converted(make(where, constant=at(first))), 0
        return Converted(line(where, at(first), at(last), last - first)), 0
    where.fail(f"policy {policy!r} is not one torchrec 1.8 defines")
    raise AssertionError  # unreachable: fail raises
