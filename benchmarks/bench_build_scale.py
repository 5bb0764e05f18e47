"""Scale of building and scheduling: costs against the number of towers and of distinct schedules.

Side by side in one run (ratios; absolute times mean little on a shared machine):

* **build**: ``torch_bridge.build_recap_optimizer`` against a hand-written
  ``Adam(fused=True)`` with one group per tower plus an SGD for the tables, each
  driven by a ``LambdaLR`` of the schedules written in Python. Each build is the
  first one of a fresh process (the model is built first, not timed), the two
  contenders in alternate processes, at 1, 12, 100 and 1000 towers.
* **schedulers**: ``LRShim`` construction over 1000 (and 10,000) param groups
  with as many distinct configs, and its ``step()`` against ``LambdaLR.step()`` on
  the same optimizer, over enough steps that the table refills happen at their
  real rate; the memory of the table (tracemalloc).
* **CLI**: ``functional-opt table`` and ``plot`` on a config of 10,000 towers,
  each a fresh process (wall time, imports included).
* **compilations**: XLA compilations during a 1000-tower torch recap build and
  its first 5000 scheduler steps (jax's ``jax_log_compiles`` messages counted).

Run ``python benchmarks/bench_build_scale.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

ROOT = Path(__file__).resolve().parent.parent
TOWERS = (1, 12, 100, 1000)
GROUPS = (1000, 10_000)

_BUILD_SCRIPT = r"""
import gc, json, sys, time
sys.path[:0] = [{root!r}, {bench!r}]
import torch
torch.set_num_threads(1)
from bench_optimizer import RecapShapedModel, emb_config, recap_config
from bench_scale import python_lr
from torch.optim.lr_scheduler import LambdaLR
import torch_bridge
n, contender = int(sys.argv[1]), sys.argv[2]
model = RecapShapedModel(num_towers=n)
cfg, emb = recap_config(n), emb_config()
parts = {{}}
if contender == "parts":
    # The bridge's build with its phases timed where it calls them; each phase's own time (a call inside another
    # phase counts in its own phase only).
    import torch_bridge.recap as recap_module
    from functional_opt import grouping, schedule_plan
    open_phases = []

    def timed(label, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            open_phases.append(label)
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t0
                open_phases.pop()
                parts[label] = parts.get(label, 0.0) + spent
                if open_phases:
                    parts[open_phases[-1]] = parts.get(open_phases[-1], 0.0) - spent
        return wrapper

    grouping.recap_groups = timed("grouping", grouping.recap_groups)
    schedule_plan.evaluate = timed("schedule evaluation", schedule_plan.evaluate)
    recap_module.RecapLRShim = timed("scheduler", recap_module.RecapLRShim)
    torch.optim.Adam.__init__ = timed("torch optimizers", torch.optim.Adam.__init__)
    torch.optim.SGD.__init__ = timed("torch optimizers", torch.optim.SGD.__init__)
gc.collect()  # the imports' garbage is collected first: neither contender pays a collection the imports owe
if contender in ("bridge", "parts"):
    start = time.perf_counter()
    torch_bridge.build_recap_optimizer(model, cfg, emb)
else:
    start = time.perf_counter()
    towers = {{t.replace(".", "__"): t for t in cfg.multi_task_learning_rates.tower_learning_rates}}
    groups = {{}}
    for name, p in model.named_parameters():
        parts_of_name = name.split(".")
        tower = next((towers[c] for c in parts_of_name[1:-1] if c in towers), None)
        key = tower or ("dense_ebc" if "embedding_bags" in name else "backbone")
        groups.setdefault(key, []).append(p)
    rates = dict(cfg.multi_task_learning_rates.tower_learning_rates)
    rates["backbone"] = cfg.multi_task_learning_rates.backbone_learning_rate
    dense = [k for k in groups if k != "dense_ebc"]
    adam = torch.optim.Adam([{{"params": groups[k], "lr": 1.0}} for k in dense], fused=True)
    sgd = torch.optim.SGD(groups["dense_ebc"], lr=1.0)
    LambdaLR(adam, [lambda s, lr=rates[k]: python_lr(lr, s) for k in dense])
    LambdaLR(sgd, lambda s, lr=emb.learning_rate: python_lr(lr, s))
total = time.perf_counter() - start
print(json.dumps({{"total": total, "parts": parts}}))
"""


def _build_once(n: int, contender: str) -> dict[str, Any]:
    script = _BUILD_SCRIPT.format(root=str(ROOT), bench=str(ROOT / "benchmarks"))
    out = subprocess.run(
        [sys.executable, "-c", script, str(n), contender], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def build(towers: tuple[int, ...] = TOWERS, repeats: int = 3) -> dict[int, dict[str, Any]]:
    """Seconds of the first build in a fresh process, per contender; ratio bridge / hand-written per repeat.

    Each size also times the bridge's build by phase in one more fresh process
    (``parts``: the grouping, the schedules' evaluation, torch's optimizer
    constructors, the scheduler, and the rest: torchrec's wrappers and the checks).
    """
    results = {}
    for n in towers:
        times: dict[str, list[float]] = {"bridge": [], "hand-written": []}
        for _ in range(repeats):
            for contender in times:
                times[contender].append(_build_once(n, contender)["total"])
        ratios = [b / h for b, h in zip(times["bridge"], times["hand-written"], strict=True)]
        timed = _build_once(n, "parts")
        parts = dict(timed["parts"])
        parts["rest"] = timed["total"] - sum(parts.values())
        results[n] = {
            "seconds": {k: statistics.median(v) for k, v in times.items()},
            "ratio": statistics.median(ratios),
            "parts": parts,
        }
    return results


def _distinct_configs(count: int) -> list[Any]:
    from functional_opt import config

    return [
        config.LearningRate(
            linear_ramp_to_cosine={
                "learning_rate": 1e-3 * (1 + i / count),
                "final_learning_rate": 1e-5,
                "num_ramp_steps": 100 + i % 7,
                "final_num_steps": 10_000 + i,
            }
        )
        for i in range(count)
    ]


def schedulers(groups: tuple[int, ...] = GROUPS, steps: int = 3000) -> dict[int, dict[str, Any]]:
    """LRShim construction, step cost against LambdaLR's, and table memory at ``groups`` param groups."""
    import torch
    from bench_scale import python_lr
    from torch.optim.lr_scheduler import LambdaLR

    from torch_bridge import LRShim

    results = {}
    for count in groups:
        configs = _distinct_configs(count)
        params = [torch.nn.Parameter(torch.zeros(1)) for _ in range(count)]

        def optimizer(params: list[torch.nn.Parameter] = params) -> torch.optim.SGD:
            return torch.optim.SGD([{"params": [p], "lr": 0.0, "name": f"g{i}"} for i, p in enumerate(params)])

        opt = optimizer()
        start = time.perf_counter()
        shim = LRShim(opt, {f"g{i}": c for i, c in enumerate(configs)})
        construction = time.perf_counter() - start
        tracemalloc.start()
        shim._table._fill(10**6)  # one block, as a refill makes it
        table_bytes = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        shim._table._fill(0)
        torch_opt = optimizer()
        lambda_lr = LambdaLR(torch_opt, [lambda s, c=c: python_lr(c, s) for c in configs])
        n = steps if count <= 1000 else steps // 10
        timings: dict[str, list[float]] = {"shim": [], "LambdaLR": []}
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(n):
                shim.step()
            timings["shim"].append((time.perf_counter() - start) / n)
            start = time.perf_counter()
            for _ in range(n):
                lambda_lr.step()
            timings["LambdaLR"].append((time.perf_counter() - start) / n)
        ratios = [a / b for a, b in zip(timings["shim"], timings["LambdaLR"], strict=True)]
        results[count] = {
            "construction_s": construction,
            "us_per_step": {k: 1e6 * statistics.median(v) for k, v in timings.items()},
            "ratio": statistics.median(ratios),
            "block_steps": shim._table.block_size,
            "steps_timed": 3 * n,
            "table_mib": table_bytes / 2**20,
        }
    return results


def cli(towers: int = 10_000) -> dict[str, float]:
    """Wall seconds of ``functional-opt table`` and ``plot`` on a config of ``towers`` towers (fresh processes)."""
    import yaml

    rates = {
        f"task.t{i}": {
            "linear_ramp_to_cosine": {
                "learning_rate": 1e-3,
                "final_learning_rate": 1e-5,
                "num_ramp_steps": 100 + i % 5,
                "final_num_steps": 10_000,
            }
        }
        for i in range(towers)
    }
    cfg = {
        "adam": {},
        "multi_task_learning_rates": {"tower_learning_rates": rates, "backbone_learning_rate": {"constant": 1e-3}},
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        exe = str(Path(sys.executable).parent / "functional-opt")
        for name, args in (("table", ["table", str(path)]), ("plot", ["plot", str(path), "-o", f"{tmp}/p.png"])):
            start = time.perf_counter()
            subprocess.run([exe, *args], check=True, capture_output=True)
            out[name] = time.perf_counter() - start
    return out


def compilations(towers: int = 1000, steps: int = 5000) -> dict[str, int]:
    """XLA compilations during a torch recap build of ``towers`` towers and its first ``steps`` scheduler steps."""
    import jax
    from bench_optimizer import RecapShapedModel, emb_config, recap_config

    import torch_bridge

    messages: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "ompil" in record.getMessage():
                messages.append(record.getMessage())

    handler = Count()
    logging.getLogger("jax").addHandler(handler)
    model = RecapShapedModel(num_towers=towers)
    try:
        with jax.log_compiles(True):
            opt, sched = torch_bridge.build_recap_optimizer(model, recap_config(towers), emb_config())
            built = len(messages)
            for _ in range(steps):
                sched.step()
    finally:
        logging.getLogger("jax").removeHandler(handler)
    return {"build": built, "steps": len(messages) - built}


def run(quick: bool = False) -> dict[str, Any]:
    """Every measurement of this module (``quick``: small sizes, for a smoke run)."""
    cli_towers, compilation_towers, compilation_steps = (100, 12, 100) if quick else (10_000, 1000, 5000)
    return {
        "build": build((1,) if quick else TOWERS, repeats=1 if quick else 3),
        "schedulers": schedulers((100,) if quick else GROUPS, steps=300 if quick else 3000),
        "cli": cli(cli_towers),
        "cli_towers": cli_towers,
        "compilations": compilations(compilation_towers, compilation_steps),
        "compilation_towers": compilation_towers,
        "compilation_steps": compilation_steps,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
