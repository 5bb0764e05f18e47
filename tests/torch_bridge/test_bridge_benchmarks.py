"""The benchmark scripts run and return their tables (a smoke test: nothing here is timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bridge_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_scheduler_returns_its_table() -> None:
    bench = load("bench_scheduler")
    results = bench.run(repeats=2, steps_per_repeat=3, num_groups=4)
    assert set(results["us_per_step"]) == {"bare loop", "bare loop (combined)", "LRShim", "RecapLRShim", "LambdaLR"}
    assert results["ratio_to_lambdalr"]["LambdaLR"] == 1.0
    assert "LRShim" in bench.format_results(results)


def test_bench_scheduler_cosine_is_the_config_schedule() -> None:
    from functional_opt.schedules import compute_lr

    bench = load("bench_scheduler")
    cfg = bench.lr_config()
    for step in (0, 1, 999, 1000, 1001, 50_000, 100_000, 100_001):
        assert abs(bench.cosine_lr(step) - compute_lr(cfg, step)) <= 1e-15


def test_bench_optimizer_returns_its_table() -> None:
    bench = load("bench_optimizer")
    results = bench.run(repeats=1, steps_per_repeat=2, num_towers=3)
    assert set(results["us_per_step"]) == {"bridge", "torch fused", "TML"}
    assert set(results["ratios"]) == {"bridge / torch fused", "TML / bridge"}
    assert "TML / bridge" in bench.format_results(results)
