"""LRShim and RecapLRShim on plain torch and torchrec keyed optimizers."""

from __future__ import annotations

import json
import math
import warnings

import bridge_toys as toys
import jax
import jax.numpy as jnp
import optax
import pytest
import torch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

import torch_bridge
from functional_opt import config
from functional_opt.schedules import compute_lr
from torch_bridge import LRShim, RecapLRShim

STEPS = 60

KINDS = {
    "constant": config.LearningRate(constant=0.125),
    "piecewise_constant": config.LearningRate(
        piecewise_constant={"learning_rate_boundaries": [0, 7, 30], "learning_rate_values": [0.3, 0.2, 0.1, 0.05]}
    ),
    "linear_ramp_to_constant": config.LearningRate(
        linear_ramp_to_constant={"learning_rate": 0.7, "num_ramp_steps": 13}
    ),
    "linear_ramp_to_cosine": config.LearningRate(
        linear_ramp_to_cosine={
            "learning_rate": 0.9,
            "final_learning_rate": 0.01,
            "num_ramp_steps": 9,
            "final_num_steps": 50,
        }
    ),
}


def params(n: int = 1) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3)) for _ in range(n)]


def sgd_with_groups(n: int, names: list[str] | None = None) -> torch.optim.SGD:
    groups = [{"params": params()} for _ in range(n)]
    if names is not None:
        for group, name in zip(groups, names, strict=True):
            group["name"] = name
    return torch.optim.SGD(groups, lr=1.0)


def run_lrs(opt: torch.optim.Optimizer, sched: LRShim, steps: int = STEPS) -> list[list[float]]:
    """The learning rate of every group at each optimizer step (read right before ``optimizer.step``)."""
    seen = []
    for _ in range(steps):
        seen.append([float(g["lr"]) for g in opt.param_groups])
        opt.step()
        sched.step()
    return seen


def test_public_names() -> None:
    assert torch_bridge.__all__ == [
        "FlatAdam",
        "LRShim",
        "RecapLRShim",
        "apply_table_optimizers",
        "build_embedding_optimizer",
        "build_optimizer",
        "build_recap_optimizer",
        "export_state",
        "import_state",
        "learning_rates_from_torch",
    ]
    for name in torch_bridge.__all__:
        assert getattr(torch_bridge, name) is not None


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_learning_rate_kind_matches_compute_lr(kind: str) -> None:
    cfg = KINDS[kind]
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {kind: cfg})
    for k, (lr,) in enumerate(run_lrs(opt, sched)):
        assert toys.close(lr, compute_lr(cfg, k)), (kind, k, lr, compute_lr(cfg, k))


def test_many_groups_each_follow_their_own_schedule() -> None:
    opt = sgd_with_groups(len(KINDS))
    sched = LRShim(opt, KINDS)
    for k, lrs in enumerate(run_lrs(opt, sched)):
        for lr, cfg in zip(lrs, KINDS.values(), strict=True):
            assert toys.close(lr, compute_lr(cfg, k))
    assert sched.last_epoch == STEPS


def test_optax_schedule_drives_torch() -> None:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=0.3, warmup_steps=10, decay_steps=50, end_value=0.003
    )
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"all": schedule})
    with jax.enable_x64(True):
        expected = [float(schedule(jnp.asarray(k, jnp.int64))) for k in range(STEPS)]
    for k, (lr,) in enumerate(run_lrs(opt, sched)):
        assert toys.close(lr, expected[k]), (k, lr, expected[k])
    assert sched.state_dict()["lr_dict"]["all"]["callable"] == f"{schedule.__module__}.{schedule.__qualname__}"


def test_mapping_values_are_validated_as_configs() -> None:
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"g": {"constant": 0.5}})
    assert opt.param_groups[0]["lr"] == 0.5
    assert sched.state_dict()["lr_dict"]["g"]["config"]["constant"] == 0.5
    with pytest.raises(ValueError, match=r"learning rate 'g' is not a valid LearningRate"):
        LRShim(sgd_with_groups(1), {"g": {"constant": 0.5, "linear_ramp_to_constant": None, "bogus": 1}})
    with pytest.raises(TypeError, match=r"learning rate 'g' must be a LearningRate config or a schedule callable"):
        LRShim(sgd_with_groups(1), {"g": 0.5})


