"""The torch side of the ``functional-opt`` command line: ``check`` (and the helpers ``demo`` shares).

``functional_opt.cli`` imports this module only when one of these two
subcommands runs, so the rest of the tool never loads torch.

* :func:`run_check` trains the demo multi-task model
  (:mod:`functional_opt.demo_model` / :mod:`torch_bridge.demo_model`) in JAX with
  :mod:`functional_opt.optimizers` and in PyTorch with :mod:`torch_bridge`, from the
  same weights on the same batches, and compares every group's learning rate and
  parameters against the parity bars.
* :func:`torch_bridge.cli_demo.run_demo` trains the model in PyTorch through
  :func:`torch_bridge.build_recap_optimizer`, with its embedding tables sharded by
  torchrec's ``DistributedModelParallel`` (gloo, world size 1, table-wise, FUSED
  kernel: updated by a fused SGD inside ``backward``), and plots learning rates and loss.

Both use one intra-op thread: the model is tiny, and several threads only add
synchronisation cost (on a busy 2-core machine, 50 times slower steps).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import torch

from functional_opt import config as config_lib
from functional_opt import demo_model, grouping
from functional_opt.cli import CliError
from functional_opt.config_file import EMBEDDINGS, LoadedConfig
from torch_bridge import demo_model as torch_demo
from torch_bridge.cli_jax import initial_params, jax_optimizer, train_jax
from torch_bridge.cli_shared import (
    check_spec,
    embedding_config,
    group_label,
    quiet_torch,
)
from torch_bridge.cli_tables import (
    table_groups,
    table_notes,
    tables_in_torch,
    torch_labels,
    torch_table_optimizer,
)

__all__ = [
    "BATCH_SIZE",
    "FLOAT32_RELATIVE_BAR",
    "FLOAT64_BAR",
    "GroupResult",
    "check_groups",
    "judge",
    "print_bars",
    "print_table",
    "run_check",
    "train_torch",
]

FLOAT64_BAR = 1e-12
"""float64: max |Δparam| <= 1e-12 and |Δlr| <= 1e-12 * max(1, |lr|)."""
FLOAT32_RELATIVE_BAR = 1e-5
"""float32: max |Δparam| <= 1e-5 * max |param| of the group."""
FLOAT32_LR_RELATIVE_BAR = 1e-6
"""float32: |Δlr| <= 1e-6 * |lr| (the JAX side computes the rate in float32)."""
BATCH_SIZE = 32


# --------------------------------------------------------------------------- check


@dataclasses.dataclass(frozen=True)
class GroupResult:
    """The comparison of one group after ``check``.

    Attributes:
        name: the group's label.
        num_params: number of parameter tensors in the group.
        lr_diff: max over steps of |lr_torch - lr_jax|.
        lr_bar: the bar ``lr_diff`` must not exceed.
        param_diff: max over the group's parameters of max |p_torch - p_jax|.
        param_bar: the bar ``param_diff`` must not exceed.
        moved: max |p_final - p_initial| on the torch side (shows the comparison is not vacuous).
        non_finite: number of NaN / inf parameter values on the torch side.
    """

    name: str
    num_params: int
    lr_diff: float
    lr_bar: float
    param_diff: float
    param_bar: float
    moved: float
    non_finite: int = 0

    @property
    def ok(self) -> bool:
        """Whether both differences are within their bars and every parameter is finite."""
        return self.lr_diff <= self.lr_bar and self.param_diff <= self.param_bar and self.non_finite == 0


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| in float64; NaN in both at the same place counts as equal, NaN in one as inf."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    diff = np.abs(a - b)
    diff[np.isnan(a) & np.isnan(b)] = 0.0
    diff[np.isnan(diff)] = np.inf
    return float(np.max(diff)) if diff.size else 0.0


def judge(
    groups: Mapping[str, Sequence[str]],
    lrs_torch: Mapping[str, np.ndarray],
    lrs_jax: Mapping[str, np.ndarray],
    params_torch: Mapping[str, np.ndarray],
    params_jax: Mapping[str, np.ndarray],
    initial: Mapping[str, np.ndarray],
    dtype: str,
) -> list[GroupResult]:
    """Compares one group at a time against the parity bars.

    Args:
        groups: label -> parameter names.
        lrs_torch: label -> learning rate at each step on the torch side.
        lrs_jax: label -> learning rate at each step on the JAX side.
        params_torch: final torch parameters by name.
        params_jax: final JAX parameters by name.
        initial: initial parameters by name.
        dtype: ``"float64"`` or ``"float32"``.

    Returns:
        One :class:`GroupResult` per group, in ``groups`` order.

    Example:
        >>> import numpy as np
        >>> lr = {"g": np.array([0.1, 0.2])}
        >>> p0, p1 = {"w": np.zeros(2)}, {"w": np.ones(2)}
        >>> [r.ok for r in judge({"g": ["w"]}, lr, lr, p1, {"w": np.ones(2) + 1e-9}, p0, "float64")]
        [False]
    """
    results = []
    for label, names in groups.items():
        lt = np.asarray(lrs_torch[label], dtype=np.float64)
        lj = np.asarray(lrs_jax[label], dtype=np.float64)
        lr_diff = float(np.max(np.abs(lt - lj))) if lt.size else 0.0
        lr_scale = float(np.max(np.abs(lt))) if lt.size else 0.0
        diffs = [_max_abs_diff(params_torch[n], params_jax[n]) for n in names]
        scale = max(float(np.nanmax(np.abs(params_torch[n]), initial=0.0)) for n in names)
        moved = max(_max_abs_diff(params_torch[n], initial[n]) for n in names)
        non_finite = sum(int(np.count_nonzero(~np.isfinite(params_torch[n]))) for n in names)
        if dtype == "float64":
            lr_bar = FLOAT64_BAR * max(1.0, lr_scale)
            param_bar = FLOAT64_BAR
        else:
            lr_bar = FLOAT32_LR_RELATIVE_BAR * lr_scale
            param_bar = FLOAT32_RELATIVE_BAR * scale
        results.append(GroupResult(label, len(names), lr_diff, lr_bar, max(diffs), param_bar, moved, non_finite))
    return results


def check_groups(
    loaded: LoadedConfig, names: Sequence[str], emb: config_lib.EmbeddingOptimizerConfig
) -> dict[str, list[str]]:
    """Label -> parameter names, by the shared grouping rule (recap) or one group (generic)."""
    opt = loaded.optimizer
    if isinstance(opt, config_lib.RecapOptimizerConfig):
        groups = grouping.recap_groups(names, opt, emb)
        return {(EMBEDDINGS if g.name == grouping.DENSE_EMBEDDINGS else g.name): list(g.param_names) for g in groups}
    return {opt.algorithm_name: list(names)}


def train_torch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: Sequence[demo_model.Batch],
    spec: demo_model.ModelSpec,
    dtype: torch.dtype,
    label_of: Any,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """TML's loop; returns (final params, label -> LR before each ``optimizer.step()``)."""
    lrs: dict[str, list[float]] = {}
    for batch in batches:
        dense, features, labels = torch_demo.to_torch(batch, spec, dtype)
        optimizer.zero_grad()
        loss = torch_demo.loss_fn(model(dense, features), labels)
        loss.backward()
        seen = set()
        for group in optimizer.param_groups:
            found = label_of(group)
            for label in [found] if isinstance(found, str) else found:
                if label not in seen:
                    lrs.setdefault(label, []).append(float(group["lr"]))
                    seen.add(label)
        optimizer.step()
        scheduler.step()
    return torch_demo.named_arrays(model), {k: np.asarray(v) for k, v in lrs.items()}


