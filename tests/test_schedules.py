"""The JAX schedules against an independent float64 reference, against optax's own schedules, and
against themselves under jit / vmap / grad, plus property tests.

The reference below re-states TML's ``compute_lr`` with Python's ``math`` and
``bisect`` on exact integer steps; it shares no code with ``functional_opt``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lr_reference import peak, reference_lr

from functional_opt import config, schedules

FLOAT32_MAX = float(np.finfo(np.float32).max)
INT32_MAX = 2**31 - 1
TERA = 1099511627776  # 2**40

RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-6}

PROFILE = settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ---------------------------------------------------------------------------------------------
# Independent float64 reference (TML's compute_lr)
# ---------------------------------------------------------------------------------------------


def marks(lr: config.LearningRate) -> list[int]:
    """The steps where the schedule changes form."""
    if lr.piecewise_constant is not None:
        return list(lr.piecewise_constant.learning_rate_boundaries)
    if lr.linear_ramp_to_constant is not None:
        return [lr.linear_ramp_to_constant.num_ramp_steps]
    if lr.linear_ramp_to_cosine is not None:
        rc = lr.linear_ramp_to_cosine
        return [rc.num_ramp_steps, (rc.num_ramp_steps + rc.final_num_steps) // 2, rc.final_num_steps]
    return []


def step_grid(lr: config.LearningRate) -> list[int]:
    """0, 1, every boundary +-1, quarter points of each piece, 10**6, 10**9, and steps past 2**31."""
    points = {0, 1, 2, 10, 10**6, 10**9, INT32_MAX, INT32_MAX + 1, 2**32, TERA - 1, TERA, TERA + 1, 10**12}
    edges = [0, *marks(lr)]
    for mark in marks(lr):
        points.update({mark - 1, mark, mark + 1, 2 * mark})
    for lo, hi in itertools.pairwise(edges):
        points.update(lo + (hi - lo) * k // 4 for k in range(1, 4))
    return sorted(p for p in points if p >= 0)


def padded(steps: list[int], size: int = 64) -> list[int]:
    """``steps`` repeated at the end up to ``size`` entries: one array shape for every case, so
    un-jitted JAX operations compile once for the whole file."""
    assert len(steps) <= size
    return steps + [steps[-1]] * (size - len(steps))


def _lr(**kwargs) -> config.LearningRate:
    return config.LearningRate.model_validate(kwargs)


CASES = {
    "constant": _lr(constant=3e-4),
    "constant_big": _lr(constant=1e30),
    "piecewise": _lr(
        piecewise_constant=dict(learning_rate_boundaries=[10, 100, 1000], learning_rate_values=[0.1, 0.05, 0.02, 1e-3])
    ),
    "piecewise_from_0": _lr(
        piecewise_constant=dict(learning_rate_boundaries=[0, 7], learning_rate_values=[9.0, 0.3, 0.0])
    ),
    "piecewise_no_boundary": _lr(piecewise_constant=dict(learning_rate_boundaries=[], learning_rate_values=[0.25])),
    "piecewise_huge": _lr(
        piecewise_constant=dict(
            learning_rate_boundaries=[5, 2**24 + 1, INT32_MAX, INT32_MAX + 1, TERA],
            learning_rate_values=[1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3],
        )
    ),
    "ramp_constant": _lr(linear_ramp_to_constant=dict(learning_rate=1e-3, num_ramp_steps=1000)),
    "ramp_constant_1": _lr(linear_ramp_to_constant=dict(learning_rate=0.1, num_ramp_steps=1)),
    "ramp_constant_3": _lr(linear_ramp_to_constant=dict(learning_rate=0.1, num_ramp_steps=3)),
    "ramp_constant_huge": _lr(linear_ramp_to_constant=dict(learning_rate=2.5, num_ramp_steps=TERA)),
    "ramp_cosine": _lr(
        linear_ramp_to_cosine=dict(
            learning_rate=1e-3, final_learning_rate=1e-5, num_ramp_steps=100, final_num_steps=1000
        )
    ),
    "ramp_cosine_to_0": _lr(
        linear_ramp_to_cosine=dict(learning_rate=0.1, final_learning_rate=0.0, num_ramp_steps=10, final_num_steps=1010)
    ),
    "ramp_cosine_upwards": _lr(
        linear_ramp_to_cosine=dict(learning_rate=0.01, final_learning_rate=0.02, num_ramp_steps=5, final_num_steps=50)
    ),
    "ramp_cosine_tera": _lr(
        linear_ramp_to_cosine=dict(
            learning_rate=1e-3, final_learning_rate=1e-6, num_ramp_steps=1000, final_num_steps=TERA
        )
    ),
    "ramp_cosine_past_int32": _lr(
        linear_ramp_to_cosine=dict(
            learning_rate=1.0, final_learning_rate=0.0, num_ramp_steps=INT32_MAX + 6, final_num_steps=2**33
        )
    ),
}


def float_dtype() -> np.dtype:
    return np.dtype(jnp.result_type(float))


def seen_step(lr: config.LearningRate, step: int) -> int | float:
    """The step a schedule in JAX's current float type actually evaluates at.

    A float32 schedule rounds the step to float32 (a piecewise schedule compares
    integer steps exactly, at any int64 step); in float64 every step used here is exact.
    """
    if float_dtype() == np.float64 or lr.piecewise_constant is not None:
        return step
    return float(np.float32(step))


def tolerance(lr: config.LearningRate, ref: float, dtype: np.dtype | None = None) -> float:
    """``rtol * |ref|``; for a cosine decay, at least ``rtol`` of its amplitude in float32.

    ``final + (lr - final) * 0.5 * (1 + cos(x))`` loses the relative precision
    of ``cos`` once the value is small next to ``|lr - final|`` (near ``x = pi``
    with ``final = 0``, one float32 ulp of ``cos`` is 1e-3 of the value): its
    error is a fraction of the amplitude, not of the value. In float64 the floor
    is 1e-3 of the amplitude times 1e-12, far below any real discrepancy.
    """
    dtype = np.dtype(dtype or float_dtype())
    rtol = RTOL[dtype]
    floor = 0.0
    if lr.linear_ramp_to_cosine is not None:
        rc = lr.linear_ramp_to_cosine
        floor = abs(rc.learning_rate - rc.final_learning_rate) * (1.0 if dtype == np.float32 else 1e-3)
    return rtol * max(abs(ref), floor)


def relative_errors(lr: config.LearningRate) -> Iterator[tuple[int, float, float, float]]:
    """``(step, value, reference, |value - reference| / |reference|)`` over the grid, in the current mode."""
    sched = schedules.schedule_from_config(lr)
    for step in step_grid(lr):
        value = sched(step)
        assert value.dtype == float_dtype()
        ref = reference_lr(lr, seen_step(lr, step))
        value = float(value)
        err = abs(value - ref) / abs(ref) if ref else (0.0 if value == 0.0 else math.inf)
        yield step, value, ref, err


# ---------------------------------------------------------------------------------------------
# (a) against the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_matches_reference(name, x64):
    lr = CASES[name]
    with jax.enable_x64(x64):
        bad = [
            (step, value, ref) for step, value, ref, _ in relative_errors(lr) if abs(value - ref) > tolerance(lr, ref)
        ]
    assert not bad, f"{name}: (step, value, reference) beyond tolerance: {bad[:5]}"


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_reference_comparison_can_fail(x64):
    """A schedule with its ramp one step longer is caught by the same check."""
    lr = CASES["ramp_cosine"]
    off = schedules.linear_ramp_to_cosine(1e-3, 1e-5, num_ramp_steps=101, final_num_steps=1000)
    with jax.enable_x64(x64):
        assert any(abs(float(off(s)) - reference_lr(lr, s)) > tolerance(lr, reference_lr(lr, s)) for s in step_grid(lr))


@pytest.mark.parametrize("name", sorted(CASES))
def test_compute_lr_matches_reference(name):
    lr = CASES[name]
    for step in step_grid(lr):
        got = schedules.compute_lr(lr, step)
        assert type(got) is float
        ref = reference_lr(lr, step)
        assert abs(got - ref) <= tolerance(lr, ref, np.float64), (step, got, ref)


def test_compute_lr_is_float64_outside_x64():
    lr = _lr(linear_ramp_to_constant=dict(learning_rate=0.1, num_ramp_steps=3))
    with jax.enable_x64(False):
        # 0.1 / 3 is not a float32 number: a float32 evaluation would be off by ~1e-9.
        assert schedules.compute_lr(lr, 1) == pytest.approx(0.1 / 3, rel=1e-15, abs=0)
        assert schedules.compute_lr(lr, TERA) == 0.1


def test_piecewise_boundary_is_the_first_step_of_the_new_value():
    sched = schedules.piecewise_constant([10, 20], [1.0, 0.5, 0.25])
    assert [float(sched(s)) for s in (9, 10, 11, 19, 20, 21)] == [1.0, 0.5, 0.5, 0.5, 0.25, 0.25]


def test_piecewise_boundary_not_representable_in_float32():
    """2**24 + 1 is not a float32: rounding it to nearest would move the boundary down to 2**24."""
    b = 2**24 + 1
    sched = schedules.piecewise_constant([b], [1.0, 2.0])
    for step in (b - 1, np.int32(b - 1), np.int64(b - 1), jnp.int32(b - 1), float(b - 1)):
        assert float(sched(step)) == 1.0, repr(step)
        assert float(jax.jit(sched)(step)) == 1.0, repr(step)
    for step in (b, np.int32(b), jnp.int32(b), b + 1):
        assert float(sched(step)) == 2.0, repr(step)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_numpy_int64_steps_past_int32_are_not_wrapped(x64):
    """A numpy int64 step of 2**40 must not be truncated to int32 (2**40 mod 2**32 == 0)."""
    lr = CASES["ramp_cosine_tera"]
    sched = schedules.schedule_from_config(lr)
    steps = np.array([1000, 2**35, TERA, TERA + 2**20], dtype=np.int64)
    with jax.enable_x64(x64):
        got = np.asarray(sched(steps))
        for step, value in zip(steps.tolist(), got.tolist(), strict=True):
            ref = reference_lr(lr, seen_step(lr, step))
            assert abs(value - ref) <= tolerance(lr, ref), (step, value, ref)
        piece = schedules.schedule_from_config(CASES["piecewise_huge"])
        assert float(piece(np.int64(TERA))) == pytest.approx(6e-3, rel=1e-6)
        assert float(piece(np.uint64(TERA))) == pytest.approx(6e-3, rel=1e-6)


def test_tiny_learning_rate_still_reaches_its_peak_in_float32():
    """learning_rate / num_ramp_steps is below float32's normal range; the ramp must still end at lr."""
    lr = 2e-38
    for sched in (
        schedules.linear_ramp_to_constant(lr, 1000),
        schedules.linear_ramp_to_cosine(lr, 0.0, num_ramp_steps=1000, final_num_steps=2000),
    ):
        assert float(sched(1000)) == pytest.approx(lr, rel=1e-6)