def test_count_mismatch_names_both_counts_and_groups() -> None:
    opt = sgd_with_groups(2, names=["tower_a", "tower_b"])
    with pytest.raises(ValueError) as info:
        LRShim(opt, {"tower_a": KINDS["constant"]})
    message = str(info.value)
    assert "2 param groups ['tower_a', 'tower_b']" in message
    assert "lr_dict has 1 learning rates ['tower_a']" in message


def test_count_mismatch_on_unnamed_groups_lists_their_parameters() -> None:
    keyed = KeyedOptimizerWrapper(
        {"towers.a.weight": params()[0], "backbone.weight": params()[0]},
        lambda ps: torch.optim.SGD([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.1),
    )
    with pytest.raises(ValueError, match=r"has 2 param groups \['param_groups\[0\]: \[towers.a.weight\]', "):
        LRShim(keyed, {"only": KINDS["constant"]})


def test_names_must_match_named_groups() -> None:
    opt = sgd_with_groups(2, names=["tower_a", "tower_b"])
    with pytest.raises(ValueError, match=r"missing: \['tower_b'\]; extra: \['tower_c'\]"):
        LRShim(opt, {"tower_a": KINDS["constant"], "tower_c": KINDS["constant"]})
    with pytest.raises(ValueError, match="different order"):
        LRShim(opt, {"tower_b": KINDS["constant"], "tower_a": KINDS["constant"]})


def test_works_on_keyed_and_combined_optimizers() -> None:
    first = KeyedOptimizerWrapper(
        {"a.w": params()[0], "b.w": params()[0]},
        lambda ps: torch.optim.Adam([{"params": ps[:1]}, {"params": ps[1:]}], lr=0.0),
    )
    second = KeyedOptimizerWrapper({"c.w": params()[0]}, lambda ps: torch.optim.SGD(ps, lr=0.0))
    combined = CombinedOptimizer([first, second])
    lr_dict = {n: KINDS[n] for n in ("linear_ramp_to_cosine", "piecewise_constant", "linear_ramp_to_constant")}
    sched = LRShim(combined, lr_dict)
    for k, lrs in enumerate(run_lrs(combined, sched, steps=20)):
        assert lrs == pytest.approx([compute_lr(c, k) for c in lr_dict.values()], rel=1e-12, abs=1e-12)
    # The groups are the wrapped optimizers' own dicts: the values reached them.
    assert first.param_groups[0]["lr"] == combined.param_groups[0]["lr"]
    assert second.param_groups[0]["lr"] == sched.get_last_lr()[2]


def test_get_last_lr_is_a_copy_of_the_current_rates() -> None:
    opt = sgd_with_groups(2)
    sched = LRShim(opt, {"a": KINDS["linear_ramp_to_cosine"], "b": KINDS["constant"]})
    opt.step()
    sched.step()
    last = sched.get_last_lr()
    assert last == [g["lr"] for g in opt.param_groups]
    last[0] = 123.0
    assert sched.get_last_lr()[0] != 123.0
    assert sched.get_lr() == sched.get_last_lr()


def test_no_warnings_in_the_normal_loop_and_torchs_order_warning_kept() -> None:
    opt = sgd_with_groups(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched = LRShim(opt, {"a": KINDS["constant"]})
        run_lrs(opt, sched, steps=3)
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"a": KINDS["constant"]})
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        sched.step()


def test_step_with_epoch_jumps_in_closed_form() -> None:
    cfg = KINDS["linear_ramp_to_cosine"]
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"a": cfg})
    opt.step()
    with pytest.warns(UserWarning, match="deprecated"):
        sched.step(31)
    assert sched.last_epoch == 31
    assert toys.close(opt.param_groups[0]["lr"], compute_lr(cfg, 31))
    with pytest.raises(ValueError, match="epoch=-2 must be an integer >= 0"), pytest.warns(UserWarning):
        sched.step(-2)


def test_huge_steps_match_compute_lr() -> None:
    opt = sgd_with_groups(len(KINDS))
    sched = LRShim(opt, KINDS)
    state = sched.state_dict()
    for step in (2**31 - 2, 10**12):
        state["last_epoch"] = step
        sched.load_state_dict(state)
        for group, cfg in zip(opt.param_groups, KINDS.values(), strict=True):
            assert toys.close(group["lr"], compute_lr(cfg, step))


