"""``functional_opt.table_rules``: fbgemm's fused table rules against a float64 numpy reference, and their errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from functional_opt import opt_state, table_rules

STEPS = 3
# Row 2 is never looked up; rows 0 and 1 have gradients of several signs and sizes.
GRADS = np.array(
    [
        [[0.5, -1.0, 2.0], [3.0, 0.25, -0.75], [0.0, 0.0, 0.0]],
        [[-1.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.25, 4.0, -2.0], [1.0, -1.0, 0.5], [0.0, 0.0, 0.0]],
    ]
)
PARAMS = np.array([[1.0, -2.0, 0.5], [0.0, -0.0, 3.0], [-0.0, 7.0, -1.5]])
EPS = 0.01


def schedule(count: Any) -> Any:
    """0.1, 0.2, 0.3: none of them exact in float32."""
    return 0.1 * (count + 1)


def kernel_lr(k: int) -> float:
    """The rate fbgemm's float32 ``learning_rate_tensor`` holds for update k."""
    return float(np.float32(0.1 * (k + 1)))


def reference(algorithm: str, lr: Callable[[int], float] = kernel_lr) -> tuple[np.ndarray, np.ndarray]:
    """fbgemm's CPU rules in numpy float64: weights and accumulator after STEPS updates."""
    w = PARAMS.copy()
    m = np.zeros(w.shape[:1] if algorithm == "rowwise_adagrad" else w.shape)
    for k, g in enumerate(GRADS):
        if algorithm == "sgd":
            w = w - lr(k) * g
        elif algorithm == "adagrad":
            m = m + g * g
            w = w - lr(k) * g / (np.sqrt(m) + EPS)
        else:
            m = m + (g * g).sum(axis=1) / g.shape[1]
            w = w - (lr(k) / (np.sqrt(m) + EPS))[:, None] * g
    return w, m


RULES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr: table_rules.fused_exact_sgd(lr),
    "adagrad": lambda lr: table_rules.fused_exact_adagrad(lr, eps=EPS),
    "rowwise_adagrad": lambda lr: table_rules.fused_exact_rowwise_adagrad(lr, eps=EPS),
}


def run(tx: optax.GradientTransformation, dtype: Any, grads: np.ndarray = GRADS, jit: bool = False) -> Any:
    params = jnp.asarray(PARAMS, dtype)
    state = tx.init(params)
    update = jax.jit(tx.update) if jit else tx.update
    for g in grads:
        updates, state = update(jnp.asarray(g, dtype), state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params), state


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("algorithm", sorted(RULES))
def test_float64_matches_the_reference(algorithm: str) -> None:
    # A float64 table (no fused kernel runs one; its torch optimizer reads torch's float64 rate): the rate unrounded.
    params, state = run(RULES[algorithm](schedule), jnp.float64)
    w, m = reference(algorithm, lr=lambda k: 0.1 * (k + 1))
    np.testing.assert_allclose(params, w, rtol=1e-15, atol=1e-15)
    if algorithm != "sgd":
        assert state.accumulator.shape == m.shape
        np.testing.assert_allclose(np.asarray(state.accumulator), m, rtol=1e-15, atol=0)
    # The float32 rounding of the kernel's rate would be visible here.
    rounded, _ = reference(algorithm)
    assert np.abs(rounded - w).max() > 1e-10
    assert int(state.count) == STEPS
    assert float(state.learning_rate) == 0.1 * STEPS


