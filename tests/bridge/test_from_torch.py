"""``learning_rates_from_torch``: the configs of torch's schedulers and torchrec's warmup, against the real thing.

Each case builds the framework's own scheduler on an SGD optimizer with
several param groups (different rates, one named and one not), steps it as a
user does (``optimizer.step(); scheduler.step()``) and reads every group's rate
before each step, step 0 right after construction. The converted configs must
give the same rates through ``compute_lr`` and through an ``LRShim`` driving a
second optimizer with the same groups, to a relative error of 1e-12 (exactly
where the framework gives 0), at every step of a run that passes every
boundary with its neighbours.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as sch
from torchrec.optim.keyed import KeyedOptimizerWrapper
from torchrec.optim.warmup import WarmupOptimizer, WarmupPolicy, WarmupStage

import torch_bridge
from functional_opt import config, schedules

pytestmark = pytest.mark.filterwarnings("error")

RTOL = 1e-12
STEPS = 3000
GROUPS = [{"lr": 0.1, "name": "dense"}, {"lr": 0.037}]  # keys "dense" and "1"


def sgd(groups: list[dict[str, Any]] = GROUPS) -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], **g} for g in groups], lr=1.0)


def rates(optimizer: torch.optim.Optimizer, step: Callable[[], None], steps: int) -> np.ndarray:
    """``(steps, groups)``: every group's rate before each ``optimizer.step()``; ``step()`` follows it."""
    out = []
    for _ in range(steps):
        out.append([float(g["lr"]) for g in optimizer.param_groups])
        optimizer.step()
        step()
    return np.asarray(out, dtype=np.float64)


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """``|ours - theirs| / |theirs|``: 0 where both are 0, inf where only theirs is."""
    diff = np.abs(ours - theirs)
    with np.errstate(divide="ignore", invalid="ignore"):
        err = diff / np.abs(theirs)
    return np.where(theirs == 0, np.where(diff == 0, 0.0, np.inf), err)


def assert_same(name: str, configs: dict[str, config.LearningRate], theirs: np.ndarray, groups: list[dict]) -> float:
    """``compute_lr`` and an ``LRShim`` give ``theirs`` at every step, for every group; returns the worst error."""
    steps = len(theirs)
    ours = np.asarray([[schedules.compute_lr(c, k) for c in configs.values()] for k in range(steps)])
    optimizer = sgd(groups)
    shim = torch_bridge.LRShim(optimizer, configs)
    shimmed = rates(optimizer, shim.step, steps)
    worst = 0.0
    for side, values in (("compute_lr", ours), ("LRShim", shimmed)):
        err = relative_error(values, theirs)
        k, g = np.unravel_index(int(np.argmax(err)), err.shape)
        assert err[k, g] <= RTOL, (
            f"{name} {side}: group {g} step {k}: torch {theirs[k, g]!r}, ours {values[k, g]!r} ({err[k, g]:.3g}); "
            f"{int(np.count_nonzero(err > RTOL))} steps off"
        )
        worst = max(worst, float(err.max()))
    return worst


def check_torch(name: str, make: Callable[[torch.optim.Optimizer], Any], steps: int = STEPS, groups=GROUPS) -> dict:
    """Converts the scheduler ``make`` builds and compares it with a fresh run of the same scheduler.

    A growing rate warns where it will pass float32's maximum (far beyond the steps compared).
    """
    optimizer = sgd(groups)
    if name in GROWING:
        with pytest.warns(UserWarning, match=r"from step \d+: the rate passes float32's maximum"):
            configs = torch_bridge.learning_rates_from_torch(make(optimizer))
    else:
        configs = torch_bridge.learning_rates_from_torch(make(optimizer))
    assert list(configs) == [g.get("name", str(i)) for i, g in enumerate(groups)]
    optimizer = sgd(groups)
    scheduler = make(optimizer)
    assert_same(name, configs, rates(optimizer, scheduler.step, steps), groups)
    return configs


