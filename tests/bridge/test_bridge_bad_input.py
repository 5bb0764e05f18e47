"""Hostile input on the torch side: bad schedule values, bad scheduler states, bad optimizer states.

Every refusal is a ``ValueError`` that names what is wrong, and leaves the
scheduler, the optimizer and the model exactly as they were.
"""

from __future__ import annotations

import copy
import math

import jax.numpy as jnp
import optax
import pytest
import torch

import torch_bridge
from functional_opt import config

RAMP = config.LearningRate(linear_ramp_to_constant={"learning_rate": 0.5, "num_ramp_steps": 4})


def sgd(lr: float = 0.125) -> tuple[torch.nn.Parameter, torch.optim.SGD]:
    w = torch.nn.Parameter(torch.ones(2))
    return w, torch.optim.SGD([{"params": [w], "lr": lr, "name": "w"}])


def bad_between(first: int, stop: int, value: float):
    """A jit-friendly schedule that is ``value`` for ``first <= step < stop`` and 0.1 elsewhere."""

    def schedule(count):
        return jnp.where((count >= first) & (count < stop), value, 0.1)

    return schedule


@pytest.mark.parametrize(
    ("schedule", "shown"),
    [
        (lambda count: jnp.nan * count, "nan"),
        (lambda count: jnp.inf + 0 * count, "inf"),
        (lambda count: -0.5 + 0 * count, "-0.5"),
        (lambda count: jnp.ones(3) * 0.1, r"\[0.1, 0.1, 0.1\]"),
    ],
    ids=["nan", "inf", "negative", "vector"],
)
def test_a_callable_with_bad_values_is_refused_before_anything_is_written(schedule, shown: str) -> None:
    _, opt = sgd()
    with pytest.raises(ValueError, match=rf"LRShim: the schedule of 'w' gives {shown} at step 0"):
        torch_bridge.LRShim(opt, {"w": schedule})
    assert opt.param_groups[0]["lr"] == 0.125


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0], ids=["nan", "inf", "negative"])
def test_a_callable_that_turns_bad_later_is_refused_at_that_step_and_changes_nothing(value: float) -> None:
    _, opt = sgd()
    sched = torch_bridge.LRShim(opt, {"w": bad_between(3, 5, value)})  # between the steps probed at build
    for _ in range(2):
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match=r"the schedule of 'w' gives .* at step 3"):
        opt.step()
        sched.step()
    assert sched.last_epoch == 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert sched.get_last_lr() == [pytest.approx(0.1)]


def _scheduler_snapshot(sched, opt) -> tuple:
    return sched.last_epoch, sched._step_count, list(sched.get_last_lr()), [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"last_epoch": 2**63}, r"last_epoch=9223372036854775808 must be an integer in \[0, "),
        ({"last_epoch": 3.0}, r"last_epoch=3.0 must be an integer"),
        ({"last_epoch": "3"}, r"last_epoch='3' must be an integer"),
        ({"last_epoch": True}, r"last_epoch=True must be an integer"),
        ({"_step_count": -4}, r"_step_count=-4 must be an integer"),
        ({"lr_dict": None}, r"lr_dict must be a mapping"),
    ],
    ids=["2**63", "float", "string", "bool", "negative-count", "no-lr_dict"],
)
def test_a_malformed_scheduler_state_is_refused_and_the_scheduler_stays_usable(change: dict, message: str) -> None:
    _, opt = sgd()
    sched = torch_bridge.LRShim(opt, {"w": RAMP})
    opt.step()
    sched.step()
    state = {**sched.state_dict(), **change}
    before = _scheduler_snapshot(sched, opt)
    with pytest.raises(ValueError, match=message):
        sched.load_state_dict(state)
    assert _scheduler_snapshot(sched, opt) == before
    opt.step()
    sched.step()
    assert sched.get_last_lr() == [0.25]