def test_added_param_group_is_an_error_not_a_silent_gap() -> None:
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"a": KINDS["constant"]})
    opt.add_param_group({"params": params()})
    opt.step()
    with pytest.raises(ValueError, match="now has 2 param groups, but the scheduler was built for 1"):
        sched.step()


def test_state_dict_is_json_and_resume_continues_exactly() -> None:
    opt = sgd_with_groups(len(KINDS))
    sched = LRShim(opt, KINDS)
    straight = run_lrs(opt, sched, steps=40)

    opt = sgd_with_groups(len(KINDS))
    sched = LRShim(opt, KINDS)
    first = run_lrs(opt, sched, steps=17)
    saved = json.loads(json.dumps(sched.state_dict()))
    assert saved["last_epoch"] == 17
    assert set(saved["lr_dict"]) == set(KINDS)
    assert all(set(v) == {"config"} for v in saved["lr_dict"].values())

    opt = sgd_with_groups(len(KINDS))
    sched = LRShim(opt, KINDS)
    sched.load_state_dict(saved)
    assert sched.last_epoch == 17
    assert [g["lr"] for g in opt.param_groups] == straight[17]
    assert first + run_lrs(opt, sched, steps=23) == straight


def test_load_state_of_a_different_config_fails_and_changes_nothing() -> None:
    opt = sgd_with_groups(2)
    sched = LRShim(opt, {"a": KINDS["constant"], "b": KINDS["linear_ramp_to_cosine"]})
    run_lrs(opt, sched, steps=5)
    before = (sched.last_epoch, sched._step_count, sched.get_last_lr(), [g["lr"] for g in opt.param_groups])

    other_opt = sgd_with_groups(2)
    other = LRShim(other_opt, {"a": KINDS["constant"], "b": KINDS["linear_ramp_to_constant"]})
    run_lrs(other_opt, other, steps=9)
    with pytest.raises(ValueError, match=r"lr_dict\['b'\]: saved \{'linear_ramp_to_constant'"):
        sched.load_state_dict(other.state_dict())

    renamed = sched.state_dict()
    renamed["lr_dict"] = {"a": renamed["lr_dict"]["a"], "c": renamed["lr_dict"]["b"]}
    renamed["last_epoch"] = 30
    with pytest.raises(ValueError, match=r"names differ \(missing: \['b'\]; extra: \['c'\]\)"):
        sched.load_state_dict(renamed)
    with pytest.raises(ValueError, match=r"the state has no \['lr_dict'\] entries"):
        sched.load_state_dict({"last_epoch": 3, "_step_count": 4})
    with pytest.raises(ValueError, match=r"last_epoch=-1 must be an integer in \[0, "):
        sched.load_state_dict(dict(sched.state_dict(), last_epoch=-1))
    callable_state = LRShim(sgd_with_groups(2), {"a": KINDS["constant"], "b": optax.constant_schedule(0.1)})
    with pytest.raises(ValueError, match=r"lr_dict\['b'\]: saved \{'callable'"):
        sched.load_state_dict(callable_state.state_dict())

    after = (sched.last_epoch, sched._step_count, sched.get_last_lr(), [g["lr"] for g in opt.param_groups])
    assert after == before


def test_tensor_learning_rates_are_updated_in_place() -> None:
    cfg = KINDS["linear_ramp_to_cosine"]
    lr_tensor = torch.tensor(0.0, dtype=torch.float64)
    opt = torch.optim.SGD([{"params": params(), "lr": lr_tensor}, {"params": params(), "lr": 0.0}], lr=0.0)
    sched = LRShim(opt, {"t": cfg, "f": cfg})
    for k in range(20):
        assert opt.param_groups[0]["lr"] is lr_tensor
        assert toys.close(lr_tensor.item(), compute_lr(cfg, k))
        assert opt.param_groups[1]["lr"] == lr_tensor.item()
        opt.step()
        sched.step()
    last = sched.get_last_lr()
    assert isinstance(last[0], torch.Tensor) and last[0] is not lr_tensor
    assert last[0].item() == last[1]
    saved = json.loads(json.dumps(sched.state_dict()))
    fresh = torch.tensor(0.0, dtype=torch.float64)
    opt2 = torch.optim.SGD([{"params": params(), "lr": fresh}, {"params": params(), "lr": 0.0}], lr=0.0)
    sched2 = LRShim(opt2, {"t": cfg, "f": cfg})
    sched2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] is fresh
    assert fresh.item() == lr_tensor.item()