def seq(*parts: Callable[[torch.optim.Optimizer], Any], milestones: list[int]) -> Callable:
    """``SequentialLR`` of the schedulers ``parts`` build, constructed in that order on one optimizer."""
    return lambda opt: sch.SequentialLR(opt, [p(opt) for p in parts], milestones=milestones)


GROWING = {"StepLR-growth", "ExponentialLR-growth"}
TORCH_CASES: dict[str, Callable[[torch.optim.Optimizer], Any]] = {
    "StepLR-30-0.9": lambda o: sch.StepLR(o, step_size=30, gamma=0.9),
    "StepLR-1-0.999": lambda o: sch.StepLR(o, step_size=1, gamma=0.999),
    "StepLR-gamma-0": lambda o: sch.StepLR(o, step_size=700, gamma=0.0),
    "StepLR-growth": lambda o: sch.StepLR(o, step_size=500, gamma=1.5),
    "StepLR-integral-float-step_size": lambda o: sch.StepLR(o, step_size=250.0, gamma=0.5),
    "MultiStepLR": lambda o: sch.MultiStepLR(o, milestones=[100, 2500], gamma=0.1),
    "MultiStepLR-repeated-unsorted-0": lambda o: sch.MultiStepLR(o, milestones=[700, 30, 0, 30, 2500, 2500], gamma=0.7),
    "MultiStepLR-growth-unreached-milestones": lambda o: sch.MultiStepLR(
        o, milestones=[-5, 2.5, 1000, 2000], gamma=2.0
    ),
    "ExponentialLR-0.999": lambda o: sch.ExponentialLR(o, gamma=0.999),
    "ExponentialLR-growth": lambda o: sch.ExponentialLR(o, gamma=1.0003),
    "ExponentialLR-1": lambda o: sch.ExponentialLR(o, gamma=1.0),
    "ExponentialLR-0": lambda o: sch.ExponentialLR(o, gamma=0.0),
    "LinearLR-warmup": lambda o: sch.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=2000),
    "LinearLR-decay": lambda o: sch.LinearLR(o, start_factor=1.0, end_factor=0.05, total_iters=2500),
    "LinearLR-to-0": lambda o: sch.LinearLR(o, start_factor=0.5, end_factor=0.0, total_iters=2000),
    "LinearLR-to-0-positive-last-ratio": lambda o: sch.LinearLR(o, start_factor=0.7, end_factor=0.0, total_iters=1000),
    "LinearLR-defaults": lambda o: sch.LinearLR(o),
    "LinearLR-total_iters-0": lambda o: sch.LinearLR(o, start_factor=0.25, total_iters=0),
    "ConstantLR": lambda o: sch.ConstantLR(o, factor=0.25, total_iters=1000),
    "ConstantLR-defaults": lambda o: sch.ConstantLR(o),
    "ConstantLR-total_iters-0": lambda o: sch.ConstantLR(o, factor=0.3, total_iters=0),
    "PolynomialLR-1": lambda o: sch.PolynomialLR(o, total_iters=2000, power=1.0),
    "PolynomialLR-2": lambda o: sch.PolynomialLR(o, total_iters=2000, power=2.0),
    "PolynomialLR-0.5": lambda o: sch.PolynomialLR(o, total_iters=2999, power=0.5),
    "PolynomialLR-power-0": lambda o: sch.PolynomialLR(o, total_iters=100, power=0.0),
    "CosineAnnealingWarmRestarts-500": lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=500),
    "CosineAnnealingWarmRestarts-eta_min": lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=499, eta_min=1e-4),
    "CosineAnnealingWarmRestarts-mult-2": lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=2),
    "CosineAnnealingWarmRestarts-mult-3": lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=37, T_mult=3, eta_min=1e-3),
    "SequentialLR-LinearLR-ExponentialLR": seq(
        lambda o: sch.LinearLR(o, start_factor=0.01, total_iters=500),
        lambda o: sch.ExponentialLR(o, gamma=0.9995),
        milestones=[500],
    ),
    "SequentialLR-ConstantLR-CosineAnnealingWarmRestarts-StepLR": seq(
        lambda o: sch.ConstantLR(o, factor=0.5, total_iters=100),
        lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=300, T_mult=2, eta_min=1e-5),
        lambda o: sch.StepLR(o, step_size=300, gamma=0.5),
        milestones=[300, 1200],
    ),
    "SequentialLR-PolynomialLR-MultiStepLR": seq(
        lambda o: sch.PolynomialLR(o, total_iters=1000, power=2.0),
        # At its milestone MultiStepLR starts from its closed form, which counts milestone -3 at epoch 0.
        lambda o: sch.MultiStepLR(o, milestones=[-3, 1000, 1500, 1500], gamma=0.3),
        milestones=[1000],
    ),
    "SequentialLR-CosineAnnealingWarmRestarts-first-OneCycleLR-cut-short": seq(
        lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=200, T_mult=2, eta_min=0.01),
        # Its segment ends before its total_steps: no warning.
        lambda o: sch.OneCycleLR(o, max_lr=[0.3, 0.2], total_steps=2000, three_phase=True, anneal_strategy="linear"),
        lambda o: sch.ExponentialLR(o, gamma=0.999),
        milestones=[1400, 2400],
    ),
    "SequentialLR-milestone-0-and-repeated": seq(
        lambda o: sch.StepLR(o, step_size=10, gamma=0.5),
        lambda o: sch.LinearLR(o, start_factor=0.2, total_iters=400),
        lambda o: sch.ExponentialLR(o, gamma=0.5),
        lambda o: sch.ConstantLR(o, factor=0.3, total_iters=0),  # closed form at its milestone: the base rate
        lambda o: sch.PolynomialLR(o, total_iters=1000, power=1.5),
        milestones=[0, 700, 700, 1500],
    ),
}


