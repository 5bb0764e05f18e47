"""The schedule kinds against optax's own schedules, in float64 (``jax.enable_x64``).

Each case is an optax schedule and the config that reproduces it. Both are
evaluated at steps ``0 .. n - 1`` (n >= 10,000, past every boundary) and at a few
far steps; ours are :func:`functional_opt.schedules.compute_lr` per step (numpy
float64) and the JAX schedule on all the steps at once. Every one of ours must
be within a relative error of 1e-12 of optax (exactly equal where optax gives 0).
The configs are also loaded from YAML text, and bad values in that text are
refused with errors naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pydantic
import pytest
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

from functional_opt import config, schedules

FAR_STEPS = (10**6, 2**31 - 1, 2**31, 10**9 + 7, 10**12)


def linear(initial: float, final: float, num_steps: int) -> config.LearningRate:
    return lr(linear={"initial_learning_rate": initial, "final_learning_rate": final, "num_steps": num_steps})


def restarts(learning_rate: float, final: float, cycle_steps: int, cycle_mult: int = 1) -> config.LearningRate:
    return lr(
        cosine_restarts={
            "learning_rate": learning_rate,
            "final_learning_rate": final,
            "cycle_steps": cycle_steps,
            "cycle_mult": cycle_mult,
        }
    )


def decay(learning_rate: float, decay_rate: float, transition_steps: int, **kw: Any) -> config.LearningRate:
    return lr(
        exponential_decay={
            "learning_rate": learning_rate,
            "decay_rate": decay_rate,
            "transition_steps": transition_steps,
            **kw,
        }
    )


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def x64_values(schedule: Callable, steps: np.ndarray) -> np.ndarray:
    """``schedule`` on all of ``steps`` at once (int64), under x64: float64 values."""
    with jax.enable_x64(True):
        values = schedule(jnp.asarray(steps, dtype=jnp.int64))
        assert jnp.asarray(values).dtype == jnp.float64
        return np.asarray(values, dtype=np.float64)


def our_rates(cfg: config.LearningRate, steps: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "compute_lr": np.asarray([schedules.compute_lr(cfg, int(k)) for k in steps], dtype=np.float64),
        "jax": x64_values(schedules.schedule_from_config(cfg), steps),
    }


def assert_matches(cfg: config.LearningRate, theirs: np.ndarray, steps: np.ndarray, framework: str) -> float:
    """Every one of ours equals ``theirs`` at ``steps`` to ``RTOL``; returns the worst relative error."""
    n = int(np.count_nonzero(steps == np.arange(len(steps))))
    assert n >= MIN_STEPS
    uncovered = [b for b in cfg.breakpoints if b + 1 >= n]
    assert not uncovered, f"breakpoints {uncovered} (or their next step) lie beyond the {n} steps compared"
    return assert_sides_match(cfg, our_rates(cfg, steps), theirs, steps, framework)


@dataclass(frozen=True)
class OptaxCase:
    """An optax schedule and the config that reproduces it at steps ``0 .. steps - 1`` and ``FAR_STEPS``."""

    schedule: Callable
    cfg: config.LearningRate
    steps: int = MIN_STEPS
    scalar_only: bool = False  # optax's piecewise_interpolate_schedule takes one step at a time: vmapped

    def values(self, steps: np.ndarray) -> np.ndarray:
        return x64_values(jax.vmap(self.schedule) if self.scalar_only else self.schedule, steps)

    def step_grid(self) -> np.ndarray:
        return np.concatenate([np.arange(self.steps), [s for s in FAR_STEPS if s >= self.steps]]).astype(np.int64)


def sgdr_config(cycles: list[dict[str, float]]) -> config.LearningRate:
    """The config of ``optax.sgdr_schedule(cycles)``, one segment per warmup and per cosine.

    A cycle is ``warmup_cosine_decay_schedule``: ``linear_schedule`` from ``init_value`` to
    ``peak_value`` over ``warmup_steps``, then ``peak * ((1 - alpha) * c + alpha)`` with
    ``alpha = end_value / peak_value`` and ``c = (1 + cos(pi * t / (decay_steps - warmup_steps))) / 2``:
    ``cosine_restarts`` with that cycle length, cut before its restart. After the last cycle optax
    holds its last value, ``end_value``.
    """
    parts = []
    for c in cycles:
        if c["warmup_steps"]:
            parts.append(segment(linear(c["init_value"], c["peak_value"], c["warmup_steps"]), c["warmup_steps"]))
        length = c["decay_steps"] - c["warmup_steps"]
        parts.append(segment(restarts(c["peak_value"], c["end_value"], length), length))
    parts.append(segment(const(cycles[-1]["end_value"])))
    return sequence(*parts)


def one_cycle_like_optax(transition_steps: int, peak: float, pct_start: float, div: float, final_div: float) -> dict:
    """The one_cycle config equal to ``optax.cosine_onecycle_schedule`` with these arguments.

    optax interpolates (cosine) from ``peak / div`` up to ``peak`` over steps ``0 .. b``
    with ``b = int(pct_start * transition_steps)``, then down to ``peak / (div * final_div)`` at
    ``transition_steps``, held after. torch's phases (our one_cycle) end at
    ``pct_start * total_steps - 1`` and ``total_steps - 1``: ``total_steps = transition_steps + 1``
    and ``pct_start = (b + 1) / total_steps`` put them on optax's steps.
    """
    total = transition_steps + 1
    return {
        "max_learning_rate": peak,
        "total_steps": total,
        "pct_start": (int(pct_start * transition_steps) + 1) / total,
        "div_factor": div,
        "final_div_factor": final_div,
    }


SGDR_MULT_2 = [
    {"init_value": 0.1, "peak_value": 0.1, "warmup_steps": 0, "decay_steps": 200 * 2**i, "end_value": 1e-4}
    for i in range(6)
]
SGDR_MULT_3 = [
    {"init_value": 0.1, "peak_value": 0.1, "warmup_steps": 0, "decay_steps": 100 * 3**i, "end_value": 1e-3}
    for i in range(5)
]
SGDR_WARMUP = [
    {"init_value": 0.0, "peak_value": 0.1, "warmup_steps": 300, "decay_steps": 3000, "end_value": 1e-3},
    {"init_value": 1e-3, "peak_value": 0.05, "warmup_steps": 200, "decay_steps": 7000, "end_value": 0.0},
]

OPTAX_CASES: dict[str, OptaxCase] = {
    # linear_schedule: (init - end) * (1 - clip(s - begin, 0, T) / T) + end.
    "linear_schedule-warmup": OptaxCase(optax.linear_schedule(0.0, 0.1, 1000), linear(0.0, 0.1, 1000)),
    "linear_schedule-decay": OptaxCase(optax.linear_schedule(0.1, 0.001, 8000), linear(0.1, 0.001, 8000)),
    "linear_schedule-transition_begin": OptaxCase(
        optax.linear_schedule(0.02, 0.1, 3000, transition_begin=500),
        sequence(segment(const(0.02), 500), segment(linear(0.02, 0.1, 3000))),
    ),
    # exponential_decay: init * rate ** ((s - begin) / T) (floored with staircase), clipped to end_value.
    "exponential_decay": OptaxCase(optax.exponential_decay(0.1, 100, 0.5), decay(0.1, 0.5, 100)),
    "exponential_decay-staircase": OptaxCase(
        optax.exponential_decay(0.1, 250, 0.8, staircase=True), decay(0.1, 0.8, 250, staircase=True)
    ),
    "exponential_decay-transition_begin": OptaxCase(
        optax.exponential_decay(0.1, 300, 0.7, transition_begin=1200), decay(0.1, 0.7, 300, transition_begin=1200)
    ),
    "exponential_decay-transition_begin-staircase": OptaxCase(
        optax.exponential_decay(0.05, 450, 0.6, transition_begin=777, staircase=True),
        decay(0.05, 0.6, 450, transition_begin=777, staircase=True),
    ),
    "exponential_decay-end_value-decay": OptaxCase(
        optax.exponential_decay(0.1, 100, 0.9, end_value=0.01), decay(0.1, 0.9, 100, final_learning_rate=0.01)
    ),
    "exponential_decay-end_value-growth": OptaxCase(
        optax.exponential_decay(1e-4, 1000, 2.0, end_value=0.05), decay(1e-4, 2.0, 1000, final_learning_rate=0.05)
    ),
    # join_schedules: schedule i at s - boundary_{i-1} from boundary_{i-1} on; the last for ever.
    "join_schedules": OptaxCase(
        optax.join_schedules(
            [
                optax.linear_schedule(0.0, 0.1, 500),
                optax.exponential_decay(0.1, 200, 0.9, staircase=True),
                optax.polynomial_schedule(0.05, 0.0, 2.0, 3000),
            ],
            [500, 4000],
        ),
        sequence(
            segment(linear(0.0, 0.1, 500), 500),
            segment(decay(0.1, 0.9, 200, staircase=True), 3500),
            segment(polynomial(0.05, 0.0, 3000, 2.0)),
        ),
    ),
    "join_schedules-nested": OptaxCase(
        optax.join_schedules(
            [
                optax.join_schedules(
                    [optax.constant_schedule(0.01), optax.linear_schedule(0.01, 0.2, 1000)],
                    [200],
                ),
                optax.join_schedules(
                    [
                        optax.exponential_decay(0.2, 1, 0.9993),
                        optax.join_schedules(
                            [optax.polynomial_schedule(0.1, 0.01, 0.5, 2000), optax.constant_schedule(0.003)],
                            [2500],
                        ),
                    ],
                    [3000],
                ),
            ],
            [1500],
        ),
        sequence(
            segment(sequence(segment(const(0.01), 200), segment(linear(0.01, 0.2, 1000))), 1500),
            segment(
                sequence(
                    segment(decay(0.2, 0.9993, 1), 3000),
                    segment(sequence(segment(polynomial(0.1, 0.01, 2000, 0.5), 2500), segment(const(0.003)))),
                )
            ),
        ),
    ),
    # polynomial_schedule: (init - end) * (1 - clip(s - begin, 0, T) / T) ** power + end.
    "polynomial_schedule-power-2": OptaxCase(
        optax.polynomial_schedule(0.1, 0.001, 2.0, 5000), polynomial(0.1, 0.001, 5000, 2.0)
    ),
    "polynomial_schedule-power-0.5-rising": OptaxCase(
        optax.polynomial_schedule(0.001, 0.1, 0.5, 6000), polynomial(0.001, 0.1, 6000, 0.5)
    ),
    "polynomial_schedule-transition_begin-as-stable-steps": OptaxCase(
        optax.polynomial_schedule(0.2, 0.01, 1.5, 6000, transition_begin=2500),
        polynomial(0.2, 0.01, 6000, 1.5, num_stable_steps=2500),
    ),
    # sgdr_schedule: cycles of warmup_cosine_decay_schedule joined end to end.
    "sgdr_schedule-mult-1": OptaxCase(
        optax.sgdr_schedule(
            [{"init_value": 0.1, "peak_value": 0.1, "warmup_steps": 0, "decay_steps": 1000, "end_value": 0.0}] * 9
        ),
        sequence(segment(restarts(0.1, 0.0, 1000), 9000), segment(const(0.0))),
    ),
    "sgdr_schedule-mult-2": OptaxCase(
        optax.sgdr_schedule(SGDR_MULT_2),
        sequence(segment(restarts(0.1, 1e-4, 200, 2), 12_600), segment(const(1e-4))),
        steps=12_700,
    ),
    "sgdr_schedule-mult-3": OptaxCase(
        optax.sgdr_schedule(SGDR_MULT_3),
        sequence(segment(restarts(0.1, 1e-3, 100, 3), 12_100), segment(const(1e-3))),
        steps=12_200,
    ),
    "sgdr_schedule-warmup-as-sequence": OptaxCase(
        optax.sgdr_schedule(SGDR_WARMUP), sgdr_config(SGDR_WARMUP), steps=10_100
    ),
    "sgdr_schedule-mult-2-as-sequence": OptaxCase(
        optax.sgdr_schedule(SGDR_MULT_2), sgdr_config(SGDR_MULT_2), steps=12_700
    ),
    # cosine_onecycle_schedule: piecewise_interpolate_schedule('cosine', ...): see one_cycle_like_optax.
    "cosine_onecycle_schedule-defaults": OptaxCase(
        optax.cosine_onecycle_schedule(10_000, 0.1),
        lr(one_cycle=one_cycle_like_optax(10_000, 0.1, 0.3, 25.0, 1e4)),
        steps=10_100,
        scalar_only=True,
    ),
    "cosine_onecycle_schedule-custom": OptaxCase(
        optax.cosine_onecycle_schedule(9999, 0.3, pct_start=0.25, div_factor=10.0, final_div_factor=100.0),
        lr(one_cycle=one_cycle_like_optax(9999, 0.3, 0.25, 10.0, 100.0)),
        steps=10_100,
        scalar_only=True,
    ),
}


# Variants of what the other cases cover, kept out of the quick subset.
SLOW_OPTAX_CASES = {
    "exponential_decay-transition_begin",
    "polynomial_schedule-transition_begin-as-stable-steps",
    "sgdr_schedule-mult-3",
    "sgdr_schedule-mult-2-as-sequence",
    "sgdr_schedule-warmup-as-sequence",
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_OPTAX_CASES else n for n in OPTAX_CASES]
)
def test_optax_schedule(name):
    case = OPTAX_CASES[name]
    steps = case.step_grid()
    theirs = case.values(steps)
    assert_matches(case.cfg, theirs, steps, "optax." + name.split("-")[0])


def test_polynomial_schedule_with_transition_begin_as_sequence():
    """optax divides by ``transition_steps``, a Python constant, which XLA turns into a multiplication by its
    rounded reciprocal; near the end of a power-3 decay to 0 that rounding is magnified (1.2e-12 relative at
    step 8498, 7 steps before the end). Ours divides exactly: it equals optax's formula evaluated exactly in
    float64 to 1e-12 relative, and optax itself to 1e-12 of the peak."""
    begin, transition, power, peak = 1500, 7000, 3.0, 0.1
    cfg = sequence(segment(const(peak), begin), segment(polynomial(peak, 0.0, transition, power)))
    steps = np.arange(begin + transition + 100)
    theirs = x64_values(
        jax.vmap(optax.polynomial_schedule(peak, 0.0, power, transition, transition_begin=begin)), steps
    )
    count = np.clip(steps - begin, 0, transition)
    formula = peak * (1 - count / transition) ** power  # optax's formula, with an exact division
    assert relative_error(theirs, formula).max() > 1e-13  # optax's own rounding, shown
    for side, values in our_rates(cfg, steps).items():
        assert relative_error(values, formula).max() <= RTOL, side
        assert np.abs(values - theirs).max() <= RTOL * peak, side


def test_cosine_onecycle_peak_is_not_torchs():
    """optax puts the peak at step int(pct_start * T); torch's OneCycleLR (our one_cycle with the same
    numbers) at pct_start * total_steps - 1. The naive config is a different curve; the one
    one_cycle_like_optax builds peaks where optax does."""
    transition, peak = 10_000, 0.1
    steps = np.arange(transition + 2)
    theirs = x64_values(jax.vmap(optax.cosine_onecycle_schedule(transition, peak)), steps)
    top = int(0.3 * transition)
    assert int(np.argmax(theirs)) == top
    assert theirs[top] == pytest.approx(peak, rel=1e-15)
    naive = lr(one_cycle={"max_learning_rate": peak, "total_steps": transition})
    assert schedules.compute_lr(naive, top - 1) == peak
    assert schedules.compute_lr(naive, top) < peak
    sample = steps[::97]
    assert relative_error([schedules.compute_lr(naive, int(s)) for s in sample], theirs[sample]).max() > 1e-3
    exact = lr(one_cycle=one_cycle_like_optax(transition, peak, 0.3, 25.0, 1e4))
    assert schedules.compute_lr(exact, top) == pytest.approx(peak, rel=1e-15)


def test_linear_schedule_computes_its_own_formula_not_its_docstrings():
    """optax documents I + (t - B) / T * (E - I) and computes (I - E) * (1 - (t - B) / T) + E; the two
    differ in the last bits. The linear kind is the computed form."""
    init, end, transition = 0.1, 0.001, 8000
    steps = np.arange(transition + 1)
    theirs = x64_values(optax.linear_schedule(init, end, transition), steps)
    documented = init + steps / transition * (end - init)
    assert np.count_nonzero(documented != theirs) > 0
    ours = np.asarray([schedules.compute_lr(linear(init, end, transition), int(s)) for s in steps])
    assert relative_error(ours, theirs).max() <= RTOL
    assert relative_error(ours, theirs).max() < relative_error(documented, theirs).max()


# ---------------------------------------------------------------------------------------------
# The configs as YAML
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTAX_CASES))
def test_config_loads_from_yaml(name):
    cfg = OPTAX_CASES[name].cfg
    text = yaml.safe_dump(cfg.model_dump(exclude_none=True), sort_keys=False)
    assert config.LearningRate.model_validate(yaml.safe_load(text)) == cfg


def test_sgdr_sequence_written_in_yaml(tmp_path):
    """The sgdr warmup config as a user writes it, through load_config_from_yaml."""
    path = tmp_path / "opt.yaml"
    path.write_text(
        """