def _train_jax(
    loaded: LoadedConfig,
    emb: config_lib.EmbeddingOptimizerConfig,
    initial: Mapping[str, np.ndarray],
    batches: Sequence[demo_model.Batch],
    spec: demo_model.ModelSpec,
    dtype: str,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The same training in JAX (one ``lax.scan``) from ``tx.init``; LRs are those each update used."""
    import jax

    with jax.enable_x64(dtype == "float64"):
        params = initial_params(initial, dtype)
        tx, lrs_of = jax_optimizer(loaded, emb, params)
        final, _, lrs = train_jax(tx, lrs_of, params, tx.init(params), batches, spec, dtype)
        return demo_model.named_arrays(final), lrs


def run_check(
    loaded: LoadedConfig,
    *,
    steps: int,
    dtype: str = "float64",
    seed: int = 0,
    switch_at: int | None = None,
    out: TextIO | None = None,
) -> int:
    """``functional-opt check``: JAX vs PyTorch on the demo model with the file's optimizer.

    Both sides start from :func:`functional_opt.demo_model.init_arrays` and see
    the same :func:`functional_opt.demo_model.make_batches`. torch runs TML's
    loop (``zero_grad -> forward -> backward -> optimizer.step -> scheduler.step``);
    JAX runs the optax optimizer in a ``lax.scan``. The embedding tables are
    trained as ``dense_ebc`` (plain SGD) on both sides: ``torch.nn.EmbeddingBag``
    in float64 (torchrec's EBC pools in float32), torchrec's EBC in float32.

    Args:
        loaded: the config file.
        steps: training steps.
        dtype: ``"float64"`` or ``"float32"``, both sides.
        seed: seed of the weights and the batches.
        switch_at: move the run between torch and JAX at this step, both ways,
            and compare with the unmoved torch run instead
            (:func:`torch_bridge.cli_switch.run_switch`).
        out: where to print (default: stdout).

    Returns:
        0 when every group is within the bars, 1 when not.

    Raises:
        CliError: the optimizer cannot be built for the demo model (the message says why).
    """
    out = sys.stdout if out is None else out
    spec = check_spec(loaded)
    torch_dtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    notes = []
    if loaded.kind == "recap":
        emb, _, note = embedding_config(loaded)
        notes += [note] if note else []
    else:  # one group holds every parameter, the tables included
        emb = config_lib.EmbeddingOptimizerConfig()
        if loaded.embedding_learning_rate is not None:
            notes.append(
                "note: a generic OptimizerConfig drives every parameter, the embedding tables included, with its "
                f"one schedule; the embedding learning rate at '{loaded.embedding_path}' is not used"
            )
    batches = demo_model.make_batches(spec, steps, BATCH_SIZE, seed=seed)
    initial = demo_model.init_arrays(spec, seed)

    tables = list(loaded.table_optimizers)
    fused = bool(tables) and dtype == "float32"
    if tables:
        notes += table_notes(loaded, spec, fused)
    if switch_at is not None:
        from torch_bridge.cli_switch import run_switch

        return run_switch(loaded, emb, steps=steps, switch_at=switch_at, dtype=dtype, seed=seed, notes=notes, out=out)
    with quiet_torch(), torch_demo.single_process_group() if fused else contextlib.nullcontext():
        model = torch_demo.DemoRankingModel(spec, seed=seed, dtype=torch_dtype)
        names = [name for name, _ in model.named_parameters()]
        opt = loaded.optimizer
        label_of: Callable[[Mapping[str, Any]], str | list[str]]
        try:
            if tables:
                groups = table_groups(loaded, names)
                model, optimizer, scheduler = torch_table_optimizer(loaded, model, fused)
            elif isinstance(opt, config_lib.RecapOptimizerConfig):
                groups = check_groups(loaded, names, emb)
                from torch_bridge import build_recap_optimizer

                optimizer, scheduler = build_recap_optimizer(model, opt, emb)
            else:
                from torch_bridge import build_optimizer

                groups = check_groups(loaded, names, emb)
                optimizer, scheduler = build_optimizer(model, opt)
        except ValueError as exc:
            raise CliError(f"{loaded.path}: cannot build the optimizer for the demo model: {exc}") from exc

        algorithm = opt.algorithm_name if isinstance(opt, config_lib.OptimizerConfig) else "adam"
        kind = loaded.kind
        print(f"config: {loaded.describe()}", file=out)
        for note in notes:
            print(note, file=out)
        print(
            f"model: demo multi-task model, towers {list(spec.tasks)}, tables {[t for t, _ in spec.tables]} "
            f"({tables_in_torch(dtype, fused)} in torch); "
            f"{steps} steps of batch {BATCH_SIZE}, seed {seed}, {dtype}",
            file=out,
        )
        if tables:

            def label_of(group: Mapping[str, Any]) -> list[str]:
                return torch_labels(group, tables)

        else:

            def label_of(group: Mapping[str, Any]) -> str:
                return group_label(group, kind, algorithm)

        params_torch, lrs_torch = train_torch(model, optimizer, scheduler, batches, spec, torch_dtype, label_of)
    try:
        params_jax, lrs_jax = _train_jax(loaded, emb, initial, batches, spec, dtype)
    except ValueError as exc:
        raise CliError(f"{loaded.path}: cannot build the JAX optimizer for the demo model: {exc}") from exc
    results = judge(groups, lrs_torch, lrs_jax, params_torch, params_jax, initial, dtype)
    _print_results(results, dtype, out)
    for r in results:
        if r.non_finite:
            print(
                f"{r.name}: {r.non_finite} parameter values are NaN or inf after training in torch: a diverged "
                "run proves nothing (Adagrad with eps=0, for one, divides 0 by 0 on every coordinate whose "
                "gradient has always been 0)",
                file=out,
            )
    bad = [r.name for r in results if not r.ok]
    if bad:
        print(f"FAIL: {len(bad)} of {len(results)} groups differ beyond the {dtype} bars: {bad}", file=out)
        return 1
    print(f"OK: JAX and PyTorch agree within the {dtype} bars on all {len(results)} groups", file=out)
    return 0


def print_bars(dtype: str, out: TextIO) -> None:
    """The bars of ``dtype``, said."""
    if dtype == "float64":
        print(
            f"bars: |Δlr| <= {FLOAT64_BAR:g} * max(1, |lr|), |Δparam| <= {FLOAT64_BAR:g} (absolute)",
            file=out,
        )
    else:
        print(
            f"bars: |Δlr| <= {FLOAT32_LR_RELATIVE_BAR:g} * max |lr|, "
            f"|Δparam| <= {FLOAT32_RELATIVE_BAR:g} * max |param| of the group",
            file=out,
        )


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Rows under a header, the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        print("  ".join(cells).rstrip(), file=out)


def _print_results(results: Sequence[GroupResult], dtype: str, out: TextIO) -> None:
    print_bars(dtype, out)
    header = ["group", "params", "max |Δlr|", "lr bar", "max |Δparam|", "param bar", "moved", ""]
    rows = [
        [
            r.name,
            str(r.num_params),
            f"{r.lr_diff:.2e}",
            f"{r.lr_bar:.1e}",
            f"{r.param_diff:.2e}",
            f"{r.param_bar:.1e}",
            f"{r.moved:.2e}",
            "ok" if r.ok else "FAIL",
        ]
        for r in results
    ]
    print_table(header, rows, out)