@pytest.mark.parametrize("name", list(TORCH_CASES))
def test_torch_scheduler(name):
    check_torch(name, TORCH_CASES[name])


def test_groups_all_named():
    groups = [{"lr": 0.3, "name": "tower_a"}, {"lr": 0.01, "name": "backbone_x"}, {"lr": 1.0, "name": "z"}]
    check_torch("PolynomialLR-three-named-groups", lambda o: sch.PolynomialLR(o, 1500, power=3.0), groups=groups)


def test_linear_lr_to_0_whose_last_ratio_is_positive_holds_it():
    """torch's last LinearLR ratio need not be 0: the config holds the tiny rate torch ends on."""
    configs = check_torch("LinearLR-to-0-positive-last-ratio", TORCH_CASES["LinearLR-to-0-positive-last-ratio"])
    assert 0 < schedules.compute_lr(configs["dense"], 1000) < 1e-15


def test_linear_lr_to_0_with_a_negative_last_ratio_warns_and_gives_0():
    """LinearLR(start_factor=1/3, end_factor=0, 1000): torch's running product ends on -7e-18 (a negative rate)."""

    def make(o):
        return sch.LinearLR(o, start_factor=1 / 3, end_factor=0.0, total_iters=1000)

    groups = [{"lr": 0.1, "name": "dense"}]
    message = r"LinearLR: .*\['dense'\] follows it for steps 0 \.\. 999 only; from step 1000: torch's running product"
    with pytest.warns(UserWarning, match=message + " gives the negative rate"):
        configs = torch_bridge.learning_rates_from_torch(make(sgd(groups)))
    optimizer = sgd(groups)
    theirs = rates(optimizer, make(optimizer).step, 1010)
    assert (theirs[1000:] < 0).all()
    assert_same("LinearLR-to-0-negative-last-ratio", configs, theirs[:1000], groups)
    assert schedules.compute_lr(configs["dense"], 1000) == 0.0


