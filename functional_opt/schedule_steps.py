"""How a schedule reads its step: conversion, checks and the float type, shared by every schedule factory.

A step is a number (a boolean is refused); an integer step too large for JAX's
default integer type is taken as a float, never wrapped around; a concrete
integer step (a Python int, a numpy integer) can be kept on the host so that
piecewise boundaries are compared with it exactly.

Example:
    >>> int(as_array(7)), host_integer_step(7), host_integer_step(7.0)
    (7, 7, None)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib

__all__ = [
    "EXACT_JNP",
    "Schedule",
    "as_array",
    "as_float",
    "check_lr",
    "check_steps",
    "float_dtype",
    "host_integer_step",
    "shown",
]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]
"""A function of the step count returning the learning rate (``optax.Schedule``)."""


class _ExactDivision:
    """``jax.numpy`` whose ``divide`` is a true, correctly rounded division.

    XLA rewrites a division by a constant or by a broadcast value into a
    multiplication by its reciprocal (measured on CPU in float64: 546 of
    ``arange(1000) / 499.0`` differ from the quotient, e.g. ``499 / 499.0 ->
    0.9999999999999999``), which moves a schedule's restarts and boundaries by
    a step and magnifies near the end of a decay (``1 - s / T``). The divisor
    is broadcast to the result's shape behind an optimization barrier, so the
    division stays a division of two arrays.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(jnp, name)

    @staticmethod
    def divide(a: Any, b: Any) -> jax.Array:
        a, b = jnp.asarray(a), jnp.asarray(b)
        dtype = jnp.result_type(a, b)
        shape = jnp.broadcast_shapes(a.shape, b.shape)
        divisor = jax.lax.optimization_barrier(jnp.broadcast_to(b.astype(dtype), shape))
        return jnp.broadcast_to(a.astype(dtype), shape) / divisor


EXACT_JNP: Any = _ExactDivision()
"""The array namespace the JAX side evaluates the schedule formulas with (see :class:`_ExactDivision`)."""


def float_dtype() -> Any:
    """JAX's default float type now: float32, or float64 when x64 is enabled."""
    return jnp.result_type(float)


def as_array(count: jax.typing.ArrayLike) -> jax.Array:
    """The step as an array, never silently wrapped around.

    Integer steps (Python ints, numpy scalars and arrays) that do not fit JAX's
    default integer type (int32, or int64 under x64) are taken as floats
    instead of being truncated. Steps that are already JAX arrays or tracers
    are returned as they are.
    """
    if isinstance(count, (bool, np.bool_)) or getattr(count, "dtype", None) == np.bool_:
        raise TypeError(f"schedule: the step must be a number, got the boolean {shown(count)}")
    if isinstance(count, jax.Array):
        if not jnp.issubdtype(count.dtype, jnp.number):
            raise TypeError(f"schedule: the step must be a number, got an array of {count.dtype}")
        return count
    if isinstance(count, int):
        info = np.iinfo(jax.dtypes.canonicalize_dtype(np.int64))
        return jnp.asarray(count if info.min <= count <= info.max else float(count))
    array = np.asarray(count)
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"schedule: the step must be a number, got {shown(count)}")
    if np.issubdtype(array.dtype, np.integer):
        info = np.iinfo(jax.dtypes.canonicalize_dtype(array.dtype))
        if array.size and (array.min() < info.min or array.max() > info.max):
            array = array.astype(np.float64)
    return jnp.asarray(array)


def shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for messages."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def host_integer_step(count: Any) -> int | np.ndarray | None:
    """``count`` when it is a concrete integer step (a Python int, a numpy integer scalar or array), else None."""
    if isinstance(count, (bool, np.bool_, jax.Array)) or isinstance(count, jax.core.Tracer):
        return None
    if isinstance(count, int):
        return count
    if isinstance(count, (np.integer, np.ndarray)) and np.issubdtype(np.asarray(count).dtype, np.integer):
        return np.asarray(count)
    return None


def as_float(count: jax.typing.ArrayLike) -> jax.Array:
    """The step in JAX's default float type."""
    return as_array(count).astype(float_dtype())


def check_lr(name: str, field: str, value: float) -> float:
    """``value`` as a learning rate (finite, >= 0, within float32), else ValueError naming ``name`` and ``field``."""
    try:
        return config_lib._check_learning_rate(float(value), field)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def check_steps(name: str, field: str, value: int) -> int:
    """``value`` as a positive integer step count, else ValueError naming ``name`` and ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: {field}={value!r} must be a positive integer")
    return int(value)
