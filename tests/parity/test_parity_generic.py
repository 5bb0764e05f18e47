"""Parity of the generic optimizers: ``torch_bridge.build_optimizer`` vs ``optimizers.build_optimizer``.

Both sides train the demo model (every parameter in one group, embedding
tables included) from the same weights on the same batches for 200 steps.
"""

from __future__ import annotations

import pytest
from parity_harness import STEPS, check_lrs, check_params, make_torch_model, run_jax, run_torch

import torch_bridge
from functional_opt import config, optimizers
from torch_bridge import demo_model as torch_demo

CASES = {
    "sgd_momentum_piecewise_constant": config.OptimizerConfig.model_validate(
        {
            "sgd": {"lr": 0.05, "momentum": 0.9},
            "learning_rate": {
                "piecewise_constant": {
                    "learning_rate_boundaries": [50, 120, 170],
                    "learning_rate_values": [0.05, 0.02, 0.01, 0.005],
                }
            },
        }
    ),
    "adagrad_linear_ramp_to_cosine": config.OptimizerConfig.model_validate(
        {
            "adagrad": {"lr": 0.05, "eps": 1e-10, "lr_decay": 0.001, "initial_accumulator_value": 0.01},
            "learning_rate": {
                "linear_ramp_to_cosine": {
                    "learning_rate": 0.05,
                    "final_learning_rate": 0.005,
                    "num_ramp_steps": 20,
                    "final_num_steps": 180,
                }
            },
        }
    ),
}


@pytest.mark.parity
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_generic_parity(case: str, dtype: str) -> None:
    cfg = CASES[case]
    model = make_torch_model(dtype)
    initial = torch_demo.named_arrays(model)
    optimizer, scheduler = torch_bridge.build_optimizer(model, cfg)
    torch_run = run_torch(model, optimizer, scheduler, dtype)
    jax_run = run_jax(initial, lambda params: optimizers.build_optimizer(cfg), dtype)

    diff = check_params(torch_run, jax_run, dtype, initial)
    assert set(torch_run.lrs) == {"ALL_PARAMS"} and set(jax_run.lrs) == {"all"}
    assert len(torch_run.lrs["ALL_PARAMS"]) == len(jax_run.lrs["all"]) == STEPS
    check_lrs(torch_run.lrs["ALL_PARAMS"], cfg.learning_rate, float64=True, what="torch")
    check_lrs(jax_run.lrs["all"], cfg.learning_rate, float64=dtype == "float64", what="jax")
    print(f"\nPARITY {case} {dtype}: max|dparam| = {diff:.3e}")