def test_growth_past_float32_warns_at_the_step():
    def make(o):
        return sch.ExponentialLR(o, gamma=2.0)

    groups = [{"lr": 1.0}]
    with pytest.warns(UserWarning, match=r"ExponentialLR: .* follows it for steps 0 \.\. 127 only; from step 128: "):
        configs = torch_bridge.learning_rates_from_torch(make(sgd(groups)))
    optimizer = sgd(groups)
    theirs = rates(optimizer, make(optimizer).step, 140)
    assert theirs[127, 0] < np.finfo(np.float32).max < theirs[128, 0]
    assert_same("ExponentialLR-growth-past-float32", configs, theirs[:128], groups)


ONE_CYCLE = {
    "OneCycleLR-defaults": {"max_lr": [0.1, 0.02], "total_steps": STEPS},
    "OneCycleLR-linear": {
        "max_lr": 0.2,
        "total_steps": STEPS,
        "anneal_strategy": "linear",
        "pct_start": 0.25,
        "div_factor": 10.0,
        "final_div_factor": 100.0,
    },
    "OneCycleLR-cos-three_phase": {
        "max_lr": [0.3, 0.05],
        "total_steps": STEPS,
        "three_phase": True,
        "pct_start": 0.2,
        "div_factor": 5.0,
        "final_div_factor": 1e3,
    },
    "OneCycleLR-linear-three_phase-odd": {
        "max_lr": 0.05,
        "epochs": 7,
        "steps_per_epoch": 431,
        "anneal_strategy": "linear",
        "three_phase": True,
        "pct_start": 0.4,
        "div_factor": 20.0,
        "final_div_factor": 50.0,
    },
}


@pytest.mark.parametrize("name", list(ONE_CYCLE))
def test_one_cycle_lr_warns_and_matches_up_to_total_steps(name):
    kwargs = ONE_CYCLE[name]
    total = kwargs.get("total_steps") or kwargs["epochs"] * kwargs["steps_per_epoch"]

    def make(o):
        return sch.OneCycleLR(o, **kwargs)

    message = rf"OneCycleLR: .* follows it for steps 0 \.\. {total - 1} only; from step {total}: torch extrapolates"
    with pytest.warns(UserWarning, match=message):
        configs = torch_bridge.learning_rates_from_torch(make(sgd()))
    optimizer = sgd()
    assert_same(name, configs, rates(optimizer, make(optimizer).step, total), GROUPS)


def test_sequential_lr_one_cycle_lr_sets_initial_lr_and_warns_at_its_end():
    """OneCycleLR's constructor overwrites initial_lr, which SequentialLR resets the rates to before the LinearLR
    warmup's first step: the warmup ramps from max_lr / div_factor * start_factor. OneCycleLR's end is global."""
    make = seq(
        lambda o: sch.LinearLR(o, start_factor=0.1, total_iters=200),
        lambda o: sch.OneCycleLR(o, max_lr=[0.2, 0.4], total_steps=2500),
        milestones=[200],
    )
    message = r"follows it for steps 0 \.\. 2699 only; from step 2700: SequentialLR schedulers\[1\] \(OneCycleLR\): "
    with pytest.warns(UserWarning, match=message + "torch extrapolates"):
        configs = torch_bridge.learning_rates_from_torch(make(sgd()))
    optimizer = sgd()
    theirs = rates(optimizer, make(optimizer).step, 2700)
    assert theirs[0].tolist() == pytest.approx([0.2 / 25 * 0.1, 0.4 / 25 * 0.1], rel=1e-15)
    assert_same("SequentialLR-LinearLR-OneCycleLR", configs, theirs, GROUPS)


