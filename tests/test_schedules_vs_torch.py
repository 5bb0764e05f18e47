"""The schedule kinds against the torch schedulers and the torchrec warmup policies that define them.

Each case builds the framework's own scheduler, steps it as a user does
(``optimizer.step(); scheduler.step()``) and reads ``param_groups[0]["lr"]``
before every step, step 0 right after construction. Ours are three values per
step: :func:`functional_opt.schedules.compute_lr` (numpy float64), the JAX
schedule under x64 on ``jnp.arange`` of the steps (one vectorised call), and the
rates :class:`torch_bridge.LRShim` sets when stepped the same way. Every case
covers at least 10,000 consecutive steps from 0, so every boundary and its
neighbours, and every one of ours must be within a relative error of 1e-12 of
the framework (exactly equal where the framework gives 0).

Several torch schedulers are chainable: they multiply the current rate at each
step, so their values drift from their documented closed forms by rounding.
Our kinds compute the closed form; the 1e-12 bar against what torch computes
holds anyway over 10,000 steps, and
:func:`test_chainable_torch_schedulers_drift_from_their_closed_form_by_rounding_only`
shows that the drift is real and small.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
import torch
import yaml
from framework_checks import (
    MIN_STEPS,
    RTOL,
    assert_sides_match,
    const,
    lr,
    polynomial,
    relative_error,
    segment,
    sequence,
)
from torch.optim import lr_scheduler
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.warmup import WarmupOptimizer, WarmupPolicy, WarmupStage

import torch_bridge
from functional_opt import config, schedules

# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def sgd_rates(make: Callable[[torch.optim.Optimizer], Any], steps: int, base_lr: float = 1.0) -> np.ndarray:
    """The rate of each of ``steps`` optimizer steps under the scheduler ``make(optimizer)`` builds.

    The rate is read right before ``optimizer.step()``; ``scheduler.step()`` follows it.
    """
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=base_lr)
    scheduler = make(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.step()
        scheduler.step()
    return np.asarray(rates, dtype=np.float64)


def our_rates(cfg: config.LearningRate, steps: int) -> dict[str, np.ndarray]:
    """Ours at steps ``0 .. steps - 1``: ``compute_lr`` per step, the JAX schedule (x64, vectorised), ``LRShim``."""
    out = {"compute_lr": np.asarray([schedules.compute_lr(cfg, k) for k in range(steps)], dtype=np.float64)}
    with jax.enable_x64(True):
        values = schedules.schedule_from_config(cfg)(jnp.arange(steps))
        assert values.dtype == jnp.float64
        out["jax"] = np.asarray(values)
    out["LRShim"] = sgd_rates(lambda opt: torch_bridge.LRShim(opt, {"w": cfg}), steps)
    return out


def assert_matches(cfg: config.LearningRate, theirs: np.ndarray, framework: str, end: int | None = None) -> float:
    """Every one of ours equals ``theirs`` (steps 0, 1, ...) to ``RTOL``; returns the worst relative error.

    ``end``: the first step the framework does not define (the comparison covers the
    breakpoints below it and their neighbours up to ``end - 1``).
    """
    steps = len(theirs)
    assert steps >= MIN_STEPS
    limit = math.inf if end is None else end
    uncovered = [b for b in cfg.breakpoints if b + 1 < limit and b + 1 >= steps]
    assert not uncovered, f"breakpoints {uncovered} (or their next step) lie beyond the {steps} steps compared"
    return assert_sides_match(cfg, our_rates(cfg, steps), theirs, np.arange(steps), framework)


# ---------------------------------------------------------------------------------------------
# torch's own schedulers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorchCase:
    """A torch scheduler on ``SGD(lr=base_lr)`` and the config that reproduces it over ``steps`` steps."""

    make: Callable[[torch.optim.Optimizer], Any]
    cfg: config.LearningRate
    base_lr: float = 0.1
    steps: int = MIN_STEPS
    end: int | None = None  # first step the scheduler does not define (OneCycleLR: total_steps)


def one_cycle_case(max_lr: float, total_steps: int, **kwargs: Any) -> TorchCase:
    cfg = lr(
        one_cycle={
            "max_learning_rate": max_lr,
            "total_steps": total_steps,
            "pct_start": kwargs.get("pct_start", 0.3),
            "anneal_strategy": kwargs.get("anneal_strategy", "cos"),
            "div_factor": kwargs.get("div_factor", 25.0),
            "final_div_factor": kwargs.get("final_div_factor", 1e4),
            "three_phase": kwargs.get("three_phase", False),
        }
    )
    return TorchCase(
        lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, **kwargs),
        cfg,
        steps=total_steps,
        end=total_steps,
    )


def sequential(*parts: Callable[[torch.optim.Optimizer], Any], milestones: list[int]) -> Callable:
    """``SequentialLR`` of the schedulers ``parts`` builds, constructed in that order on the same optimizer."""

    def make(opt: torch.optim.Optimizer) -> lr_scheduler.SequentialLR:
        return lr_scheduler.SequentialLR(opt, [part(opt) for part in parts], milestones=milestones)

    return make


def wsd_polynomial(learning_rate: float, num_decay_steps: int, power: float, final: float = 0.0) -> config.LearningRate:
    return polynomial(learning_rate, final, num_decay_steps, power)


TORCH_CASES: dict[str, TorchCase] = {
    # StepLR: lr * gamma ** (s // step_size), computed by multiplying the current rate at each multiple.
    "StepLR-as-exponential_decay-staircase": TorchCase(
        lambda opt: lr_scheduler.StepLR(opt, step_size=30, gamma=0.9),
        lr(exponential_decay={"learning_rate": 0.1, "decay_rate": 0.9, "transition_steps": 30, "staircase": True}),
    ),
    "StepLR-as-multi_step": TorchCase(
        lambda opt: lr_scheduler.StepLR(opt, step_size=1000, gamma=0.3),
        lr(multi_step={"learning_rate": 0.2, "milestones": list(range(1000, 10_000, 1000)), "gamma": 0.3}),
        base_lr=0.2,
    ),
    # MultiStepLR keeps a Counter of its milestones: the order does not matter and a milestone given
    # n times applies gamma ** n at once (its docstring asks for increasing milestones; it never checks).
    "MultiStepLR-sorted": TorchCase(
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[100, 2500, 7000], gamma=0.1),
        lr(multi_step={"learning_rate": 0.1, "milestones": [100, 2500, 7000], "gamma": 0.1}),
    ),
    "MultiStepLR-repeated-unsorted-and-0": TorchCase(
        lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[7000, 30, 0, 2500, 30, 2500, 2500], gamma=0.7),
        lr(multi_step={"learning_rate": 0.1, "milestones": [7000, 30, 0, 2500, 30, 2500, 2500], "gamma": 0.7}),
    ),
    # ExponentialLR multiplies by gamma at every step: 10,000 roundings against one power.
    "ExponentialLR-decay": TorchCase(
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.999),
        lr(exponential_decay={"learning_rate": 0.05, "decay_rate": 0.999, "transition_steps": 1}),
        base_lr=0.05,
    ),
    "ExponentialLR-growth": TorchCase(
        lambda opt: lr_scheduler.ExponentialLR(opt, gamma=1.0003),
        # A growing decay needs its upper limit; this one (1.0) is above the 0.2 reached in 10,000 steps.
        lr(
            exponential_decay={
                "learning_rate": 0.01,
                "decay_rate": 1.0003,
                "transition_steps": 1,
                "final_learning_rate": 1.0,
            }
        ),
        base_lr=0.01,
    ),
    # LinearLR: base * (start + (end - start) * min(s, T) / T), computed as a running product of ratios.
    "LinearLR-warmup": TorchCase(
        lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=2000),
        lr(linear={"initial_learning_rate": 0.1 * 0.1, "final_learning_rate": 0.1, "num_steps": 2000}),
    ),
    "LinearLR-decay": TorchCase(
        lambda opt: lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.05, total_iters=9000),
        lr(linear={"initial_learning_rate": 0.3, "final_learning_rate": 0.3 * 0.05, "num_steps": 9000}),
        base_lr=0.3,
    ),
    "LinearLR-to-0": TorchCase(
        lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.5, end_factor=0.0, total_iters=5000),
        lr(linear={"initial_learning_rate": 0.1 * 0.5, "final_learning_rate": 0.0, "num_steps": 5000}),
    ),
    "LinearLR-defaults": TorchCase(
        lambda opt: lr_scheduler.LinearLR(opt),
        lr(linear={"initial_learning_rate": 0.1 * (1.0 / 3), "final_learning_rate": 0.1, "num_steps": 5}),
    ),
    # ConstantLR multiplies by factor at step 0 and by 1 / factor at total_iters.
    "ConstantLR-as-piecewise_constant": TorchCase(
        lambda opt: lr_scheduler.ConstantLR(opt, factor=0.25, total_iters=1000),
        lr(piecewise_constant={"learning_rate_boundaries": [1000], "learning_rate_values": [0.1 * 0.25, 0.1]}),
    ),
    "ConstantLR-defaults-as-multi_step": TorchCase(
        lambda opt: lr_scheduler.ConstantLR(opt),
        lr(multi_step={"learning_rate": 0.1 * (1.0 / 3), "milestones": [5], "gamma": 1.0 / (1.0 / 3)}),
    ),
    # PolynomialLR: base * (1 - min(s, T) / T) ** power, computed as a running product of ratios.
    **{
        f"PolynomialLR-power-{power}": TorchCase(
            lambda opt, power=power: lr_scheduler.PolynomialLR(opt, total_iters=8000, power=power),
            wsd_polynomial(0.1, 8000, power),
        )
        for power in (1.0, 2.0, 0.5, 3.7)
    },
    # CosineAnnealingWarmRestarts: closed form in T_cur and T_i, which step() keeps as integers.
    "CosineAnnealingWarmRestarts-mult-1": TorchCase(
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=1000),
        lr(cosine_restarts={"learning_rate": 0.1, "cycle_steps": 1000}),
    ),
    "CosineAnnealingWarmRestarts-mult-1-eta_min": TorchCase(
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=499, eta_min=1e-4),
        lr(cosine_restarts={"learning_rate": 0.1, "final_learning_rate": 1e-4, "cycle_steps": 499}),
    ),
    "CosineAnnealingWarmRestarts-mult-2": TorchCase(
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=100, T_mult=2),
        lr(cosine_restarts={"learning_rate": 0.1, "cycle_steps": 100, "cycle_mult": 2}),
    ),
    "CosineAnnealingWarmRestarts-mult-2-eta_min": TorchCase(
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=300, T_mult=2, eta_min=0.002),
        lr(cosine_restarts={"learning_rate": 0.1, "final_learning_rate": 0.002, "cycle_steps": 300, "cycle_mult": 2}),
    ),
    "CosineAnnealingWarmRestarts-mult-3-eta_min": TorchCase(
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=37, T_mult=3, eta_min=1e-3),
        lr(cosine_restarts={"learning_rate": 0.1, "final_learning_rate": 1e-3, "cycle_steps": 37, "cycle_mult": 3}),
    ),
    "CosineAnnealingWarmRestarts-mult-3": TorchCase(
        lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=5, T_mult=3),
        lr(cosine_restarts={"learning_rate": 0.1, "cycle_steps": 5, "cycle_mult": 3}),
    ),
    # OneCycleLR ignores the optimizer's lr: it sets initial_lr = max_lr / div_factor itself.
    "OneCycleLR-defaults": one_cycle_case(0.1, 10_000),
    "OneCycleLR-linear": one_cycle_case(
        0.2, 10_000, anneal_strategy="linear", pct_start=0.25, div_factor=10.0, final_div_factor=100.0
    ),
    "OneCycleLR-cos-three_phase": one_cycle_case(
        0.3, 10_000, three_phase=True, pct_start=0.2, div_factor=5.0, final_div_factor=1e3
    ),
    "OneCycleLR-linear-three_phase": one_cycle_case(
        0.05, 10_007, anneal_strategy="linear", three_phase=True, pct_start=0.4, div_factor=20.0, final_div_factor=50.0
    ),
    # SequentialLR: a scheduler not first in the list takes over at its milestone through
    # _update_lr(0) (its closed form at epoch 0, from its base_lrs), then steps as it does alone,
    # so each segment starts at its own step 0.
    "SequentialLR-LinearLR-ExponentialLR": TorchCase(
        sequential(
            lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.01, end_factor=1.0, total_iters=500),
            lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9995),
            milestones=[500],
        ),
        sequence(
            segment(
                lr(linear={"initial_learning_rate": 0.1 * 0.01, "final_learning_rate": 0.1, "num_steps": 500}), 500
            ),
            segment(lr(exponential_decay={"learning_rate": 0.1, "decay_rate": 0.9995, "transition_steps": 1})),
        ),
    ),
    "SequentialLR-ConstantLR-CosineAnnealingWarmRestarts-StepLR": TorchCase(
        sequential(
            lambda opt: lr_scheduler.ConstantLR(opt, factor=0.5, total_iters=100),
            lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=1000, T_mult=2, eta_min=1e-5),
            lambda opt: lr_scheduler.StepLR(opt, step_size=700, gamma=0.5),
            milestones=[300, 3300],
        ),
        sequence(
            segment(
                lr(piecewise_constant={"learning_rate_boundaries": [100], "learning_rate_values": [0.2 * 0.5, 0.2]}),
                300,
            ),
            segment(
                lr(
                    cosine_restarts={
                        "learning_rate": 0.2,
                        "final_learning_rate": 1e-5,
                        "cycle_steps": 1000,
                        "cycle_mult": 2,
                    }
                ),
                3000,
            ),
            segment(
                lr(
                    exponential_decay={
                        "learning_rate": 0.2,
                        "decay_rate": 0.5,
                        "transition_steps": 700,
                        "staircase": True,
                    }
                )
            ),
        ),
        base_lr=0.2,
    ),
    "SequentialLR-PolynomialLR-MultiStepLR": TorchCase(
        sequential(
            lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=1000, power=2.0),
            lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[1000, 3000, 3000], gamma=0.3),
            milestones=[1000],
        ),
        sequence(
            segment(wsd_polynomial(0.05, 1000, 2.0), 1000),
            segment(lr(multi_step={"learning_rate": 0.05, "milestones": [1000, 3000, 3000], "gamma": 0.3})),
        ),
        base_lr=0.05,
    ),
    # OneCycleLR's constructor overwrites every group's initial_lr with max_lr / div_factor, and
    # SequentialLR resets the rate to initial_lr before the first scheduler's first step: the LinearLR
    # warmup (built first, on an optimizer with lr 0.05) then ramps from 0.008 * 0.1, not 0.05 * 0.1.
    "SequentialLR-LinearLR-OneCycleLR": TorchCase(
        sequential(
            lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.1, end_factor=1.0, total_iters=200),
            lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=10_000),
            milestones=[200],
        ),
        sequence(
            segment(
                lr(
                    linear={
                        "initial_learning_rate": 0.2 / 25.0 * 0.1,
                        "final_learning_rate": 0.2 / 25.0,
                        "num_steps": 200,
                    }
                ),
                200,
            ),
            segment(lr(one_cycle={"max_learning_rate": 0.2, "total_steps": 10_000})),
        ),
        base_lr=0.05,
        steps=10_200,
        end=10_200,
    ),
}


# Variants of what the other cases cover, kept out of the quick subset.
SLOW_TORCH_CASES = {
    "StepLR-as-multi_step",
    "ExponentialLR-growth",
    "LinearLR-defaults",
    "ConstantLR-defaults-as-multi_step",
    "CosineAnnealingWarmRestarts-mult-3",
    "CosineAnnealingWarmRestarts-mult-2-eta_min",
    "PolynomialLR-power-1.0",
    "OneCycleLR-linear-three_phase",
}


def case_ids(names: list[str], slow: set[str]) -> list[Any]:
    return [pytest.param(n, id=n, marks=pytest.mark.slow) if n in slow else pytest.param(n, id=n) for n in names]


@functools.cache
def torch_case_rates(name: str) -> np.ndarray:
    """The rates of ``TORCH_CASES[name]``'s scheduler (shared by the tests that read them)."""
    case = TORCH_CASES[name]
    rates = sgd_rates(case.make, case.steps, case.base_lr)
    rates.flags.writeable = False
    return rates


