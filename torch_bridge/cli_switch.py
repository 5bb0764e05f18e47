"""``functional-opt check CONFIG --switch-at K``: a run moved between torch and JAX lands where it would have.

On the demo model, from the same weights and batches as ``check``:

* torch for all ``N`` steps, unmoved: the reference;
* torch to step ``K``, :func:`torch_bridge.export_state`, JAX from there to ``N``;
* JAX to step ``K``, :func:`torch_bridge.import_state` into a fresh torch build,
  torch from there to ``N``.

Each moved run is compared with the reference group by group, its parameters
and the rate of every step, against ``check``'s bars
(:func:`torch_bridge.cli_commands.judge`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import torch

from functional_opt import config as config_lib
from functional_opt import demo_model
from functional_opt.cli import CliError
from functional_opt.config_file import LoadedConfig
from torch_bridge import demo_model as torch_demo
from torch_bridge.cli_commands import (
    BATCH_SIZE,
    GroupResult,
    check_groups,
    judge,
    print_bars,
    print_table,
    train_torch,
)
from torch_bridge.cli_jax import initial_params, jax_optimizer, train_jax
from torch_bridge.cli_shared import check_spec, group_label, quiet_torch
from torch_bridge.cli_tables import table_groups, tables_in_torch, torch_labels, torch_table_optimizer

__all__ = ["run_switch"]


def _build(
    loaded: LoadedConfig, emb: config_lib.EmbeddingOptimizerConfig, spec: Any, seed: int, dtype: torch.dtype
) -> tuple[torch.nn.Module, Any, Any]:
    from torch_bridge import build_optimizer, build_recap_optimizer

    model = torch_demo.DemoRankingModel(spec, seed=seed, dtype=dtype)
    opt = loaded.optimizer
    try:
        if loaded.table_optimizers:
            return torch_table_optimizer(loaded, model, fused=dtype == torch.float32)
        if isinstance(opt, config_lib.RecapOptimizerConfig):
            return (model, *build_recap_optimizer(model, opt, emb))
        return (model, *build_optimizer(model, opt))
    except ValueError as exc:
        raise CliError(f"{loaded.path}: cannot build the optimizer for the demo model: {exc}") from exc


def run_switch(
    loaded: LoadedConfig,
    emb: config_lib.EmbeddingOptimizerConfig,
    *,
    steps: int,
    switch_at: int,
    dtype: str,
    seed: int,
    notes: Sequence[str],
    out: TextIO | None = None,
) -> int:
    """Runs the two moves and prints the comparison; 0 when both are within the bars, 1 when not.

    A config whose tables have optimizers of their own trains them as ``check``
    does: on fused kernels under ``DistributedModelParallel`` in float32, on
    torch's optimizers in float64; their accumulators move with the rest.

    Raises:
        CliError: ``switch_at`` is not below ``steps``, or the optimizer cannot be built.
    """
    import jax

    from torch_bridge import export_state, import_state

    out = sys.stdout if out is None else out
    if not 1 <= switch_at < steps:
        raise CliError(f"--switch-at {switch_at} must be a step inside the run: 1 .. {steps - 1} (--steps {steps})")
    spec = check_spec(loaded)
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    batches = demo_model.make_batches(spec, steps, BATCH_SIZE, seed=seed)
    initial = demo_model.init_arrays(spec, seed)
    kind = loaded.kind
    algorithm = loaded.optimizer.algorithm_name if isinstance(loaded.optimizer, config_lib.OptimizerConfig) else "adam"

    tables = list(loaded.table_optimizers)
    moves = {"tables": loaded.tables, "dense": loaded.optimizer} if tables else {}
    fused = bool(tables) and dtype == "float32"

    def label_of(group: Mapping[str, Any]) -> str | list[str]:
        return torch_labels(group, tables) if tables else group_label(group, kind, algorithm)

    def torch_part(built: tuple, part: Sequence[demo_model.Batch]) -> dict[str, np.ndarray]:
        return train_torch(*built, part, spec, torch_dtype, label_of)[1]

    print(f"config: {loaded.describe()}", file=out)
    for note in notes:
        print(note, file=out)
    print(
        f"model: demo multi-task model, towers {list(spec.tasks)}, tables {[t for t, _ in spec.tables]} "
        f"({tables_in_torch(dtype, fused)} in torch); "
        f"{steps} steps of batch {BATCH_SIZE}, seed {seed}, {dtype}; the run moves at step {switch_at}",
        file=out,
    )
    with quiet_torch(), torch_demo.single_process_group() if fused else contextlib.nullcontext():
        names = [n for n, _ in torch_demo.DemoRankingModel(spec, seed=seed, dtype=torch_dtype).named_parameters()]
        groups = table_groups(loaded, names) if tables else check_groups(loaded, names, emb)
        straight = _build(loaded, emb, spec, seed, torch_dtype)
        lrs_straight = torch_part(straight, batches)
        params_straight = torch_demo.named_arrays(straight[0])

        first = _build(loaded, emb, spec, seed, torch_dtype)
        lrs_before = torch_part(first, batches[:switch_at])
        params, opt_state, _ = export_state(*first, **moves)
        with jax.enable_x64(dtype == "float64"):
            tx, lrs_of = jax_optimizer(loaded, emb, params)
            final, _, lrs_after = train_jax(tx, lrs_of, params, opt_state, batches[switch_at:], spec, dtype)
            to_jax = judge(
                groups,
                lrs_straight,
                _joined(lrs_before, lrs_after),
                params_straight,
                demo_model.named_arrays(final),
                initial,
                dtype,
            )
            start = initial_params(initial, dtype)
            params, state, lrs_before = train_jax(tx, lrs_of, start, tx.init(start), batches[:switch_at], spec, dtype)
        second = _build(loaded, emb, spec, seed, torch_dtype)
        import_state(*second, params, state, **moves)
        lrs_after = torch_part(second, batches[switch_at:])
        to_torch = judge(
            groups,
            lrs_straight,
            _joined(lrs_before, lrs_after),
            params_straight,
            torch_demo.named_arrays(second[0]),
            initial,
            dtype,
        )
    _print(to_jax, to_torch, dtype, out)
    bad = [
        f"{r.name} ({way})"
        for way, rs in (("torch -> JAX", to_jax), ("JAX -> torch", to_torch))
        for r in rs
        if not r.ok
    ]
    if bad:
        print(f"FAIL: moved at step {switch_at}, {len(bad)} groups differ from the unmoved run: {bad}", file=out)
        return 1
    print(
        f"OK: moved at step {switch_at} either way, all {len(to_jax)} groups land where the unmoved torch run does, "
        f"within the {dtype} bars",
        file=out,
    )
    return 0


def _joined(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each group's rates of the first part of a run, then of the second."""
    return {k: np.concatenate([np.asarray(before[k]), np.asarray(after[k])]) for k in before}


def _print(to_jax: Sequence[GroupResult], to_torch: Sequence[GroupResult], dtype: str, out: TextIO) -> None:
    print_bars(dtype, out)
    header = ["group", "params", "torch->JAX |Δparam|", "JAX->torch |Δparam|", "param bar", "max |Δlr|", "moved", ""]
    rows = [
        [
            a.name,
            str(a.num_params),
            f"{a.param_diff:.2e}",
            f"{b.param_diff:.2e}",
            f"{a.param_bar:.1e}",
            f"{max(a.lr_diff, b.lr_diff):.2e}",
            f"{a.moved:.2e}",
            "ok" if a.ok and b.ok else "FAIL",
        ]
        for a, b in zip(to_jax, to_torch, strict=True)
    ]
    print_table(header, rows, out)
