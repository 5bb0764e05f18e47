"""The ``functional-opt`` command-line tool (also ``python -m functional_opt``).

Subcommands:

``plot CONFIG [--steps N] [-o lr.png] [--log-scale]``
    Every schedule of the file (towers, backbone, embeddings) on one labelled figure (PNG, SVG or PDF).
``table CONFIG [--steps 0,1,1000] [--format text|csv|json]``
    The learning rate of every group at the given steps (float64, TML's ``compute_lr``).
``check CONFIG [--steps N] [--dtype float32|float64] [--switch-at K]``
    Trains the demo multi-task model in JAX and in PyTorch with the optimizer of the
    file and compares learning rates and parameters against the parity bars; exit
    code 0 when every group is within them, 1 when not. With ``--switch-at K`` the
    run moves at step K, torch to JAX and JAX to torch (optimizer moments, tables
    and step), and each moved run is compared with the unmoved torch run.
``demo [CONFIG] [--steps N] [-o out/demo.png]``
    Trains the demo model in PyTorch through ``torch_bridge.build_recap_optimizer``
    with a torchrec fused embedding table, logging loss and learning rates, and
    writes the learning-rate and loss plot. Without CONFIG it uses the example
    shipped in the package (:func:`example_config_path`).

A CONFIG is a YAML file with the optimizer section itself or a whole TML config
with an ``optimizer:`` key; see :mod:`functional_opt.config_file` for what is read.

Bad input (a missing file, invalid YAML, an unknown key, an invalid value, a bad
option) prints one line ``functional-opt: error: ...`` on stderr, writes nothing
and exits with code 2.

This package never imports torch. ``check`` and ``demo`` need PyTorch: their
implementations are plugins registered by the torch side under the entry-point
group ``functional_opt.commands`` (see ``pyproject.toml``) and are loaded only
when one of them runs, so ``plot`` and ``table`` work without torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from functional_opt.cli_args import (
    MAX_PLOT_STEPS,
    figure_path,
    plot_steps,
    printable,
    seed,
    step_list,
    train_steps,
)
from functional_opt.config_file import EMBEDDINGS, ConfigFileError, LoadedConfig, load_config_file, schedule_horizon
from functional_opt.table_output import default_table_steps, render_table

__all__ = [
    "DEFAULT_DEMO_OUTPUT",
    "DEFAULT_PLOT_OUTPUT",
    "CliError",
    "build_parser",
    "check_output",
    "default_plot_steps",
    "default_table_steps",
    "demo_needs_recap_message",
    "example_config_path",
    "main",
    "render_table",
    "save_figure",
]

PROG = "functional-opt"
DEFAULT_PLOT_OUTPUT = "lr.png"
DEFAULT_DEMO_OUTPUT = "out/demo.png"
DEFAULT_CHECK_STEPS = 100
DEFAULT_DEMO_STEPS = 400


class CliError(Exception):
    """Bad input to the command-line tool; the message is printed as one line and the exit code is 2."""


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr (exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {printable(message)} (see '{self.prog} --help')\n")


def example_config_path() -> Path:
    """The example recap config shipped in the package (``functional_opt/data/example_recap.yaml``)."""
    return Path(str(importlib.resources.files("functional_opt").joinpath("data", "example_recap.yaml")))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``functional-opt``."""
    parser = _Parser(
        prog=PROG,
        description=(
            "Look at, cross-check and train with a TML-style optimizer config: the same learning-rate "
            "schedules in JAX (optax) and PyTorch (torchrec)."
        ),
        epilog=(
            "CONFIG is a YAML file with the optimizer section itself (RecapOptimizerConfig or OptimizerConfig) "
            "or a whole TML config with an 'optimizer:' key; the embedding learning rate is read from "
            "model.large_embeddings.optimizer or a top-level emb_optimizer/embedding_optimizer section. "
            "Bad input exits with code 2."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    plot = sub.add_parser("plot", help="draw every schedule of CONFIG on one figure")
    plot.add_argument("config", metavar="CONFIG", help="optimizer YAML file")
    plot.add_argument(
        "--steps",
        type=plot_steps,
        default=None,
        metavar="N",
        help="last step drawn (default: 1.25 x the schedules' horizon)",
    )
    plot.add_argument(
        "-o",
        "--output",
        type=figure_path,
        default=Path(DEFAULT_PLOT_OUTPUT),
        metavar="FILE",
        help=f"PNG, SVG or PDF file to write (default: {DEFAULT_PLOT_OUTPUT})",
    )
    plot.add_argument("--log-scale", action="store_true", help="logarithmic learning-rate axis")
    plot.set_defaults(func=_cmd_plot)

    table = sub.add_parser("table", help="print the learning rate of every group at some steps")
    table.add_argument("config", metavar="CONFIG", help="optimizer YAML file")
    table.add_argument(
        "--steps",
        type=step_list,
        default=None,
        metavar="S1,S2,...",
        help="steps (default: 0, 1, powers of ten and the schedules' horizon)",
    )
    table.add_argument(
        "--format", choices=("text", "csv", "json"), default="text", help="output format (default: text)"
    )
    table.set_defaults(func=_cmd_table)

    check = sub.add_parser("check", help="train the demo model in JAX and PyTorch and compare them")
    check.add_argument("config", metavar="CONFIG", help="optimizer YAML file")
    check.add_argument(
        "--steps",
        type=train_steps,
        default=DEFAULT_CHECK_STEPS,
        metavar="N",
        help=f"training steps (default: {DEFAULT_CHECK_STEPS})",
    )
    check.add_argument(
        "--dtype", choices=("float32", "float64"), default="float64", help="precision of both runs (default: float64)"
    )
    check.add_argument(
        "--seed",
        type=seed,
        default=0,
        metavar="S",
        help="seed of the weights and the data, 0 .. 2**32-1",
    )
    check.add_argument(
        "--switch-at",
        type=train_steps,
        default=None,
        metavar="K",
        help="move the run between torch and JAX at step K (both ways) and compare with the unmoved run",
    )
    check.set_defaults(func=_cmd_check)

    demo = sub.add_parser("demo", help="train the demo model in PyTorch with a fused embedding table")
    demo.add_argument(
        "config", metavar="CONFIG", nargs="?", default=None, help="optimizer YAML file (default: the shipped example)"
    )
    demo.add_argument(
        "--steps",
        type=train_steps,
        default=DEFAULT_DEMO_STEPS,
        metavar="N",
        help=f"training steps (default: {DEFAULT_DEMO_STEPS})",
    )
    demo.add_argument(
        "-o",
        "--output",
        type=figure_path,
        default=Path(DEFAULT_DEMO_OUTPUT),
        metavar="FILE",
        help=f"learning-rate and loss plot to write (default: {DEFAULT_DEMO_OUTPUT})",
    )
    demo.add_argument(
        "--log-every", type=train_steps, default=None, metavar="K", help="log every K steps (default: about 10 lines)"
    )
    demo.add_argument(
        "--seed",
        type=seed,
        default=0,
        metavar="S",
        help="seed of the weights and the data, 0 .. 2**32-1",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 1 when ``check`` finds a difference above the bars,
        2 on bad input.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a bad option (already printed as one line) or --help
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args))
    except (CliError, ConfigFileError) as exc:
        print(f"{PROG}: error: {printable(' '.join(str(exc).split()))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`): stop quietly, as other command-line tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


# --------------------------------------------------------------------------- plot


def default_plot_steps(loaded: LoadedConfig) -> int:
    """1.25 x the last step where any schedule changes shape, at least 100.

    Raises:
        CliError: that is beyond what a plot can show (:data:`~functional_opt.cli_args.MAX_PLOT_STEPS`).
    """
    horizon = max(schedule_horizon(lr) for lr in loaded.learning_rates().values())
    steps = max(100, horizon + (horizon + 3) // 4)  # ceil(1.25 * horizon), in integers: horizons may be huge
    if steps > MAX_PLOT_STEPS:
        raise CliError(
            f"{loaded.path}: the schedules change up to step {horizon}, beyond what a plot can show "
            f"(its step axis is exact up to 2**53 = {MAX_PLOT_STEPS}); pass --steps N with N <= {MAX_PLOT_STEPS}"
        )
    return steps


def check_output(path: Path) -> Path:
    """Checks, writing nothing, that ``path`` can be created; raises CliError if not.

    The directories missing from ``path`` are created by :func:`save_figure` when the figure is saved.
    """
    if path.is_dir():
        raise CliError(f"-o {path}: is a directory")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CliError(f"-o {path}: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK):
        raise CliError(f"-o {path}: {ancestor} is not writable")
    return path


def save_figure(fig: Any, path: Path) -> None:
    """Saves ``fig`` to ``path``, creating its directory; an OS error becomes a CliError."""
    from functional_opt import plotting

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        plotting.save_figure(fig, path)
    except OSError as exc:
        raise CliError(f"-o {path}: cannot write it: {exc.strerror or exc}") from exc


def _cmd_plot(args: argparse.Namespace) -> int:
    from functional_opt import plotting

    loaded = load_config_file(args.config)
    output = check_output(args.output)
    num_steps = args.steps if args.steps is not None else default_plot_steps(loaded)
    rates = loaded.learning_rates()
    steps, curves = plotting.lr_curves(rates, num_steps)
    dense = {k: v for k, v in curves.items() if k != EMBEDDINGS}
    what = "dense parameter groups, Adam" if loaded.kind == "recap" else f"all parameters, {next(iter(dense))}"
    panels = [(f"{what} (from '{loaded.optimizer_path or 'top level'}')", dense, 0)]
    if EMBEDDINGS in curves:
        title = f"embedding tables, SGD (from '{loaded.embedding_path}')"
        panels.append((title, {EMBEDDINGS: curves[EMBEDDINGS]}, len(dense)))
    fig, axes = plotting.new_figure(len(panels), height_per_row=4.0 if len(panels) == 1 else 3.2)
    for ax, (title, panel, first_color) in zip(axes, panels, strict=True):
        plotting.draw_learning_rates(ax, steps, panel, log_scale=args.log_scale, title=title, first_color=first_color)
    axes[-1].set_xlabel("step k (the k-th optimizer step, counted from 0, uses the value at k)")
    heading = f"Learning-rate schedules of {plotting.plain_text(loaded.path.name)}"
    if len(panels) == 1:
        axes[0].set_title(f"{heading}: {panels[0][0]}")
    else:
        fig.suptitle(heading)
    save_figure(fig, output)
    print(
        f"wrote {printable(str(output))} ({len(curves)} schedule{'s' if len(curves) > 1 else ''}, steps 0..{num_steps})"
    )
    return 0


# --------------------------------------------------------------------------- table


def _cmd_table(args: argparse.Namespace) -> int:
    import numpy as np

    from functional_opt import schedule_plan

    loaded = load_config_file(args.config)
    steps = args.steps if args.steps is not None else default_table_steps(loaded)
    learning_rates = loaded.learning_rates()
    # One evaluation as data for every schedule (one per kind in use), as compute_lr computes each value.
    values = schedule_plan.evaluate(list(learning_rates.values()), np.asarray(steps, dtype=np.int64))
    rows = {name: values[:, i].tolist() for i, name in enumerate(learning_rates)}
    print(render_table(rows, steps, args.format))
    return 0


# --------------------------------------------------------------------------- check / demo


COMMAND_GROUP = "functional_opt.commands"
"""Entry-point group of the subcommands whose implementation needs PyTorch (``check``, ``demo``)."""


def _plugin_command(name: str) -> Any:
    """The implementation of subcommand ``name`` registered under :data:`COMMAND_GROUP`.

    Raises:
        CliError: nothing is registered under ``name``, or loading it needs
            PyTorch / torchrec and they are not installed.
    """
    found = [ep for ep in importlib.metadata.entry_points(group=COMMAND_GROUP) if ep.name == name]
    if not found:
        raise CliError(
            f"'{name}' needs the PyTorch side of functional-opt, which registers no '{name}' command here; "
            "install it with pip install 'functional-opt[torch]'"
        )
    try:
        return found[0].load()
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("torch", "torchrec", "fbgemm_gpu"):
            raise
        raise CliError(
            f"this command needs PyTorch and torchrec ({exc}); install them with pip install 'functional-opt[torch]'"
        ) from exc


def _cmd_check(args: argparse.Namespace) -> int:
    if args.switch_at is not None and args.switch_at >= args.steps:
        raise CliError(
            f"--switch-at {args.switch_at} must be a step inside the run: 1 .. {args.steps - 1} (--steps {args.steps})"
        )
    loaded = load_config_file(args.config)
    extra = {} if args.switch_at is None else {"switch_at": args.switch_at}
    return _plugin_command("check")(loaded, steps=args.steps, dtype=args.dtype, seed=args.seed, **extra)


def demo_needs_recap_message(loaded: LoadedConfig) -> str:
    """The error of ``demo`` given a generic optimizer config."""
    return (
        f"{loaded.path}: demo trains with the recap optimizer and needs a RecapOptimizerConfig "
        "(adam + multi_task_learning_rates or single_task_learning_rate); this file holds a generic "
        "OptimizerConfig: use 'functional-opt check' or 'plot' for it"
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    loaded = load_config_file(args.config if args.config is not None else example_config_path())
    if loaded.kind != "recap":
        raise CliError(demo_needs_recap_message(loaded))
    output = check_output(args.output)
    return _plugin_command("demo")(
        loaded,
        steps=args.steps,
        output=output,
        log_every=args.log_every,
        seed=args.seed,
        progress=not args.no_progress,
    )
