"""build_optimizer: each algorithm with its own hyper-parameters, driven by its schedule."""

from __future__ import annotations

import pytest
import torch

from functional_opt import config
from functional_opt.schedules import compute_lr
from torch_bridge import LRShim, build_optimizer

RAMP = config.LearningRate(
    linear_ramp_to_cosine={
        "learning_rate": 0.05,
        "final_learning_rate": 0.005,
        "num_ramp_steps": 4,
        "final_num_steps": 20,
    }
)


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(3)
    return [(torch.randn(6, 3, generator=gen), torch.randn(6, 1, generator=gen)) for _ in range(n)]


def train(model: torch.nn.Module, opt: torch.optim.Optimizer, set_lr) -> None:
    for k, (x, y) in enumerate(batches(25)):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        set_lr(k)
        opt.step()


@pytest.mark.parametrize(
    ("cfg", "torch_cls", "kwargs"),
    [
        (
            config.OptimizerConfig(adam={"lr": 0.1, "betas": (0.8, 0.95), "eps": 1e-5}, learning_rate=RAMP),
            torch.optim.Adam,
            {"betas": (0.8, 0.95), "eps": 1e-5},
        ),
        (
            config.OptimizerConfig(sgd={"lr": 0.1, "momentum": 0.9}, learning_rate=RAMP),
            torch.optim.SGD,
            {"momentum": 0.9, "dampening": 0.0},
        ),
        (
            config.OptimizerConfig(
                adagrad={"lr": 0.1, "eps": 1e-8, "lr_decay": 0.05, "initial_accumulator_value": 0.2},
                learning_rate=RAMP,
            ),
            torch.optim.Adagrad,
            {"eps": 1e-8, "lr_decay": 0.05, "initial_accumulator_value": 0.2},
        ),
    ],
    ids=["adam", "sgd", "adagrad"],
)
def test_each_algorithm_with_its_own_hyper_parameters(cfg, torch_cls, kwargs) -> None:
    model = small_model()
    opt, sched = build_optimizer(model, cfg)
    assert type(opt) is torch_cls
    assert isinstance(sched, LRShim)
    group = opt.param_groups[0]
    for key, value in kwargs.items():
        assert group[key] == value, key
    assert group["name"] == "ALL_PARAMS"
    assert group["lr"] == compute_lr(RAMP, 0)
    assert len(opt.param_groups) == 1 and len(group["params"]) == 4

    # The bridge: optimizer.step then scheduler.step.
    for k, (x, y) in enumerate(batches(25)):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        assert abs(opt.param_groups[0]["lr"] - compute_lr(RAMP, k)) <= 1e-12
        opt.step()
        sched.step()

    # The same algorithm written by hand in torch, LR set from compute_lr: bitwise equal.
    reference = small_model()
    ref_opt = torch_cls(reference.parameters(), lr=0.0, **kwargs)

    def set_lr(k: int) -> None:
        ref_opt.param_groups[0]["lr"] = compute_lr(RAMP, k)

    train(reference, ref_opt, set_lr)
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_adagrad_accumulator_starts_at_the_configured_value() -> None:
    cfg = config.OptimizerConfig(adagrad={"lr": 0.1, "initial_accumulator_value": 0.25})
    model = small_model()
    opt, _ = build_optimizer(model, cfg)
    for p in model.parameters():
        assert torch.all(opt.state[p]["sum"] == 0.25)


@pytest.mark.parametrize("algorithm", ["adam", "sgd", "adagrad"])
def test_null_learning_rate_means_constant_algorithm_lr(algorithm: str) -> None:
    cfg = config.OptimizerConfig(**{algorithm: {"lr": 0.0375}})
    opt, sched = build_optimizer(small_model(), cfg)
    assert sched.lr_dict == {"ALL_PARAMS": config.LearningRate(constant=0.0375)}
    for _ in range(3):
        assert opt.param_groups[0]["lr"] == 0.0375
        opt.step()
        sched.step()


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="expected an OptimizerConfig, got RecapOptimizerConfig"):
        build_optimizer(small_model(), config.RecapOptimizerConfig(adam={}, single_task_learning_rate={"constant": 1}))
    with pytest.raises(ValueError, match="Module has no parameters"):
        build_optimizer(torch.nn.Module(), config.OptimizerConfig(sgd={"lr": 0.1}))
