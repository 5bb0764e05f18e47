"""The JAX benchmark, the learning-rate figure and ``run_all`` run (smoke tests: nothing here is timed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_optax_equivalents_have_our_values() -> None:
    """Each optax built-in the JAX benchmark compares with computes the same schedule as our config."""
    import jax

    from functional_opt import schedules

    bench = load("bench_jax")
    steps = np.unique(np.concatenate([np.arange(0, 120_000, 97), [999, 1000, 1001, 4999, 5000, 20_000, 100_000]]))
    with jax.enable_x64(True):
        for kind in bench.SCHEDULES:
            ours = np.asarray(jax.vmap(schedules.schedule_from_config(bench.lr_config(kind)))(steps))
            theirs = np.asarray(jax.vmap(bench.optax_equivalent(kind))(steps))
            np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-15, err_msg=kind)


def test_bench_jax_returns_its_tables() -> None:
    bench = load("bench_jax")
    results = bench.run(repeats=2, steps_per_repeat=2, eval_steps=5000, eval_repeats=2)  # also checks numpy == JAX
    assert set(bench.passes(results)) == set(bench.SCHEDULES)
    assert len(results["train_step"]["us_per_step"]) == 2 * len(bench.SCHEDULES) + 1
    assert len(results["schedule_eval"]["jax_over_numpy"]) == 2 * len(bench.SCHEDULES)
    assert "ours / optax" in bench.format_results(results)


def test_lr_curves_of_the_examples(tmp_path: Path) -> None:
    plot = load("plot_lr_curves")
    out, files = plot.plot(tmp_path / "curves.png")
    assert out.stat().st_size > 0
    assert {f.name for f in files} == {f.name for f in (ROOT / "examples").glob("*.yaml")}
    recap = plot.learning_rates(ROOT / "examples" / "tml_recap_optimizer.yaml")
    assert "backbone" in recap and len(recap) > 2


def test_bench_flat_returns_its_tables() -> None:
    """A smoke run of the flat recap step at two sizes: the structure of the results, not the timings."""
    bench = load("bench_flat")
    sizes = ("12 towers", "100 towers")
    results = bench.run(sizes=sizes, quick=True)
    assert results["threads"] == 1
    assert list(results["sizes"]) == list(sizes)
    contenders = {"bridge flat", "bridge per group", "flat fused Adam", "memory floor"}
    ratios = {"bridge flat / flat fused Adam", "bridge flat / floor", "bridge per group / bridge flat"}
    for name, entry in results["sizes"].items():
        assert entry["towers"] == bench.SIZES[name][0]
        assert entry["adam_elements"] > 0
        assert set(entry["us_per_step"]) == contenders
        assert ratios <= set(entry["ratios"])
        for record in (*entry["us_per_step"].values(), *entry["ratios"].values()):
            assert set(record) == {"median", "min", "max"}
            assert 0 < record["min"] <= record["median"] <= record["max"]
    ok = bench.passes(results)
    assert set(ok) == {f"{name}: bridge flat / flat fused Adam" for name in sizes}
    assert all(isinstance(v, bool) for v in ok.values())
    assert "bridge flat / flat fused Adam" in bench.format_results(results)
    text, summary = load("flat_sections").flat_section(results)
    assert text.startswith("## Flat recap step") and "### GPU" in text and "Not measured" in text
    assert [row[0] for row in summary] == [f"flat recap step: bridge flat / flat fused Adam ({name})" for name in sizes]


@pytest.mark.slow
def test_run_all_quick_writes_the_report_and_figures(tmp_path: Path) -> None:
    run_all = load("run_all")
    output = tmp_path / "BENCHMARKS.md"
    run_all.run(output, tmp_path / "docs", quick=True)
    text = output.read_text()
    for heading in ("## Bars", "## Scheduler step", "## Optimizer step", "## torch.compile", "## JAX side"):
        assert heading in text
    for heading in ("## Flat recap step", "## Scale", "## GPU", "## Learning-rate curves"):
        assert heading in text
    assert "Smoke run" in text and ("PASS" in text or "FAIL" in text)
    assert (tmp_path / "docs" / run_all.SCALE_PNG).stat().st_size > 0
    assert (tmp_path / "docs" / run_all.LR_CURVES_PNG).stat().st_size > 0
    assert f"docs/{run_all.SCALE_PNG}" in text