@pytest.mark.parametrize("name", case_ids(list(TORCH_CASES), SLOW_TORCH_CASES))
def test_torch_scheduler(name):
    case = TORCH_CASES[name]
    assert_matches(case.cfg, torch_case_rates(name), name.split("-")[0], end=case.end)


def test_sequential_lr_takes_one_cycle_lr_initial_lr():
    """What the OneCycleLR constructor does to a SequentialLR: shown on its first rates."""
    theirs = sgd_rates(TORCH_CASES["SequentialLR-LinearLR-OneCycleLR"].make, 3, base_lr=0.05)
    assert theirs[0] == pytest.approx(0.2 / 25.0 * 0.1, rel=1e-15)
    assert theirs[0] != pytest.approx(0.05 * 0.1)


def test_sequential_lr_restarts_each_scheduler_at_its_milestone():
    """At a milestone SequentialLR sets the next scheduler's closed form at epoch 0 (its base_lrs), not a
    continuation of the rate the previous scheduler reached."""
    make = TORCH_CASES["SequentialLR-PolynomialLR-MultiStepLR"].make
    theirs = sgd_rates(make, 2001, base_lr=0.05)
    assert theirs[999] == pytest.approx(0.05 * (1 / 1000) ** 2, rel=1e-12)
    # MultiStepLR's closed form at its epoch 0 (none of its milestones passed), then its own epochs.
    assert theirs[1000] == theirs[1999] == 0.05
    assert theirs[2000] == 0.05 * 0.3