def test_linear_ramp_to_cosine_peak_is_exact():
    for x64 in (False, True):
        with jax.enable_x64(x64):
            sched = schedules.linear_ramp_to_cosine(0.1, 0.01, num_ramp_steps=3, final_num_steps=10)
            assert sched(3) == jnp.asarray(0.1, float_dtype())
            assert sched(10) == jnp.asarray(0.01, float_dtype())


# ---------------------------------------------------------------------------------------------
# (b) against optax's own schedules, where they describe the same curve
# ---------------------------------------------------------------------------------------------


def _assert_same_curve(ours, theirs, steps, scale):
    """Equal to ``rtol`` of the schedule's scale (optax's ``init - (init - end) * frac`` cancels near 0)."""
    rtol = RTOL[float_dtype()]
    counts = jnp.asarray(padded(steps), dtype=float_dtype())
    a = np.asarray(ours(counts), dtype=np.float64)
    b = np.asarray(theirs(counts), dtype=np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("value", [0.0, 3e-4, 1.0, 1e30])
def test_constant_vs_optax(value, x64):
    with jax.enable_x64(x64):
        ours = schedules.constant(value)
        theirs = optax.constant_schedule(value)
        for step in (0, 1, 10**9, TERA):
            np.testing.assert_allclose(float(ours(step)), float(theirs(step)), rtol=RTOL[float_dtype()], atol=0)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize(("learning_rate", "num_ramp_steps"), [(1e-3, 1000), (0.1, 1), (0.1, 3), (2.5, TERA)])
def test_linear_ramp_to_constant_vs_optax_linear_schedule(learning_rate, num_ramp_steps, x64):
    with jax.enable_x64(x64):
        ours = schedules.linear_ramp_to_constant(learning_rate, num_ramp_steps)
        # Step counts go to optax as floats: its int arguments overflow int32 past 2**31 in float32 mode.
        theirs = optax.linear_schedule(0.0, learning_rate, transition_steps=float(num_ramp_steps))
        lr = _lr(linear_ramp_to_constant=dict(learning_rate=learning_rate, num_ramp_steps=num_ramp_steps))
        _assert_same_curve(ours, theirs, step_grid(lr), learning_rate)


CosineArgs = tuple[float, float, int, int]
COSINE_ARGS: list[CosineArgs] = [
    (1e-3, 1e-5, 100, 1000),
    (0.1, 0.0, 10, 1010),
    (0.01, 0.02, 5, 50),
    (1e-3, 1e-6, 1000, TERA),
    (1.0, 0.0, INT32_MAX + 6, 2**33),
]


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("args", COSINE_ARGS)
def test_linear_ramp_to_cosine_vs_optax(args, x64):
    learning_rate, final_learning_rate, num_ramp_steps, final_num_steps = args
    lr = _lr(
        linear_ramp_to_cosine=dict(
            zip(["learning_rate", "final_learning_rate", "num_ramp_steps", "final_num_steps"], args, strict=True)
        )
    )
    scale = max(learning_rate, final_learning_rate)
    with jax.enable_x64(x64):
        ours = schedules.linear_ramp_to_cosine(*args)
        warmup_cosine = optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=learning_rate,
            warmup_steps=float(num_ramp_steps),  # floats: see the linear_schedule test
            decay_steps=float(final_num_steps),
            end_value=final_learning_rate,
        )
        _assert_same_curve(ours, warmup_cosine, step_grid(lr), scale)
        ramp = optax.linear_schedule(0.0, learning_rate, transition_steps=float(num_ramp_steps))
        _assert_same_curve(ours, ramp, [s for s in step_grid(lr) if s <= num_ramp_steps], scale)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize(
    ("boundaries", "values"),
    [([10, 100, 1000], [0.1, 0.05, 0.02, 1e-3]), ([0, 7], [9.0, 0.3, 2.0]), ([], [0.25]), ([1], [1.0, 3.0])],
)
def test_piecewise_vs_optax(boundaries, values, x64):
    """optax multiplies scales in at ``count >= boundary``: the same curve when no value is 0."""
    scales = {b: values[i + 1] / values[i] for i, b in enumerate(boundaries)}
    with jax.enable_x64(x64):
        ours = schedules.piecewise_constant(boundaries, values)
        theirs = optax.piecewise_constant_schedule(init_value=values[0], boundaries_and_scales=scales)
        steps = sorted({0, 1, 10**6, 10**9} | {b + d for b in boundaries for d in (-1, 0, 1) if b + d >= 0})
        ints = jnp.asarray(padded(steps), dtype=jnp.int32)
        np.testing.assert_allclose(
            np.asarray(ours(ints)),
            np.asarray(jax.jit(theirs)(ints)),
            rtol=RTOL[float_dtype()] * (1 + len(values)),
            atol=0,
        )


