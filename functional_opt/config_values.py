"""Field types and value checks of the config schema (:mod:`functional_opt.config`).

* :data:`Number` and :data:`Integer`: strict numbers. A boolean (YAML reads
  ``yes``, ``on``, ``true`` as booleans) or a string where a number is expected
  is refused, never converted; an integer field takes an integral float
  (``10.0`` is 10, as TML's schema does) and refuses ``10.5``; step counts lie
  within int64 (:data:`MAX_STEP`).
* The checks of learning rates, ``eps`` and betas, and of tower names
  (:data:`RESERVED_GROUP_NAMES`, no empty names, no whitespace or control characters).

Every check raises ``ValueError`` with a message pydantic places under the
field's dotted path; no message shows more than a short excerpt of a value.

Example:
    >>> import pydantic
    >>> class Ramp(pydantic.BaseModel):
    ...     steps: Integer
    >>> Ramp(steps=10.0).steps
    10
    >>> Ramp(steps="10")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Ramp
    steps
      Value error, Input should be a valid integer, got the string '10' (a quoted number is a string: ...
    ...
"""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, Field

from functional_opt.yaml_loading import short_repr as _short

__all__ = [
    "FLOAT32_MAX",
    "MAX_STEP",
    "RESERVED_GROUP_NAMES",
    "Integer",
    "NonNegativeInteger",
    "Number",
    "PositiveInteger",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)

MAX_STEP = 2**63 - 1
"""Largest step count a config may give (int64: no step counter reaches further)."""

RESERVED_GROUP_NAMES = ("backbone", "dense_ebc", "single_task", "embeddings")
"""Group names the library gives itself (``grouping.BACKBONE``, ``grouping.DENSE_EMBEDDINGS``,
``grouping.SINGLE_TASK`` and ``config_file.EMBEDDINGS``, the label of the embedding schedule):
no tower may take one."""


def _strict_number(value: Any) -> float:
    """A number as a float; booleans, strings and anything else are refused, never converted."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(
            f"Input should be a valid number, got the boolean {value!r} "
            "(YAML reads yes/no/on/off/true/false as booleans)"
        )
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return float(value)
        except OverflowError:
            raise ValueError(f"Input should be a number within float range, got {_short(value)}") from None
    if isinstance(value, str):
        raise ValueError(f"Input should be a valid number, got the string {_short(value)}{_hint(value)}")
    raise ValueError(f"Input should be a valid number, got {type(value).__name__} {_short(value)}")


def _strict_integer(value: Any) -> int:
    """An integer; an integral float (``10.0``) is taken as that integer, ``10.5``, booleans and strings are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Input should be a valid integer, got the boolean {value!r}")
    if isinstance(value, (int, np.integer)):
        return _within_steps(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value) and float(value).is_integer():
            return _within_steps(int(value))
        raise ValueError(f"Input should be a valid integer, got {value!r}")
    if isinstance(value, str):
        raise ValueError(f"Input should be a valid integer, got the string {_short(value)}{_hint(value)}")
    raise ValueError(f"Input should be a valid integer, got {type(value).__name__} {_short(value)}")


def _within_steps(value: int) -> int:
    if abs(value) > MAX_STEP:
        digits = len(str(abs(value)))
        shown = str(value) if digits <= 30 else f"an integer of {digits} digits"
        raise ValueError(f"Input should be a step count within int64 (|n| <= 2**63 - 1), got {shown}")
    return value


def _hint(text: str) -> str:
    try:
        float(text)
    except ValueError:
        return ""
    return " (a quoted number is a string: write it without quotes)"


Number = Annotated[float, BeforeValidator(_strict_number)]
"""A float field that takes ints and floats only (no booleans, no strings)."""
Integer = Annotated[int, BeforeValidator(_strict_integer)]
"""An int field that takes ints and integral floats only."""
PositiveInteger = Annotated[int, BeforeValidator(_strict_integer), Field(gt=0)]
"""An :data:`Integer` > 0."""
NonNegativeInteger = Annotated[int, BeforeValidator(_strict_integer), Field(ge=0)]
"""An :data:`Integer` >= 0."""


def _check_group_name(name: Any) -> str | None:
    """Why ``name`` cannot name a tower, or None when it can."""
    if not isinstance(name, str):
        return f"a tower name must be a string, got {type(name).__name__} {_short(name)}"
    shown = _short(name)
    if not name:
        return "a tower name must not be empty"
    if name in RESERVED_GROUP_NAMES:
        return f"tower name {shown} is reserved for a built-in group (reserved: {', '.join(RESERVED_GROUP_NAMES)})"
    bad = [c for c in name if c.isspace() or unicodedata.category(c).startswith(("C", "Z"))]
    if bad:
        return (
            f"tower name {shown} holds whitespace or control characters ({_short(bad[0])}); "
            "a tower name is matched inside parameter names, which have none"
        )
    return None


def _check_learning_rate(value: float, field: str) -> float:
    """Validates one learning-rate value: finite, non-negative, representable in float32."""
    if not math.isfinite(value):
        raise ValueError(f"{field}={value!r} must be a finite number")
    if value < 0:
        raise ValueError(f"{field}={value!r} must be >= 0")
    if value > FLOAT32_MAX:
        raise ValueError(
            f"{field}={value!r} does not fit in float32 (max {FLOAT32_MAX:.6g}); "
            "a schedule evaluated in float32 would overflow to inf"
        )
    return float(value)


def _check_eps(value: float, field: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{field}={value!r} must be a finite number >= 0")
    return float(value)


def _check_beta(value: float, field: str) -> float:
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{field}={value!r} must be in [0, 1)")
    return float(value)
