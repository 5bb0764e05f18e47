"""The new schedule kinds on the torch side: both shims and the recap builder, and sequences that resume exactly."""

from __future__ import annotations

import json

import bridge_toys as toys
import pytest
import torch
from schedule_kind_cases import CASES

import torch_bridge
from functional_opt import config
from functional_opt.schedules import compute_lr
from torch_bridge import LRShim

STEPS = 320


def optimizer(names: list[str]) -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.ones(2))], "name": n} for n in names], lr=1.0)


def rates(opt: torch.optim.Optimizer, sched: LRShim, steps: int) -> list[list[float]]:
    """Every group's rate at each step, read right before ``optimizer.step()``."""
    seen = []
    for _ in range(steps):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


def test_lrshim_sets_compute_lr_of_every_kind() -> None:
    names = sorted(CASES)
    opt = optimizer(names)
    sched = LRShim(opt, {n: CASES[n] for n in names})
    for k, row in enumerate(rates(opt, sched, STEPS)):
        assert row == [compute_lr(CASES[n], k) for n in names], k  # the table's values, bit for bit


def test_recap_builder_drives_every_group_with_a_new_kind() -> None:
    towers = dict(
        zip(toys.TOWERS, ("one_cycle_default", "sequence_nested_from_step", "cosine_restarts_triple"), strict=True)
    )
    recap = config.RecapOptimizerConfig(
        adam={"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-6},
        multi_task_learning_rates={
            "tower_learning_rates": {t: CASES[c] for t, c in towers.items()},
            "backbone_learning_rate": CASES["wsd_sqrt"],
        },
    )
    emb = config.EmbeddingOptimizerConfig(learning_rate=CASES["multi_step_repeated_unsorted"])
    model = toys.RecapToyModel()
    opt, sched = torch_bridge.build_recap_optimizer(model, recap, emb)
    expected = {**{t: CASES[c] for t, c in towers.items()}, "backbone": CASES["wsd_sqrt"]}
    expected["dense_ebc"] = CASES["multi_step_repeated_unsorted"]
    for k in range(120):
        for group in opt.param_groups:
            assert toys.close(float(group["lr"]), compute_lr(expected[group["name"]], k)), (group["name"], k)
        opt.step()
        sched.step()


WARMUP_COSINE = config.LearningRate(
    sequence=[
        {"learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 20}}, "num_steps": 20},
        {
            "learning_rate": {
                "warmup_stable_decay": {
                    "learning_rate": 0.1,
                    "final_learning_rate": 0.001,
                    "num_decay_steps": 60,
                    "decay_shape": "cosine",
                }
            }
        },
    ]
)


@pytest.mark.parametrize("stop", [0, 7, 19, 20, 21, 50, 79, 80, 81, 150])
def test_a_sequence_resumes_exactly_at_any_step(stop: int) -> None:
    """Warmup then cosine, restored from ``state_dict`` in the warmup, at the switch and after the end."""
    straight = rates(opt := optimizer(["g"]), LRShim(opt, {"g": WARMUP_COSINE}), 200)

    first_opt = optimizer(["g"])
    first_sched = LRShim(first_opt, {"g": WARMUP_COSINE})
    before = rates(first_opt, first_sched, stop)
    saved = json.loads(json.dumps(first_sched.state_dict()))

    resumed_opt = optimizer(["g"])
    resumed_sched = LRShim(resumed_opt, {"g": WARMUP_COSINE})
    resumed_sched.load_state_dict(saved)
    assert before + rates(resumed_opt, resumed_sched, 200 - stop) == straight


def test_a_saved_sequence_refuses_another_sequence() -> None:
    opt = optimizer(["g"])
    sched = LRShim(opt, {"g": WARMUP_COSINE})
    rates(opt, sched, 5)
    saved = sched.state_dict()
    other = WARMUP_COSINE.model_copy(deep=True)
    assert other.sequence is not None
    other.sequence[0].num_steps = 21
    fresh_opt = optimizer(["g"])
    fresh = LRShim(fresh_opt, {"g": other})
    before = [g["lr"] for g in fresh_opt.param_groups]
    with pytest.raises(ValueError, match="num_steps"):
        fresh.load_state_dict(saved)
    assert fresh.last_epoch == 0 and [g["lr"] for g in fresh_opt.param_groups] == before