# ---------------------------------------------------------------------------------------------
# (c) jit, no jit, vmap and grad
# ---------------------------------------------------------------------------------------------


JIT_CASES = [
    "constant",
    "piecewise",
    "piecewise_huge",
    "ramp_constant",
    "ramp_constant_huge",
    "ramp_cosine",
    "ramp_cosine_to_0",
    "ramp_cosine_tera",
    "ramp_cosine_past_int32",
]


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", JIT_CASES)
def test_jit_nojit_vmap_agree(name, x64):
    lr = CASES[name]
    sched = schedules.schedule_from_config(lr)
    with jax.enable_x64(x64):
        eps = float(np.finfo(float_dtype()).eps)
        step_type = np.int64 if x64 else np.float32  # float32 mode: int32 cannot hold every step of the grid
        steps = np.asarray(padded(step_grid(lr)), dtype=step_type)
        distinct = len(step_grid(lr))
        plain = np.asarray([sched(s) for s in steps[:distinct]])
        jitted_fn = jax.jit(sched)
        jitted = np.asarray([jitted_fn(s) for s in steps[:distinct]])
        vmapped = np.asarray(jax.vmap(sched)(jnp.asarray(steps)))[:distinct]
        jit_vmapped = np.asarray(jax.jit(jax.vmap(sched))(jnp.asarray(steps)))[:distinct]
        # A few ulps of the value, or of the schedule's amplitude where cos cancels (see `tolerance`).
        atol = 4 * eps * peak(lr) if lr.linear_ramp_to_cosine is not None else 0.0
        for other in (jitted, vmapped, jit_vmapped):
            assert other.dtype == float_dtype()
            chex.assert_trees_all_close(other, plain, rtol=4 * eps, atol=atol)


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("name", JIT_CASES)
def test_grad_is_finite(name, x64):
    lr = CASES[name]
    sched = schedules.schedule_from_config(lr)
    with jax.enable_x64(x64):
        steps = jnp.asarray(padded(step_grid(lr)), dtype=float_dtype())
        grads = np.asarray(jax.jit(jax.vmap(jax.grad(sched)))(steps))
        assert grads.dtype == float_dtype()
        assert np.all(np.isfinite(grads)), grads


