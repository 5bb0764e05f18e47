"""Runs every benchmark and rewrites BENCHMARKS.md and the figures in docs/ from scratch.

This is what ``make bench`` runs (``python benchmarks/run_all.py``). It writes:

* ``BENCHMARKS.md``: the machine, the versions, the command, and for each
  benchmark a table of medians with min/max over repeats, the ratios against
  their bars and a PASS/FAIL column per bar;
* ``docs/benchmarks_lr_curves.png``: the learning-rate curves of ``examples/*.yaml``;
* ``docs/benchmarks_scale.png``: step cost against the number of towers;
* ``docs/benchmarks_scale_ratios.png``: the build and JAX recap ratios against the number of towers.

Every figure is a ratio of contenders timed side by side in one process
(interleaved, repeated, median of the per-repeat ratios), so it means the
same on a loaded machine; the absolute microseconds do not.

``--quick`` runs every benchmark with a handful of steps (a smoke run whose
numbers mean nothing) and says so at the top of the file.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import bench_build_scale
import bench_common
import bench_compile
import bench_flat
import bench_jax
import bench_jax_scale
import bench_optimizer
import bench_scale
import bench_scheduler
import bench_yaml
import flat_sections
import plot_lr_curves
import scale_sections
from bench_markdown import ratio_cells as _ratio
from bench_markdown import table as _table
from bench_markdown import us_cells as _us
from bench_markdown import verdict as _verdict

ROOT = Path(__file__).resolve().parent.parent
LR_CURVES_PNG = "benchmarks_lr_curves.png"
SCALE_PNG = "benchmarks_scale.png"
SCALE_RATIOS_PNG = "benchmarks_scale_ratios.png"


# --- sections ---------------------------------------------------------------------------------------


def scheduler_section(float_lr: dict[str, Any], tensor_lr: dict[str, Any]) -> tuple[str, list[list[str]]]:
    ok = bench_scheduler.passes(float_lr)
    summary = []
    rows = []
    for name, s in float_lr["us_per_step"].items():
        ratio = float_lr["ratio_to_lambdalr"][name]
        verdict = _verdict(ok[name]) if name in ok else ""
        bar = f"<= {float_lr['bar']}" if name in ok else ""
        rows.append([name, *_us(s, 2), *_ratio(ratio), bar, verdict])
        if name in ok:
            summary.append(
                [f"scheduler step: {name} / LambdaLR (12 groups)", f"{ratio['median']:.3f}", bar, _verdict(ok[name])]
            )
    tensor_rows = [
        [name, *_us(s, 2), *_ratio(tensor_lr["ratio_to_lambdalr"][name])]
        for name, s in tensor_lr["us_per_step"].items()
    ]
    text = f"""## Scheduler step

`scheduler.step()` on an optimizer with {float_lr["num_groups"]} param groups, all following the same
linear-ramp-to-cosine schedule. `LambdaLR` runs the schedule written as a plain Python function (what a torch
user writes today); the shims take every value from float64 tables of the schedules' formulas, evaluated as
data one block of steps at a time (up to 2048 steps; the refills included at their real rate). The bare loops
assign precomputed values (the floor), on a plain `Adam` and on a torchrec `CombinedOptimizer`.
{float_lr["repeats"]} repeats x {float_lr["steps_per_repeat"]} steps; microseconds per step.

{_table(["contender", "median us", "min – max us", "/ LambdaLR", "ratio min – max", "bar", "result"], rows)}

With learning rates held in 0-dim tensors (`tensor_lr=True`), every contender writes them in place with
`fill_`, as torch's own schedulers do (no bar; about 1 us per group is the cost of `fill_` itself):

{_table(["contender", "median us", "min – max us", "/ LambdaLR", "ratio min – max"], tensor_rows)}
"""
    return text, summary


def optimizer_section(results: dict[str, Any]) -> tuple[str, list[list[str]]]:
    ok = bench_optimizer.passes(results)
    rows = [[name, *_us(s)] for name, s in results["us_per_step"].items()]
    ratio_rows = []
    summary = []
    for name, r in results["ratios"].items():
        if name in results["bars"]:
            op, bar = results["bars"][name]
            bar_text = f"{op} {bar}"
            verdict = _verdict(ok[name])
            summary.append(
                [f"optimizer step: {name} ({results['num_towers']} towers)", f"{r['median']:.3f}", bar_text, verdict]
            )
        else:
            bar_text, verdict = "", ""
        ratio_rows.append([name, *_ratio(r), bar_text, verdict])
    text = f"""## Optimizer step