CLOSED_FORMS: dict[str, Callable[[int], float]] = {
    # The closed forms torch documents (and its _get_closed_form_lr computes) for the chainable cases above.
    "StepLR-as-exponential_decay-staircase": lambda s: 0.1 * 0.9 ** (s // 30),
    "ExponentialLR-decay": lambda s: 0.05 * 0.999**s,
    "ExponentialLR-growth": lambda s: 0.01 * 1.0003**s,
    "LinearLR-warmup": lambda s: 0.1 * (0.1 + (1.0 - 0.1) * min(2000, s) / 2000),
    "LinearLR-decay": lambda s: 0.3 * (1.0 + (0.05 - 1.0) * min(9000, s) / 9000),
    **{
        f"PolynomialLR-power-{p}": (lambda s, p=p: 0.1 * (1.0 - min(8000, s) / 8000) ** p) for p in (1.0, 2.0, 0.5, 3.7)
    },
}


@pytest.mark.parametrize("name", list(CLOSED_FORMS))
def test_chainable_torch_schedulers_drift_from_their_closed_form_by_rounding_only(name):
    """torch computes these rates as running products, not by their documented formula: the two differ
    in the last bits (we follow what torch computes, and match it to 1e-12 in test_torch_scheduler),
    but by less than 1e-12 over 10,000 steps."""
    case = TORCH_CASES[name]
    theirs = torch_case_rates(name)
    closed = np.asarray([CLOSED_FORMS[name](s) for s in range(case.steps)])
    drift = relative_error(theirs, closed)
    assert drift.max() <= RTOL
    assert np.count_nonzero(theirs != closed) > 0


@pytest.mark.parametrize("anneal_strategy", ["cos", "linear"])
def test_one_cycle_lr_at_total_steps_extrapolates_past_min_lr(anneal_strategy):
    """torch defines OneCycleLR up to step total_steps - 1 (it raises past total_steps); at total_steps
    itself it extrapolates the last phase beyond min_lr (linear annealing even gives a negative rate).
    one_cycle gives min_lr from total_steps on; the comparisons stop at total_steps - 1."""
    total = 100
    cfg = lr(one_cycle={"max_learning_rate": 0.1, "total_steps": total, "anneal_strategy": anneal_strategy})
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    scheduler = lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=total, anneal_strategy=anneal_strategy)
    for _ in range(total):
        opt.step()
        scheduler.step()
    at_total = opt.param_groups[0]["lr"]
    min_lr = 0.1 / 25.0 / 1e4
    assert schedules.compute_lr(cfg, total) == min_lr
    assert at_total != pytest.approx(min_lr, rel=1e-3)
    if anneal_strategy == "linear":
        assert at_total < 0
    else:
        assert at_total > min_lr
    opt.step()
    with pytest.raises(ValueError, match="Tried to step"):
        scheduler.step()