def test_the_config_describes_the_run_from_step_0_whatever_step_the_scheduler_is_at():
    optimizer = sgd()
    scheduler = sch.MultiStepLR(optimizer, milestones=[5, 9], gamma=0.5)
    before = torch_bridge.learning_rates_from_torch(scheduler)
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    assert torch_bridge.learning_rates_from_torch(scheduler) == before
    assert schedules.compute_lr(before["dense"], 0) == 0.1


def test_a_tensor_learning_rate_is_read_as_its_value():
    groups = [{"lr": torch.tensor(0.25, dtype=torch.float64)}]
    configs = torch_bridge.learning_rates_from_torch(sch.StepLR(sgd(groups), step_size=3))
    assert schedules.compute_lr(configs["0"], 3) == pytest.approx(0.025, rel=1e-15)


# ---------------------------------------------------------------------------------------------
# torchrec's WarmupOptimizer
# ---------------------------------------------------------------------------------------------

LR = 0.05


def warmup(stages: list[WarmupStage], lr: float = LR, **kwargs: Any) -> WarmupOptimizer:
    """A WarmupOptimizer over two param groups ("dense" and "1")."""
    params = {"w": torch.nn.Parameter(torch.zeros(1)), "v": torch.nn.Parameter(torch.zeros(1))}

    def factory(ps: list[torch.Tensor]) -> torch.optim.SGD:
        return torch.optim.SGD([{"params": [ps[0]], "name": "dense"}, {"params": [ps[1]]}], lr=1.0)

    return WarmupOptimizer(KeyedOptimizerWrapper(params, factory), stages=stages, lr=lr, **kwargs)


def check_warmup(name: str, stages: Callable[[], list[WarmupStage]], steps: int = STEPS) -> dict:
    configs = torch_bridge.learning_rates_from_torch(warmup(stages()))
    assert list(configs) == ["dense", "1"]
    assert configs["dense"] == configs["1"]
    optimizer = warmup(stages())
    assert_same(name, configs, rates(optimizer, lambda: None, steps), [{"name": "dense"}, {}])
    return configs


S = WarmupStage
P = WarmupPolicy
WARMUP_CASES: dict[str, Callable[[], list[WarmupStage]]] = {
    "LINEAR-CONSTANT-POLY": lambda: [
        S(policy=P.LINEAR, max_iters=999, value=0.0),
        S(policy=P.CONSTANT, max_iters=1499, value=0.3, lr_scale=1.5),
        S(policy=P.POLY, max_iters=2499, value=2.0),
    ],
    "LINEAR-from-0.25-scaled-POLY-long-decay": lambda: [
        S(policy=P.LINEAR, max_iters=499, value=0.25, lr_scale=2.0),
        S(policy=P.POLY, max_iters=2499, value=0.5, decay_iters=4000, lr_scale=0.8),
    ],
    "POLY-power-0-LINEAR-later": lambda: [
        S(policy=P.POLY, max_iters=300, value=0.0),
        S(policy=P.LINEAR, max_iters=2000, value=0.5),
    ],
    "STEP-STEP": lambda: [
        S(policy=P.STEP, max_iters=1499, value=0.8, decay_iters=250, lr_scale=0.5),
        S(policy=P.STEP, max_iters=2499, value=0.9995),
    ],
    "STEP-growth-and-0": lambda: [
        S(policy=P.STEP, max_iters=999, value=1.5, decay_iters=100),
        S(policy=P.STEP, max_iters=1999, value=0.0, decay_iters=1500),
    ],
    "LINEAR-INVSQRT": lambda: [
        S(policy=P.LINEAR, max_iters=1000, value=0.0),
        S(policy=P.INVSQRT, max_iters=2499, lr_scale=3.0),
    ],
    "CONSTANT-COSINE_ANNEALING_WARM_RESTARTS": lambda: [
        S(policy=P.CONSTANT, max_iters=99, value=0.3),
        S(policy=P.COSINE_ANNEALING_WARM_RESTARTS, max_iters=2499, value=0.1, sgdr_period=700, lr_scale=1.5),
    ],
    "COSINE_ANNEALING_WARM_RESTARTS-eta_min-0": lambda: [
        S(policy=P.COSINE_ANNEALING_WARM_RESTARTS, max_iters=2499, value=0.0, sgdr_period=1000),
    ],
    "INTERPOLATE-before-and-inside": lambda: [
        S(policy=P.CONSTANT, max_iters=199, value=0.5),
        S(policy=P.INTERPOLATE, max_iters=1199, value=0.5, start_interpolating_iters=150, end_value=1.2),
        S(policy=P.INTERPOLATE, max_iters=1200, value=1.0, start_interpolating_iters=1000, end_value=0.9),
        S(policy=P.INTERPOLATE, max_iters=2499, value=0.9, start_interpolating_iters=1300, end_value=0.1),
    ],
    "no-stages": lambda: [],
}


