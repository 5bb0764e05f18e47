"""The report's scale sections: building and scheduling, the JAX recap step, reading YAML, and their figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bench_jax_scale
from bench_markdown import table, verdict

__all__ = ["build_scale_section", "jax_scale_section", "plot_ratios", "yaml_section"]

BUILD_BAR = 1.5
CONSTRUCTION_BAR_S = 1.0
SHIM_STEP_BAR = 0.6
CLI_BAR_S = 10.0
PARTS = ("grouping", "schedule evaluation", "torch optimizers", "scheduler", "rest")


def build_scale_section(results: dict[str, Any]) -> tuple[str, list[list[str]]]:
    summary = []
    build_rows = []
    for n, entry in results["build"].items():
        s = entry["seconds"]
        ok = entry["ratio"] <= BUILD_BAR
        build_rows.append(
            [
                str(n),
                f"{s['bridge'] * 1e3:.1f}",
                f"{s['hand-written'] * 1e3:.1f}",
                f"{entry['ratio']:.2f}",
                f"<= {BUILD_BAR}",
                verdict(ok),
            ]
        )
        summary.append(
            [
                f"build_recap_optimizer / hand-written ({n} towers)",
                f"{entry['ratio']:.2f}",
                f"<= {BUILD_BAR}",
                verdict(ok),
            ]
        )
    parts_rows = []
    for n, entry in results["build"].items():
        parts = entry["parts"]
        total = sum(parts.values())
        parts_rows.append([str(n), *(f"{parts.get(p, 0.0) * 1e3:.2f}" for p in PARTS), f"{total * 1e3:.2f}"])
    shim_rows = []
    for count, entry in results["schedulers"].items():
        us = entry["us_per_step"]
        ok_build = entry["construction_s"] < CONSTRUCTION_BAR_S
        ok_step = entry["ratio"] <= SHIM_STEP_BAR
        shim_rows.append(
            [
                str(count),
                f"{entry['construction_s']:.3f}",
                f"{us['shim']:.1f}",
                f"{us['LambdaLR']:.1f}",
                f"{entry['ratio']:.3f}",
                str(entry["block_steps"]),
                f"{entry['table_mib']:.1f}",
            ]
        )
        summary.append(
            [
                f"LRShim construction, {count} distinct configs (s)",
                f"{entry['construction_s']:.3f}",
                f"< {CONSTRUCTION_BAR_S}",
                verdict(ok_build),
            ]
        )
        summary.append(
            [
                f"LRShim.step / LambdaLR.step ({count} groups)",
                f"{entry['ratio']:.3f}",
                f"<= {SHIM_STEP_BAR}",
                verdict(ok_step),
            ]
        )
    cli = results["cli"]
    for name, seconds in cli.items():
        summary.append(
            [
                f"functional-opt {name}, {results['cli_towers']} towers (s)",
                f"{seconds:.1f}",
                f"< {CLI_BAR_S}",
                verdict(seconds < CLI_BAR_S),
            ]
        )
    compiles = results["compilations"]
    text = f"""## Scale: building and scheduling

Schedules are data: each kind of schedule is one formula of the step and an array of parameters
(`functional_opt/schedule_kinds.py`), evaluated for every group of a kind at once in numpy float64 by the torch
schedulers' tables, `compute_lr`, the builders, `plot` and `table`. Nothing is compiled per config.

**Build.** `torch_bridge.build_recap_optimizer` against a hand-written `Adam(fused=True)` with a group per tower
plus an SGD for the tables, each with a `LambdaLR` running the schedules written in Python (the model is the
recap-shaped model of the scale section; the build is the first one in a fresh process, the two contenders in
alternate processes; milliseconds, medians).

{table(["towers", "bridge ms", "hand-written ms", "bridge / hand-written", "bar", "result"], build_rows)}

