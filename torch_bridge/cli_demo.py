"""The torch side of ``functional-opt demo``: the demo model trained through torchrec, learning rates and loss plotted.

:func:`run_demo` trains the demo multi-task model in PyTorch through
:func:`torch_bridge.build_recap_optimizer`, with its embedding tables sharded by
torchrec's ``DistributedModelParallel`` (gloo, world size 1, table-wise, FUSED
kernel: updated by a fused SGD inside ``backward``), and plots learning rates and
loss. ``functional_opt.cli`` imports this module only when ``demo`` runs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from functional_opt import config as config_lib
from functional_opt import demo_model, schedules
from functional_opt.cli import CliError, demo_needs_recap_message, save_figure
from functional_opt.config_file import EMBEDDINGS, LoadedConfig
from torch_bridge import demo_model as torch_demo
from torch_bridge.cli_shared import demo_spec, embedding_config, group_label, quiet_torch

__all__ = ["run_demo"]


def _common_prefix(names: Sequence[str]) -> str:
    """The longest dotted prefix (ending in ``"."``) shared by all ``names`` when there are two or more.

    Example:
        >>> _common_prefix(["recap.engagement.is_favorited", "recap.engagement.is_replied"])
        'recap.engagement.'
    """
    if len(names) < 2:
        return ""
    parts = [name.split(".")[:-1] for name in names]
    shared: list[str] = []
    for column in zip(*parts, strict=False):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return ".".join(shared) + "." if shared else ""


def run_demo(
    loaded: LoadedConfig,
    *,
    steps: int,
    output: Path,
    log_every: int | None = None,
    seed: int = 0,
    progress: bool = True,
    out: TextIO | None = None,
) -> int:
    """``functional-opt demo``: trains the demo model in PyTorch with the file's recap optimizer.

    The model's embedding tables are sharded by ``DistributedModelParallel``
    (gloo, world size 1, table-wise, FUSED kernel) and updated by the fused SGD
    inside ``backward``; the towers and backbone by the Adam of
    :func:`torch_bridge.build_recap_optimizer`, every group on its own schedule
    through the :class:`~torch_bridge.RecapLRShim`. Loss and each group's
    learning rate are logged at intervals and plotted to ``output``.

    Args:
        loaded: the config file (a recap optimizer config).
        steps: training steps.
        output: the PNG / SVG / PDF file to write (missing directories are created).
        log_every: log every this many steps (default: about ten lines).
        seed: seed of the weights and the data.
        progress: show a tqdm progress bar (on a terminal).
        out: where to log (default: stdout).

    Returns:
        0.

    Raises:
        CliError: a generic (non-recap) optimizer config, or an optimizer that
            cannot be built for the demo model.
    """
    from tqdm import tqdm

    from functional_opt import plotting
    from torch_bridge import build_recap_optimizer

    out = sys.stdout if out is None else out
    opt = loaded.optimizer
    if not isinstance(opt, config_lib.RecapOptimizerConfig):
        raise CliError(demo_needs_recap_message(loaded))
    spec = demo_spec(loaded)
    emb, emb_lr, note = embedding_config(loaded)
    log_every = log_every if log_every is not None else max(1, steps // 10)
    batches = demo_model.make_batches(spec, min(steps, 100), 64, seed=seed)

    with quiet_torch(), torch_demo.single_process_group():
        model = torch_demo.DemoRankingModel(spec, seed=seed, embedding="ebc")
        sharded = torch_demo.shard_with_fused_embeddings(model, schedules.compute_lr(emb_lr, 0))
        try:
            optimizer, scheduler = build_recap_optimizer(sharded, opt, emb)
        except ValueError as exc:
            raise CliError(f"{loaded.path}: cannot build the optimizer for the demo model: {exc}") from exc

        print(f"config: {loaded.describe()}", file=out)
        if note:
            print(note, file=out)
        print(
            f"model: towers {list(spec.tasks)}, backbone {list(spec.backbone_sizes)}, fused embedding tables "
            f"{[t for t, _ in spec.tables]} (DistributedModelParallel, gloo world size 1, table-wise, FUSED kernel)",
            file=out,
        )
        labels_in_order: list[str] = []
        for group in optimizer.param_groups:
            label = group_label(group, "recap", "adam")
            if label not in labels_in_order:
                labels_in_order.append(label)
        print(f"optimizer groups: {labels_in_order}; {steps} steps, logging every {log_every}", file=out)
        prefix = _common_prefix([t for t in spec.tasks if t in labels_in_order])
        if prefix:
            print(f"(tower names are logged without their common prefix {prefix!r})", file=out)

        lrs: dict[str, list[float]] = {label: [] for label in labels_in_order}
        losses: list[float] = []
        bar = tqdm(total=steps, desc="demo", unit="step", disable=None if progress else True, file=sys.stderr)
        for k in range(steps):
            dense, features, labels = torch_demo.to_torch(batches[k % len(batches)], spec)
            optimizer.zero_grad()
            loss = torch_demo.loss_fn(sharded(dense, features), labels)
            loss.backward()
            seen = set()
            for group in optimizer.param_groups:
                label = group_label(group, "recap", "adam")
                if label not in seen:
                    lrs[label].append(float(group["lr"]))
                    seen.add(label)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
            if k % log_every == 0 or k == steps - 1:
                window = losses[-log_every:]
                rates = "  ".join(f"{label.removeprefix(prefix)}={lrs[label][-1]:.3g}" for label in labels_in_order)
                bar.write(f"step {k:>5}  loss {np.mean(window):.4f}  lr: {rates}", file=out)
        bar.close()

    step_axis = np.arange(steps)
    dense_lrs = {k: v for k, v in lrs.items() if k != EMBEDDINGS}
    panels = [("learning rate of each dense group (Adam, RecapLRShim)", dense_lrs, 0)]
    if EMBEDDINGS in lrs:
        panels.append(("embedding learning rate (torchrec fused SGD)", {EMBEDDINGS: lrs[EMBEDDINGS]}, len(dense_lrs)))
    fig, axes = plotting.new_figure(len(panels) + 1, height_per_row=3.0)
    for ax, (title, curves, first_color) in zip(axes, panels, strict=False):
        plotting.draw_learning_rates(ax, step_axis, curves, title=title, first_color=first_color)
    ax_loss = axes[-1]
    ax_loss.plot(step_axis, losses, color="0.75", linewidth=0.8, label="loss")
    window = max(1, min(25, steps // 10))
    if steps >= window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax_loss.plot(step_axis[window - 1 :], smooth, color="C3", linewidth=1.6, label=f"mean of {window} steps")
    ax_loss.set_title("training loss (sum over tasks)")
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("step")
    ax_loss.grid(True, alpha=0.3)
    ax_loss.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    fig.suptitle(f"functional-opt demo: {loaded.path.name}, PyTorch + torchrec fused embeddings")
    save_figure(fig, output)
    first = float(np.mean(losses[: max(1, steps // 10)]))
    last = float(np.mean(losses[-max(1, steps // 10) :]))
    print(
        f"loss: {first:.4f} (first {max(1, steps // 10)} steps) -> {last:.4f} (last {max(1, steps // 10)} steps)",
        file=out,
    )
    print(f"wrote {output}", file=out)
    return 0
