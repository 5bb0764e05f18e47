"""fbgemm's fused TBE optimizers (the real CPU kernel) vs ``functional_opt.table_rules`` on the dense gradient.

Two tables, each in its own ``SplitTableBatchedEmbeddingBagsCodegen`` (host
memory, CPU) with its own schedule, set each step with the kernel's
``set_learning_rate``, train for ``STEPS`` steps on random bags: some rows are
never looked up, one row is looked up twice in one bag every step. The JAX
side applies the rules to ``jax.grad`` of the same loss through a gather and a
segment sum, from the same weights. JAX runs with x64 enabled, float32 tables:
the schedule is then evaluated in float64 and rounded to float32, the value
``set_learning_rate(compute_lr(...))`` stores.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torchrec.optim
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)

from functional_opt import config, schedules, table_rules, torch_rules

STEPS = 100
TABLES = {"t0": (20, 8), "t1": (12, 4)}  # rows, embedding dimension
NEVER_LOOKED_UP = 3  # the last rows of each table
BAGS = 6
LOOKUPS = 14  # per table and step
EPS = 0.05  # large enough that where eps goes shows in the trajectory
BAR = 1e-5  # relative to the largest |param| (|accumulator|) of the table at that step
SCHEDULES = {
    "t0": config.LearningRate(
        linear_ramp_to_cosine={
            "learning_rate": 0.05,
            "final_learning_rate": 0.005,
            "num_ramp_steps": 10,
            "final_num_steps": 80,
        }
    ),
    "t1": config.LearningRate(
        piecewise_constant={"learning_rate_boundaries": [30, 60], "learning_rate_values": [0.08, 0.03, 0.01]}
    ),
}
KERNELS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
}
Rule = Callable[[schedules.Schedule, int], optax.GradientTransformation]  # (schedule, embedding dim) -> rule
FBGEMM_EPS = 1e-8  # fbgemm's default


def rule(algorithm: str, eps: float = EPS) -> Rule:
    """The ``table_rules`` transformation of ``algorithm``."""
    return {
        "sgd": lambda schedule, dim: table_rules.fused_exact_sgd(schedule),
        "adagrad": lambda schedule, dim: table_rules.fused_exact_adagrad(schedule, eps=eps),
        "rowwise_adagrad": lambda schedule, dim: table_rules.fused_exact_rowwise_adagrad(schedule, eps=eps),
    }[algorithm]


@dataclasses.dataclass(frozen=True)
class Data:
    """Per table: initial weights, the loss's weights, and per step the bags' indices and lengths."""

    initial: dict[str, np.ndarray]
    loss_weights: dict[str, np.ndarray]
    indices: dict[str, np.ndarray]  # [STEPS, LOOKUPS]
    lengths: dict[str, np.ndarray]  # [STEPS, BAGS]


@functools.lru_cache(maxsize=1)
def data() -> Data:
    rng = np.random.default_rng(0)
    initial, loss_weights, indices, lengths = {}, {}, {}, {}
    for name, (rows, dim) in TABLES.items():
        initial[name] = rng.normal(scale=0.5, size=(rows, dim)).astype(np.float32)
        loss_weights[name] = rng.normal(size=(BAGS, dim)).astype(np.float32)
        cuts = np.sort(rng.integers(0, LOOKUPS + 1, size=(STEPS, BAGS - 1)), axis=1)
        lengths[name] = np.diff(cuts, axis=1, prepend=0, append=LOOKUPS)  # some bags are empty
        indices[name] = rng.integers(0, rows - NEVER_LOOKED_UP, size=(STEPS, LOOKUPS))
        for k in range(STEPS):  # the first bag of >= 2 lookups holds one row twice
            bag = int(np.argmax(lengths[name][k] >= 2))
            start = int(lengths[name][k][:bag].sum())
            indices[name][k, start + 1] = indices[name][k, start]
    return Data(initial, loss_weights, indices, lengths)


def bag_loss(pooled: Any, loss_weights: Any) -> Any:
    """``sum(W * pooled + pooled**2 / 2)``: its gradient ``W + pooled`` depends on the weights."""
    return (loss_weights * pooled + 0.5 * pooled * pooled).sum()


@dataclasses.dataclass
class Trajectory:
    """Per table, the weights and the accumulator after every step, and the learning rate each step used."""

    params: dict[str, np.ndarray]
    accumulators: dict[str, np.ndarray]
    lrs: dict[str, np.ndarray]


def _stack(steps: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.stack([s[name] for s in steps]) for name in TABLES}


@functools.cache
def run_fbgemm(algorithm: str, eps: float = EPS) -> Trajectory:
    """The real CPU TBE kernel, one TBE per table, updating the rows in backward."""
    d = data()
    tbes = {}
    for name, (rows, dim) in TABLES.items():
        tbes[name] = SplitTableBatchedEmbeddingBagsCodegen(
            [(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
            optimizer=KERNELS[algorithm],
            learning_rate=schedules.compute_lr(SCHEDULES[name], 0),
            eps=eps,
            pooling_mode=PoolingMode.SUM,
        )
        with torch.no_grad():
            tbes[name].split_embedding_weights()[0].copy_(torch.from_numpy(d.initial[name]))
    params, accumulators, lrs = [], [], []
    for k in range(STEPS):
        loss = torch.zeros(())
        for name, tbe in tbes.items():
            tbe.set_learning_rate(schedules.compute_lr(SCHEDULES[name], k))
            offsets = np.concatenate([[0], np.cumsum(d.lengths[name][k])])
            pooled = tbe(torch.from_numpy(d.indices[name][k]), torch.from_numpy(offsets))
            loss = loss + bag_loss(pooled, torch.from_numpy(d.loss_weights[name]))
        loss.backward()
        params.append({n: t.split_embedding_weights()[0].detach().numpy().copy() for n, t in tbes.items()})
        states = {n: t.split_optimizer_states() for n, t in tbes.items()}
        accumulators.append({n: s[0][0].numpy().copy() if s else np.zeros(0) for n, s in states.items()})
        lrs.append({n: np.asarray(t.get_learning_rate()) for n, t in tbes.items()})
    return Trajectory(_stack(params), _stack(accumulators), _stack(lrs))


def run_jax(make_rule: Rule) -> Trajectory:
    """The rules on the dense gradient, one rule per table, all steps in one ``lax.scan``."""
    d = data()
    with jax.enable_x64(True):
        txs = {
            name: make_rule(schedules.schedule_from_config(SCHEDULES[name]), dim) for name, (_, dim) in TABLES.items()
        }
        params = {name: jnp.asarray(d.initial[name]) for name in TABLES}
        segments = {name: np.stack([np.repeat(np.arange(BAGS), n) for n in d.lengths[name]]) for name in TABLES}

        def loss(params: dict[str, jax.Array], indices: dict[str, jax.Array], segments: dict[str, jax.Array]) -> Any:
            total = jnp.zeros((), jnp.float32)
            for name in TABLES:
                pooled = jax.ops.segment_sum(params[name][indices[name]], segments[name], num_segments=BAGS)
                total = total + bag_loss(pooled, jnp.asarray(d.loss_weights[name]))
            return total

        def step(carry: Any, batch: Any) -> Any:
            params, states = carry
            grads = jax.grad(loss)(params, *batch)
            new_params, new_states = {}, {}
            for name in TABLES:
                updates, new_states[name] = txs[name].update(grads[name], states[name], params[name])
                new_params[name] = optax.apply_updates(params[name], updates)
            accumulators = {n: getattr(s, "accumulator", jnp.zeros(0)) for n, s in new_states.items()}
            lrs = {n: getattr(s, "learning_rate", jnp.nan) for n, s in new_states.items()}
            return (new_params, new_states), (new_params, accumulators, lrs)

        states = {name: txs[name].init(params[name]) for name in TABLES}
        run = jax.jit(lambda carry, batches: jax.lax.scan(step, carry, batches)[1])
        out = run((params, states), (d.indices, segments))
        return Trajectory(*(jax.tree.map(np.asarray, part) for part in out))


def relative_gaps(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per table and step, ``max |a - b|`` over the table divided by ``max |a|`` at that step."""
    out = {}
    for name in TABLES:
        axes = tuple(range(1, a[name].ndim))
        diff = np.abs(a[name].astype(np.float64) - b[name]).max(axis=axes)
        out[name] = diff / np.maximum(np.abs(a[name]).max(axis=axes), 1e-30)
    return out