`optimizer.step()` on a recap-shaped model: {results["num_towers"]} towers of 2-3 Linear layers, a backbone, a dense
torchrec `EmbeddingBagCollection` (plain SGD), fixed gradients, {results["threads"]} torch thread(s),
{results["device"]}. `bridge` is `torch_bridge.build_recap_optimizer` (a torchrec `CombinedOptimizer` holding one keyed
`Adam(fused=True)` with a group per tower, and a keyed SGD); `torch fused` is (a) one `torch.optim.Adam(fused=True)`
with a group per tower plus an SGD, written by hand; `TML` is (b) TML's structure, one
`KeyedOptimizerWrapper(Adam)` per tower in a `CombinedOptimizer`; `bridge (tensor lr)` is the bridge built with
`tensor_lr=True`. All step the same parameters (each with its own state), so none gains from where its parameters
lie in memory. {results["repeats"]} repeats x {results["steps_per_repeat"]} steps; microseconds per step.

{_table(["contender", "median us", "min – max us"], rows)}

{_table(["ratio", "median", "min – max", "bar", "result"], ratio_rows)}

The bridge keeps torchrec's `CombinedOptimizer` / `KeyedOptimizer` interface and its keyed `state_dict`;
its remaining cost over hand-written torch is the Python of those wrapper layers (one `step()` per layer).
"""
    return text, summary


def compile_section(results: dict[str, Any]) -> tuple[str, list[list[str]]]:
    ok = bench_compile.passes(results)
    rows = []
    summary = []
    for case, by_kind in results["cases"].items():
        for kind, c in by_kind.items():
            verdict = _verdict(ok[case]) if kind == "tensor" else ""
            rows.append(
                [
                    case,
                    kind,
                    str(c["warmup_steps"]),
                    f"{c['warmup_frames']} ({c['warmup_graphs']})",
                    f"{c['frames_after']} ({c['graphs_after']})",
                    "yes" if c["finite"] else "**no**",
                    "yes" if c["lr_followed"] else "**no**",
                    "0" if kind == "tensor" else "",
                    verdict,
                ]
            )
        tensor = by_kind["tensor"]
        summary.append(
            [
                f"torch.compile: {case}, tensor lr, recompiles over {results['steps']} steps",
                str(tensor["frames_after"]),
                "0",
                _verdict(ok[case]),
            ]
        )
    nan_rows = [[name, "yes" if nan else "no"] for name, nan in results["nan_at_zero_lr"].items()]
    header = ["optimizer", "lr", "warm-up steps", "warm-up frames (graphs)", "after: frames (graphs)"]
    header += ["finite", "lr = schedule", "bar", "result"]
    text = f"""## torch.compile

`torch.compile(optimizer.step, backend={results["backend"]!r}, fullgraph=False)`, then `scheduler.step()` after each
step, for a warm-up and {results["steps"]} more steps under a schedule that changes every step (torch
{results["torch"]}). Counted with torch's own counters: `torch._dynamo.utils.counters["frames"]["total"]` (frames
dynamo compiled, recompilations included) and `counters["stats"]["unique_graphs"]`. The test
`tests/bridge/test_bridge_compile.py` checks the same with `torch._dynamo.config.error_on_recompile` and
compares the parameters with the float path's. Recompilation is decided by dynamo's guards, whatever backend
compiles the graphs; the `eager` backend keeps this short.

{_table(header, rows, "llrrrllrl")}

With float learning rates dynamo specialises on each value and recompiles until it marks the value dynamic, in
every frame that reads one. With `tensor_lr=True` the builders put every dense group's rate in a 0-dim float64
tensor that the shim updates in place (`fill_`): nothing is recompiled. The warm-up of SGD with momentum is two
steps because torch's SGD creates its momentum buffer inside its first step, so that step is compiled once
without the buffer and once with it, whatever the learning rate.

