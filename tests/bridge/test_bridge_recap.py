"""build_recap_optimizer on a dense multi-task model with real torchrec modules."""

from __future__ import annotations

import bridge_toys as toys
import pytest
import torch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from functional_opt import config, grouping
from functional_opt.schedules import compute_lr
from torch_bridge import RecapLRShim, build_recap_optimizer

STEPS = 50


def test_structure_one_keyed_fused_adam_then_sgd(model: toys.RecapToyModel) -> None:
    opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    assert isinstance(opt, CombinedOptimizer) and isinstance(sched, RecapLRShim)
    parts = [o for _, o in opt.optimizers]
    assert [type(o) for o in parts] == [KeyedOptimizerWrapper, KeyedOptimizerWrapper]
    adam, sgd = (o.param_groups for o in parts)
    assert [g["name"] for g in adam] == [*toys.TOWERS, "backbone"]
    assert [g["name"] for g in sgd] == ["dense_ebc"]
    assert all(g["fused"] and g["betas"] == (0.9, 0.99) and g["eps"] == 1e-6 for g in adam)
    assert sgd[0]["momentum"] == 0 and sgd[0]["dampening"] == 0
    # The groups are those of the shared grouping rule, in its order.
    named = [n for n, _ in model.named_parameters()]
    expected = grouping.recap_groups(named, toys.recap_config(), toys.emb_config())
    params = dict(model.named_parameters())
    for group, ref in zip(opt.param_groups, expected, strict=True):
        assert group["name"] == ref.name
        assert [id(p) for p in group["params"]] == [id(params[n]) for n in ref.param_names]
    assert sorted(opt.params) == sorted(named)
    assert sched.group_names == [g.name for g in expected]


def test_no_group_ever_holds_a_placeholder_lr(model: toys.RecapToyModel) -> None:
    opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    # initial_lr is what each group held when the scheduler attached: the builder's value.
    expected = [compute_lr(c, 0) for c in toys.dense_group_learning_rates().values()]
    assert [g["initial_lr"] for g in opt.param_groups] == expected
    assert sched.base_lrs == expected
    assert [g["lr"] for g in opt.param_groups] == expected


def test_every_group_follows_its_schedule_for_50_steps(model: toys.RecapToyModel) -> None:
    opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    configs = list(toys.dense_group_learning_rates().values())
    expected = {c.model_dump_json(): [compute_lr(c, k) for k in range(STEPS)] for c in configs}

    def check(k: int, _: toys.Batch) -> None:
        for group, cfg in zip(opt.param_groups, configs, strict=True):
            assert toys.close(group["lr"], expected[cfg.model_dump_json()][k]), (group["name"], k)

    toys.train(model, opt, sched, toys.make_batches(STEPS), before_step=check)
    assert sched.last_epoch == STEPS


def test_updates_equal_per_group_torch_optimizers(model: toys.RecapToyModel) -> None:
    """The one fused Adam equals TML's per-group Adam (float rounding apart); SGD for dense_ebc."""
    opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    batches = toys.make_batches(30)
    toys.train(model, opt, sched, batches)

    reference = toys.RecapToyModel()
    params = dict(reference.named_parameters())
    configs = toys.dense_group_learning_rates()
    groups = grouping.recap_groups(list(params), toys.recap_config(), toys.emb_config())
    per_group = []
    for g in groups:
        ps = [params[n] for n in g.param_names]
        if g.algorithm == "adam":
            per_group.append(torch.optim.Adam(ps, lr=0.0, betas=(0.9, 0.99), eps=1e-6, foreach=False))
        else:
            per_group.append(torch.optim.SGD(ps, lr=0.0))
    for k, batch in enumerate(batches):
        for o in per_group:
            o.zero_grad()
        toys.loss_fn(reference, batch).backward()
        for o, g in zip(per_group, groups, strict=True):
            o.param_groups[0]["lr"] = compute_lr(configs[g.name], k)
            o.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, params[name], rtol=1e-5, atol=1e-6, msg=name)


def test_keyed_state_dict_uses_parameter_names(model: toys.RecapToyModel) -> None:
    opt, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    toys.train(model, opt, sched, toys.make_batches(2))
    state = opt.state_dict()["state"]
    adam_names = [n for n, _ in model.named_parameters() if "embedding_bags" not in n]
    assert sorted(state) == sorted(adam_names)
    assert all(set(v) == {"step", "exp_avg", "exp_avg_sq"} for v in state.values())