adam: {lr: 0.1}
learning_rate:
  sequence:
    - {learning_rate: {linear: {initial_learning_rate: 0.0, final_learning_rate: 0.1, num_steps: 300}}, num_steps: 300}
    - learning_rate: {cosine_restarts: {learning_rate: 0.1, final_learning_rate: 1.0e-3, cycle_steps: 2700}}
      num_steps: 2700
    - learning_rate: {linear: {initial_learning_rate: 1.0e-3, final_learning_rate: 0.05, num_steps: 200}}
      num_steps: 200
    - {learning_rate: {cosine_restarts: {learning_rate: 0.05, cycle_steps: 6800}}, num_steps: 6800}
    - learning_rate: {constant: 0.0}
"""
    )
    assert config.load_config_from_yaml(config.OptimizerConfig, path).learning_rate == sgdr_config(SGDR_WARMUP)


BAD_YAML = {
    "negative-rate": (
        "linear: {initial_learning_rate: -0.1, final_learning_rate: 0.0, num_steps: 10}",
        r"linear\.initial_learning_rate",
        "initial_learning_rate",
    ),
    "num_steps-0": (
        "linear: {initial_learning_rate: 0.1, final_learning_rate: 0.0, num_steps: 0}",
        r"linear\.num_steps",
        "num_steps",
    ),
    "pct_start-1": (
        "one_cycle: {max_learning_rate: 0.1, total_steps: 100, pct_start: 1.0}",
        r"one_cycle\.pct_start",
        "pct_start",
    ),
    "last-segment-with-num_steps": (
        """
sequence:
  - {learning_rate: {constant: 0.1}, num_steps: 10}
  - {learning_rate: {constant: 0.01}, num_steps: 20}
""",
        r"sequence",
        r"sequence\[1\].*num_steps",
    ),
    "power-with-cosine-shape": (
        "warmup_stable_decay: {learning_rate: 0.1, num_decay_steps: 100, decay_shape: cosine, power: 2.0}",
        r"warmup_stable_decay",
        "power",
    ),
    "negative-decay-rate": (
        "exponential_decay: {learning_rate: 0.1, decay_rate: -0.5, transition_steps: 10}",
        r"exponential_decay\.decay_rate",
        "decay_rate",
    ),
}


@pytest.mark.parametrize("name", list(BAD_YAML))
def test_bad_yaml_names_the_field(name):
    text, location, message = BAD_YAML[name]
    with pytest.raises(pydantic.ValidationError) as info:
        config.LearningRate.model_validate(yaml.safe_load(text))
    errors = info.value.errors()
    assert len(errors) == 1, errors
    assert re.fullmatch(location, ".".join(str(part) for part in errors[0]["loc"])), errors
    assert re.search(message, str(info.value)), str(info.value)
