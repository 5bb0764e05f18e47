"""Schedule kinds as data: one parameter record and one formula per kind.

Each kind of :class:`~functional_opt.config.LearningRate` is a :class:`Kind`:
the names of its parameters, how to read them from a config, and one formula
``formula(xp, step, **parameters)`` (:mod:`functional_opt.schedule_formulas`)
written once against an array namespace ``xp`` (``jax.numpy`` on the pure
side, ``numpy`` in float64 for tables). The formula broadcasts, so it
evaluates one schedule (scalar parameters) or a stack of many schedules of the
kind at once. Nothing is compiled per config: :func:`evaluate` runs in numpy,
and the JAX consumers call the same formulas with the parameters as arrays.

A ``sequence`` has no formula of its own: :mod:`functional_opt.schedule_plan`
cuts it into pieces of the other kinds. A ``multi_step`` schedule is a
piecewise one whose values are ``learning_rate * gamma ** k``.

Example:
    >>> kind, row = kind_of(config_lib.LearningRate(multi_step={"learning_rate": 1.0, "milestones": [3], "gamma": 0.5}))
    >>> kind.formula is piecewise_constant_formula, row
    (True, {'learning_rate_boundaries': [3], 'learning_rate_values': [1.0, 0.5]})
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedule_config_common as common
from functional_opt import schedule_formulas as formulas
from functional_opt.schedule_formulas import (
    constant_formula,
    linear_ramp_to_constant_formula,
    linear_ramp_to_cosine_formula,
    piecewise_constant_formula,
)

__all__ = [
    "INT64_MAX",
    "KINDS",
    "Kind",
    "constant_formula",
    "float_edges",
    "kind_of",
    "linear_ramp_to_constant_formula",
    "linear_ramp_to_cosine_formula",
    "piecewise_constant_formula",
    "stack",
]

INT64_MAX = int(np.iinfo(np.int64).max)


def _numbers(*fields: str) -> Callable[[Any], dict[str, Any]]:
    """A reader taking ``fields`` of a config section as floats."""
    return lambda cfg: {field: float(getattr(cfg, field)) for field in fields}


def _piecewise_row(cfg: config_lib.PiecewiseConstant) -> dict[str, Any]:
    return {
        "learning_rate_boundaries": [int(b) for b in cfg.learning_rate_boundaries or []],
        "learning_rate_values": [float(v) for v in cfg.learning_rate_values or []],
    }


def _multi_step_row(cfg: common.MultiStep) -> dict[str, Any]:
    """``learning_rate * gamma ** k`` after the ``k``-th milestone (a repeated one counts each time)."""
    boundaries = sorted(set(cfg.milestones))
    passed = np.cumsum([cfg.milestones.count(b) for b in boundaries]).tolist()
    values = [cfg.learning_rate] + [cfg.learning_rate * cfg.gamma**k for k in passed]
    return {"learning_rate_boundaries": boundaries, "learning_rate_values": [float(v) for v in values]}


def _warmup_stable_decay_row(cfg: common.WarmupStableDecay) -> dict[str, Any]:
    row = _numbers("learning_rate", "final_learning_rate", "num_warmup_steps", "num_stable_steps", "num_decay_steps")
    return {**row(cfg), "decay_shape": float(common.DECAY_SHAPES.index(cfg.decay_shape)), "power": cfg.exponent}


def _exponential_decay_row(cfg: common.ExponentialDecay) -> dict[str, Any]:
    row = _numbers("learning_rate", "decay_rate", "transition_steps", "transition_begin")(cfg)
    final = cfg.final_learning_rate
    return {
        **row,
        "staircase": float(cfg.staircase),
        "has_final": float(final is not None),
        "final_learning_rate": 0.0 if final is None else float(final),
    }


def _one_cycle_row(cfg: common.OneCycle) -> dict[str, Any]:
    ends = cfg.phase_ends
    return {
        "initial_learning_rate": cfg.initial_learning_rate,
        "max_learning_rate": float(cfg.max_learning_rate),
        "min_learning_rate": cfg.min_learning_rate,
        "first_end": ends[0],
        "second_end": ends[1] if cfg.three_phase else ends[0],
        "last_end": ends[-1],
        "three_phase": float(cfg.three_phase),
        "linear": float(cfg.anneal_strategy == "linear"),
    }


@dataclass(frozen=True)
class Kind:
    """One kind of schedule: its ``LearningRate`` field, its parameters, how to read them, and its formula."""

    name: str
    fields: tuple[str, ...]
    formula: Callable[..., Any]
    read: Callable[[Any], dict[str, Any]]
    ragged: bool = False  # piecewise parameters (boundaries and values of varying length): padded when stacked

    def row(self, cfg: Any) -> dict[str, Any]:
        """The parameters of one config section of this kind (the number itself for ``constant``)."""
        return self.read(cfg)


_PIECEWISE_FIELDS = ("learning_rate_boundaries", "learning_rate_values")

KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("constant", ("value",), constant_formula, lambda value: {"value": float(value)}),
        Kind("piecewise_constant", _PIECEWISE_FIELDS, piecewise_constant_formula, _piecewise_row, True),
        Kind(
            "linear_ramp_to_constant",
            ("learning_rate", "num_ramp_steps"),
            linear_ramp_to_constant_formula,
            _numbers("learning_rate", "num_ramp_steps"),
        ),
        Kind(
            "linear_ramp_to_cosine",
            ("learning_rate", "final_learning_rate", "num_ramp_steps", "final_num_steps"),
            linear_ramp_to_cosine_formula,
            _numbers("learning_rate", "final_learning_rate", "num_ramp_steps", "final_num_steps"),
        ),
        Kind(
            "linear",
            ("initial_learning_rate", "final_learning_rate", "num_steps"),
            formulas.linear_formula,
            _numbers("initial_learning_rate", "final_learning_rate", "num_steps"),
        ),
        Kind(
            "warmup_stable_decay",
            (
                "learning_rate",
                "final_learning_rate",
                "num_warmup_steps",
                "num_stable_steps",
                "num_decay_steps",
                "decay_shape",
                "power",
            ),
            formulas.warmup_stable_decay_formula,
            _warmup_stable_decay_row,
        ),
        Kind(
            "exponential_decay",
            (
                "learning_rate",
                "decay_rate",
                "transition_steps",
                "transition_begin",
                "staircase",
                "has_final",
                "final_learning_rate",
            ),
            formulas.exponential_decay_formula,
            _exponential_decay_row,
        ),
        Kind("multi_step", _PIECEWISE_FIELDS, piecewise_constant_formula, _multi_step_row, True),
        Kind(
            "cosine_restarts",
            ("learning_rate", "final_learning_rate", "cycle_steps", "cycle_mult"),
            formulas.cosine_restarts_formula,
            _numbers("learning_rate", "final_learning_rate", "cycle_steps", "cycle_mult"),
        ),
        Kind(
            "one_cycle",
            (
                "initial_learning_rate",
                "max_learning_rate",
                "min_learning_rate",
                "first_end",
                "second_end",
                "last_end",
                "three_phase",
                "linear",
            ),
            formulas.one_cycle_formula,
            _one_cycle_row,
        ),
        Kind(
            "inverse_sqrt",
            ("learning_rate", "timescale"),
            formulas.inverse_sqrt_formula,
            _numbers("learning_rate", "timescale"),
        ),
    )
}
"""Every kind with a formula, by the name of its ``LearningRate`` field (``sequence`` is cut into these)."""


def kind_of(lr_config: config_lib.LearningRate) -> tuple[Kind, dict[str, Any]]:
    """The kind of a ``LearningRate`` other than a ``sequence``, and its parameters.

    Example:
        >>> kind, row = kind_of(config_lib.LearningRate(constant=0.25))
        >>> kind.name, row
        ('constant', {'value': 0.25})
    """
    name = lr_config.schedule_name
    if name not in KINDS:
        raise ValueError(f"kind_of: a {name} schedule has no formula of its own: cut it into pieces first")
    return KINDS[name], KINDS[name].row(getattr(lr_config, name))


def float_edges(boundaries: Sequence[int], dtype: Any) -> np.ndarray:
    """Each boundary rounded *up* to ``dtype``: for a float step ``x``, ``x >= edge`` iff ``x >= boundary``.

    Rounding to nearest instead would move a boundary that ``dtype`` cannot
    represent (e.g. ``2**24 + 1`` in float32) below its true value.
    """
    dtype = np.dtype(dtype)
    up = np.asarray(np.inf, dtype)
    down = np.asarray(-np.inf, dtype)
    edges = []
    with np.errstate(over="ignore"):  # a boundary beyond dtype's range becomes inf: never reached
        for boundary in boundaries:
            edge = np.asarray(float(boundary)).astype(dtype)
            while float(edge) < boundary:
                edge = np.nextafter(edge, up)
            while float(np.nextafter(edge, down)) >= boundary:
                edge = np.nextafter(edge, down)
            edges.append(edge)
    return np.asarray(edges, dtype=dtype)


def stack(kind: Kind, rows: Sequence[dict[str, Any]], *, float_steps: bool = False, width: int | None = None) -> dict:
    """The parameters of several schedules of ``kind`` as numpy arrays with a leading group axis.

    Piecewise rows are padded to ``width`` boundaries (default: the longest row)
    with boundaries that are never reached and their last value. With
    ``float_steps`` the boundaries are float64 edges rounded up (see
    :func:`float_edges`), for comparison with float steps.
    """
    if not kind.ragged:
        return {field: np.asarray([row[field] for row in rows], dtype=np.float64) for field in kind.fields}
    longest = max((len(row["learning_rate_boundaries"]) for row in rows), default=0)
    width = longest if width is None else max(width, longest)
    never = np.inf if float_steps else INT64_MAX
    boundaries = np.full((len(rows), width), never, dtype=np.float64 if float_steps else np.int64)
    values = np.empty((len(rows), width + 1), dtype=np.float64)
    for g, row in enumerate(rows):
        edges, rates = row["learning_rate_boundaries"], row["learning_rate_values"]
        if edges:
            boundaries[g, : len(edges)] = float_edges(edges, np.float64) if float_steps else edges
        values[g, : len(rates)] = rates
        values[g, len(rates) :] = rates[-1]
    return {"learning_rate_boundaries": boundaries, "learning_rate_values": values}
