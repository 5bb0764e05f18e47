"""The schedule kinds beyond TML's four: one formula reaching every consumer, checked against a step-by-step reference.

``compute_lr`` and the tables (numpy float64), the pure JAX schedules (float64
and float32, batched, jitted and on host integers) and the JAX recap optimizer
(all groups in one plan) are compared with the plain-Python reference of
``tests/lr_reference.py``, which walks torch's cycles and phases instead of
using closed forms.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
import yaml
from lr_reference import peak, reference_lr
from schedule_kind_cases import CASES, step_grid

from functional_opt import config, grouping, schedule_plan, schedules
from functional_opt.recap_rules import grouped_torch_rules


def relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    scale = np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(got - expected) / scale))


@pytest.mark.parametrize("name", sorted(CASES))
def test_compute_lr_and_tables_equal_the_reference(name: str) -> None:
    lr = CASES[name]
    steps = step_grid(lr)
    expected = np.asarray([reference_lr(lr, s) for s in steps])
    table = schedule_plan.evaluate([lr], np.asarray(steps, dtype=np.int64))[:, 0]
    assert relative_error(table, expected) <= 1e-12, name
    assert [schedules.compute_lr(lr, s) for s in steps[::7]] == table[::7].tolist()  # the same values, bit for bit


def test_many_configs_in_one_table_equal_each_alone() -> None:
    configs = list(CASES.values()) * 3
    steps = np.arange(0, 400, dtype=np.int64)
    together = schedule_plan.evaluate(configs, steps)
    for g, lr in enumerate(configs):
        np.testing.assert_array_equal(together[:, g], schedule_plan.evaluate([lr], steps)[:, 0])


@pytest.mark.parametrize("name", sorted(CASES))
def test_jax_schedule_equals_the_reference_in_float64(name: str) -> None:
    lr = CASES[name]
    steps = [s for s in step_grid(lr) if s < 2**31]
    expected = np.asarray([reference_lr(lr, s) for s in steps])
    with jax.enable_x64(True):
        schedule = schedules.schedule_from_config(lr)
        batched = np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int64)))
        hosted = np.asarray([float(schedule(s)) for s in steps[::11]])
        traced_float = np.asarray(jax.vmap(schedule)(jnp.asarray(steps, jnp.float64)))
    assert batched.dtype == np.float64
    assert relative_error(batched, expected) <= 1e-12, name
    assert relative_error(hosted, expected[::11]) <= 1e-12, name
    assert relative_error(traced_float, expected) <= 1e-12, name


@pytest.mark.parametrize("name", sorted(CASES))
def test_jax_schedule_in_float32_is_close_and_stays_in_range(name: str) -> None:
    lr = CASES[name]
    steps = [s for s in step_grid(lr) if s < 2**24]
    expected = np.asarray([reference_lr(lr, s) for s in steps])
    values = np.asarray(jax.vmap(schedules.schedule_from_config(lr))(jnp.asarray(steps, jnp.int32)))
    assert values.dtype == np.float32
    assert np.all(np.isfinite(values)) and np.all(values >= 0)
    assert np.max(np.abs(values - expected)) <= 1e-5 * peak(lr), name


def test_gradient_through_a_new_schedule_is_finite() -> None:
    for name in ("wsd_sqrt", "one_cycle_default", "exp_staircase_begin_final", "inverse_sqrt"):
        schedule = schedules.schedule_from_config(CASES[name])
        grads = jax.vmap(jax.grad(lambda s, f=schedule: f(s)))(jnp.arange(0.0, 120.0))
        assert np.all(np.isfinite(np.asarray(grads))), name


def test_sequence_segments_run_from_their_own_steps() -> None:
    lr = CASES["sequence_nested_from_step"]
    inner = config.LearningRate(multi_step={"learning_rate": 0.1, "milestones": [5, 12]})
    last = config.LearningRate(cosine_restarts={"learning_rate": 0.05, "cycle_steps": 9})
    ramp = config.LearningRate(linear_ramp_to_constant={"learning_rate": 0.1, "num_ramp_steps": 10})
    piecewise = config.LearningRate(
        piecewise_constant={"learning_rate_boundaries": [4, 9], "learning_rate_values": [0.03, 0.02, 0.01]}
    )
    for s in range(120):
        if s < 10:
            expected = schedules.compute_lr(ramp, s)
        elif s < 50:
            local = s - 10 + 2  # the middle segment starts at its own step 2
            expected = (
                schedules.compute_lr(inner, local + 3) if local < 20 else schedules.compute_lr(piecewise, local - 20)
            )
        else:
            expected = schedules.compute_lr(last, s - 50 + 4)
        assert schedules.compute_lr(lr, s) == expected, s


def test_pieces_cut_the_windows() -> None:
    cut = schedule_plan.pieces(CASES["sequence_nested_from_step"])
    assert [(p.config.schedule_name, p.offset, p.start) for p in cut] == [
        ("linear_ramp_to_constant", 0, 0),
        ("multi_step", 5, 10),  # local step 2 of the middle segment is step 3 of its first schedule
        ("piecewise_constant", 28, 28),
        ("cosine_restarts", 46, 50),
    ]


def test_piecewise_pieces_shifted_below_zero_drop_the_passed_boundaries() -> None:
    lr = config.LearningRate(
        sequence=[
            {"learning_rate": {"constant": 1.0}, "num_steps": 2},
            {
                "learning_rate": {"multi_step": {"learning_rate": 1.0, "milestones": [1, 5, 9], "gamma": 0.5}},
                "from_step": 6,
            },
        ]
    )
    got = schedule_plan.evaluate([lr], np.arange(8))[:, 0].tolist()
    assert got == [1.0, 1.0, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125]
    with np.errstate(all="raise"):
        float_steps = schedule_plan.evaluate([lr], np.arange(8, dtype=np.float64))[:, 0].tolist()
    assert float_steps == got


def test_huge_steps_and_int64_edges() -> None:
    lr = config.LearningRate(
        sequence=[
            {"learning_rate": {"constant": 0.5}, "num_steps": 2**62},
            {"learning_rate": {"multi_step": {"learning_rate": 0.25, "milestones": [2**62 - 1]}}, "from_step": 2},
        ]
    )
    assert schedules.compute_lr(lr, 2**62 - 1) == 0.5
    assert schedules.compute_lr(lr, 2**62) == 0.25
    assert math.isclose(schedules.compute_lr(lr, 2**63 - 4), 0.25)
    assert math.isclose(schedules.compute_lr(lr, 2**63 - 3), 0.025)
    assert schedules.compute_lr(lr, 10**30) == pytest.approx(0.025)


def test_recap_optimizer_rates_equal_compute_lr_for_every_kind() -> None:
    names = sorted(CASES)
    groups = [
        grouping.ParamGroup(name, (f"w{g}",), CASES[name], "adam" if g % 2 else "sgd") for g, name in enumerate(names)
    ]
    with jax.enable_x64(True):
        tx = grouped_torch_rules(groups)
        params = {f"w{g}": jnp.ones(2) for g in range(len(names))}
        grads = jax.tree.map(jnp.ones_like, params)
        state = tx.init(params)
        update = jax.jit(tx.update)
        for k in range(120):
            _, state = update(grads, state)
            rates = np.asarray(state.learning_rates.values)
            expected = np.asarray([reference_lr(CASES[n], k) for n in names])
            assert relative_error(rates, expected) <= 1e-12, k


def test_recap_optimizer_int32_count_past_a_boundary_beyond_int32() -> None:
    lr = config.LearningRate(
        sequence=[
            {"learning_rate": {"constant": 0.5}, "num_steps": 2**33},
            {"learning_rate": {"multi_step": {"learning_rate": 0.25, "milestones": [1]}}},
        ]
    )
    groups = [grouping.ParamGroup("g", ("w",), lr, "sgd")]
    tx = grouped_torch_rules(groups)
    state = tx.init({"w": jnp.ones(1)})
    state = state._replace(count=jnp.asarray(2**31 - 1, jnp.int32))  # optax's counter saturates there
    _, state = tx.update({"w": jnp.ones(1)}, state)
    assert float(state.learning_rates.values[0]) == 0.5


BAD = {
    "negative rate": (
        {"linear": {"initial_learning_rate": -1, "final_learning_rate": 0, "num_steps": 3}},
        r"linear\.initial_learning_rate\n.*must be >= 0",
    ),
    "zero steps": (
        {"linear": {"initial_learning_rate": 1, "final_learning_rate": 0, "num_steps": 0}},
        r"linear\.num_steps\n.*greater than 0",
    ),
    "unknown shape": (
        {"warmup_stable_decay": {"learning_rate": 1, "num_decay_steps": 3, "decay_shape": "step"}},
        r"warmup_stable_decay\.decay_shape",
    ),
    "power without polynomial": (
        {"warmup_stable_decay": {"learning_rate": 1, "num_decay_steps": 3, "power": 2}},
        r"power applies to decay_shape 'polynomial' only",
    ),
    "float warmup": (
        {"warmup_stable_decay": {"learning_rate": 1, "num_decay_steps": 3, "num_warmup_steps": 2.5}},
        r"num_warmup_steps\n.*valid integer",
    ),
    "growth without a final rate": (
        {"exponential_decay": {"learning_rate": 1, "decay_rate": 2, "transition_steps": 3}},
        r"decay_rate=2.0 > 1 grows without bound",
    ),
    "zero decay rate": (
        {"exponential_decay": {"learning_rate": 1, "decay_rate": 0, "transition_steps": 3}},
        r"exponential_decay\.decay_rate\n.*must be a finite number > 0",
    ),
    "staircase string": (
        {"exponential_decay": {"learning_rate": 1, "decay_rate": 0.5, "transition_steps": 3, "staircase": "yes"}},
        r"exponential_decay\.staircase\n.*valid boolean",
    ),
    "negative milestone": ({"multi_step": {"learning_rate": 1, "milestones": [3, -1]}}, r"multi_step\.milestones\.1"),
    "gamma overflow": (
        {"multi_step": {"learning_rate": 1, "milestones": [1, 2], "gamma": 1e30}},
        r"gamma \*\* 2 = .* does not fit in float32",
    ),
    "cycle mult zero": (
        {"cosine_restarts": {"learning_rate": 1, "cycle_steps": 3, "cycle_mult": 0}},
        r"cosine_restarts\.cycle_mult\n.*greater than 0",
    ),
    "pct_start one": (
        {"one_cycle": {"max_learning_rate": 1, "total_steps": 10, "pct_start": 1.0}},
        r"one_cycle\.pct_start\n.*must be in \(0, 1\)",
    ),
    "one cycle empty phase": (
        {"one_cycle": {"max_learning_rate": 1, "total_steps": 10, "pct_start": 0.1}},
        r"phase 1 of 2 would last 0.0 steps",
    ),
    "one cycle anneal": (
        {"one_cycle": {"max_learning_rate": 1, "total_steps": 10, "anneal_strategy": "cosine"}},
        r"one_cycle\.anneal_strategy",
    ),
    "timescale zero": ({"inverse_sqrt": {"learning_rate": 1, "timescale": 0}}, r"inverse_sqrt\.timescale"),
    "empty sequence": ({"sequence": []}, r"sequence: at least one segment"),
    "last segment with steps": (
        {"sequence": [{"learning_rate": {"constant": 1}, "num_steps": 3}]},
        r"sequence\[0\]: the last segment runs for ever",
    ),
    "middle segment without steps": (
        {"sequence": [{"learning_rate": {"constant": 1}}, {"learning_rate": {"constant": 1}}]},
        r"sequence\[0\]: num_steps is required",
    ),
    "bad rate inside a segment": (
        {"sequence": [{"learning_rate": {"constant": -1}}]},
        r"sequence\.0\.learning_rate\.constant\n.*must be >= 0",
    ),
    "segment typo": (
        {"sequence": [{"learning_rate": {"constant": 1}, "num_step": 3}]},
        r"sequence\.0\.num_step\n.*Extra",
    ),
    "two kinds": (
        {"linear": {"initial_learning_rate": 1, "final_learning_rate": 0, "num_steps": 3}, "constant": 1},
        r"exactly one of .* got \['constant', 'linear'\]",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_values_are_refused_naming_the_field(case: str) -> None:
    data, pattern = BAD[case]
    with pytest.raises(pydantic.ValidationError, match=pattern):
        config.LearningRate.model_validate(data)


def test_sequences_nest_at_most_eight_deep() -> None:
    lr: dict = {"constant": 0.1}
    for _ in range(8):
        lr = {"sequence": [{"learning_rate": lr}]}
    assert config.LearningRate.model_validate(lr).sequence_depth == 8
    with pytest.raises(pydantic.ValidationError, match="sequences nest 9 deep, at most 8"):
        config.LearningRate.model_validate({"sequence": [{"learning_rate": lr}]})


def test_factories_refuse_bad_arguments_naming_the_function() -> None:
    with pytest.raises(ValueError, match=r"(?s)one_cycle: .*pct_start"):
        schedules.one_cycle(0.1, 100, pct_start=1.5)
    with pytest.raises(ValueError, match=r"sequence: 2 schedules need 1 num_steps"):
        schedules.sequence([schedules.constant(1.0), schedules.constant(2.0)], [])
    with pytest.raises(ValueError, match=r"sequence: num_steps\[0\]=0 must be an integer >= 1"):
        schedules.sequence([schedules.constant(1.0), schedules.constant(2.0)], [0])
    with pytest.raises(TypeError, match="sequence: schedules must be a non-empty list of callables"):
        schedules.sequence([1.0], [])


def test_every_case_loads_from_yaml_and_dumps_in_tmls_shape() -> None:
    for name, lr in CASES.items():
        text = yaml.safe_dump({"lr": lr.model_dump(mode="json")})
        loaded = config.LearningRate.model_validate(yaml.safe_load(text)["lr"])
        assert loaded == lr, name
        dumped = lr.model_dump(mode="json")
        assert set(config.TML_SCHEDULE_FIELDS) <= set(dumped), name
        assert set(dumped) - set(config.TML_SCHEDULE_FIELDS) == {lr.schedule_name}, name