def test_grad_matches_the_derivative_of_the_reference(x64):
    lr, final, ramp, total = 1e-3, 1e-5, 100, 1000
    sched = schedules.linear_ramp_to_cosine(lr, final, ramp, total)
    grad = jax.grad(sched)
    assert float(grad(50.0)) == pytest.approx(lr / ramp, rel=1e-12)
    for s in (150.0, 550.0, 999.0):
        expected = -(lr - final) * 0.5 * math.sin(math.pi * (s - ramp) / (total - ramp)) * math.pi / (total - ramp)
        assert float(grad(s)) == pytest.approx(expected, rel=1e-9)
    assert float(grad(5000.0)) == 0.0
    assert float(jax.grad(schedules.linear_ramp_to_constant(0.5, 10))(3.0)) == pytest.approx(0.05, rel=1e-12)
    assert float(jax.grad(schedules.constant(0.5))(3.0)) == 0.0
    assert float(jax.grad(schedules.piecewise_constant([5], [1.0, 2.0]))(5.0)) == 0.0


# ---------------------------------------------------------------------------------------------
# dtype: JAX's default float type, whatever the step's type
# ---------------------------------------------------------------------------------------------

STEP_KINDS = {
    "python_int": lambda s: s,
    "python_int_past_int32": lambda s: s + 2**33,
    "int32": np.int32,
    "int64": np.int64,
    "uint32": np.uint32,
    "jnp_int32": lambda s: jnp.asarray(s, dtype=jnp.int32),
    "float": float,
    "float32": np.float32,
}


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
@pytest.mark.parametrize("kind", sorted(STEP_KINDS))
@pytest.mark.parametrize("name", ["constant", "piecewise_huge", "ramp_cosine_tera"])
def test_dtype_is_the_default_float_whatever_the_step_type(name, kind, x64):
    sched = schedules.schedule_from_config(CASES[name])
    with jax.enable_x64(x64):
        step = STEP_KINDS[kind](7)
        expected = np.float64 if x64 else np.float32
        assert sched(step).dtype == expected
        if x64 or kind != "python_int_past_int32":  # jit itself refuses a Python int past int32 there
            assert jax.jit(sched)(step).dtype == expected
        assert np.isfinite(float(sched(step)))


