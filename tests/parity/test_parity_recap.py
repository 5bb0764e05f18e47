"""Parity of the recap optimizer: ``torch_bridge.build_recap_optimizer`` vs ``optimizers.build_recap_optimizer``.

Multi-task Adam with a ramp-to-cosine tower, a ramp-to-constant tower and a
ramp-to-cosine backbone; the embedding tables follow the embedding schedule
with plain SGD: as ``dense_ebc`` on both sides, or, on the torch side, inside
backward by torchrec's fused TBE optimizer under ``DistributedModelParallel``.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest
from parity_harness import (
    DENSE_GROUPS,
    EMB,
    FLOAT32_RELATIVE_BAR,
    RECAP,
    STEPS,
    check_lrs,
    check_params,
    group_configs,
    make_torch_model,
    max_abs_diff,
    run_jax,
    run_torch,
)

import torch_bridge
from functional_opt import config, grouping, optimizers, schedules
from torch_bridge import demo_model as torch_demo


def jax_recap(params: object) -> optax.GradientTransformation:
    return optimizers.build_recap_optimizer(params, RECAP, EMB)


@pytest.mark.parity
@pytest.mark.parametrize("flat", [False, True], ids=["per-group", "flat"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_recap_parity(dtype: str, flat: bool) -> None:
    """The default build and ``flat=True`` (one buffer, one compiled pass per step) at the same bars."""
    model = make_torch_model(dtype)
    initial = torch_demo.named_arrays(model)
    optimizer, scheduler = torch_bridge.build_recap_optimizer(model, RECAP, EMB, flat=flat)
    torch_run = run_torch(model, optimizer, scheduler, dtype)
    jax_run = run_jax(initial, jax_recap, dtype)

    diff = check_params(torch_run, jax_run, dtype, initial)
    configs = group_configs()
    assert list(torch_run.lrs) == [*DENSE_GROUPS, "dense_ebc"]
    assert set(jax_run.lrs) == set(configs)
    for name, lr_config in configs.items():
        assert len(torch_run.lrs[name]) == len(jax_run.lrs[name]) == STEPS
        check_lrs(torch_run.lrs[name], lr_config, float64=True, what=f"torch {name}")
        check_lrs(jax_run.lrs[name], lr_config, float64=dtype == "float64", what=f"jax {name}")
    print(f"\nPARITY recap_adam_multi_task {dtype}{' flat' if flat else ''}: max|dparam| = {diff:.3e}")


SINGLE_TASK = config.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6},
        "single_task_learning_rate": {
            "piecewise_constant": {"learning_rate_boundaries": [60, 140], "learning_rate_values": [0.004, 0.002, 0.001]}
        },
    }
)


@pytest.mark.parity
def test_recap_single_task_parity() -> None:
    """A single-task recap config (non-default Adam hyper-parameters), float64."""
    dtype = "float64"
    model = make_torch_model(dtype)
    initial = torch_demo.named_arrays(model)
    optimizer, scheduler = torch_bridge.build_recap_optimizer(model, SINGLE_TASK, EMB)
    torch_run = run_torch(model, optimizer, scheduler, dtype)
    jax_run = run_jax(initial, lambda params: optimizers.build_recap_optimizer(params, SINGLE_TASK, EMB), dtype)

    diff = check_params(torch_run, jax_run, dtype, initial)
    assert list(torch_run.lrs) == ["single_task", "dense_ebc"] and set(jax_run.lrs) == set(torch_run.lrs)
    assert SINGLE_TASK.single_task_learning_rate is not None and EMB.learning_rate is not None
    for name, lr_config in (("single_task", SINGLE_TASK.single_task_learning_rate), ("dense_ebc", EMB.learning_rate)):
        check_lrs(torch_run.lrs[name], lr_config, float64=True, what=f"torch {name}")
        check_lrs(jax_run.lrs[name], lr_config, float64=True, what=f"jax {name}")
    print(f"\nPARITY recap_adam_single_task {dtype}: max|dparam| = {diff:.3e}")


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning:torchrec.*")
@pytest.mark.filterwarnings("ignore:Please use DTensor instead:FutureWarning")
def test_recap_parity_fused_embeddings() -> None:
    """torchrec's fused TBE SGD (DMP, gloo world size 1, table-wise, FUSED) vs JAX ``dense_ebc`` SGD, float32.

    The embedding schedule changes at every step of its ramp, so a fused
    update that used ``schedule(k + 1)`` (or ``k - 1``) at step k would miss
    the bar by orders of magnitude: the JAX run with the shifted schedule
    shows it.
    """
    dtype = "float32"
    with torch_demo.single_process_group():
        model = make_torch_model(dtype)
        initial = torch_demo.named_arrays(model)
        sharded = torch_demo.shard_with_fused_embeddings(model, schedules.compute_lr(EMB.learning_rate, 0))
        assert max(max_abs_diff(torch_demo.named_arrays(sharded), initial).values()) == 0.0
        optimizer, scheduler = torch_bridge.build_recap_optimizer(sharded, RECAP, EMB)
        # The tables belong to the fused optimizer only: no dense_ebc group on the torch side.
        assert [g.get("name") for g in optimizer.param_groups][: len(DENSE_GROUPS)] == DENSE_GROUPS
        assert "dense_ebc" not in [g.get("name") for g in optimizer.param_groups]
        torch_run = run_torch(sharded, optimizer, scheduler, dtype)
    jax_run = run_jax(initial, jax_recap, dtype)

    diff = check_params(torch_run, jax_run, dtype, initial)
    configs = group_configs()
    fused_labels = [label for label in torch_run.lrs if label not in DENSE_GROUPS]
    assert fused_labels and list(torch_run.lrs)[: len(DENSE_GROUPS)] == DENSE_GROUPS
    for label in DENSE_GROUPS:
        check_lrs(torch_run.lrs[label], configs[label], float64=True, what=f"torch {label}")
    for label in fused_labels:
        check_lrs(torch_run.lrs[label], configs["dense_ebc"], float64=True, what=f"torch fused {label}")
    print(f"\nPARITY recap_fused_embeddings float32: max|dparam| = {diff:.3e}")

    emb_schedule = schedules.schedule_from_config(configs["dense_ebc"])
    for shift in (1, -1):
        shifted = run_jax(initial, lambda params, s=shift: shifted_embedding_recap(params, emb_schedule, s), dtype)
        tables = [n for n in initial if ".embedding_bags." in n]
        worst = max(
            max_abs_diff({n: torch_run.params[n] for n in tables}, {n: shifted.params[n] for n in tables}).values()
        )
        scale = max(float(np.max(np.abs(torch_run.params[n]))) for n in tables)
        assert worst > 100 * FLOAT32_RELATIVE_BAR * scale, (shift, worst)


def shifted_embedding_recap(
    params: object, emb_schedule: schedules.Schedule, shift: int
) -> optax.GradientTransformation:
    """The JAX recap optimizer with the embedding group's step off by ``shift``."""
    groups, labels = optimizers.recap_labels(params, RECAP, EMB)
    adam = RECAP.adam
    transforms = {
        g.name: optimizers.torch_adam(
            schedules.schedule_from_config(g.learning_rate), b1=adam.beta_1, b2=adam.beta_2, eps=adam.epsilon
        )
        for g in groups
        if g.algorithm == "adam"
    }
    transforms[grouping.DENSE_EMBEDDINGS] = optimizers.torch_sgd(lambda count: emb_schedule(count + shift))
    return optax.partition(transforms, labels)


