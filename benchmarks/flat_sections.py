"""The report's flat recap step section: ``build_recap_optimizer(flat=True)`` against flat fused Adam and the floor."""

from __future__ import annotations

from typing import Any

import bench_flat
from bench_markdown import table, verdict

__all__ = ["flat_section"]

CONTENDERS = ("bridge flat", "bridge per group", "flat fused Adam", "memory floor")
RATIOS = ("bridge flat / flat fused Adam", "bridge flat / floor", "bridge per group / bridge flat")
BARS = {"bridge flat / flat fused Adam": bench_flat.FLAT_BAR, "bridge flat / floor": bench_flat.FLOOR_BAR}


def _spread(s: dict[str, float], digits: int) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f} – {s['max']:.{digits}f})"


def flat_section(results: dict[str, Any]) -> tuple[str, list[list[str]]]:
    """The section's markdown and its rows of the summary table, from :func:`bench_flat.run`'s results."""
    ok = bench_flat.passes(results)
    rows, summary = [], []
    for name, entry in results["sizes"].items():
        barred = [key.split(": ", 1)[1] for key in ok if key.split(": ", 1)[0] == name]
        ratio_cells = []
        for key in RATIOS:
            cell = _spread(entry["ratios"][key], 2)
            ratio_cells.append(f"**{cell}**" if key in barred else cell)
        bar_text = "; ".join(f"<= {BARS[key]}" for key in barred)
        verdicts = " ".join(verdict(ok[f"{name}: {key}"]) for key in barred)
        rows.append(
            [
                name,
                f"{entry['adam_elements']:,}",
                f"{entry['repeats']} x {entry['steps_per_repeat']}",
                *(_spread(entry["us_per_step"][c], 0) for c in CONTENDERS),
                *ratio_cells,
                bar_text,
                verdicts,
            ]
        )
        for key in barred:
            median = entry["ratios"][key]["median"]
            summary.append(
                [f"flat recap step: {key} ({name})", f"{median:.3f}", f"<= {BARS[key]}", verdict(ok[f"{name}: {key}"])]
            )
    header = ["size", "Adam elements", "repeats x steps", *(f"{c} us" for c in CONTENDERS), *RATIOS]
    header += ["bar", "result"]
    big = bench_flat.FLOOR_SIZE
    others = ", ".join(f"`{name}`" for name in bench_flat.SIZES if name != big)
    text = f"""## Flat recap step

`optimizer.step()` alone, with fixed gradients, on the recap-shaped model of the optimizer-step section at four
sizes: 12 towers of the default layers, 100 and 1000 towers of the scale section's small layers, and 12 towers of
big layers (about 10 M Adam elements). One thread (`torch.set_num_threads(1)`): the compiled loop runs on one core,
as torch's fused kernel does then. The contenders, timed side by side and interleaved:

* `bridge flat`: `torch_bridge.build_recap_optimizer` with `flat=True`: the towers' and backbone's Adam groups in one
  `torch_bridge.flat_adam.FlatAdam` (one buffer per dtype, one pass of a compiled loop per step, each group at its
  own rate), the `dense_ebc` tables on torch's SGD;
* `bridge per group`: the default build: one `Adam(fused=True)` with a param group per tower, and the SGD;
* `flat fused Adam`: one `Adam(fused=True)` over one contiguous tensor with as many elements as the Adam groups,
  and one SGD over one tensor with as many as the tables (no per-tower rates at all);
* `memory floor`: an in-place `a.add_(b)` over float32 tensors sized so that it moves exactly the bytes the step
  must move at least: 28 per Adam element (read parameter, gradient and both moments, write back three) and 12 per
  table element (read parameter and gradient, write back one).

Median microseconds per step (min – max over repeats); ratios are medians of the per-repeat ratios (min – max),
the one held to a bar in bold. Bars: `bridge flat / flat fused Adam` <= {bench_flat.FLAT_BAR} at
{others}; `bridge flat / floor` <= {bench_flat.FLOOR_BAR} at `{big}`. `bridge per group / bridge flat` has no
bar: it is what `flat=True` saves over the default build, which stays the default.

{table(header, rows)}

### GPU

Not measured: the flat step's compiled loop runs on the CPU only (`FlatAdam` takes dense CPU float32 / float64
parameters), so there is no GPU table for this step.
"""
    return text, summary