def test_tensor_learning_rates_do_not_recompile_a_compiled_step() -> None:
    from torch._dynamo.utils import counters

    cfg = KINDS["linear_ramp_to_cosine"]
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(4)) for _ in range(2)]
    reference = [w.detach().clone() for w in weights]
    grads = [torch.randn(4) for _ in range(2)]
    opt = torch.optim.SGD(
        [{"params": [w], "lr": torch.tensor(0.0, dtype=torch.float32)} for w in weights], lr=0.0, foreach=False
    )
    sched = LRShim(opt, {"a": cfg, "b": cfg})

    torch._dynamo.reset()
    counters.clear()

    @torch.compile(backend="eager")
    def compiled_step() -> None:
        opt.step()

    for k in range(101):
        for w, g in zip(weights, grads, strict=True):
            w.grad = g.clone()
        compiled_step()
        sched.step()
        lr32 = torch.tensor(compute_lr(cfg, k), dtype=torch.float32)
        for i in range(2):
            reference[i] = reference[i] - lr32 * grads[i]
        if k == 0:
            graphs_after_first = counters["stats"]["unique_graphs"]
    assert graphs_after_first >= 1
    assert counters["stats"]["unique_graphs"] == graphs_after_first  # no recompile over 100 steps
    for w, r in zip(weights, reference, strict=True):
        torch.testing.assert_close(w.detach(), r, rtol=1e-6, atol=1e-6)


def test_recap_shim_on_a_plain_optimizer_has_dense_groups_only() -> None:
    opt = torch.optim.Adam([{"params": params(), "name": "tower"}, {"params": params(), "name": "backbone"}], lr=0.0)
    cfgs = {"tower": KINDS["linear_ramp_to_constant"], "backbone": KINDS["piecewise_constant"]}
    sched = RecapLRShim(opt, cfgs)
    for k, lrs in enumerate(run_lrs(opt, sched, steps=20)):
        assert lrs == pytest.approx([compute_lr(c, k) for c in cfgs.values()], rel=1e-12, abs=1e-12)
    assert sched.state_dict()["emb_learning_rate"] is None
    with pytest.raises(ValueError, match="emb_learning_rate is set but the optimizer has no fused embedding"):
        RecapLRShim(opt, cfgs, KINDS["constant"])
    with pytest.raises(ValueError, match=r"has 2 dense param groups \['tower', 'backbone'\] but lr_dict has 1"):
        RecapLRShim(opt, {"tower": KINDS["constant"]})


def test_piecewise_boundaries_hit_exactly() -> None:
    cfg = KINDS["piecewise_constant"]
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"p": cfg})
    lrs = [lr for (lr,) in run_lrs(opt, sched, steps=32)]
    assert lrs[0] == 0.2 and lrs[6] == 0.2 and lrs[7] == 0.1 and lrs[29] == 0.1 and lrs[30] == 0.05
    assert all(math.isfinite(v) for v in lrs)


def test_schedulers_with_the_same_configs_stay_independent() -> None:
    cfg = KINDS["linear_ramp_to_cosine"]
    opt_a, opt_b = sgd_with_groups(1), sgd_with_groups(1)
    sched_a = LRShim(opt_a, {"g": cfg})
    sched_b = LRShim(opt_b, {"g": cfg})
    state = sched_b.state_dict()
    state["last_epoch"] = 5000  # another table block
    sched_b.load_state_dict(state)
    for k in range(1, 30):
        opt_a.step()
        sched_a.step()
        opt_b.step()
        sched_b.step()
        assert toys.close(opt_a.param_groups[0]["lr"], compute_lr(cfg, k))
        assert toys.close(opt_b.param_groups[0]["lr"], compute_lr(cfg, 5000 + k))


def test_tensor_learning_rates_set_after_construction_are_picked_up_by_a_reload() -> None:
    cfg = KINDS["linear_ramp_to_constant"]
    opt = sgd_with_groups(1)
    sched = LRShim(opt, {"g": cfg})
    lr_tensor = torch.tensor(0.0, dtype=torch.float64)
    opt.param_groups[0]["lr"] = lr_tensor
    sched.load_state_dict(sched.state_dict())
    for k in range(5):
        assert opt.param_groups[0]["lr"] is lr_tensor
        assert toys.close(lr_tensor.item(), compute_lr(cfg, k))
        opt.step()
        sched.step()
