"""A generic optimizer refuses a state of another algorithm or shape, and keeps its own state intact."""

from __future__ import annotations

import copy

import pytest
import torch

import torch_bridge
from functional_opt import config


def build(algorithm: dict, width: int = 3, seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = torch.nn.Linear(width, 2)
    opt, _ = torch_bridge.build_optimizer(model, config.OptimizerConfig(learning_rate={"constant": 0.1}, **algorithm))
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(4, width)).square().sum().backward()
        opt.step()
    return model, opt


ADAM = {"adam": {"lr": 0.1}}
SGD = {"sgd": {"lr": 0.1, "momentum": 0.9}}
ADAGRAD = {"adagrad": {"lr": 0.1}}


@pytest.mark.parametrize(
    ("live", "foreign", "width", "message"),
    [
        (ADAM, SGD, 3, r"momentum_buffer"),
        (ADAGRAD, ADAM, 3, r"exp_avg"),
        (ADAM, ADAM, 5, r"shape \[2, 5\] does not match the parameter \[2, 3\]"),
    ],
    ids=["adam<-sgd", "adagrad<-adam", "adam<-wider-adam"],
)
def test_foreign_state_is_refused_and_changes_nothing(live: dict, foreign: dict, width: int, message: str) -> None:
    _, opt = build(live)
    before = copy.deepcopy(opt.state_dict())
    _, other = build(foreign, width=width, seed=1)
    with pytest.raises(ValueError, match=message) as info:
        opt.load_state_dict(other.state_dict())
    assert "nothing was loaded" in str(info.value)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, entry in before["state"].items():
        for key, value in entry.items():
            assert torch.equal(torch.as_tensor(after["state"][index][key]), torch.as_tensor(value)), (index, key)


def test_own_state_loads() -> None:
    _, source = build(ADAM, seed=3)
    _, opt = build(ADAM, seed=4)
    opt.load_state_dict(source.state_dict())
    for a, b in zip(opt.state.values(), source.state.values(), strict=True):
        assert torch.equal(a["exp_avg"], b["exp_avg"])
