"""FlatAdam and ``build_recap_optimizer(flat=True)``: torch's Adam per group, stepped in one pass over one buffer.

Each step is compared with ``torch.optim.Adam(fused=True)`` with the same
groups, from the same state and gradients: the difference of one step is
measured in units in the last place of the parameter (``ulp``), in float64
and float32, over step 0 onwards, a group at rate 0, both lerp branches of
torch's kernel (beta1 above and below 0.5), weight decay, maximize and a
model with float32 and float64 parameters in one optimizer (one buffer each).
Then the recap build: every step of a run against the per-group build,
checkpoints loading across the two, resume bitwise, skipped gradients,
``zero_grad`` both ways, ``tensor_lr`` under ``torch.compile`` without a
recompilation, the refusals and the paths that step with torch's own Adam.
"""

from __future__ import annotations

import copy
import warnings

import bridge_toys as toys
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from torch_bridge import build_recap_optimizer, flat_kernel
from torch_bridge.flat_adam import FlatAdam
from torch_bridge.workarounds import wrapped_optimizer

ULP_BAR = 4.0  # per step, in units in the last place of the parameter
STEPS = 12


def ulps(a: torch.Tensor, b: torch.Tensor, before: torch.Tensor | None = None) -> float:
    """max |a - b| in units in the last place of b, or of ``before`` (the value the step started from) if larger.

    A step ``p - u`` that cancels leaves a result far smaller than its operands; its
    rounding is a unit of the operands' last place.
    """
    a, b = a.detach(), b.detach()
    size = b.abs() if before is None else torch.maximum(b.abs(), before.detach().abs())
    scale = size.clamp_min(torch.finfo(b.dtype).tiny) * torch.finfo(b.dtype).eps
    return float(((a - b).abs() / scale).max()) if a.numel() else 0.0


def towers(dtypes: tuple[torch.dtype, ...], seed: int = 0) -> list[torch.nn.Module]:
    torch.manual_seed(seed)
    return [
        torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Linear(4, 1)).to(dtypes[i % len(dtypes)]) for i in range(4)
    ]


def groups_of(modules: list[torch.nn.Module]) -> list[dict]:
    return [{"params": list(m.parameters()), "lr": lr} for m, lr in zip(modules, (0.1, 0.0, 1e-3, 0.02), strict=True)]


def set_grads(modules: list[torch.nn.Module], generator: torch.Generator) -> None:
    for m in modules:
        for p in m.parameters():
            p.grad = torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype)


def copy_into(target: list[torch.nn.Module], source: list[torch.nn.Module], t_opt, s_opt) -> None:
    """Makes ``target`` and its optimizer's state equal to ``source``'s, values only."""
    with torch.no_grad():
        for a, b in zip(target, source, strict=True):
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                p.copy_(q)
                for key, value in s_opt.state[q].items():
                    t_opt.state[p][key].copy_(value)