Where the time goes in the bridge's build (one more fresh process per size, each phase's own milliseconds:
the grouping rule, the numpy evaluation of the schedules (the step-0 rates and the scheduler's first block), torch's
optimizer constructors, which the hand-written build runs too, the scheduler's own work, and the rest: torchrec's
wrappers, the walk over the model's parameters and the checks):

{table(["towers", *PARTS, "total"], parts_rows)}

What bounds the ratio at small sizes: the bridge's fixed cost, a millisecond or two whatever the number of towers
(the columns above other than torch's constructors), against a hand-written build of under a millisecond; it is
numpy's first calls in a fresh process, the config and grouping checks and torchrec's wrappers, not work per
group. From about 100 towers on, both builds are dominated by torch's own `Optimizer.add_param_group`, which checks
every new group against every earlier one. The Adam state is created when the state is first read (a checkpoint
saved or loaded), not by the build. Before each timed build the process collects its garbage (`gc.collect()`), so
neither contender pays a collection that the imports owe.

**Schedulers.** `LRShim` over one-parameter groups with as many distinct linear-ramp-to-cosine configs, against
`LambdaLR` with the same schedules written in Python; the table refills happen at their real rate (blocks of at
most 2**18 values); memory of one block (tracemalloc).

{table(["groups", "construction s", "shim us/step", "LambdaLR us/step", "shim / LambdaLR", "block steps",
         "block MiB"], shim_rows)}

**CLI.** `functional-opt table` and `plot` on a config of {results["cli_towers"]} towers, fresh processes
(imports included): {", ".join(f"{k} {v:.1f} s" for k, v in cli.items())}.

**Compilations.** XLA compilations during a {results["compilation_towers"]}-tower torch recap build:
{compiles["build"]}; during its first {results["compilation_steps"]} scheduler steps: {compiles["steps"]}.
"""
    return text, summary


def jax_scale_section(results: dict[str, Any], png: str) -> tuple[str, list[list[str]]]:
    rows, summary = [], []
    names = {"compile": "trace + compile", "step": "step", "memory": "peak memory"}
    units = {"compile": (1.0, "s"), "step": (1e3, "ms"), "memory": (2.0**-20, "MiB")}
    for n, size in results["sizes"].items():
        cells = [str(n), str(size["repeats"])]
        for metric in ("compile", "step", "memory"):
            scale, unit = units[metric]
            recap, adam = (size[metric][c]["median"] * scale for c in ("recap", "adam"))
            ratio, bar = size[metric]["ratio"]["median"], results["bars"][metric]
            cells.append(f"{recap:.3g} / {adam:.3g} {unit} = **{ratio:.2f}**")
            summary.append(
                [f"JAX recap {names[metric]} / one torch_adam ({n} towers)", f"{ratio:.2f}", f"<= {bar}",
                 verdict(ratio <= bar)]
            )  # fmt: skip
        rows.append(cells)
    bars = results["bars"]
    text = f"""## Scale: the JAX recap optimizer

One jitted train step (loss gradient, update, `optax.apply_updates`) over towers of two small dense layers
({bench_jax_scale.INPUT} -> {bench_jax_scale.HIDDEN} -> 1) plus a backbone and an embedding table, with
`functional_opt.optimizers.build_recap_optimizer` (one schedule per tower, the four kinds in turn, `backbone` and
`dense_ebc`) against `torch_rules.torch_adam` at one constant rate over the same parameters: the same update with one
rate. Each measurement is a fresh process (trace + compile time of `jit(...).lower(...).compile()`, the median
step of {results["steps"]} calls, the process's peak resident memory), the two contenders in alternate processes;
ratios are medians of the per-repeat ratios. Bars: trace + compile <= {bars["compile"]}, step <= {bars["step"]},
peak memory <= {bars["memory"]}.

{table(["towers", "repeats", "trace + compile (recap / adam)", "step (recap / adam)", "peak memory (recap / adam)"],
       rows)}

![build and JAX ratios against towers]({png})

The update evaluates every group's rate with one vectorised formula call per kind of schedule and applies it per
leaf. Two things keep its compiled code at what one rate costs: the state holds one count, one vector of rates and
one record for all groups (as many leaves as a single optimizer's state over the same parameters), and each group's
scalar reaches the per-leaf fused kernels as a buffer of its own (one variadic reduction per 32 groups makes them),
so same-shaped leaves share one compiled kernel. XLA compiles one kernel per distinct fused computation and keeps it
in memory: slicing each group's rate out of a vector inside the per-leaf kernels made every group's update a kernel
of its own (measured at 100 towers before the change: 2.2x the compile time and 2.2x the peak memory of one
`torch_adam`). The trace + compile time of both contenders grows with the number of towers because the model does:
its loss has a layer per tower.
"""
    return text, summary


def yaml_section(results: dict[str, Any]) -> str:
    return f"""## Reading YAML

`functional_opt.config_file.load_config_file` (duplicate-key and alias checks, environment substitution,
validation) against `yaml.load(..., CSafeLoader)` alone, medians of fresh loads. No bar.

* a {results["bomb_bytes"]}-byte "billion laughs" alias bomb is refused in {results["bomb_refusal_ms"]:.2f} ms,
  before anything is expanded;
* a {results["big_mib"]:.1f} MiB TML config (a long `train_data` list) loads in {results["big_library_s"]:.3f} s
  against {results["big_plain_libyaml_s"]:.3f} s for libyaml alone: **{results["big_ratio"]:.2f}x**, the cost of
  the checks over libyaml's own parsing.
"""


def plot_ratios(build_scale: dict[str, Any], jax_scale: dict[str, Any], path: Path) -> Path:
    """The build ratio and the JAX recap ratios against the number of towers, with their bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    towers = [int(n) for n in build_scale["build"]]
    axes[0].plot(towers, [e["ratio"] for e in build_scale["build"].values()], marker="o", label="bridge / hand-written")
    axes[0].axhline(BUILD_BAR, color="grey", linestyle="--", label=f"bar {BUILD_BAR}")
    axes[0].set_title("torch build_recap_optimizer, fresh process")
    sizes = jax_scale["sizes"]
    jax_towers = [int(n) for n in sizes]
    for metric, label in (("compile", "trace + compile"), ("step", "step"), ("memory", "peak memory")):
        ratios = [sizes[n][metric]["ratio"]["median"] for n in sizes]
        axes[1].plot(jax_towers, ratios, marker="o", label=f"{label} (bar {jax_scale['bars'][metric]})")
    axes[1].axhline(1.0, color="grey", linewidth=0.8)
    axes[1].set_title("JAX recap train step / one torch_adam")
    for ax, ticks in ((axes[0], towers), (axes[1], jax_towers)):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.set_xlabel("towers")
        ax.set_ylabel("ratio")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