def test_resume_is_bitwise_equal_to_an_uninterrupted_run() -> None:
    batches = toys.make_batches(40)
    straight = toys.RecapToyModel()
    opt, sched = build_recap_optimizer(straight, toys.recap_config(), toys.emb_config())
    toys.train(straight, opt, sched, batches)

    first = toys.RecapToyModel()
    opt, sched = build_recap_optimizer(first, toys.recap_config(), toys.emb_config())
    toys.train(first, opt, sched, batches[:20])
    checkpoint = toys.roundtrip(
        {"model": first.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
    )
    del first, opt, sched

    resumed = toys.RecapToyModel(seed=123)  # different initial weights: all must come from the checkpoint
    resumed.load_state_dict(checkpoint["model"])
    opt, sched = build_recap_optimizer(resumed, toys.recap_config(), toys.emb_config())
    opt.init_state()  # torchrec's keyed optimizers load into initialised state only
    opt.load_state_dict(checkpoint["optimizer"])
    sched.load_state_dict(checkpoint["scheduler"])
    assert sched.last_epoch == 20
    toys.train(resumed, opt, sched, batches[20:])

    straight_state = straight.state_dict()
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, straight_state[name]), name


def test_single_task_config(model: toys.RecapToyModel) -> None:
    cfg = config.RecapOptimizerConfig(adam={}, single_task_learning_rate={"constant": 0.01})
    opt, sched = build_recap_optimizer(model, cfg, toys.emb_config())
    assert [g["name"] for g in opt.param_groups] == ["single_task", "dense_ebc"]
    assert sched.get_last_lr() == [0.01, 0.0]
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["eps"] == 1e-7


def test_dense_model_has_no_embedding_learning_rate_of_its_own(model: toys.RecapToyModel) -> None:
    _, sched = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    assert sched.emb_learning_rate is None
    assert sched.state_dict()["emb_learning_rate"] is None


# --- errors ------------------------------------------------------------------------------------


def test_tower_matching_no_parameter(model: toys.RecapToyModel) -> None:
    cfg = toys.recap_config()
    rates = dict(cfg.multi_task_learning_rates.tower_learning_rates)
    rates["recap.engagement.is_clicked"] = config.LearningRate(constant=0.1)
    cfg = config.RecapOptimizerConfig(
        adam={}, multi_task_learning_rates={"tower_learning_rates": rates, "backbone_learning_rate": {"constant": 1}}
    )
    with pytest.raises(ValueError, match=r"Towers \['recap.engagement.is_clicked'\] match no parameter"):
        build_recap_optimizer(model, cfg, toys.emb_config())


def test_parameter_matching_two_towers() -> None:
    model = torch.nn.Module()
    model.towers = torch.nn.ModuleDict({"a": torch.nn.ModuleDict({"b": torch.nn.Linear(2, 1)})})
    cfg = config.RecapOptimizerConfig(
        adam={},
        multi_task_learning_rates={"tower_learning_rates": {"a": {"constant": 0.1}, "b": {"constant": 0.2}}},
    )
    with pytest.raises(ValueError, match=r"Parameter 'towers.a.b.weight' matched multiple towers: \['a', 'b'\]"):
        build_recap_optimizer(model, cfg)


def test_missing_learning_rates_are_listed(model: toys.RecapToyModel) -> None:
    with pytest.raises(ValueError, match=r"groups with parameters but no learning rate: \['backbone', 'dense_ebc'\]"):
        build_recap_optimizer(model, toys.recap_config(backbone=False))


def test_extra_learning_rates_are_listed() -> None:
    model = torch.nn.Module()
    model.towers = torch.nn.ModuleDict({grouping.sanitize(t): torch.nn.Linear(2, 1) for t in toys.TOWERS})
    with pytest.raises(ValueError, match=r"learning rates for groups with no parameters: \['backbone'\]"):
        build_recap_optimizer(model, toys.recap_config())


def test_recap_shim_count_mismatch_lists_names(model: toys.RecapToyModel) -> None:
    opt, _ = build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
    rates = toys.dense_group_learning_rates()
    del rates["backbone"]
    with pytest.raises(ValueError) as info:
        RecapLRShim(opt, rates)
    message = str(info.value)
    assert "5 dense param groups" in message and "lr_dict has 4 learning rates" in message
    assert "'backbone'" in message and "'dense_ebc'" in message


def test_wrong_config_types(model: toys.RecapToyModel) -> None:
    with pytest.raises(TypeError, match="expected a RecapOptimizerConfig"):
        build_recap_optimizer(model, config.OptimizerConfig(sgd={"lr": 0.1}))
    with pytest.raises(TypeError, match="emb_optimizer_config must be an EmbeddingOptimizerConfig"):
        build_recap_optimizer(model, toys.recap_config(), toys.emb_learning_rate())


def test_in_backward_parameters_without_a_fused_optimizer(model: toys.RecapToyModel) -> None:
    from torchrec.optim import apply_optimizer_in_backward

    apply_optimizer_in_backward(torch.optim.SGD, model.ebc.parameters(), {"lr": 0.1})
    with pytest.raises(ValueError, match=r"in-backward optimizer but the model has no fused_optimizer"):
        build_recap_optimizer(model, toys.recap_config(), toys.emb_config())