# ---------------------------------------------------------------------------------------------
# torchrec's WarmupOptimizer
# ---------------------------------------------------------------------------------------------
# A stage covers the global iterations after the previous stage's max_iters up to and including its
# own; its policy sees the global iteration, so each segment starts its schedule at from_step = the
# stage's first iteration. torchrec appends a NONE stage (the base lr for ever): the last segment.
# Every rate is lr * (multiplier * lr_scale).

L = 0.05  # WarmupOptimizer's lr


@dataclass(frozen=True)
class TorchrecCase:
    stages: list[WarmupStage]
    cfg: config.LearningRate
    steps: int = MIN_STEPS


def warmup_rates(stages: list[WarmupStage], steps: int, base_lr: float = L) -> np.ndarray:
    """WarmupOptimizer's rate at each of ``steps`` steps, read before each ``step()``."""
    param = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    keyed = KeyedOptimizerWrapper({"w": param}, lambda ps: torch.optim.SGD(ps, lr=1.0))
    opt = WarmupOptimizer(keyed, stages=stages, lr=base_lr)
    rates = []
    for _ in range(steps):
        rates.append(float(opt.param_groups[0]["lr"]))
        opt.step()
    return np.asarray(rates, dtype=np.float64)


TORCHREC_CASES: dict[str, TorchrecCase] = {
    # LINEAR: value + (1 - value) * i / max_iters; CONSTANT: value; POLY: (1 - i / decay_iters) ** value,
    # decay_iters defaulting to max_iters (the global iteration: 0 exactly at the stage's last one).
    "LINEAR-CONSTANT-POLY": TorchrecCase(
        [
            WarmupStage(policy=WarmupPolicy.LINEAR, max_iters=999, value=0.0),
            WarmupStage(policy=WarmupPolicy.CONSTANT, max_iters=2999, value=0.3, lr_scale=1.5),
            WarmupStage(policy=WarmupPolicy.POLY, max_iters=7999, value=2.0),
        ],
        sequence(
            segment(lr(linear={"initial_learning_rate": 0.0, "final_learning_rate": L, "num_steps": 999}), 1000),
            segment(const(L * (0.3 * 1.5)), 2000),
            segment(wsd_polynomial(L, 7999, 2.0), 5000, from_step=3000),
            segment(const(L)),
        ),
    ),
    "LINEAR-scaled-POLY-long-decay": TorchrecCase(
        [
            WarmupStage(policy=WarmupPolicy.LINEAR, max_iters=499, value=0.25, lr_scale=2.0),
            WarmupStage(policy=WarmupPolicy.POLY, max_iters=8499, value=0.5, decay_iters=12_000, lr_scale=0.8),
        ],
        sequence(
            segment(
                lr(
                    linear={
                        "initial_learning_rate": L * 2.0 * 0.25,
                        "final_learning_rate": L * 2.0,
                        "num_steps": 499,
                    }
                ),
                500,
            ),
            segment(wsd_polynomial(L * 0.8, 12_000, 0.5), 8000, from_step=500),
            segment(const(L)),
        ),
    ),
    # STEP: value ** (i // decay_iters), decay_iters defaulting to 1.
    "STEP-STEP": TorchrecCase(
        [
            WarmupStage(policy=WarmupPolicy.STEP, max_iters=4999, value=0.8, decay_iters=250, lr_scale=0.5),
            WarmupStage(policy=WarmupPolicy.STEP, max_iters=8999, value=0.9995),
        ],
        sequence(
            segment(
                lr(
                    exponential_decay={
                        "learning_rate": L * 0.5,
                        "decay_rate": 0.8,
                        "transition_steps": 250,
                        "staircase": True,
                    }
                ),
                5000,
            ),
            segment(
                lr(
                    exponential_decay={
                        "learning_rate": L,
                        "decay_rate": 0.9995,
                        "transition_steps": 1,
                        "staircase": True,
                    }
                ),
                4000,
                from_step=5000,
            ),
            segment(const(L)),
        ),
    ),
    # INVSQRT: 1 / sqrt(i); from the stage's first iteration a that is lr / sqrt(a) / sqrt((s + a) / a) at the
    # segment's step s. It cannot be the first stage (see test_torchrec_invsqrt_cannot_come_first).
    "LINEAR-INVSQRT": TorchrecCase(
        [
            WarmupStage(policy=WarmupPolicy.LINEAR, max_iters=1000, value=0.0),
            WarmupStage(policy=WarmupPolicy.INVSQRT, max_iters=8999, lr_scale=3.0),
        ],
        sequence(
            segment(lr(linear={"initial_learning_rate": 0.0, "final_learning_rate": L, "num_steps": 1000}), 1001),
            segment(lr(inverse_sqrt={"learning_rate": L * 3.0 / math.sqrt(1001), "timescale": 1001}), 7999),
            segment(const(L)),
        ),
    ),
    # COSINE_ANNEALING_WARM_RESTARTS: eta_min = value, restarts every sgdr_period global iterations.
    "CONSTANT-COSINE_ANNEALING_WARM_RESTARTS": TorchrecCase(
        [
            WarmupStage(policy=WarmupPolicy.CONSTANT, max_iters=99, value=0.3),
            WarmupStage(
                policy=WarmupPolicy.COSINE_ANNEALING_WARM_RESTARTS,
                max_iters=8999,
                value=0.1,
                sgdr_period=700,
                lr_scale=1.5,
            ),
        ],
        sequence(
            segment(const(L * 0.3), 100),
            segment(
                lr(
                    cosine_restarts={
                        "learning_rate": L * 1.5,
                        "final_learning_rate": L * 1.5 * 0.1,
                        "cycle_steps": 700,
                    }
                ),
                8900,
                from_step=100,
            ),
            segment(const(L)),
        ),
    ),
    "COSINE_ANNEALING_WARM_RESTARTS-eta_min-0": TorchrecCase(
        [WarmupStage(policy=WarmupPolicy.COSINE_ANNEALING_WARM_RESTARTS, max_iters=8999, value=0.0, sgdr_period=1000)],
        sequence(
            segment(lr(cosine_restarts={"learning_rate": L, "cycle_steps": 1000}), 9000),
            segment(const(L)),
        ),
    ),
}