# ---------------------------------------------------------------------------------------------
# (d) properties
# ---------------------------------------------------------------------------------------------

learning_rates = st.one_of(
    st.sampled_from([0.0, 5e-324, 1e-45, 2e-38, 1.0, FLOAT32_MAX]),
    st.floats(min_value=0.0, max_value=FLOAT32_MAX, allow_nan=False, allow_infinity=False),
)
step_counts = st.integers(min_value=1, max_value=2**45)
steps_strategy = st.lists(st.integers(min_value=0, max_value=2**50), min_size=8, max_size=8)
modes = st.booleans()


def _steps(extra: list[int], around: list[int]) -> np.ndarray:
    """``extra`` plus 0 and every point of ``around`` +-1, padded to 64 entries (one array shape)."""
    points = sorted({0, *extra, *(p + d for p in around for d in (-1, 0, 1) if p + d >= 0)})
    return np.asarray(padded(points), dtype=np.int64 if points[-1] < 2**63 else np.float64)


def _rounded(value: float) -> float:
    """``value`` in JAX's current float type."""
    return float(np.asarray(value, dtype=float_dtype()))


def _held(value: float) -> set[float]:
    """What a schedule may return for the learning rate ``value``: rounded to JAX's float type,
    or 0 where that is subnormal (XLA on CPU flushes subnormal numbers to zero)."""
    rounded = _rounded(value)
    return {rounded, 0.0} if abs(rounded) < np.finfo(float_dtype()).tiny else {rounded}