Adam stays fused (`Adam(fused=True)`) under `tensor_lr`: torch.compile runs the fused kernel as it is (no graph
for it, hence `0` graphs for Adam), whereas the single-tensor Adam it traces folds the step size into the
denominator and, at a learning rate of exactly 0 (where every linear ramp starts), writes NaN into every element
whose gradient is zero (pytorch/pytorch#126514):

{_table(["compiled Adam, lr = 0, one zero gradient", "writes NaN"], nan_rows)}
"""
    return text, summary


def jax_section(results: dict[str, Any]) -> tuple[str, list[list[str]]]:
    train = results["train_step"]
    ok = bench_jax.passes(results)
    rows = []
    for name, s in train["us_per_step"].items():
        rows.append([name, *_us(s), *_ratio(train["over_constant"][name])])
    ratio_rows = []
    summary = []
    for kind, r in train["ours_over_optax"].items():
        bar = f"<= {train['bar']}"
        ratio_rows.append([kind, f"optax.{bench_jax.OPTAX_NAMES[kind]}", *_ratio(r), bar, _verdict(ok[kind])])
        summary.append([f"JAX train step: {kind} / optax built-in", f"{r['median']:.3f}", bar, _verdict(ok[kind])])
    calls = results["schedule_call"]
    call_rows = []
    for kind in bench_jax.SCHEDULES:
        ours = calls["ns_per_call"][f"ours: {kind}"]
        theirs = calls["ns_per_call"][f"optax: {bench_jax.OPTAX_NAMES[kind]}"]
        call_rows.append([kind, *_us(ours), *_us(theirs), *_ratio(calls["ours_over_optax"][kind])])
    evals = results["schedule_eval"]
    eval_rows = []
    for key, ms in evals["ms_per_eval"].items():
        eval_rows.append([key, *_us(ms["jax"], 2), *_us(ms["numpy"], 2), *_ratio(evals["jax_over_numpy"][key])])
    text = f"""## JAX side

### Train step

One `jax.jit`-ed step of a small MLP {list(train["layers"])} (batch {train["batch"]}): `jax.grad` of an MSE loss and
the update of `functional_opt.optimizers.build_optimizer` (torch's Adam rule), called from Python as a training loop
does. `ours` is `build_optimizer` of the config; `optax` is the same transformation
(`functional_opt.optimizers.torch_adam`) fed optax's built-in schedule with the same values; `constant float lr`
has no schedule at all. Devices: {", ".join(results["devices"])}. {train["repeats"]} repeats x
{train["steps_per_repeat"]} steps; microseconds per step.

{_table(["transformation", "median us", "min – max us", "/ constant float lr", "ratio min – max"], rows)}

{_table(["schedule (ours)", "optax built-in", "ours / optax", "ratio min – max", "bar", "result"], ratio_rows)}

The schedule is a few scalar operations in a step of a few hundred microseconds, so the step's ratio is 1 up to the
machine's noise. The schedule alone, called {calls["calls"]} times in one jitted `fori_loop` (loop overhead included),
{calls["repeats"]} repeats, nanoseconds per call (our piecewise schedule finds its interval with `jnp.searchsorted`,
a small loop in XLA, where optax's chains one `jnp.where` per boundary):

{_table(["schedule", "ours ns", "min – max", "optax ns", "min – max", "ours / optax", "ratio min – max"], call_rows)}

### Schedule evaluation

`jax.jit(jax.vmap(schedule))` over {evals["num_steps"]:,} consecutive steps against a numpy implementation of the same
formula over the same steps (checked equal first), in float32 and in float64 (`jax.enable_x64`);
{evals["repeats"]} repeats, milliseconds per evaluation. No bar.

{_table(["schedule", "jax ms", "min – max", "numpy ms", "min – max", "jax / numpy", "ratio min – max"], eval_rows)}

The ramps and the cosine are a few fused element-wise operations in XLA, faster than numpy's temporaries; the
piecewise schedule goes through `jnp.searchsorted`, slower than numpy's, and the constant one is dominated by
writing the output.
"""
    return text, summary


def scale_section(results: dict[str, Any], png: str) -> str:
    parts = []
    for part in ("scheduler", "optimizer"):
        rows = []
        for n, entry in results[part].items():
            row = [str(n), str(entry["groups"]), f"{entry['repeats']} x {entry['steps_per_repeat']}"]
            for name in bench_scale.CONTENDERS:
                s = entry["us_per_step"][name]
                row.append(f"{s['median']:.1f} ({s['min']:.1f} – {s['max']:.1f})")
            for name in bench_scale.CONTENDERS[1:]:
                row.append(f"{entry['ratio_to_bridge'][name]['median']:.2f}")
            rows.append(row)
        header = ["towers", "groups", "repeats x steps", "bridge us", "torch us", "TML us", "torch / bridge"]
        header.append("TML / bridge")
        parts.append(f"### {part.capitalize()} step\n\n{_table(header, rows)}\n")
    tables = "\n".join(parts)
    return f"""## Scale

Step cost against the number of towers, on a recap-shaped model with small layers (towers of 16 or 16-8 hidden
units, a 64-unit backbone, two 2000-row embedding tables), {results["threads"]} torch thread(s). Scheduler step:
`bridge` is `RecapLRShim` on the bridge's optimizer; `torch` is one `LambdaLR` on the fused Adam plus one on the
SGD, each running the schedule written in Python; `TML` is TML's `LRShim`, which recomputes every group's rate in
Python through torch's `LRScheduler.step`, on TML's one-Adam-per-tower `CombinedOptimizer`. Optimizer step: as in
the optimizer-step section. Median microseconds per step (min – max over repeats); ratios are medians of per-repeat
ratios. Fewer repeats at the big sizes.

{tables}
![step cost against towers]({png})

The shim's step grows by a fraction of a microsecond per group (one list lookup and one assignment each), torch's
and TML's by more (a Python schedule evaluation per group, and torch's scheduler bookkeeping). The bridge's
optimizer step makes the same fused-kernel calls as the hand-written fused Adam (one per param group, so both grow
with the number of towers) plus the Python of torchrec's wrapper layers, a few tens of microseconds per step;
TML's one optimizer per tower stays several times slower.
"""


def gpu_section(results: dict[str, Any] | None) -> str:
    if results is None:
        return """## GPU

Not measured: no GPU available when generated (`torch.cuda.is_available()` is false). The optimizer-step table on
CUDA (fused Adam) is written here when `make bench` runs on a machine with one.
"""
    rows = [[name, *_us(s)] for name, s in results["us_per_step"].items()]
    ratio_rows = [[name, *_ratio(r)] for name, r in results["ratios"].items()]
    return f"""## GPU

Optimizer step on {results["device_name"]} (fused Adam on CUDA, the same model and contenders as the CPU table,
CUDA synchronised after each timed run). {results["repeats"]} repeats x {results["steps_per_repeat"]} steps.

{_table(["contender", "median us", "min – max us"], rows)}

{_table(["ratio", "median", "min – max"], ratio_rows)}
"""


def lr_curves_section(png: str, files: list[Path]) -> str:
    names = ", ".join(f"`{f.relative_to(ROOT)}`" for f in files)
    return f"""## Learning-rate curves of the example configs

{names}, evaluated with `functional_opt.schedules.schedule_from_config` under `jax.jit(jax.vmap(...))` in float64
(the functions both the optax and the torch side use), over the whole run and over the first steps.

![learning-rate curves of the example configs]({png})
"""


# --- driver -----------------------------------------------------------------------------------------


def _timed(label: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    print(f"[bench] {label} ...", flush=True)
    out = fn()
    print(f"[bench] {label}: {time.perf_counter() - start:.1f} s", flush=True)
    return out


def _gpu(quick: bool) -> dict[str, Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    repeats, steps = (2, 2) if quick else (100, 10)
    results = bench_optimizer.run(repeats, steps, device="cuda", threads=None, tensor_lr=False)
    results["device_name"] = torch.cuda.get_device_name(0)
    return results


def run(output: Path, docs: Path, quick: bool = False) -> dict[str, Any]:
    """Runs every benchmark, writes ``output`` (markdown) and the figures under ``docs``; returns all results."""
    started = time.perf_counter()
    docs.mkdir(parents=True, exist_ok=True)
    q = quick
    results: dict[str, Any] = {
        "scheduler": _timed("scheduler step", lambda: bench_scheduler.run(*((3, 8) if q else (60, 1024)))),
        "scheduler_tensor": _timed(
            "scheduler step, tensor lr", lambda: bench_scheduler.run(*((3, 8) if q else (30, 1024)), tensor_lr=True)
        ),
        "optimizer": _timed("optimizer step", lambda: bench_optimizer.run(*((2, 2) if q else (100, 10)))),
        "flat": _timed("flat recap step", lambda: bench_flat.run(quick=q)),
        "compile": _timed(
            "torch.compile",
            lambda: bench_compile.run(5, cases=(bench_compile.RECAP,)) if q else bench_compile.run(bench_compile.STEPS),
        ),
        "jax": _timed("JAX", lambda: bench_jax.run(*((2, 3, 10_000, 2) if q else (150, 25, 1_000_000, 15)))),
        "scale": _timed("scale", lambda: bench_scale.run(towers=(1, 4) if q else bench_scale.TOWERS, quick=q)),
        "build_scale": _timed("build and scheduler scale", lambda: bench_build_scale.run(quick=q)),
        "jax_scale": _timed("JAX recap scale", lambda: bench_jax_scale.run_report(quick=q)),
        "yaml": _timed("YAML reading", lambda: bench_yaml.run(*((1, 2**19) if q else (3, 5 * 2**20)))),
        "gpu": _timed("GPU", lambda: _gpu(q)),
    }
    scale_png = bench_scale.plot(results["scale"], docs / SCALE_PNG)
    ratios_png = scale_sections.plot_ratios(results["build_scale"], results["jax_scale"], docs / SCALE_RATIOS_PNG)
    curves_png, example_files = _timed("learning-rate curves", lambda: plot_lr_curves.plot(docs / LR_CURVES_PNG))
    elapsed = time.perf_counter() - started

    sections = []
    summary: list[list[str]] = []
    for text, rows in (
        scheduler_section(results["scheduler"], results["scheduler_tensor"]),
        optimizer_section(results["optimizer"]),
        flat_sections.flat_section(results["flat"]),
        compile_section(results["compile"]),
        jax_section(results["jax"]),
        scale_sections.build_scale_section(results["build_scale"]),
        scale_sections.jax_scale_section(results["jax_scale"], _relative(ratios_png, output)),
    ):
        sections.append(text)
        summary += rows
    sections.append(scale_section(results["scale"], _relative(scale_png, output)))
    sections.append(scale_sections.yaml_section(results["yaml"]))
    sections.append(gpu_section(results["gpu"]))
    sections.append(lr_curves_section(_relative(curves_png, output), example_files))

    failing = [row[0] for row in summary if "FAIL" in row[3]]
    output.write_text(
        _header(quick, elapsed, failing)
        + _table(["benchmark", "measured", "bar", "result"], summary, "lrll")
        + "\n\n"
        + "\n".join(sections),
        encoding="utf-8",
    )
    print(f"[bench] wrote {output} in {elapsed:.0f} s; {len(summary) - len(failing)}/{len(summary)} bars hold")
    return results


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside (``.venv/bin/python``), else as given."""
    try:
        return path.absolute().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def _relative(path: Path, output: Path) -> str:
    """``path`` as a link from ``output``'s folder (absolute when it lies elsewhere)."""
    try:
        return path.resolve().relative_to(output.parent.resolve()).as_posix()
    except ValueError:
        return path.resolve().as_posix()


def _header(quick: bool, elapsed: float, failing: list[str]) -> str:
    m = bench_common.machine()
    v = bench_common.versions()
    load = ", ".join(f"{x:.2f}" for x in m["load_average"]) if m["load_average"] else "unknown"
    command = " ".join(shlex.quote(a) for a in [_shown(Path(sys.executable)), _shown(Path(sys.argv[0])), *sys.argv[1:]])
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    warning = (
        "\n> **Smoke run (`--quick`)**: a handful of steps per benchmark; the numbers below mean nothing.\n"
        if quick
        else ""
    )
    verdict = (
        "Every bar holds."
        if not failing
        else "Failing bars: " + "; ".join(failing) + ". See each section for the numbers and the reason."
    )
    versions = _table(["package", "version"], [[k, val] for k, val in v.items()], "ll")
    return f"""# Benchmarks

Generated by `make bench` (`{command}`) on {when}, in {elapsed:.0f} s. Do not edit by hand: the file is rewritten
from scratch on each run.
{warning}
Every figure compared with a bar is a **ratio** of contenders timed side by side in one process: the contenders
run in turn (the first one rotating), repeat after repeat, and the figure is the median over repeats of the
ratio of two timings taken back to back. Absolute microseconds depend on the machine and its load; the ratios
much less. The garbage collector is off while timing; torch runs with one intra-op thread unless stated.

**Machine**: {m["cpu"]}, {m["cores"]} logical cores ({m["usable_cores"]} usable by the process), {m["os"]};
load average when started: {load}. No GPU unless the GPU section says otherwise.

{versions}

## Bars

{verdict}

"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where the figures go")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a handful of steps per benchmark")
    args = parser.parse_args(argv)
    run(args.output, args.docs, quick=args.quick)


if __name__ == "__main__":
    main()
