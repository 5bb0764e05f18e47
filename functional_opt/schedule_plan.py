"""Many schedules evaluated together: one formula call per kind in use, whatever the number of configs.

A ``sequence`` has no formula of its own: :func:`pieces` cuts it into the
schedules of its segments, each read at the step minus an offset over a window
of steps. A :class:`Plan` evaluates the pieces of every config by kind (the
formulas of :mod:`functional_opt.schedule_kinds` over stacked parameters),
then picks each config's piece at each step (a piecewise selection, exact on
integer steps). :func:`evaluate` is the numpy float64 evaluation every table
uses; the JAX recap optimizer evaluates the same plan with ``jax.numpy``.

Example:
    >>> import numpy as np
    >>> from functional_opt import config
    >>> configs = [config.LearningRate(constant=0.5),
    ...            config.LearningRate(linear_ramp_to_constant={"learning_rate": 1.0, "num_ramp_steps": 4})]
    >>> evaluate(configs, np.arange(3)).tolist()
    [[0.5, 0.0], [0.5, 0.25], [0.5, 0.5]]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from functional_opt import config as config_lib
from functional_opt.schedule_kinds import INT64_MAX, KINDS, Kind, kind_of, piecewise_constant_formula, stack

__all__ = ["Piece", "Plan", "evaluate", "pieces"]

_CHUNK_ELEMENTS = 1 << 22


class Piece(NamedTuple):
    """One schedule of a sequence: ``config`` read at ``step - offset`` for the steps from ``start`` on."""

    config: config_lib.LearningRate
    offset: int
    start: int


def pieces(lr_config: config_lib.LearningRate) -> list[Piece]:
    """The schedule as pieces whose windows partition the steps: the first starts at 0, each lasts until the next.

    Any kind but ``sequence`` is one piece; a sequence is the pieces of its
    segments (nested sequences cut in turn), each shifted to its segment's start
    and cut to its window.

    Example:
        >>> seq = config_lib.LearningRate(sequence=[
        ...     {"learning_rate": {"constant": 1.0}, "num_steps": 10},
        ...     {"learning_rate": {"constant": 0.5}, "from_step": 3}])
        >>> [(p.config.constant, p.offset, p.start) for p in pieces(seq)]
        [(1.0, 0, 0), (0.5, 7, 10)]
    """
    if lr_config.sequence is None:
        return [Piece(lr_config, 0, 0)]
    out: list[Piece] = []
    start = 0
    for segment in lr_config.sequence:
        end = None if segment.num_steps is None else start + segment.num_steps
        shift = start - segment.from_step
        inner = pieces(segment.learning_rate)
        for i, piece in enumerate(inner):
            begin = piece.start + shift
            finish = inner[i + 1].start + shift if i + 1 < len(inner) else None
            if (finish is not None and finish <= start) or (end is not None and begin >= end):
                continue  # outside the segment's window
            out.append(Piece(piece.config, piece.offset + shift, max(begin, start)))
        start = end if end is not None else start
    return out


def _shifted(row: dict[str, Any], offset: int) -> dict[str, Any]:
    """A piecewise row read at ``step - offset``: its boundaries moved by ``offset`` (past int64: never reached)."""
    if not offset:
        return row
    moved = [b + offset for b in row["learning_rate_boundaries"]]
    kept = [b for b in moved if b <= INT64_MAX]
    values = row["learning_rate_values"][: len(kept) + 1]
    # A boundary moved below step 0 has been passed at every step: it and the values before it go.
    passed = sum(1 for b in kept if b <= 0)
    return {"learning_rate_boundaries": kept[passed:], "learning_rate_values": values[passed:]}


class _Table(NamedTuple):
    """The pieces of one kind: their columns among all pieces, stacked parameters and offsets (float)."""

    kind: Kind
    columns: tuple[int, ...]
    params: dict[str, np.ndarray]
    offsets: np.ndarray | None  # None: every offset is 0 (or the kind is ragged: offsets are in its boundaries)


class Plan:
    """Many configs evaluated together: one formula call per kind of piece, then a pick per config.

    Args:
        configs: the schedules.
        float_steps: the plan will be evaluated at float steps (piecewise
            boundaries as float edges rounded up); integer steps otherwise.

    Example:
        >>> seq = config_lib.LearningRate(sequence=[
        ...     {"learning_rate": {"constant": 1.0}, "num_steps": 2}, {"learning_rate": {"constant": 0.5}}])
        >>> Plan([seq, config_lib.LearningRate(constant=3.0)]).values(np, np.arange(4)[:, None]).tolist()
        [[1.0, 3.0], [1.0, 3.0], [0.5, 3.0], [0.5, 3.0]]
    """

    def __init__(self, configs: Sequence[config_lib.LearningRate], *, float_steps: bool = False) -> None:
        self.size = len(configs)
        self.float_steps = float_steps
        cut = [pieces(c) for c in configs]
        by_kind: dict[str, list[tuple[int, dict[str, Any], int]]] = {}
        column = 0
        for config_pieces in cut:
            for piece in config_pieces:
                kind, row = kind_of(piece.config)
                by_kind.setdefault(kind.name, []).append((column, row, piece.offset))
                column += 1
        self.tables: list[_Table] = []
        for name, members in by_kind.items():
            kind = KINDS[name]
            columns = tuple(c for c, _, _ in members)
            if kind.ragged:
                rows = [_shifted(row, offset) for _, row, offset in members]
                self.tables.append(_Table(kind, columns, stack(kind, rows, float_steps=float_steps), None))
            else:
                offsets = np.asarray([offset for _, _, offset in members], dtype=np.float64)
                params = stack(kind, [row for _, row, _ in members])
                self.tables.append(_Table(kind, columns, params, offsets if offsets.any() else None))
        order = np.concatenate([np.asarray(t.columns, dtype=np.int64) for t in self.tables])
        self._gather = None if np.array_equal(order, np.arange(order.size)) else np.argsort(order)
        # Which piece each config takes: a piecewise schedule of piece columns over the pieces' starts.
        self.selection: dict[str, np.ndarray] | None = None
        if any(len(p) > 1 for p in cut):
            first = np.cumsum([0] + [len(p) for p in cut[:-1]]).tolist()
            rows = [
                {
                    "learning_rate_boundaries": [p.start for p in config_pieces[1:]],
                    "learning_rate_values": [float(first[g] + i) for i in range(len(config_pieces))],
                }
                for g, config_pieces in enumerate(cut)
            ]
            self.selection = stack(KINDS["piecewise_constant"], rows, float_steps=float_steps)

    @property
    def widest(self) -> int:
        """The largest number of boundaries a piecewise table (or the selection) compares each step with."""
        tables = [t.params for t in self.tables if t.kind.ragged] + ([self.selection] if self.selection else [])
        return max((p["learning_rate_boundaries"].shape[-1] for p in tables), default=0)

    def values(
        self, xp: Any, step: Any, float_type: Any = np.float64, clip: Callable[[dict], dict] | None = None
    ) -> Any:
        """Every config at ``step``: ``step``'s shape with the configs as a last axis of their own.

        Args:
            xp: ``numpy`` or ``jax.numpy``.
            step: integer steps (float steps for a plan made with ``float_steps``),
                e.g. a ``(S, 1)`` column or a scalar count.
            float_type: the float type of the non-piecewise formulas' steps.
            clip: applied to piecewise parameters first (e.g. to fit a narrower integer step type).
        """
        prepare = clip or (lambda params: params)
        out = []
        for table in self.tables:
            if table.kind.ragged:
                out.append(xp.asarray(table.kind.formula(xp, step, **prepare(table.params)), float_type))
                continue
            local = xp.asarray(step).astype(float_type)
            if table.offsets is not None:
                local = local - table.offsets.astype(float_type)
            out.append(xp.asarray(table.kind.formula(xp, local, **table.params), float_type))
        joined = out[0] if len(out) == 1 else xp.concatenate(out, axis=-1)
        if self.selection is None:
            return joined if self._gather is None else xp.take(joined, self._gather, axis=-1)
        if self._gather is not None:
            joined = xp.take(joined, self._gather, axis=-1)
        picked = piecewise_constant_formula(xp, step, **prepare(self.selection)).astype(np.int32)
        return xp.take_along_axis(joined, picked, axis=-1) if joined.ndim else joined[picked]


def evaluate(configs: Sequence[config_lib.LearningRate], steps: Any) -> np.ndarray:
    """Every config at every step, in float64: an array of shape ``(len(steps), len(configs))``.

    One vectorised numpy evaluation per kind in use, whatever the number of
    configs or of distinct values. Integer steps are compared with piecewise
    boundaries exactly (int64); float steps against boundaries rounded up.
    """
    steps = np.asarray(steps)
    if steps.ndim != 1:
        raise ValueError(f"evaluate: steps must be one-dimensional, got shape {steps.shape}")
    float_steps = not np.issubdtype(steps.dtype, np.integer)
    column = (steps.astype(np.float64) if float_steps else steps.astype(np.int64))[:, None]
    plan = Plan(configs, float_steps=float_steps)
    out = np.empty((len(steps), len(configs)), dtype=np.float64)
    # Piecewise compares every step with every boundary: bound the temporary (steps x pieces x boundaries).
    pieces_count = sum(len(t.columns) for t in plan.tables)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, pieces_count * (plan.widest + 1)))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for start in range(0, len(steps), chunk):
            out[start : start + chunk] = plan.values(np, column[start : start + chunk])
    return out