@pytest.mark.parametrize("name", list(WARMUP_CASES))
def test_torchrec_warmup(name):
    check_warmup(name, WARMUP_CASES[name])


def test_torchrec_stage_boundaries_are_inclusive_and_global():
    def stages() -> list[WarmupStage]:
        return [S(policy=P.CONSTANT, max_iters=3, value=0.5), S(policy=P.LINEAR, max_iters=7, value=0.0)]

    configs = check_warmup("CONSTANT-LINEAR-boundaries", stages, steps=12)
    values = [schedules.compute_lr(configs["dense"], k) for k in range(10)]
    assert values[:4] == [LR * 0.5] * 4
    assert values[4] == pytest.approx(LR * 4 / 7, rel=1e-15)  # the global iteration, not the stage's
    assert values[8:] == [LR, LR]


def test_torchrec_step_growth_past_float32_warns():
    stages = [S(policy=P.STEP, max_iters=2000, value=1e10, decay_iters=100)]
    with pytest.warns(UserWarning, match=r"from step 400: WarmupOptimizer stage 0 \(STEP\): the rate passes"):
        torch_bridge.learning_rates_from_torch(warmup(stages, lr=1.0))


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


class MyStepLR(sch.StepLR):
    pass


class MyLambdaLR(sch.LambdaLR):
    pass