def max_param_gap(torch_run: Trajectory, jax_run: Trajectory) -> float:
    return max(float(g.max()) for g in relative_gaps(torch_run.params, jax_run.params).values())


@pytest.mark.parity
@pytest.mark.parametrize(
    ("algorithm", "eps"),
    [
        ("sgd", EPS),
        ("adagrad", EPS),
        ("adagrad", FBGEMM_EPS),
        ("rowwise_adagrad", EPS),
        ("rowwise_adagrad", FBGEMM_EPS),
    ],
)
def test_rules_match_the_fbgemm_kernel(algorithm: str, eps: float) -> None:
    fbgemm, ours = run_fbgemm(algorithm, eps), run_jax(rule(algorithm, eps))
    d = data()
    for name, (rows, _) in TABLES.items():
        # Every step and table: a row twice in one bag, and the rows the parity is about have moved.
        assert all(len(set(row)) < LOOKUPS for row in d.indices[name].tolist())
        moved = np.abs(fbgemm.params[name][-1] - d.initial[name])[: rows - NEVER_LOOKED_UP].max(axis=1)
        assert moved.min() > 1e-2, (name, moved.min())
        for run in (fbgemm, ours):  # rows never looked up: bitwise unchanged at every step, accumulators too
            kept = run.params[name][:, rows - NEVER_LOOKED_UP :]
            assert (kept.view(np.uint32) == d.initial[name][rows - NEVER_LOOKED_UP :].view(np.uint32)).all()
            assert (run.accumulators[name][:, rows - NEVER_LOOKED_UP :] == 0).all()
        # Step k used compute_lr(k): fbgemm holds it in float32, the rules round it so for a float32 table.
        exact = np.asarray([schedules.compute_lr(SCHEDULES[name], k) for k in range(STEPS)])
        np.testing.assert_array_equal(fbgemm.lrs[name], np.float32(exact))
        # (inside the scan XLA's vectorised cos may differ from compute_lr's in the last bit)
        np.testing.assert_allclose(ours.lrs[name], exact, rtol=1e-15, atol=0)
        np.testing.assert_array_equal(np.float32(ours.lrs[name]), fbgemm.lrs[name])
    for name, gaps in relative_gaps(fbgemm.params, ours.params).items():
        assert gaps.max() <= BAR, (algorithm, name, float(gaps.max()), int(gaps.argmax()))
    if algorithm != "sgd":
        for name, gaps in relative_gaps(fbgemm.accumulators, ours.accumulators).items():
            expected = TABLES[name] if algorithm == "adagrad" else TABLES[name][:1]
            assert ours.accumulators[name].shape[1:] == expected == fbgemm.accumulators[name].shape[1:]
            assert gaps.max() <= BAR, (algorithm, name, "accumulator", float(gaps.max()))