@PROFILE
@given(lr=learning_rates, ramp=step_counts, extra=steps_strategy, x64=modes)
def test_linear_ramp_to_constant_is_monotone_and_bounded(lr, ramp, extra, x64):
    with jax.enable_x64(x64):
        sched = schedules.linear_ramp_to_constant(lr, ramp)
        steps = _steps(extra, [ramp])
        values = np.asarray(sched(steps))
        assert np.all(np.isfinite(values))
        assert np.all(np.diff(values) >= 0)
        assert values[0] == 0.0
        assert np.all(values <= _rounded(lr))
        assert np.all(np.isin(values[steps >= ramp], list(_held(lr))))


@PROFILE
@given(lr=learning_rates, final_lr=learning_rates, ramp=step_counts, span=step_counts, extra=steps_strategy, x64=modes)
def test_linear_ramp_to_cosine_ramps_up_then_stays_between_final_and_peak(lr, final_lr, ramp, span, extra, x64):
    with jax.enable_x64(x64):
        sched = schedules.linear_ramp_to_cosine(lr, final_lr, ramp, ramp + span)
        steps = _steps(extra, [ramp, ramp + span // 2, ramp + span])
        values = np.asarray(sched(steps))
        assert np.all(np.isfinite(values))
        up = values[steps <= ramp]
        assert np.all(np.diff(up) >= 0)
        assert up[0] == 0.0 and up[-1] in _held(lr)
        decay = values[steps >= ramp]
        assert np.all(decay >= min(_held(min(lr, final_lr))))
        assert np.all(decay <= _rounded(max(lr, final_lr)))
        assert np.all(np.isin(values[steps >= ramp + span], list(_held(final_lr))))


@PROFILE
@given(
    boundaries=st.lists(st.integers(min_value=0, max_value=2**45), max_size=6, unique=True),
    data=st.data(),
    extra=steps_strategy,
    x64=modes,
)
def test_piecewise_takes_only_its_values(boundaries, data, extra, x64):
    boundaries = sorted(boundaries)
    values = data.draw(st.lists(learning_rates, min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))
    with jax.enable_x64(x64):
        sched = schedules.piecewise_constant(boundaries, values)
        steps = _steps(extra, boundaries)
        got = np.asarray(sched(steps))
        assert np.all(np.isfinite(got))
        allowed = set().union(*(_held(v) for v in values))
        assert set(got.tolist()) <= allowed
        # Where the step is exact in the float type, the value is the reference's.
        for step, value in zip(steps.tolist(), got.tolist(), strict=True):
            if float(np.asarray(step, float_dtype())) == step:
                assert value in _held(values[bisect.bisect_right(boundaries, step)])


@PROFILE
@given(lr=learning_rates, extra=st.lists(st.integers(min_value=0, max_value=2**62), min_size=8, max_size=8), x64=modes)
def test_no_nan_or_inf_at_any_step(lr, extra, x64):
    scheds = [
        schedules.constant(lr),
        schedules.piecewise_constant([1, 2**31, 2**40], [lr, FLOAT32_MAX, 0.0, lr]),
        schedules.linear_ramp_to_constant(lr, 1),
        schedules.linear_ramp_to_constant(lr, 2**45),
        schedules.linear_ramp_to_cosine(lr, FLOAT32_MAX, 1, 2),
        schedules.linear_ramp_to_cosine(FLOAT32_MAX, lr, 1, 2**45),
    ]
    with jax.enable_x64(x64):
        # Float steps, up to float32's largest number: far beyond any integer type.
        steps = _steps(extra, [1, 2, 2**31, 2**40, 2**45, 2**63, 10**30, 3 * 10**38]).astype(np.float64)
        for sched in scheds:
            values = np.asarray(sched(steps))
            assert values.dtype == float_dtype()
            assert np.all(np.isfinite(values)) and np.all(values >= 0)
