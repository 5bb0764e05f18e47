"""What a torch scheduler of this package keeps of each schedule, and how two of them are compared.

A schedule given to :class:`~torch_bridge.schedulers.LRShim` is either a
:class:`~functional_opt.config.LearningRate` config, recorded as the config
itself, or a callable (any ``optax.Schedule``), recorded by its qualified name
and its float64 values at :data:`PROBE_STEPS`. The values tell two callables of
the same name apart (two warmup-cosine schedules with other numbers), so a
state saved with another schedule is refused; they also check, when the
scheduler is built, that the callable gives a finite, non-negative scalar.

Example:
    >>> import optax
    >>> _, record = resolve("LRShim", "w", optax.constant_schedule(0.5))
    >>> record["callable"], record["values"][:2]
    ('optax.schedules._schedule.constant_schedule.<locals>.<lambda>', [0.5, 0.5])
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedules as schedules_lib

__all__ = [
    "PROBE_STEPS",
    "LearningRateSpec",
    "Resolved",
    "check_value",
    "compare_records",
    "copy_record",
    "differences",
    "resolve",
    "shown",
]

LearningRateSpec: TypeAlias = config_lib.LearningRate | Mapping[str, Any] | schedules_lib.Schedule
"""A ``LearningRate`` config, a mapping that validates as one, or any ``optax.Schedule``."""

Resolved: TypeAlias = tuple[config_lib.LearningRate | schedules_lib.Schedule, dict[str, Any]]
"""A schedule (a config, evaluated as data, or a callable) and the JSON-able record ``state_dict`` keeps of it."""

PROBE_STEPS = (0, 1, 2, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
"""Steps at which a callable schedule is evaluated to record (and check) it."""

_RELATIVE = 1e-12
_SHOWN = 200


def _callable_id(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a schedule callable."""
    module = getattr(fn, "__module__", None) or type(fn).__module__
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


def shown(value: Any, limit: int = _SHOWN) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message never prints a whole hostile value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_value(owner: str, name: str, step: int, value: Any) -> float:
    """``value`` as a float when it is a finite, non-negative scalar learning rate.

    Raises:
        ValueError: naming the group, the step and the value otherwise.

    Example:
        >>> check_value("LRShim", "w", 3, -1.0)
        Traceback (most recent call last):
        ...
        ValueError: LRShim: the schedule of 'w' gives -1.0 at step 3; a learning rate must be a finite scalar >= 0
    """
    shape = getattr(value, "shape", ())
    ok = shape == () and not isinstance(value, bool | str | bytes)
    if ok:
        try:
            number = float(value)
        except (TypeError, ValueError):
            ok = False
        else:
            ok = math.isfinite(number) and number >= 0.0
    if not ok:
        text = shown(np.asarray(value).tolist() if hasattr(value, "shape") else value)
        raise ValueError(
            f"{owner}: the schedule of {name!r} gives {text} at step {step}; "
            "a learning rate must be a finite scalar >= 0"
        )
    return number


def _probe(owner: str, name: str, fn: Callable[..., Any]) -> list[float]:
    values = []
    with jax.enable_x64(True):
        for step in PROBE_STEPS:
            try:
                value = fn(jnp.asarray(step, jnp.int64))
            except Exception as exc:
                raise ValueError(f"{owner}: the schedule of {name!r} fails at step {step}: {exc}") from None
            values.append(check_value(owner, name, step, value))
    return values