def _mean_as_sum(schedule: schedules.Schedule, dim: int) -> optax.GradientTransformation:
    # Accumulating the row's sum of squares (D times the mean) is the mean rule with lr and eps over sqrt(D).
    return table_rules.fused_exact_rowwise_adagrad(
        lambda count: schedule(count) / math.sqrt(dim), eps=EPS / math.sqrt(dim)
    )


WRONG_RULES: dict[str, tuple[str, Rule]] = {
    "sgd": ("the next step's rate", lambda schedule, dim: table_rules.fused_exact_sgd(lambda c: schedule(c + 1))),
    "adagrad": (
        "eps inside the square root (optax.adagrad)",
        lambda schedule, dim: optax.adagrad(schedule, initial_accumulator_value=0.0, eps=EPS),
    ),
    "rowwise_adagrad": ("the sum of squares instead of the mean", _mean_as_sum),
}


@pytest.mark.parity
@pytest.mark.parametrize("algorithm", sorted(KERNELS))
def test_the_bar_catches_a_wrong_rule(algorithm: str) -> None:
    what, wrong = WRONG_RULES[algorithm]
    gap = max_param_gap(run_fbgemm(algorithm), run_jax(wrong))
    assert gap > 100 * BAR, (algorithm, what, gap)


def run_torch_dense(algorithm: str) -> dict[str, np.ndarray]:
    """torch's own optimizers on the dense gradient of ``torch.nn.functional.embedding_bag``; weights per step."""
    d = data()
    tables = {name: torch.nn.Parameter(torch.from_numpy(d.initial[name].copy())) for name in TABLES}
    make = {
        "sgd": lambda p: torch.optim.SGD([p], lr=0.0),
        "adagrad": lambda p: torch.optim.Adagrad([p], lr=0.0, eps=EPS, foreach=False),
        "rowwise_adagrad": lambda p: torchrec.optim.RowWiseAdagrad([p], lr=0.0, eps=EPS),
    }[algorithm]
    optimizers = {name: make(p) for name, p in tables.items()}
    out = []
    for k in range(STEPS):
        loss = torch.zeros(())
        for name, table in tables.items():
            optimizers[name].param_groups[0]["lr"] = schedules.compute_lr(SCHEDULES[name], k)
            offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(d.lengths[name][k])[:-1]]))
            pooled = torch.nn.functional.embedding_bag(torch.from_numpy(d.indices[name][k]), table, offsets, mode="sum")
            loss = loss + bag_loss(pooled, torch.from_numpy(d.loss_weights[name]))
        for optimizer in optimizers.values():
            optimizer.zero_grad()
        loss.backward()
        for optimizer in optimizers.values():
            optimizer.step()
        out.append({name: t.detach().numpy().copy() for name, t in tables.items()})
    return _stack(out)


@pytest.mark.parity
@pytest.mark.parametrize("algorithm", sorted(KERNELS))
def test_torch_optimizers_on_the_dense_gradient_match_the_kernel(algorithm: str) -> None:
    """torch.optim.SGD / Adagrad and torchrec's non-fused RowWiseAdagrad, with fbgemm's eps and no lr_decay."""
    fbgemm, dense = run_fbgemm(algorithm), run_torch_dense(algorithm)
    for name, gaps in relative_gaps(fbgemm.params, dense).items():
        assert gaps.max() <= BAR, (algorithm, name, float(gaps.max()))
        rows = TABLES[name][0]
        assert np.array_equal(dense[name][-1, rows - NEVER_LOOKED_UP :], data().initial[name][rows - NEVER_LOOKED_UP :])


@pytest.mark.parity
def test_torch_adagrad_rule_on_the_dense_gradient_matches_the_kernel() -> None:
    """``torch_rules.torch_adagrad`` (lr_decay 0, accumulator from 0) is fbgemm's rule up to the float32 rate."""
    rule = lambda schedule, dim: torch_rules.torch_adagrad(schedule, eps=EPS)  # noqa: E731
    assert max_param_gap(run_fbgemm("adagrad"), run_jax(rule)) <= BAR
