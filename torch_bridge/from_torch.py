"""torch learning-rate schedulers as configs: one :class:`~functional_opt.config.LearningRate` per param group.

:func:`learning_rates_from_torch` reads a scheduler's parameters (never its
current rates) and writes the schedule of its whole run from step 0, so that
``compute_lr(config, k)`` is the rate torch sets at step ``k`` of a fresh run
(step 0 right after construction, step ``k`` after ``k`` calls of
``scheduler.step()``), whatever step the given scheduler is at:

====================================  ====================================================================
torch                                 config
====================================  ====================================================================
``StepLR``                            ``exponential_decay``, ``staircase``, ``transition_steps = step_size``
``MultiStepLR``                       ``multi_step`` (a repeated milestone applies ``gamma`` twice)
``ExponentialLR``                     ``exponential_decay``, ``transition_steps = 1``
``LinearLR``                          ``linear`` (``linear_ramp_to_constant`` from 0)
``ConstantLR``                        ``piecewise_constant``: ``lr * factor``, then ``(lr * factor) * (1 / factor)``
``PolynomialLR``                      ``warmup_stable_decay``, polynomial decay, no warmup
``CosineAnnealingWarmRestarts``       ``cosine_restarts``
``OneCycleLR``                        ``one_cycle`` (followed for steps ``0 .. total_steps - 1``)
``SequentialLR``                      ``sequence``: one segment per scheduler, each from its own step 0
torchrec ``WarmupOptimizer``          ``sequence``: one segment per stage (:mod:`torch_bridge.from_torchrec`)
====================================  ====================================================================

The config pieces both converters build on (checks of the values read, the
configs, their joins and limits) live in :mod:`torch_bridge.converted`.

StepLR, MultiStepLR, ExponentialLR, LinearLR, ConstantLR and PolynomialLR are
chainable: torch multiplies the current rate at each step, so its rates are
running products that differ from the closed form in the last bits (about
``sqrt(k) * 1e-16`` relative after ``k`` steps: 9e-15 over 60,000 steps of
ExponentialLR). Where torch's arithmetic leaves its formula, the config follows
torch: ConstantLR ends on ``(lr * factor) * (1 / factor)``, not ``lr``; a
LinearLR ramp down to ``end_factor = 0`` ends on torch's last ratio, which need
not be 0. Two limits remain. A line from a rate ``r`` to a rate ``R`` (``linear``
computes optax's ``(a - b) * (1 - s / n) + b``) is off by about ``1e-16 * R / r``
relative near its small end: 1e-12 for LinearLR with ``start_factor=1e-5``.
Rates in float64's subnormal range (below 2.2e-308, far below float32's
smallest) agree in absolute value only: ExponentialLR(gamma=0.3) from 0.1
reaches it after about 590 steps, where torch's product and the power round
to different subnormals (or one to 0).

A config that follows torch only up to some step says so with a
``UserWarning`` naming the step: OneCycleLR at ``total_steps`` (torch
extrapolates its last phase there and raises after; ``one_cycle`` holds
``min_lr``), a growing rate once it passes float32's maximum (the config holds
that maximum), a LinearLR whose last ratio is negative (the config holds 0).

Schedulers with no closed form are refused with a ``TypeError`` naming the
class and the reason (``LambdaLR``, ``MultiplicativeLR``, ``ReduceLROnPlateau``,
``ChainedScheduler``, ``CyclicLR``, ``CosineAnnealingLR``, any subclass), and
parameter values no config expresses with a ``ValueError`` naming the parameter.

Example:
    >>> import torch
    >>> from functional_opt import schedules
    >>> w = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([{"params": [w], "lr": 0.1, "name": "dense"}])
    >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    >>> cfg = learning_rates_from_torch(sched)["dense"]
    >>> cfg.schedule_name, [schedules.compute_lr(cfg, k) for k in range(5)]
    ('exponential_decay', [0.1, 0.1, 0.05, 0.05, 0.025])
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch.optim import lr_scheduler as torch_lr

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

__all__ = ["learning_rates_from_torch"]

_REFUSED = {
    "LambdaLR": "its rates come from a Python function (lr_lambda), which no config holds",
    "MultiplicativeLR": "it multiplies the rate by a Python function of the step (lr_lambda), which no config holds",
    "ReduceLROnPlateau": "its rates depend on the metrics passed to step(), not on the step alone",
    "ChainedScheduler": "it multiplies the rates of several schedulers at every step; no config is a product",
    "CyclicLR": "its triangular cycles (and scale_fn) have no config kind",
    "CosineAnnealingLR": "its recursion rises back to the base rate after T_max (period 2 * T_max): no config kind",
}


def learning_rates_from_torch(scheduler: Any) -> dict[str, config.LearningRate]:
    """The configs of a torch LR scheduler (or torchrec ``WarmupOptimizer``), one per param group.

    Keys are the groups' ``"name"`` entries, else their indices (``"0"``, ``"1"``, ...),
    in the optimizer's order, so the result drives :class:`torch_bridge.LRShim` on an
    optimizer with the same groups. ``compute_lr(cfg, k)`` equals the rate torch sets
    at step ``k`` of a fresh run (relative error below 1e-12 in float64; see the module
    docstring for the chainable schedulers and the limits). A chainable scheduler is
    taken to start from its ``base_lrs`` (each group's ``initial_lr``); a rate held in
    a tensor is read as its value, so the rounding of a float32 tensor is not followed.

    Args:
        scheduler: an instance of one of the supported classes themselves (not a subclass).

    Returns:
        ``{group key: LearningRate}``.

    Raises:
        TypeError: the scheduler has no closed form or is not a supported class
            (the message names the class and why).
        ValueError: a parameter value no config expresses (the message names it),
            rates a config refuses (naming the scheduler and the group), or two
            groups with the same key.

    Warns:
        UserWarning: a config follows the scheduler only up to some step (the message names it).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([w], lr=1.0)
        >>> sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[3, 3], gamma=0.5)
        >>> learning_rates_from_torch(sched)["0"].multi_step.milestones
        [3, 3]
    """
    warmup = sys.modules.get("torchrec.optim.warmup")
    if warmup is not None and isinstance(scheduler, warmup.WarmupOptimizer):
        from torch_bridge.from_torchrec import warmup_learning_rates

        return warmup_learning_rates(scheduler)
    owner = type(scheduler).__name__
    check_class(scheduler, owner)
    groups = scheduler.optimizer.param_groups
    out: dict[str, config.LearningRate] = {}
    limits: dict[tuple[int, str], list[str]] = {}
    for g, key in enumerate(group_keys(groups, owner)):
        where = Where(owner, key)
        if type(scheduler) is torch_lr.SequentialLR:
            converted = _sequential(scheduler, g, where)
        else:
            converted = _convert(scheduler, g, rate(scheduler.base_lrs[g], "base_lrs", where), True, where)
        out[key] = converted.learning_rate
        for limit in converted.limits:
            limits.setdefault(limit, []).append(key)
    warn_limits(owner, limits)
    return out


def check_class(scheduler: Any, owner: str) -> None:
    """Refuses (TypeError) anything but the supported classes themselves, saying why."""
    cls = type(scheduler)
    if cls in _CONVERTERS or cls is torch_lr.SequentialLR:
        return
    where = f"{owner}: " if owner != cls.__name__ else ""
    for name, why in _REFUSED.items():
        refused = getattr(torch_lr, name, None)
        if refused is not None and isinstance(scheduler, refused):
            what = name if cls is refused else f"{cls.__name__} (a subclass of {name})"
            raise TypeError(f"learning_rates_from_torch: {where}{what} cannot be converted: {why}")
    for supported in (*_CONVERTERS, torch_lr.SequentialLR):
        if isinstance(scheduler, supported):
            raise TypeError(
                f"learning_rates_from_torch: {where}{cls.__name__} is a subclass of {supported.__name__}, which may "
                "compute other rates: only the torch classes themselves are converted"
            )
    names = ", ".join([c.__name__ for c in _CONVERTERS] + ["SequentialLR", "torchrec WarmupOptimizer"])
    raise TypeError(
        f"learning_rates_from_torch: {where}{cls.__name__} is not supported: the supported schedulers are {names}"
    )


# --- the torch schedulers -------------------------------------------------------------------------
# Each converter gets the rate a chained scheduler starts from (``start``) and whether it starts by its
# ordinary first step (``fresh``) or, at a SequentialLR milestone, by its closed form at epoch 0.


def _step_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    step_size = integer(s.step_size, "step_size", where, minimum=1)
    return staircase(where, start, factor(s.gamma, "gamma", where), step_size)


def _multi_step_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    gamma = factor(s.gamma, "gamma", where)
    milestones = []
    for m in s.milestones.elements():
        if isinstance(m, bool) or not isinstance(m, numbers.Real):
            where.fail(f"milestone {m!r} is not a number")
        # A fresh run multiplies when last_epoch (0, 1, ...) is a milestone; the closed form at epoch 0
        # (a SequentialLR milestone) counts every milestone <= 0. Other milestones are never reached.
        if m == 0 or (m < 0 and not fresh):
            milestones.append(0)
        elif m > 0 and float(m).is_integer():
            milestones.append(int(m))
    return Converted(make(where, multi_step={"learning_rate": start, "milestones": sorted(milestones), "gamma": gamma}))


def _exponential_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    return staircase(where, start, factor(s.gamma, "gamma", where), 1, stairs=False)


def _linear_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    first, end = float(s.start_factor), float(s.end_factor)
    total = integer(s.total_iters, "total_iters", where)
    if total <= 0:
        if fresh:  # step 0 multiplies by start_factor; every later epoch is past total_iters
            return Converted(make(where, constant=start * first))
        if total == 0:
            where.fail("total_iters=0: at its SequentialLR milestone torch's closed form divides by total_iters")
        return Converted(make(where, constant=start * (first + (end - first) * (min(total, 0) / total))))
    ramp = Converted(line(where, start * first, start * end, total))
    if end != 0:
        return ramp
    # torch's last ratio, 1 + (end - start) / (total * start + (total - 1) * (end - start)), is 0 only
    # when that sum rounds to start_factor; otherwise torch ends on a tiny rate, held for ever.
    delta = end - first
    last_ratio = 1.0 + delta / (total * first + (total - 1) * delta)
    tail = start * (first + delta * (total - 1) / total) * last_ratio
    if tail > 0:
        return join(where, [(ramp, total, 0), (Converted(make(where, constant=tail)), None, 0)])
    if tail < 0:
        why = f"torch's running product gives the negative rate {tail!r} (rounding), the config 0"
        return Converted(ramp.learning_rate, ((total, why),))
    return ramp


def _constant_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    scale = float(s.factor)
    total = integer(s.total_iters, "total_iters", where)
    if total <= 0:  # never restored: the factor (a fresh run) or the closed form at epoch 0 (a milestone)
        return Converted(make(where, constant=start * scale if fresh else start * (scale + (1 - scale))))
    if scale == 0:
        where.fail(f"factor=0: at total_iters={total} torch multiplies by 1 / factor (ZeroDivisionError)")
    first = start * scale
    values = [first, first * (1.0 / scale)]
    return Converted(
        make(where, piecewise_constant={"learning_rate_boundaries": [total], "learning_rate_values": values})
    )


def _polynomial_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    total = integer(s.total_iters, "total_iters", where)
    power = rate(s.power, "power", where)
    if not math.isfinite(power) or power < 0:
        where.fail(f"power={power!r} must be a finite number >= 0 (torch divides by zero at total_iters)")
    if total <= 0:
        if fresh:
            return Converted(make(where, constant=start))
        if total == 0:
            where.fail("total_iters=0: at its SequentialLR milestone torch's closed form divides by total_iters")
        return Converted(make(where, constant=start * 0.0**power))
    if power == 0:
        return Converted(make(where, constant=start))
    wsd = {"learning_rate": start, "final_learning_rate": 0.0, "num_decay_steps": total}
    return Converted(make(where, warmup_stable_decay={**wsd, "decay_shape": "polynomial", "power": power}))


def _cosine_warm_restarts(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    # Not chained: get_lr reads base_lrs, T_cur and T_i (T_cur is 0 until the scheduler's first own step).
    cfg = {
        "learning_rate": rate(s.base_lrs[g], "base_lrs", where),
        "final_learning_rate": rate(s.eta_min, "eta_min", where),
        "cycle_steps": integer(s.T_0, "T_0", where, minimum=1),
        "cycle_mult": integer(s.T_mult, "T_mult", where, minimum=1),
    }
    return Converted(make(where, cosine_restarts=cfg))


def _one_cycle_lr(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    # Not chained: get_lr reads the group's max_lr, initial_lr and min_lr (its constructor wrote them).
    group = s.optimizer.param_groups[g]
    top, initial, low = (rate(group[k], k, where) for k in ("max_lr", "initial_lr", "min_lr"))
    total = integer(s.total_steps, "total_steps", where, minimum=1)
    phases, anneal = _one_cycle_private(s)
    if anneal not in ("cos", "linear"):
        where.fail(f"anneal strategy {anneal!r} is not 'cos' or 'linear'")
    if top == initial == low == 0:
        return Converted(make(where, constant=0.0))
    if initial == 0 or low == 0:
        field = "div_factor" if initial == 0 else "final_div_factor"
        where.fail(f"{field} is infinite (max_lr={top!r}, initial_lr={initial!r}, min_lr={low!r})")
    cfg = {
        "max_learning_rate": top,
        "total_steps": total,
        "pct_start": _pct_start(phases, total, where),
        "anneal_strategy": anneal,
        "div_factor": top / initial,
        "final_div_factor": initial / low,
        "three_phase": len(phases) == 3,
    }
    why = "torch extrapolates its last phase past min_lr there (and raises after); the config holds min_lr"
    return Converted(make(where, one_cycle=cfg), ((total, why),))


def _one_cycle_private(s: Any) -> tuple[list[dict[str, Any]], Any]:
    """OneCycleLR keeps its phase ends and anneal strategy only in private attributes (torch 2.13)."""
    return list(s._schedule_phases), getattr(s, "_anneal_func_type", None)


def _pct_start(phases: Sequence[Mapping[str, Any]], total: int, where: Where) -> float:
    """The ``pct_start`` whose phase ends, computed as torch computes them, are the scheduler's."""
    ends = [float(p["end_step"]) for p in phases]
    guess = (ends[0] + 1) / total
    for pct in (guess, math.nextafter(guess, 0.0), math.nextafter(guess, 1.0)):
        mine = [float(pct * total) - 1, float(2 * pct * total) - 2] if len(ends) == 3 else [float(pct * total) - 1]
        if mine == ends[:-1] and ends[-1] == total - 1:
            return pct
    where.fail(f"its phase ends {ends} are not those of any pct_start with total_steps={total}")
    raise AssertionError  # unreachable: fail raises