@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("algorithm", sorted(RULES))
def test_a_float32_table_runs_the_float32_rate_whatever_the_default_float(algorithm: str) -> None:
    tx = RULES[algorithm](schedule)
    state = tx.init(jnp.asarray(PARAMS, jnp.float32))
    g = jnp.asarray(GRADS[0], jnp.float32)
    updates, state = tx.update(g, state)
    assert updates.dtype == jnp.float32
    lr32 = np.float32(kernel_lr(0))
    if algorithm == "sgd":
        np.testing.assert_array_equal(np.asarray(updates), -(lr32 * np.asarray(g)))
    else:
        m = np.asarray(state.accumulator)
        denominator = np.sqrt(m) + np.float32(EPS)
        if algorithm == "adagrad":
            expected = -(lr32 * np.asarray(g)) / denominator
        else:
            expected = -(lr32 / denominator)[:, None] * np.asarray(g)
        np.testing.assert_array_equal(np.asarray(updates), expected)
    assert float(state.learning_rate) == 0.1  # the state holds the schedule's value, as torch's param group


def test_hand_computed_first_steps() -> None:
    """Two rowwise steps of one row of two, by hand: m = 12.5, then 12.5 + (1 + 0) / 2 = 13."""
    tx = table_rules.fused_exact_rowwise_adagrad(1.0, eps=1e-8)
    state = tx.init(jnp.zeros((1, 2)))
    updates, state = tx.update(jnp.array([[3.0, -4.0]]), state)
    np.testing.assert_allclose(np.asarray(updates), [[-3 / (12.5**0.5 + 1e-8), 4 / (12.5**0.5 + 1e-8)]], rtol=1e-6)
    updates, state = tx.update(jnp.array([[1.0, 0.0]]), state)
    assert state.accumulator.tolist() == [13.0]
    np.testing.assert_allclose(np.asarray(updates), [[-1 / (13**0.5 + 1e-8), 0.0]], rtol=1e-6)
    # Exact Adagrad, per element: m = [9, 16], then [10, 16].
    tx = table_rules.fused_exact_adagrad(1.0, eps=1e-8)
    state = tx.init(jnp.zeros((1, 2)))
    _, state = tx.update(jnp.array([[3.0, -4.0]]), state)
    updates, state = tx.update(jnp.array([[1.0, 0.0]]), state)
    assert state.accumulator.tolist() == [[10.0, 16.0]]
    np.testing.assert_allclose(np.asarray(updates), [[-1 / (10**0.5 + 1e-8), 0.0]], rtol=1e-6)


@pytest.mark.parametrize(("dtype", "enable_x64"), [("float32", False), ("float32", True), ("float64", True)])
@pytest.mark.parametrize("algorithm", sorted(RULES))
def test_zero_gradient_rows_are_bitwise_unchanged(algorithm: str, dtype: str, enable_x64: bool) -> None:
    with jax.enable_x64(enable_x64):
        tx = RULES[algorithm](schedule)
        params = jnp.asarray(PARAMS, dtype)
        state = tx.init(params)
        before = None
        for g in GRADS:
            updates, state = jax.jit(tx.update)(jnp.asarray(g, dtype), state, params)
            new_params = optax.apply_updates(params, updates)
            rows = [i for i in range(len(g)) if not g[i].any()]
            # -0.0 and +0.0 stay themselves too: compare bits.
            bits = np.asarray(new_params)[rows].view(np.uint8) == np.asarray(params)[rows].view(np.uint8)
            assert bits.all(), (algorithm, rows)
            if before is not None and algorithm != "sgd":
                np.testing.assert_array_equal(np.asarray(state.accumulator)[rows], before[rows])
            before = np.asarray(getattr(state, "accumulator", np.zeros(len(g))))
            params = new_params


@pytest.mark.parametrize("algorithm", sorted(RULES))
def test_jit_and_grad(algorithm: str) -> None:
    tx = RULES[algorithm](schedule)
    eager, eager_state = run(tx, jnp.float32)
    jitted, jitted_state = run(tx, jnp.float32, jit=True)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-7)
    assert float(jitted_state.learning_rate) == float(eager_state.learning_rate) == float(jnp.float32(0.1) * 3)

    def total_update(g: jax.Array) -> jax.Array:
        updates, _ = tx.update(g, tx.init(jnp.asarray(PARAMS, jnp.float32)))
        return jnp.sum(updates)

    dense = jnp.asarray(GRADS[0] + 0.5, jnp.float32)  # no zero gradient: sqrt is differentiable there
    grad = jax.jit(jax.grad(total_update))(dense)
    assert grad.shape == dense.shape and bool(jnp.isfinite(grad).all())


