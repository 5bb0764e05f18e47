"""JAX recap train step at scale: recap optimizer vs one ``torch_adam`` at one constant rate, same params.

For each number of towers (1, 12, 100, 1000 by default) one train step
(loss gradient, optimizer update, ``optax.apply_updates``) is jitted over a
model of towers of two small dense layers each plus a backbone and an
embedding table, with two optimizers side by side:

* ``recap``: :func:`functional_opt.optimizers.build_recap_optimizer`, one
  schedule per tower (the four kinds in turn), ``backbone`` and ``dense_ebc``;
* ``adam``: :func:`functional_opt.torch_rules.torch_adam` at one constant rate
  over the same parameters (the floor: the same update with one rate).

Each measurement runs in a fresh subprocess: trace + compile time of the step
(``jit(...).lower(...).compile()``), step time (median of repeated calls, each
``block_until_ready``) and the process's peak resident memory
(``VmHWM`` of ``/proc/self/status``). The two contenders alternate, so the ratios are
taken run by run.

Run ``python benchmarks/bench_jax_scale.py``; :func:`run` returns the numbers
and :func:`markdown` writes them as a table for a "scale" section.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

from bench_common import stats

TOWERS = (1, 12, 100, 1000)
CONTENDERS = ("recap", "adam")
BARS = {"compile": 1.2, "step": 1.1, "memory": 1.2}
HIDDEN, INPUT, BATCH = 16, 8, 32

_CHILD = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp, optax
from functional_opt import config, optimizers, torch_rules

num_towers, contender, steps = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
HIDDEN, INPUT, BATCH = {hidden}, {input}, {batch}
KINDS = (
    {{"constant": 0.01}},
    {{"linear_ramp_to_constant": {{"learning_rate": 0.02, "num_ramp_steps": 100}}}},
    {{"linear_ramp_to_cosine": {{"learning_rate": 0.03, "final_learning_rate": 0.001, "num_ramp_steps": 10,
                               "final_num_steps": 1000}}}},
    {{"piecewise_constant": {{"learning_rate_boundaries": [10, 100], "learning_rate_values": [0.1, 0.05, 0.01]}}}},
)
key = jax.random.PRNGKey(0)
towers = {{}}
for i in range(num_towers):
    key, a, b = jax.random.split(key, 3)
    towers[f"t{{i}}"] = {{"w1": 0.1 * jax.random.normal(a, (INPUT, HIDDEN)), "b1": jnp.zeros(HIDDEN),
                        "w2": 0.1 * jax.random.normal(b, (HIDDEN, 1)), "b2": jnp.zeros(1)}}
params = {{"towers": towers, "backbone": {{"w": jnp.eye(INPUT)}},
          "ebc": {{"embedding_bags": {{"t": {{"weight": jnp.ones((64, INPUT))}}}}}}}}
x = jax.random.normal(key, (BATCH, INPUT))

def loss(p):
    h = x @ p["backbone"]["w"] + p["ebc"]["embedding_bags"]["t"]["weight"][:BATCH]
    total = 0.0
    for t in p["towers"].values():
        out = jax.nn.relu(h @ t["w1"] + t["b1"]) @ t["w2"] + t["b2"]
        total = total + jnp.mean(out * out)
    return total

if contender == "recap":
    cfg = config.RecapOptimizerConfig(
        adam={{}},
        multi_task_learning_rates={{
            "tower_learning_rates": {{f"t{{i}}": KINDS[i % 4] for i in range(num_towers)}},
            "backbone_learning_rate": {{"constant": 0.001}}}})
    emb = config.EmbeddingOptimizerConfig(learning_rate={{"constant": 0.05}})
    tx = optimizers.build_recap_optimizer(params, cfg, emb)
else:
    tx = torch_rules.torch_adam(0.01)
state = tx.init(params)

def train_step(p, s):
    grads = jax.grad(loss)(p)
    updates, s = tx.update(grads, s, p)
    return optax.apply_updates(p, updates), s

start = time.perf_counter()
lowered = jax.jit(train_step).lower(params, state)
traced = time.perf_counter()
compiled = lowered.compile()
done = time.perf_counter()
p, s = compiled(params, state)
jax.block_until_ready(p)
times = []
for _ in range(steps):
    t0 = time.perf_counter()
    p, s = compiled(p, s)
    jax.block_until_ready((p, s))
    times.append(time.perf_counter() - t0)
# VmHWM: this process's peak resident memory (getrusage's maxrss also counts the parent's, from before exec).
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"trace": traced - start, "compile": done - start, "step": statistics.median(times),
                  "memory": peak}}))
"""