CASES = {
    "float64": ((torch.float64,), {}),
    "float32": ((torch.float32,), {}),
    "mixed dtypes": ((torch.float32, torch.float64), {}),
    "beta1 below 0.5": ((torch.float64,), {"betas": (0.3, 0.9)}),
    "weight decay, maximize": ((torch.float64,), {"weight_decay": 0.01, "maximize": True}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_step_is_torch_adam_per_group_to_a_few_ulp(case: str, record_property) -> None:
    dtypes, options = CASES[case]
    flat_modules, torch_modules = towers(dtypes), towers(dtypes)
    flat = FlatAdam(groups_of(flat_modules), eps=1e-8, **options)
    reference = torch.optim.Adam(groups_of(torch_modules), eps=1e-8, fused=True, **options)
    assert len(flat._buffers) == len(dtypes)
    generator = torch.Generator().manual_seed(3)
    worst = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to torch's Adam would warn
        for _ in range(STEPS):
            set_grads(flat_modules, generator)
            for a, b in zip(torch_modules, flat_modules, strict=True):
                for p, q in zip(a.parameters(), b.parameters(), strict=True):
                    p.grad = q.grad.clone()
            before = {
                id(q): [q.detach().clone()] + [v.clone() for v in reference.state[q].values()]
                for m in torch_modules
                for q in m.parameters()
                if reference.state[q]
            }
            flat.step()
            reference.step()
            for a, b in zip(flat_modules, torch_modules, strict=True):
                for p, q in zip(a.parameters(), b.parameters(), strict=True):
                    start = before.get(id(q))
                    worst = max(worst, ulps(p, q, start[0] if start else None))
                    for i, key in enumerate(("exp_avg", "exp_avg_sq")):
                        old = start[2 + i] if start else None
                        worst = max(worst, ulps(flat.state[p][key], reference.state[q][key], old))
                    assert float(flat.state[p]["step"]) == float(reference.state[q]["step"])
            copy_into(flat_modules, torch_modules, flat, reference)  # the next step starts from the same state
    record_property("worst_ulps_per_step", worst)
    print(f"{case}: worst difference of one step {worst:.2f} ulp")
    assert worst <= ULP_BAR
    # The rate-0 group never moved.
    assert all(
        torch.equal(p, q) for p, q in zip(flat_modules[1].parameters(), towers(dtypes)[1].parameters(), strict=True)
    )


def test_parameters_gradients_and_state_are_views_of_one_buffer_per_dtype() -> None:
    modules = towers((torch.float32, torch.float64))
    before = [p.detach().clone() for m in modules for p in m.parameters()]
    flat = FlatAdam(groups_of(modules))
    params = [p for m in modules for p in m.parameters()]
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    for buffer in flat._buffers:
        storage = buffer.param.untyped_storage().data_ptr()
        assert all(p.untyped_storage().data_ptr() == storage for p in buffer.params)
        assert buffer.exp_avg.numel() == sum(p.numel() for p in buffer.params)
        for p in buffer.params:
            assert flat.state[p]["exp_avg"].untyped_storage().data_ptr() == buffer.exp_avg.untyped_storage().data_ptr()
    sum(m(torch.ones(2, 5, dtype=m[0].weight.dtype)).sum() for m in modules).backward()
    flat.step()  # autograd's fresh gradients, copied into the buffer
    flat.zero_grad(set_to_none=False)  # now views of it, zeroed
    for buffer in flat._buffers:
        grad = buffer.grad.untyped_storage().data_ptr()
        assert all(p.grad.untyped_storage().data_ptr() == grad for p in buffer.params)
        assert not buffer.grad.any()
    # Gradients accumulate into the views in place from now on.
    sum(m(torch.ones(2, 5, dtype=m[0].weight.dtype)).sum() for m in modules).backward()
    for buffer in flat._buffers:
        assert buffer.grad.any()
        assert all(
            p.grad.untyped_storage().data_ptr() == buffer.grad.untyped_storage().data_ptr() for p in buffer.params
        )


def test_a_parameter_without_gradient_is_skipped_as_torch_skips_it() -> None:
    flat_modules, torch_modules = towers((torch.float64,)), towers((torch.float64,))
    flat = FlatAdam(groups_of(flat_modules))
    reference = torch.optim.Adam(groups_of(torch_modules), fused=True)
    generator = torch.Generator().manual_seed(4)
    for k in range(6):
        set_grads(flat_modules, generator)
        if k % 2:
            flat_modules[2][0].weight.grad = None
        for a, b in zip(torch_modules, flat_modules, strict=True):
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                p.grad = None if q.grad is None else q.grad.clone()
        flat.step()
        reference.step()
    for a, b in zip(flat_modules, torch_modules, strict=True):
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            assert ulps(p, q) <= 6 * ULP_BAR
            assert float(flat.state[p]["step"]) == float(reference.state[q]["step"])
    assert float(flat.state[flat_modules[2][0].weight]["step"]) == 3.0


def test_zero_grad_both_ways() -> None:
    modules = towers((torch.float32,))
    flat = FlatAdam(groups_of(modules))
    set_grads(modules, torch.Generator().manual_seed(0))
    flat.step()
    flat.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for m in modules for p in m.parameters())
    assert not flat._buffers[0].grad.any()
    flat.zero_grad()
    assert all(p.grad is None for m in modules for p in m.parameters())


def recap_pair(**options) -> tuple[toys.RecapToyModel, object, object]:
    model = toys.RecapToyModel()
    optimizer, scheduler = build_recap_optimizer(model, toys.recap_config(), toys.emb_config(), **options)
    return model, optimizer, scheduler


def test_recap_flat_run_follows_the_per_group_run(record_property) -> None:
    batches = toys.make_batches(20)
    flat_model, flat_opt, flat_sched = recap_pair(flat=True)
    model, opt, sched = recap_pair()
    adam = wrapped_optimizer(flat_opt._optims[0][1])
    assert isinstance(adam, FlatAdam)
    assert [g["name"] for g in flat_opt.param_groups] == [g["name"] for g in opt.param_groups]
    worst = 0.0
    for k, batch in enumerate(batches):
        for m, o, s in ((flat_model, flat_opt, flat_sched), (model, opt, sched)):
            o.zero_grad()
            toys.loss_fn(m, batch).backward()
            o.step()
            s.step()
        for p, q in zip(flat_model.parameters(), model.parameters(), strict=True):
            worst = max(worst, float((p - q).abs().max()))
        assert [g["lr"] for g in flat_opt.param_groups] == [g["lr"] for g in opt.param_groups], k
    record_property("worst_abs_difference_after_20_steps", worst)
    print(f"flat vs per-group recap run, 20 float32 steps: max |dparam| {worst:.3g}")
    assert worst <= 1e-6


def test_checkpoints_load_across_the_flat_and_per_group_builds() -> None:
    batches = toys.make_batches(8)
    for source_flat in (True, False):
        model, opt, sched = recap_pair(flat=source_flat)
        toys.train(model, opt, sched, batches[:4])
        saved = toys.roundtrip({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
        other_model, other_opt, other_sched = recap_pair(flat=not source_flat)
        other_model.load_state_dict(saved["model"])
        other_opt.load_state_dict(saved["opt"])
        other_sched.load_state_dict(saved["sched"])
        mine, theirs = opt.state_dict()["state"], other_opt.state_dict()["state"]
        assert sorted(mine) == sorted(theirs)
        for key, entry in mine.items():
            for name, value in entry.items():
                assert torch.equal(value, theirs[key][name]), (key, name)
        toys.train(model, opt, sched, batches[4:])
        toys.train(other_model, other_opt, other_sched, batches[4:])
        for (name, p), (_, q) in zip(model.named_parameters(), other_model.named_parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_resume_is_bitwise() -> None:
    batches = toys.make_batches(10)
    model, opt, sched = recap_pair(flat=True)
    toys.train(model, opt, sched, batches[:5])
    saved = toys.roundtrip({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    toys.train(model, opt, sched, batches[5:])
    resumed, resumed_opt, resumed_sched = recap_pair(flat=True)
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["opt"])
    resumed_sched.load_state_dict(saved["sched"])
    toys.train(resumed, resumed_opt, resumed_sched, batches[5:])
    for (name, p), (_, q) in zip(model.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_torch_format_state_dict_loads_into_the_buffers() -> None:
    modules = towers((torch.float64,))
    flat = FlatAdam(groups_of(modules))
    set_grads(modules, torch.Generator().manual_seed(1))
    flat.step()
    saved = toys.roundtrip(flat.state_dict())
    other_modules = towers((torch.float64,))
    other = FlatAdam(groups_of(other_modules))
    other.load_state_dict(saved)
    for p in (p for m in other_modules for p in m.parameters()):
        buffer = other._buffers[0]
        assert other.state[p]["exp_avg"].untyped_storage().data_ptr() == buffer.exp_avg.untyped_storage().data_ptr()
    assert torch.equal(other._buffers[0].exp_avg, flat._buffers[0].exp_avg)
    assert torch.equal(other._buffers[0].steps, flat._buffers[0].steps)


@pytest.mark.slow
def test_compiled_flat_step_with_tensor_lr_does_not_recompile() -> None:
    torch._dynamo.reset()
    counters.clear()
    try:
        _compiled_flat_run()
    finally:
        torch._dynamo.reset()


def _compiled_flat_run() -> None:
    batches = toys.make_batches(30)
    model, opt, sched = recap_pair(flat=True, tensor_lr=True)
    eager, eager_opt, eager_sched = recap_pair(flat=True, tensor_lr=True)
    step = torch.compile(opt.step, backend="eager", fullgraph=False)
    for k, batch in enumerate(batches):
        for m, o, s, do in ((model, opt, sched, step), (eager, eager_opt, eager_sched, eager_opt.step)):
            o.zero_grad()
            toys.loss_fn(m, batch).backward()
            if k == 1:
                frames = counters["frames"]["total"]
            with torch._dynamo.config.patch(error_on_recompile=k > 0):
                do()
            s.step()
    assert counters["frames"]["total"] == frames
    adam = {id(p) for p in wrapped_optimizer(opt._optims[0][1]).state}
    for (name, p), (_, q) in zip(model.named_parameters(), eager.named_parameters(), strict=True):
        if id(p) in adam:  # the flat step runs eagerly inside the compiled one: bit for bit
            assert torch.equal(p, q), name
        else:  # dense_ebc's SGD, traced by dynamo
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_parameters_that_cannot_be_views_are_refused_by_name() -> None:
    model = toys.RecapToyModel()
    tied = torch.nn.Parameter(model.towers[next(iter(model.towers))].layers[0].weight.data[:4])
    model.towers[next(iter(model.towers))].layers[2].weight = torch.nn.Parameter(tied.data[:1, :8].clone().t().t())
    model.backbone[0].bias = torch.nn.Parameter(model.backbone[0].weight.data[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match=r"backbone\.0\.bias: shares its storage"):
        build_recap_optimizer(model, toys.recap_config(), toys.emb_config(), flat=True)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    half = toys.RecapToyModel()
    half.backbone.half()
    with pytest.raises(ValueError, match=r"backbone\.0\.weight: dtype torch\.float16"):
        build_recap_optimizer(half, toys.recap_config(), toys.emb_config(), flat=True)


def test_add_param_group_and_a_misshapen_state_are_refused_and_change_nothing() -> None:
    modules = towers((torch.float64,))
    flat = FlatAdam(groups_of(modules))
    with pytest.raises(ValueError, match="fixed"):
        flat.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))]})
    set_grads(modules, torch.Generator().manual_seed(2))
    flat.step()
    saved = copy.deepcopy(flat.state_dict())
    saved["state"][0]["exp_avg"] = torch.zeros(3)
    before = flat._buffers[0].exp_avg.clone()
    with pytest.raises(ValueError, match=r"state\[0\]\['exp_avg'\] has shape \(3,\)"):
        flat.load_state_dict(saved)
    assert torch.equal(flat._buffers[0].exp_avg, before)


def reference_after(modules: list[torch.nn.Module], steps: int, **options) -> list[torch.Tensor]:
    reference = torch.optim.Adam(groups_of(modules), fused=True, **options)
    generator = torch.Generator().manual_seed(6)
    for _ in range(steps):
        set_grads(modules, generator)
        reference.step()
    return [p.detach().clone() for m in modules for p in m.parameters()]


def flat_after(modules: list[torch.nn.Module], steps: int, before_step=None, **options) -> list[torch.Tensor]:
    flat = FlatAdam(groups_of(modules), **options)
    generator = torch.Generator().manual_seed(6)
    for k in range(steps):
        set_grads(modules, generator)
        if before_step is not None:
            before_step(k, modules)
        flat.step()
    return [p.detach().clone() for m in modules for p in m.parameters()]


def test_amsgrad_steps_with_torch_adam_and_says_so() -> None:
    expected = reference_after(towers((torch.float64,)), 4, amsgrad=True)
    with pytest.warns(UserWarning, match="amsgrad"):
        got = flat_after(towers((torch.float64,)), 4, amsgrad=True)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_a_replaced_parameter_steps_with_torch_adam_and_says_so() -> None:
    def replace(k: int, modules: list[torch.nn.Module]) -> None:
        if k == 2:
            weight = modules[0][0].weight
            weight.data = weight.data.clone()

    expected = reference_after(towers((torch.float64,)), 4)
    with pytest.warns(UserWarning, match=r"\.data was replaced"):
        got = flat_after(towers((torch.float64,)), 4, before_step=replace)
    for a, b in zip(got, expected, strict=True):
        assert ulps(a, b) <= 8 * ULP_BAR


def test_without_a_compiler_it_steps_with_torch_adam_and_says_why(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("FUNCTIONAL_OPT_CACHE", str(tmp_path / "cache"))
    flat_kernel._library.cache_clear()
    try:
        assert flat_kernel.adam_kernel(torch.float32) is None
        assert "no-such-compiler" in flat_kernel.kernel_problem()
        expected = reference_after(towers((torch.float64,)), 3)
        with pytest.warns(UserWarning, match="compiled loop is not available.*no-such-compiler"):
            got = flat_after(towers((torch.float64,)), 3)
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    finally:
        flat_kernel._library.cache_clear()


def test_the_recap_optimizer_passes_set_to_none_on() -> None:
    """torchrec's wrapper drops ``set_to_none``; the recap optimizer hands it to FlatAdam and torch's Adam."""
    for flat in (True, False):
        model, optimizer, _ = recap_pair(flat=flat)
        batch = toys.make_batches(1)[0]
        toys.loss_fn(model, batch).backward()
        optimizer.step()
        dense = [p for n, p in model.named_parameters() if not n.startswith(("ebc.", "side."))]
        optimizer.zero_grad(set_to_none=False)
        assert all(p.grad is not None and not p.grad.any() for p in dense)
        if flat:
            adam = wrapped_optimizer(optimizer._optims[0][1])
            assert all(p.grad.untyped_storage().data_ptr() == adam._buffers[0].grad.data_ptr() for p in dense)
        optimizer.zero_grad()
        assert all(p.grad is None for p in dense)


def test_betas_changed_for_every_group_keep_the_loop_and_differing_ones_fall_back() -> None:
    """A scheduler may move beta1 (OneCycleLR does): the loop takes the current values; torch takes them per group."""

    def cycle(k: int, modules: list[torch.nn.Module], optimizer: torch.optim.Adam, per_group: bool) -> None:
        for i, group in enumerate(optimizer.param_groups):
            group["betas"] = (0.9 - 0.1 * k * (i if per_group else 1) / 10, 0.999)

    for per_group in (False, True):
        flat_modules, torch_modules = towers((torch.float64,)), towers((torch.float64,))
        flat = FlatAdam(groups_of(flat_modules))
        reference = torch.optim.Adam(groups_of(torch_modules), fused=True)
        generator = torch.Generator().manual_seed(7)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for k in range(4):
                set_grads(flat_modules, generator)
                for a, b in zip(torch_modules, flat_modules, strict=True):
                    for p, q in zip(a.parameters(), b.parameters(), strict=True):
                        p.grad = q.grad.clone()
                cycle(k, flat_modules, flat, per_group)
                cycle(k, torch_modules, reference, per_group)
                flat.step()
                reference.step()
        assert any("differ" in str(w.message) for w in caught) is per_group
        for a, b in zip(flat_modules, torch_modules, strict=True):
            for p, q in zip(a.parameters(), b.parameters(), strict=True):
                assert ulps(p, q) <= 4 * ULP_BAR