def test_injected_hyperparameters_give_the_same_steps() -> None:
    plain, _ = run(table_rules.fused_exact_adagrad(0.1, eps=EPS), jnp.float32)
    injected = optax.inject_hyperparams(table_rules.fused_exact_adagrad)(learning_rate=0.1, eps=EPS)
    got, _ = run(injected, jnp.float32, jit=True)
    np.testing.assert_allclose(got, plain, rtol=1e-6)


def test_state_records_and_readers() -> None:
    params = jnp.zeros((4, 2))
    exact, rowwise = (
        table_rules.fused_exact_adagrad(0.1).init(params),
        table_rules.fused_exact_rowwise_adagrad(0.1).init(params),
    )
    assert isinstance(exact, table_rules.FusedAdagradState)
    assert exact.accumulator.shape == (4, 2) and rowwise.accumulator.shape == (4,)
    assert float(exact.built_from["eps"]) == pytest.approx(1e-8)  # fbgemm's default
    with pytest.raises(ValueError, match=r"rowwise: saved 0\.0, configured 1\.0"):
        opt_state.check_state(exact, rowwise)
    opt_state.check_state(exact, table_rules.fused_exact_adagrad(0.1).init(params))
    sgd_state = table_rules.fused_exact_sgd(0.1).init(params)
    assert float(opt_state.learning_rate(sgd_state)) == float(np.float32(0.1))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: table_rules.fused_exact_sgd(-0.1), r"fused_exact_sgd: learning_rate: .*value=-0\.1 must be >= 0"),
        (
            lambda: table_rules.fused_exact_adagrad(-0.1),
            r"fused_exact_adagrad: learning_rate: .*value=-0\.1 must be >= 0",
        ),
        (
            lambda: table_rules.fused_exact_rowwise_adagrad(float("inf")),
            r"fused_exact_rowwise_adagrad: learning_rate: .*must be a finite number",
        ),
        (lambda: table_rules.fused_exact_adagrad(0.1, eps=-1.0), r"fused_exact_adagrad: eps=-1\.0 must be a finite"),
        (
            lambda: table_rules.fused_exact_rowwise_adagrad(0.1, eps=-1e-8),
            r"fused_exact_rowwise_adagrad: eps=-1e-08 must be a finite number >= 0",
        ),
        (lambda: table_rules.fused_exact_adagrad(0.1, eps=0.0), r"fused_exact_adagrad: eps=0\.0 must be > 0: .*nan"),
        (lambda: table_rules.fused_exact_adagrad(0.1, eps=float("nan")), r"fused_exact_adagrad: eps=nan must be"),
        (
            lambda: table_rules.fused_exact_adagrad(0.1, eps=jnp.asarray(-1.0)),
            r"fused_exact_adagrad: eps=-1\.0 must be a finite",
        ),
        (lambda: table_rules.fused_exact_adagrad(0.1, eps="1e-8"), r"fused_exact_adagrad: eps='1e-8' must be a number"),
        (
            lambda: table_rules.fused_exact_rowwise_adagrad(0.1, weight_decay=0.01),
            r"fused_exact_rowwise_adagrad: weight_decay=0\.01 is not supported: .*weight_decay_mode NONE",
        ),
        (
            lambda: table_rules.fused_exact_rowwise_adagrad(0.1).init(
                {"table": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
            ),
            r"fused_exact_rowwise_adagrad: the parameter at \['bias'\] has shape \(2,\); a table needs at least 2 axes",
        ),
    ],
)
def test_hyper_parameter_errors(build: Callable[[], Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()