@pytest.mark.parametrize("name", case_ids(list(TORCHREC_CASES), {"LINEAR-scaled-POLY-long-decay"}))
def test_torchrec_warmup_policy(name):
    case = TORCHREC_CASES[name]
    theirs = warmup_rates(case.stages, case.steps)
    assert_matches(case.cfg, theirs, "WarmupOptimizer")


def test_torchrec_invsqrt_cannot_come_first():
    """INVSQRT at iteration 0 is 1 / sqrt(0): WarmupOptimizer's constructor raises, so the policy only
    follows another stage (from an iteration a >= 1)."""
    param = torch.nn.Parameter(torch.zeros(1))
    keyed = KeyedOptimizerWrapper({"w": param}, lambda ps: torch.optim.SGD(ps, lr=1.0))
    with pytest.raises(ZeroDivisionError):
        WarmupOptimizer(keyed, stages=[WarmupStage(policy=WarmupPolicy.INVSQRT, max_iters=10)], lr=L)


def test_torchrec_stage_boundaries_are_inclusive():
    """A stage's max_iters is its last iteration: the NONE stage starts one iteration later."""
    stages = [WarmupStage(policy=WarmupPolicy.CONSTANT, max_iters=3, value=0.5)]
    assert warmup_rates(stages, 6).tolist() == [L * 0.5] * 4 + [L] * 2


