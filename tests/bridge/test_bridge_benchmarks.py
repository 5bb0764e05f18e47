"""The torch benchmark scripts run and return their tables (smoke tests: nothing here is timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bridge_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_bench_scheduler_returns_its_table(tensor_lr: bool) -> None:
    bench = load("bench_scheduler")
    results = bench.run(repeats=2, steps_per_repeat=3, num_groups=4, tensor_lr=tensor_lr)
    assert set(results["us_per_step"]) == {"bare loop", "bare loop (combined)", "LRShim", "RecapLRShim", "LambdaLR"}
    assert results["ratio_to_lambdalr"]["LambdaLR"]["median"] == 1.0
    assert set(bench.passes(results)) == {"LRShim", "RecapLRShim"}
    assert "LRShim" in bench.format_results(results)


def test_bench_scheduler_tensor_lr_contenders_write_in_place() -> None:
    bench = load("bench_scheduler")
    steppers = bench.make_steppers(num_groups=3, tensor_lr=True)
    for step in steppers.values():
        step()  # each contender fills its tensors; a replaced float would make the next fill_ fail
        step()


def test_bench_scheduler_cosine_is_the_config_schedule() -> None:
    from functional_opt.schedules import compute_lr

    bench = load("bench_scheduler")
    cfg = bench.lr_config()
    for step in (0, 1, 999, 1000, 1001, 50_000, 100_000, 100_001):
        assert abs(bench.cosine_lr(step) - compute_lr(cfg, step)) <= 1e-15


def test_bench_optimizer_returns_its_table() -> None:
    bench = load("bench_optimizer")
    results = bench.run(repeats=1, steps_per_repeat=2, num_towers=3)
    assert set(results["us_per_step"]) == {"bridge", "torch fused", "TML", "bridge (tensor lr)"}
    assert set(results["ratios"]) == {"bridge / torch fused", "TML / bridge", "bridge (tensor lr) / bridge"}
    assert set(bench.passes(results)) == {"bridge / torch fused", "TML / bridge"}
    assert "TML / bridge" in bench.format_results(results)


def test_bench_optimizer_baselines_do_the_same_update() -> None:
    """From the same start, hand-written torch and TML's structure move the parameters alike."""
    import torch

    bench = load("bench_optimizer")
    moved = []
    for name in ("torch fused", "TML"):
        model = bench.RecapShapedModel(3)
        start = [p.detach().clone() for p in model.parameters()]
        bench.make_steppers(3, model=model)[name]()
        moved.append([p.detach() - s for p, s in zip(model.parameters(), start, strict=True)])
    for other in moved[1:]:
        for a, b in zip(moved[0], other, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


def test_bench_scale_returns_its_tables(tmp_path: Path) -> None:
    bench = load("bench_scale")
    results = bench.run(towers=(1, 2), quick=True)
    for part in ("scheduler", "optimizer"):
        assert set(results[part]) == {1, 2}
        assert set(results[part][2]["us_per_step"]) == set(bench.CONTENDERS)
        assert results[part][2]["groups"] == 4
    assert "towers" in bench.format_results(results)
    assert bench.plot(results, tmp_path / "scale.png").stat().st_size > 0


def test_bench_scale_tml_shim_is_the_config_schedule() -> None:
    from functional_opt import config
    from functional_opt.schedules import compute_lr

    bench = load("bench_scale")
    rates = [
        config.LearningRate(constant=0.3),
        config.LearningRate(piecewise_constant={"learning_rate_boundaries": [5, 9], "learning_rate_values": [1, 2, 3]}),
        config.LearningRate(linear_ramp_to_constant={"learning_rate": 0.5, "num_ramp_steps": 7}),
        config.LearningRate(
            linear_ramp_to_cosine={
                "learning_rate": 0.5,
                "final_learning_rate": 0.1,
                "num_ramp_steps": 4,
                "final_num_steps": 20,
            }
        ),
    ]
    for lr in rates:
        for step in (0, 3, 4, 5, 7, 8, 9, 10, 19, 20, 21, 1000):
            assert bench.python_lr(lr, step) == pytest.approx(compute_lr(lr, step), rel=1e-12, abs=1e-15)


def test_bench_compile_counts_no_recompile_with_tensor_lr() -> None:
    bench = load("bench_compile")
    counts = bench.count_recompiles(bench.RECAP, tensor_lr=True, steps=3)
    assert counts["frames_after"] == 0 and counts["graphs_after"] == 0
    assert counts["finite"] and counts["lr_followed"]