_CONVERTERS: dict[type, Callable[[Any, int, float, bool, Where], Converted]] = {
    torch_lr.StepLR: _step_lr,
    torch_lr.MultiStepLR: _multi_step_lr,
    torch_lr.ExponentialLR: _exponential_lr,
    torch_lr.LinearLR: _linear_lr,
    torch_lr.ConstantLR: _constant_lr,
    torch_lr.PolynomialLR: _polynomial_lr,
    torch_lr.CosineAnnealingWarmRestarts: _cosine_warm_restarts,
    torch_lr.OneCycleLR: _one_cycle_lr,
}


def _convert(s: Any, g: int, start: float, fresh: bool, where: Where) -> Converted:
    return _CONVERTERS[type(s)](s, g, start, fresh, where)


def _sequential(s: Any, g: int, where: Where) -> Converted:
    """SequentialLR: scheduler ``i`` from milestone ``i - 1`` to milestone ``i``, each from its own step 0.

    torch's constructor resets every rate to the group's ``initial_lr`` (which a OneCycleLR constructor
    overwrites) before the first step of the scheduler that runs at step 0, which then steps as it would
    alone; at a milestone the next scheduler starts from its closed form at epoch 0 (its ``base_lrs``).
    A negative milestone acts as 0.
    """
    # SequentialLR keeps its schedulers and milestones only in private attributes (torch 2.13).
    subs, milestones = list(s._schedulers), list(s._milestones)
    if len({id(sub) for sub in subs}) != len(subs):
        where.fail("a scheduler appears twice in it: torch steps the shared one on from where it stopped")
    bounds = [0] + [max(0, integer(m, f"milestones[{i}]", where)) for i, m in enumerate(milestones)]
    if bounds != sorted(bounds):
        where.fail(f"milestones={milestones} must not decrease")
    initial = rate(s.optimizer.param_groups[g]["initial_lr"], "initial_lr", where)
    parts = []
    for i, sub in enumerate(subs):
        owner = f"{where.owner} schedulers[{i}] ({type(sub).__name__})"
        check_class(sub, owner)
        if type(sub) is torch_lr.SequentialLR:
            Where(owner, where.group).fail("a SequentialLR inside a SequentialLR is not supported", TypeError)
        first, end = bounds[i], (bounds[i + 1] if i + 1 < len(bounds) else None)
        if end is not None and end <= first:
            continue
        fresh = first == 0
        sub_where = Where(owner, where.group)
        begin = initial if fresh else rate(sub.base_lrs[g], "base_lrs", sub_where)
        converted = _convert(sub, g, begin, fresh, sub_where)
        tagged = tuple((step, f"{owner}: {why}") for step, why in converted.limits)
        parts.append((Converted(converted.learning_rate, tagged), None if end is None else end - first, 0))
    return join(where, parts)