REFUSED: dict[str, tuple[Callable[[torch.optim.Optimizer], Any], type, str]] = {
    "LambdaLR": (lambda o: sch.LambdaLR(o, lambda k: 0.9**k), TypeError, r"LambdaLR cannot be converted: .*lr_lambda"),
    "MultiplicativeLR": (
        lambda o: sch.MultiplicativeLR(o, lambda k: 0.9),
        TypeError,
        r"MultiplicativeLR cannot .*lr_lambda",
    ),
    "ReduceLROnPlateau": (lambda o: sch.ReduceLROnPlateau(o), TypeError, r"ReduceLROnPlateau cannot .*metrics"),
    "ChainedScheduler": (
        lambda o: sch.ChainedScheduler([sch.ConstantLR(o), sch.ExponentialLR(o, 0.9)]),
        TypeError,
        r"ChainedScheduler cannot be converted: .*product",
    ),
    "CyclicLR": (
        lambda o: sch.CyclicLR(o, 0.01, 0.1, cycle_momentum=False),
        TypeError,
        r"CyclicLR cannot .*triangular",
    ),
    "CosineAnnealingLR": (lambda o: sch.CosineAnnealingLR(o, T_max=10), TypeError, r"CosineAnnealingLR cannot .*T_max"),
    "subclass": (lambda o: MyStepLR(o, 3), TypeError, r"MyStepLR is a subclass of StepLR, which may compute other"),
    "subclass-of-refused": (
        lambda o: MyLambdaLR(o, lambda k: 1.0),
        TypeError,
        r"MyLambdaLR \(a subclass of LambdaLR\)",
    ),
    "StepLR-gamma<0": (
        lambda o: sch.StepLR(o, 3, gamma=-0.5),
        ValueError,
        r"StepLR: gamma=-0.5 must be a finite number >= 0",
    ),
    "StepLR-fractional-step_size": (
        lambda o: sch.StepLR(o, 2.5),
        ValueError,
        r"StepLR: step_size=2.5 must be an integer",
    ),
    "StepLR-step_size-0": (lambda o: sch.StepLR(o, 0), ValueError, r"StepLR: step_size=0 must be >= 1"),
    "ExponentialLR-gamma-nan": (lambda o: sch.ExponentialLR(o, math.nan), ValueError, r"ExponentialLR: gamma=nan"),
    "MultiStepLR-gamma<0": (lambda o: sch.MultiStepLR(o, [3], gamma=-1.0), ValueError, r"MultiStepLR: gamma=-1.0"),
    "ConstantLR-factor-0": (
        lambda o: sch.ConstantLR(o, factor=0.0, total_iters=4),
        ValueError,
        r"ConstantLR: factor=0: ",
    ),
    "LinearLR-fractional-total_iters": (
        lambda o: sch.LinearLR(o, total_iters=2.5),
        ValueError,
        r"LinearLR: total_iters=2.5",
    ),
    "PolynomialLR-power<0": (
        lambda o: sch.PolynomialLR(o, 4, power=-1.0),
        ValueError,
        r"PolynomialLR: power=-1.0 must",
    ),
    "MultiStepLR-beyond-float32": (
        lambda o: sch.MultiStepLR(o, [10, 20], gamma=1e30),
        ValueError,
        r"MultiStepLR, param group 'dense': its rates cannot be written as a config: multi_step: .*float32",
    ),
    "CosineAnnealingWarmRestarts-eta_min<0": (
        lambda o: sch.CosineAnnealingWarmRestarts(o, T_0=5, eta_min=-1.0),
        ValueError,
        r"CosineAnnealingWarmRestarts, param group 'dense': .*final_learning_rate.*must be >= 0",
    ),
    "OneCycleLR-phase-of-0-steps": (
        lambda o: sch.OneCycleLR(o, max_lr=0.1, total_steps=10, pct_start=0.05),
        ValueError,
        r"OneCycleLR, param group 'dense': its rates cannot be written as a config: one_cycle: .*phase 1",
    ),
    "SequentialLR-nested": (
        lambda o: sch.SequentialLR(o, [sch.StepLR(o, 3), sch.SequentialLR(o, [sch.StepLR(o, 2)], [])], [5]),
        TypeError,
        r"SequentialLR schedulers\[1\] \(SequentialLR\): a SequentialLR inside a SequentialLR",
    ),
    "SequentialLR-repeated-scheduler": (
        lambda o: (lambda s: sch.SequentialLR(o, [s, sch.StepLR(o, 2), s], [5, 9]))(sch.ExponentialLR(o, 0.9)),
        ValueError,
        r"SequentialLR: a scheduler appears twice",
    ),
    "SequentialLR-decreasing-milestones": (
        lambda o: sch.SequentialLR(o, [sch.StepLR(o, 3), sch.StepLR(o, 2), sch.StepLR(o, 4)], [9, 5]),
        ValueError,
        r"SequentialLR: milestones=\[9, 5\] must not decrease",
    ),
    "SequentialLR-with-a-refused-scheduler": (
        lambda o: sch.SequentialLR(o, [sch.StepLR(o, 3), sch.LambdaLR(o, lambda k: 1.0)], [5]),
        TypeError,
        r"SequentialLR schedulers\[1\] \(LambdaLR\): LambdaLR cannot be converted",
    ),
    "SequentialLR-LinearLR-total_iters-0-at-a-milestone": (
        lambda o: sch.SequentialLR(o, [sch.StepLR(o, 3), sch.LinearLR(o, total_iters=0)], [5]),
        ValueError,
        r"SequentialLR schedulers\[1\] \(LinearLR\): total_iters=0: at its SequentialLR milestone",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused(name):
    make, error, message = REFUSED[name]
    with pytest.raises(error, match=r"^learning_rates_from_torch: " + message):
        torch_bridge.learning_rates_from_torch(make(sgd()))


def test_refused_objects_that_are_no_scheduler_and_duplicate_group_keys():
    with pytest.raises(TypeError, match=r"SGD is not supported: the supported schedulers are StepLR, MultiStepLR"):
        torch_bridge.learning_rates_from_torch(sgd())
    twice = sgd([{"lr": 0.1, "name": "1"}, {"lr": 0.2}])
    with pytest.raises(ValueError, match=r"StepLR: param groups share the keys \['1'\]"):
        torch_bridge.learning_rates_from_torch(sch.StepLR(twice, 3))
    numbered = sgd([{"lr": 0.1, "name": 7}])
    with pytest.raises(ValueError, match=r"param group 0 has a 'name' that is not a string: 7"):
        torch_bridge.learning_rates_from_torch(sch.StepLR(numbered, 3))


class MyWarmup(WarmupOptimizer):
    pass


WARMUP_REFUSED: dict[str, tuple[Callable[[], Any], type, str]] = {
    "POLY-past-decay_iters": (
        lambda: warmup([S(policy=P.POLY, max_iters=100, value=2.0, decay_iters=50)]),
        ValueError,
        r"WarmupOptimizer stage 0 \(POLY\): decay_iters=50 < max_iters=100",
    ),
    "POLY-negative-power": (
        lambda: warmup([S(policy=P.POLY, max_iters=100, value=-1.0, decay_iters=200)]),
        ValueError,
        r"WarmupOptimizer stage 0 \(POLY\): value=-1.0 must be a finite number >= 0",
    ),
    "STEP-negative": (
        lambda: warmup([S(policy=P.STEP, max_iters=100, value=-0.5)]),
        ValueError,
        r"WarmupOptimizer stage 0 \(STEP\): value=-0.5 must be",
    ),
    "LINEAR-negative-rates": (
        lambda: warmup([S(policy=P.LINEAR, max_iters=100, value=-0.5)]),
        ValueError,
        r"WarmupOptimizer stage 0 \(LINEAR\), param group 'dense, 1': its rates cannot be written as a config: "
        r"linear.initial_learning_rate",
    ),
    "COSINE-sgdr_period-0": (
        lambda: warmup(
            [S(policy=P.CONSTANT, max_iters=3), S(policy=P.COSINE_ANNEALING_WARM_RESTARTS, max_iters=9, sgdr_period=0)]
        ),
        ValueError,
        r"WarmupOptimizer stage 1 \(COSINE_ANNEALING_WARM_RESTARTS\): sgdr_period=0 must be >= 1",
    ),
    "lr_param": (
        lambda: warmup([S(policy=P.CONSTANT, max_iters=3)], lr_param="momentum"),
        ValueError,
        r"WarmupOptimizer: lr_param='momentum': the configs drive a group's 'lr' only",
    ),
    "subclass": (
        lambda: MyWarmup(warmup([])._optimizer, stages=[]),
        TypeError,
        r"MyWarmup is a subclass of WarmupOptimizer",
    ),
}


@pytest.mark.parametrize("name", list(WARMUP_REFUSED))
def test_torchrec_refused(name):
    make, error, message = WARMUP_REFUSED[name]
    with pytest.raises(error, match=r"^learning_rates_from_torch: " + message):
        torch_bridge.learning_rates_from_torch(make())


def test_torchrec_invsqrt_first_stage_cannot_be_built():
    """The converter refuses an INVSQRT first stage; torchrec itself already fails to build one (1 / sqrt(0))."""
    with pytest.raises(ZeroDivisionError):
        warmup([S(policy=P.INVSQRT, max_iters=10)])