def resolve(owner: str, name: str, value: Any) -> Resolved:
    """The schedule for ``value`` (a validated config or the callable) and the JSON-able record kept in ``state_dict``.

    Raises:
        ValueError: a mapping that is not a valid ``LearningRate``, or a callable
            that fails or gives something other than a finite scalar >= 0 at one of
            :data:`PROBE_STEPS`.
        TypeError: neither a config, a mapping nor a callable.
    """
    # A config is recognised before the Mapping test: a type's first isinstance(x, Mapping) costs about 0.2 ms.
    if not isinstance(value, config_lib.LearningRate) and isinstance(value, Mapping):
        try:
            value = config_lib.LearningRate.model_validate(dict(value))
        except Exception as exc:  # pydantic.ValidationError
            raise ValueError(f"{owner}: learning rate {name!r} is not a valid LearningRate: {exc}") from None
    if isinstance(value, config_lib.LearningRate):
        return value, {"config": value.model_dump(mode="json")}
    if callable(value):
        return value, {
            "callable": _callable_id(value),
            "steps": list(PROBE_STEPS),
            "values": _probe(owner, name, value),
        }
    raise TypeError(
        f"{owner}: learning rate {name!r} must be a LearningRate config or a schedule callable, "
        f"got {type(value).__name__}"
    )


def copy_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of a record (``state_dict`` never hands out the live one)."""
    return copy.deepcopy(dict(record))


def differences(expected: Sequence[str], got: Sequence[str]) -> str:
    """The names missing from ``got`` and the extra ones, or the two orders when only the order differs."""
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    parts = []
    if missing:
        parts.append(f"missing: {missing}")
    if extra:
        parts.append(f"extra: {extra}")
    if not parts:
        parts.append(f"same names in a different order: expected {list(expected)}, got {list(got)}")
    return "; ".join(parts)


def _configshown(cfg: config_lib.LearningRate) -> str:
    return shown(cfg.model_dump(mode="json", exclude_none=True))


def _callable_problem(what: str, name: str, record: Mapping[str, Any], other: Mapping[str, Any]) -> str | None:
    if other.get("callable") != record["callable"]:
        return f"{what}[{name!r}]: saved {shown(other.get('callable'))}, current {record['callable']!r}"
    saved_values = other.get("values")
    if saved_values is None:  # a record without values: only the name can be compared
        return None
    if other.get("steps", list(PROBE_STEPS)) != record["steps"] or not isinstance(saved_values, list):
        return f"{what}[{name!r}]: the saved record of {record['callable']!r} is malformed"
    for step, saved, current in zip(record["steps"], saved_values, record["values"], strict=False):
        if not isinstance(saved, int | float) or abs(saved - current) > _RELATIVE * max(1.0, abs(current)):
            return (
                f"{what}[{name!r}]: {record['callable']!r} is another schedule than the saved one "
                f"(at step {step}: saved {shown(saved)}, current {current!r})"
            )
    if len(saved_values) != len(record["values"]):
        return f"{what}[{name!r}]: the saved record of {record['callable']!r} is malformed"
    return None


def compare_records(what: str, current: Mapping[str, Mapping[str, Any]], saved: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the current and the saved learning-rate records."""
    problems: list[str] = []
    if list(current) != list(saved):
        problems.append(f"{what} names differ ({differences(list(current), [str(k) for k in saved])})")
    for name, record in current.items():
        if name not in saved:
            continue
        other = saved[name]
        if not isinstance(other, Mapping):
            problems.append(f"{what}[{name!r}]: saved entry {shown(other)} is not a learning-rate record")
            continue
        if "config" in record:
            if "config" not in other:
                problems.append(f"{what}[{name!r}]: saved {shown(dict(other))}, current is a LearningRate config")
                continue
            try:
                saved_cfg = config_lib.LearningRate.model_validate(other["config"])
            except Exception as exc:  # pydantic.ValidationError
                problems.append(f"{what}[{name!r}]: saved config is invalid: {shown(str(exc))}")
                continue
            current_cfg = config_lib.LearningRate.model_validate(record["config"])
            if saved_cfg != current_cfg:
                problems.append(
                    f"{what}[{name!r}]: saved {_configshown(saved_cfg)}, current {_configshown(current_cfg)}"
                )
        elif "callable" not in other:
            problems.append(f"{what}[{name!r}]: saved {shown(dict(other))}, current is a callable")
        else:
            problem = _callable_problem(what, name, record, other)
            if problem:
                problems.append(problem)
    return problems