NEW_KINDS = config.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        "multi_task_learning_rates": {
            "tower_learning_rates": {
                "recap.is_clicked": {
                    "sequence": [
                        {
                            "learning_rate": {
                                "linear": {"initial_learning_rate": 0.0, "final_learning_rate": 0.01, "num_steps": 30}
                            },
                            "num_steps": 30,
                        },
                        {
                            "learning_rate": {
                                "warmup_stable_decay": {
                                    "learning_rate": 0.01,
                                    "final_learning_rate": 0.001,
                                    "num_stable_steps": 40,
                                    "num_decay_steps": 100,
                                    "decay_shape": "one_minus_sqrt",
                                }
                            }
                        },
                    ]
                },
                "recap.is_replied": {
                    "one_cycle": {"max_learning_rate": 0.008, "total_steps": 150, "three_phase": True}
                },
            },
            "backbone_learning_rate": {
                "cosine_restarts": {
                    "learning_rate": 0.003,
                    "final_learning_rate": 0.0003,
                    "cycle_steps": 25,
                    "cycle_mult": 2,
                }
            },
        },
    }
)
NEW_KINDS_EMB = config.EmbeddingOptimizerConfig.model_validate(
    {"learning_rate": {"multi_step": {"learning_rate": 0.5, "milestones": [50, 120, 120], "gamma": 0.5}}}
)


@pytest.mark.parity
def test_recap_parity_with_the_new_schedule_kinds() -> None:
    """A sequence, one_cycle, cosine restarts and multi_step through both recap builders, float64."""
    model = make_torch_model("float64")
    initial = torch_demo.named_arrays(model)
    optimizer, scheduler = torch_bridge.build_recap_optimizer(model, NEW_KINDS, NEW_KINDS_EMB)
    torch_run = run_torch(model, optimizer, scheduler, "float64")
    jax_run = run_jax(
        initial, lambda params: optimizers.build_recap_optimizer(params, NEW_KINDS, NEW_KINDS_EMB), "float64"
    )
    diff = check_params(torch_run, jax_run, "float64", initial)
    rates = NEW_KINDS.multi_task_learning_rates
    assert rates is not None and rates.backbone_learning_rate is not None and NEW_KINDS_EMB.learning_rate is not None
    configs = {**rates.tower_learning_rates, "backbone": rates.backbone_learning_rate}
    configs["dense_ebc"] = NEW_KINDS_EMB.learning_rate
    for name, lr_config in configs.items():
        check_lrs(torch_run.lrs[name], lr_config, float64=True, what=f"torch {name}")
        check_lrs(jax_run.lrs[name], lr_config, float64=True, what=f"jax {name}")
    print(f"\nPARITY recap new schedule kinds float64: max|dparam| = {diff:.3e}")