def measure(num_towers: int, contender: str, steps: int) -> dict[str, float]:
    """One fresh-process measurement of one contender at one size."""
    code = _CHILD.format(hidden=HIDDEN, input=INPUT, batch=BATCH)
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code, str(num_towers), contender, str(steps)],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
        env={"PYTHONPATH": str(root), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"},
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench_jax_scale: {contender} at {num_towers} towers failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    towers: Sequence[int] = TOWERS, repeats: int = 1, steps: int = 30, big: int = 1000, big_repeats: int = 1
) -> dict[str, Any]:
    """Every size, both contenders alternating, ``repeats`` fresh processes each; ratios recap / adam.

    Sizes of ``big`` towers or more (minutes of compilation each) run ``big_repeats`` times instead.
    """
    results: dict[str, Any] = {"towers": list(towers), "bars": BARS, "steps": steps, "sizes": {}}
    for num_towers in towers:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in CONTENDERS}
        count = big_repeats if num_towers >= big else repeats
        for _ in range(count):
            for name in CONTENDERS:
                runs[name].append(measure(num_towers, name, steps))
        size: dict[str, Any] = {"repeats": count}
        for metric in ("trace", "compile", "step", "memory"):
            values = {name: [r[metric] for r in runs[name]] for name in CONTENDERS}
            ratios = [a / b for a, b in zip(values["recap"], values["adam"], strict=True)]
            size[metric] = {name: stats(values[name]) for name in CONTENDERS} | {"ratio": stats(ratios)}
        results["sizes"][num_towers] = size
        print(
            f"{num_towers:5d} towers: trace+compile {size['compile']['recap']['median']:.3f} s / "
            f"{size['compile']['adam']['median']:.3f} s = {size['compile']['ratio']['median']:.2f}; step "
            f"{size['step']['recap']['median'] * 1e3:.3f} ms / {size['step']['adam']['median'] * 1e3:.3f} ms = "
            f"{size['step']['ratio']['median']:.2f}; peak memory {size['memory']['recap']['median'] / 2**20:.0f} MiB"
            f" / {size['memory']['adam']['median'] / 2**20:.0f} MiB = {size['memory']['ratio']['median']:.2f}",
            flush=True,
        )
    return results


def run_report(quick: bool = False) -> dict[str, Any]:
    """The measurements of the report: every size, 3 repeats each; ``quick``: 1 and 12 towers, once.

    At 1000 towers a compilation takes minutes and its time varies by a quarter from one fresh process to the
    next (measured: 115 to 158 s for the same step), so the ratio is a median of three pairs there too.
    """
    if quick:
        return run((1, 12), repeats=1, steps=5)
    return run(TOWERS, repeats=3, steps=50, big_repeats=3)


def markdown(results: dict[str, Any]) -> str:
    """The results as a markdown table: one row per size, each ratio with its bar's verdict."""
    lines = [
        "| towers | trace + compile (recap / adam) | step (recap / adam) | peak memory (recap / adam) |",
        "|---|---|---|---|",
    ]
    for num_towers, size in results["sizes"].items():
        cells: list[str] = []
        for metric, scale, unit in (("compile", 1.0, "s"), ("step", 1e3, "ms"), ("memory", 2.0**-20, "MiB")):
            ratio = size[metric]["ratio"]["median"]
            ok = "ok" if ratio <= results["bars"][metric] else f"over {results['bars'][metric]}"
            recap, adam = size[metric]["recap"]["median"] * scale, size[metric]["adam"]["median"] * scale
            cells.append(f"{recap:.3g} / {adam:.3g} {unit} = {ratio:.2f} ({ok})")
        lines.append(f"| {num_towers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", type=int, nargs="+", default=list(TOWERS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args(argv)
    print(markdown(run(args.towers, args.repeats, args.steps)))


if __name__ == "__main__":
    main()
