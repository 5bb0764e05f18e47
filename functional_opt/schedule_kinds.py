"""Schedule kinds as data: one parameter record and one formula per kind.

Each kind of :class:`~functional_opt.config.LearningRate` is a :class:`Kind`:
the names of its parameters, how to read them from a config, and one formula
``formula(xp, step, **parameters)`` written once against an array namespace
``xp`` (``jax.numpy`` on the pure side, ``numpy`` in float64 for tables). The
formula broadcasts, so it evaluates one schedule (scalar parameters) or a
stack of many schedules of the kind at once (parameters of shape ``(G,)``, steps
of shape ``(S, 1)``, result ``(S, G)``). Nothing is compiled per config:
:func:`evaluate` runs in numpy, and :func:`functional_opt.schedules.compute_lr`
jits one function per kind whose parameters are arguments.

The formulas, with ``s`` the step (0 for the first update):

* ``constant``: ``value``;
* ``piecewise_constant``: ``values[#{b in boundaries : b <= s}]`` (``bisect_right``);
* ``linear_ramp_to_constant``: ``learning_rate * min(1, s / num_ramp_steps)``;
* ``linear_ramp_to_cosine``: the ramp up to ``r = num_ramp_steps``, then
  ``f + (lr - f) * 0.5 * (1 + cos(pi * (s - r) / (T - r)))`` up to
  ``T = final_num_steps``, then ``f``.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from functional_opt import config as config_lib

__all__ = [
    "KINDS",
    "Kind",
    "constant_formula",
    "evaluate",
    "float_edges",
    "kind_of",
    "linear_ramp_to_constant_formula",
    "linear_ramp_to_cosine_formula",
    "piecewise_constant_formula",
    "stack",
]

INT64_MAX = int(np.iinfo(np.int64).max)
_CHUNK_ELEMENTS = 1 << 22


def _fraction(xp: Any, step: Any, ramp: Any) -> Any:
    """``min(1, step / ramp)``, exactly 1 from ``step == ramp`` on (so the peak is exactly the rate)."""
    return xp.where(step < ramp, xp.minimum(step / ramp, 1.0), 1.0)


def constant_formula(xp: Any, step: Any, value: Any) -> Any:
    """``value`` (``0 * step`` keeps the step in the graph, for grad and vmap)."""
    return value + 0 * step


def linear_ramp_to_constant_formula(xp: Any, step: Any, learning_rate: Any, num_ramp_steps: Any) -> Any:
    """``learning_rate * min(1, step / num_ramp_steps)``: 0 at step 0, ``learning_rate`` from the ramp's end."""
    return learning_rate * _fraction(xp, step, num_ramp_steps)


def linear_ramp_to_cosine_formula(
    xp: Any, step: Any, learning_rate: Any, final_learning_rate: Any, num_ramp_steps: Any, final_num_steps: Any
) -> Any:
    """The ramp, then the half cosine from ``learning_rate`` to ``final_learning_rate``, then the final rate."""
    ramp, final = num_ramp_steps, final_num_steps
    ramp_value = learning_rate * _fraction(xp, step, ramp)
    # Clipping keeps the unused branch finite, so gradients through where stay finite.
    decay_step = xp.clip(step, ramp, final)
    half_delta = (learning_rate - final_learning_rate) * 0.5
    cosine_value = final_learning_rate + half_delta * (1.0 + xp.cos(xp.pi * (decay_step - ramp) / (final - ramp)))
    # Rounding must not take the decay outside [final_learning_rate, learning_rate].
    low, high = xp.minimum(learning_rate, final_learning_rate), xp.maximum(learning_rate, final_learning_rate)
    cosine_value = xp.clip(cosine_value, low, high)
    return xp.where(
        step <= ramp, ramp_value, xp.where(step < final, cosine_value, final_learning_rate + 0 * cosine_value)
    )


def piecewise_constant_formula(xp: Any, step: Any, learning_rate_boundaries: Any, learning_rate_values: Any) -> Any:
    """``values[#{b <= step}]``: the value changes *at* each boundary (boundaries along the last axis)."""
    index = xp.sum(step[..., None] >= learning_rate_boundaries, axis=-1)
    positions = xp.arange(learning_rate_values.shape[-1])
    picked = xp.where(index[..., None] == positions, learning_rate_values, 0.0)
    return xp.sum(picked, axis=-1) + 0 * step


@dataclass(frozen=True)
class Kind:
    """One kind of schedule: its ``LearningRate`` field, its parameters and its formula."""

    name: str
    fields: tuple[str, ...]
    formula: Callable[..., Any]
    ragged: bool = False  # parameters of varying length (piecewise): padded when stacked

    def row(self, cfg: Any) -> dict[str, Any]:
        """The parameters of one config of this kind (the sub-config, or the number for ``constant``)."""
        if self.name == "constant":
            return {"value": float(cfg)}
        if self.ragged:
            return {
                "learning_rate_boundaries": [int(b) for b in cfg.learning_rate_boundaries or []],
                "learning_rate_values": [float(v) for v in cfg.learning_rate_values or []],
            }
        return {field: float(getattr(cfg, field)) for field in self.fields}


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("constant", ("value",), constant_formula),
        Kind(
            "piecewise_constant", ("learning_rate_boundaries", "learning_rate_values"), piecewise_constant_formula, True
        ),
        Kind("linear_ramp_to_constant", ("learning_rate", "num_ramp_steps"), linear_ramp_to_constant_formula),
        Kind(
            "linear_ramp_to_cosine",
            ("learning_rate", "final_learning_rate", "num_ramp_steps", "final_num_steps"),
            linear_ramp_to_cosine_formula,
        ),
    )
}
"""Every kind, by the name of its ``LearningRate`` field."""


def kind_of(lr_config: config_lib.LearningRate) -> tuple[Kind, dict[str, Any]]:
    """The kind of a ``LearningRate`` and its parameters.

    Example:
        >>> kind, row = kind_of(config_lib.LearningRate(constant=0.25))
        >>> kind.name, row
        ('constant', {'value': 0.25})
    """
    for name, kind in KINDS.items():
        cfg = getattr(lr_config, name)
        if cfg is not None:
            return kind, kind.row(cfg)
    raise ValueError(f"kind_of: no schedule set in {lr_config!r}")  # unreachable for a validated LearningRate


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
    out = np.empty((len(steps), len(configs)), dtype=np.float64)
    by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for index, lr_config in enumerate(configs):
        kind, row = kind_of(lr_config)
        by_kind.setdefault(kind.name, []).append((index, row))
    with np.errstate(invalid="ignore", divide="ignore"):
        for name, members in by_kind.items():
            kind = KINDS[name]
            params = stack(kind, [row for _, row in members], float_steps=float_steps)
            columns = [index for index, _ in members]
            step = column if kind.ragged else column.astype(np.float64)
            # Piecewise compares every step with every boundary: bound the temporary (steps x groups x boundaries).
            width = params["learning_rate_boundaries"].shape[-1] + 1 if kind.ragged else 1
            chunk = max(1, _CHUNK_ELEMENTS // max(1, len(members) * width))
            for start in range(0, len(steps), chunk):
                out[start : start + chunk, columns] = kind.formula(np, step[start : start + chunk], **params)
    return out