def test_a_truncated_scheduler_state_is_refused() -> None:
    _, opt = sgd()
    sched = torch_bridge.LRShim(opt, {"w": RAMP})
    state = sched.state_dict()
    del state["_step_count"]
    before = _scheduler_snapshot(sched, opt)
    with pytest.raises(ValueError, match=r"the state has no \['_step_count'\] entries"):
        sched.load_state_dict(state)
    assert _scheduler_snapshot(sched, opt) == before


def test_callables_of_one_name_are_told_apart_by_their_values() -> None:
    _, opt = sgd()
    warm = optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 1000)
    other = optax.warmup_cosine_decay_schedule(0.0, 0.2, 10, 1000)
    sched = torch_bridge.LRShim(opt, {"w": warm})
    _, opt2 = sgd()
    sched2 = torch_bridge.LRShim(opt2, {"w": other})
    assert sched.state_dict()["lr_dict"]["w"]["callable"] == sched2.state_dict()["lr_dict"]["w"]["callable"]
    before = _scheduler_snapshot(sched, opt)
    with pytest.raises(ValueError, match=r"lr_dict\['w'\]: .* is another schedule than the saved one \(at step 1"):
        sched.load_state_dict(sched2.state_dict())
    assert _scheduler_snapshot(sched, opt) == before
    _, opt3 = sgd()
    torch_bridge.LRShim(opt3, {"w": optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 1000)}).load_state_dict(
        sched.state_dict()
    )


def test_scheduler_steps_are_never_negative() -> None:
    _, opt = sgd()
    sched = torch_bridge.LRShim(opt, {"w": RAMP})
    with pytest.warns(UserWarning, match="deprecated"), pytest.raises(ValueError, match=r"epoch=-1 must be"):
        sched.step(-1)
    with pytest.raises(ValueError, match=r"step -3 must be in \[0, "):
        sched._lrs_at(-3)


# --- optimizer states ----------------------------------------------------------------------------


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Linear(3, 2)
        self.towers = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.towers["a"](self.backbone(x))


def trained(builder: str):
    model = Net()
    if builder == "recap":
        cfg = config.RecapOptimizerConfig(
            adam={},
            multi_task_learning_rates={
                "tower_learning_rates": {"a": {"constant": 0.1}},
                "backbone_learning_rate": {"constant": 0.01},
            },
        )
        opt, sched = torch_bridge.build_recap_optimizer(model, cfg)
    else:
        opt, sched = torch_bridge.build_optimizer(model, config.OptimizerConfig(adam={"lr": 0.1}))
    for _ in range(2):
        opt.zero_grad()
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
        sched.step()
    return model, opt


def _first_entry(state: dict) -> dict:
    return state["state"][next(iter(state["state"]))]


CORRUPTIONS = {
    "missing exp_avg_sq": (
        lambda e: e.pop("exp_avg_sq"),
        r"(lacks the entries \['exp_avg_sq'\]|missing \['exp_avg_sq'\])",
    ),
    "string for a tensor": (lambda e: e.update(exp_avg="zeros"), r"exp_avg'?\]?: expected a tensor, got str"),
    "integer dtype": (
        lambda e: e.update(exp_avg=e["exp_avg"].to(torch.int64)),
        r"dtype torch.int64 cannot stand for the",
    ),
    "step as a string": (lambda e: e.update(step="2"), r"step"),
}


@pytest.mark.parametrize("builder", ["generic", "recap"])
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_every_entry_of_an_optimizer_state_is_checked_before_anything_is_copied(builder: str, corruption: str) -> None:
    _, opt = trained(builder)
    _, source = trained(builder)
    for entries in source.state.values():
        entries["exp_avg"].add_(1.0)  # a state that would visibly change the live one
    state = copy.deepcopy(source.state_dict())
    mutate, message = CORRUPTIONS[corruption]
    mutate(_first_entry(state))
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=message) as info:
        opt.load_state_dict(state)
    assert "nothing was loaded" in str(info.value)
    after = opt.state_dict()
    for key, entries in before["state"].items():
        for name, value in entries.items():
            assert torch.equal(torch.as_tensor(after["state"][key][name]), torch.as_tensor(value)), (key, name)