# ---------------------------------------------------------------------------------------------
# The configs as YAML
# ---------------------------------------------------------------------------------------------

ALL_CONFIGS = {
    **{f"torch-{name}": case.cfg for name, case in TORCH_CASES.items()},
    **{f"torchrec-{name}": case.cfg for name, case in TORCHREC_CASES.items()},
}


@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_config_loads_from_yaml(name):
    cfg = ALL_CONFIGS[name]
    text = yaml.safe_dump(cfg.model_dump(exclude_none=True), sort_keys=False)
    loaded = config.LearningRate.model_validate(yaml.safe_load(text))
    assert loaded == cfg


def test_torchrec_sequence_written_in_yaml(tmp_path):
    """The LINEAR-CONSTANT-POLY stages as a user writes them in an optimizer's YAML file."""
    path = tmp_path / "opt.yaml"
    path.write_text(
        """
sgd: {lr: 0.05}
learning_rate:
  sequence:
    - learning_rate: {linear: {initial_learning_rate: 0.0, final_learning_rate: 0.05, num_steps: 999}}
      num_steps: 1000
    - learning_rate: {constant: 0.0225}
      num_steps: 2000
    - learning_rate:
        warmup_stable_decay:
          learning_rate: 0.05
          num_decay_steps: 7999
          decay_shape: polynomial
          power: 2.0
      num_steps: 5000
      from_step: 3000
    - learning_rate: {constant: 0.05}
"""
    )
    loaded = config.load_config_from_yaml(config.OptimizerConfig, path).learning_rate
    expected = TORCHREC_CASES["LINEAR-CONSTANT-POLY"].cfg
    steps = sorted({0, 1, *expected.breakpoints, *(b - 1 for b in expected.breakpoints), 9999})
    assert [schedules.compute_lr(loaded, s) for s in steps] == pytest.approx(
        [schedules.compute_lr(expected, s) for s in steps], rel=1e-15
    )
    bad = path.read_text().replace("from_step: 3000", "from_step: -1")
    path.write_text(bad)
    with pytest.raises(pydantic.ValidationError, match=r"sequence\.2\.from_step"):
        config.load_config_from_yaml(config.OptimizerConfig, path)
