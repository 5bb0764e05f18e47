"""Pieces of a converted schedule: validated configs, the steps they stop following, the values read.

Shared by :mod:`torch_bridge.from_torch` and :mod:`torch_bridge.from_torchrec`.
A converter reads a framework's parameters with :func:`rate`, :func:`integer`
and :func:`factor` (each refuses a value no config expresses, naming the
field), builds configs with :func:`make` (a config's own refusal becomes an
error naming the scheduler and the param group) and joins them with
:func:`join`; a :class:`Converted` carries the steps from which a config no
longer follows the framework, which :func:`warn_limits` reports.

Example:
    >>> where = Where("StepLR", "0")
    >>> staircase(where, 0.1, 0.5, 10).learning_rate.exponential_decay.transition_steps
    10
    >>> integer(2.5, "step_size", where)
    Traceback (most recent call last):
    ...
    ValueError: learning_rates_from_torch: StepLR: step_size=2.5 must be an integer: a config counts whole steps
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pydantic
import torch

from functional_opt import config
from functional_opt.config_values import FLOAT32_MAX

__all__ = [
    "Converted",
    "Where",
    "factor",
    "group_keys",
    "integer",
    "join",
    "line",
    "make",
    "rate",
    "staircase",
    "warn_limits",
]


class Converted(NamedTuple):
    """One group's config and the steps from which it no longer follows the framework.

    Attributes:
        learning_rate: the config.
        limits: ``(step, why)`` pairs, ``step`` counted in the config's own steps.
    """

    learning_rate: config.LearningRate
    limits: tuple[tuple[int, str], ...] = ()


class Where(NamedTuple):
    """What an error names: the scheduler (with its place in a SequentialLR) and the param group."""

    owner: str
    group: str

    def fail(self, message: str, error: type[Exception] = ValueError) -> None:
        raise error(f"learning_rates_from_torch: {self.owner}: {message}")


def group_keys(groups: Sequence[Mapping[str, Any]], owner: str) -> list[str]:
    """Each group's ``"name"`` entry, else its index as a string; duplicates are refused."""
    keys = []
    for i, group in enumerate(groups):
        name = group.get("name")
        if name is not None and not isinstance(name, str):
            Where(owner, str(i)).fail(f"param group {i} has a 'name' that is not a string: {name!r}")
        keys.append(str(i) if name is None else name)
    repeated = sorted({k for k in keys if keys.count(k) > 1})
    if repeated:
        Where(owner, "").fail(
            f"param groups share the keys {repeated} (a group is keyed by its 'name', else its index)"
        )
    return keys


def warn_limits(owner: str, limits: Mapping[tuple[int, str], list[str]]) -> None:
    """One ``UserWarning`` per distinct limit, naming the groups and the first step the config misses."""
    for (step, why), keys in sorted(limits.items()):
        warnings.warn(
            f"learning_rates_from_torch: {owner}: the config of param group(s) {keys} follows it for steps "
            f"0 .. {step - 1} only; from step {step}: {why}",
            UserWarning,
            stacklevel=3,
        )


def make(where: Where, **data: Any) -> config.LearningRate:
    """A validated ``LearningRate``; a config's refusal becomes a ValueError naming the scheduler and group."""
    try:
        return config.LearningRate.model_validate(data)
    except pydantic.ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(
            f"learning_rates_from_torch: {where.owner}, param group {where.group!r}: its rates cannot be "
            f"written as a config: {detail}"
        ) from None


def join(where: Where, parts: Sequence[tuple[Converted, int | None, int]]) -> Converted:
    """``(converted, num_steps, from_step)`` parts one after the other (a ``sequence`` when more than one).

    Limits are moved to the joined steps; those past a part's end are dropped.
    """
    if len(parts) == 1 and parts[0][2] == 0:
        return parts[0][0]
    segments: list[dict[str, Any]] = []
    limits: list[tuple[int, str]] = []
    start = 0
    for converted, num_steps, from_step in parts:
        segment: dict[str, Any] = {"learning_rate": converted.learning_rate, "from_step": from_step}
        if num_steps is not None:
            segment["num_steps"] = num_steps
        segments.append(segment)
        for step, why in converted.limits:
            at = start + max(step - from_step, 0)
            if num_steps is None or at < start + num_steps:
                limits.append((at, why))
        start += num_steps or 0
    return Converted(make(where, sequence=segments), tuple(limits))


def rate(value: Any, field: str, where: Where) -> float:
    """A learning rate as a float (a one-element tensor is read as its value)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        where.fail(f"{field}={value!r} is not a number")
    return float(value)


def integer(value: Any, field: str, where: Where, minimum: int | None = None) -> int:
    """A whole step count (an integral float is taken), at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        where.fail(f"{field}={value!r} must be an integer: a config counts whole steps")
    if minimum is not None and value < minimum:
        where.fail(f"{field}={value!r} must be >= {minimum}")
    return int(value)


def factor(value: Any, field: str, where: Where) -> float:
    """A finite factor >= 0 (a negative one gives negative rates)."""
    number = rate(value, field, where)
    if not math.isfinite(number) or number < 0:
        where.fail(f"{field}={value!r} must be a finite number >= 0 (a config holds no negative rates)")
    return number


def line(where: Where, first: float, last: float, num_steps: int) -> config.LearningRate:
    """From ``first`` at step 0 to ``last`` at ``num_steps``, then ``last`` (a ramp from 0 keeps its precision)."""
    if first == 0:
        return make(where, linear_ramp_to_constant={"learning_rate": last, "num_ramp_steps": num_steps})
    return make(where, linear={"initial_learning_rate": first, "final_learning_rate": last, "num_steps": num_steps})


def staircase(where: Where, learning_rate: float, decay: float, every: int, stairs: bool = True) -> Converted:
    """``learning_rate * decay ** (s // every)`` (``s / every`` without ``stairs``); growth is held at float32's max."""
    if decay == 0:
        values = [learning_rate, 0.0]
        return Converted(
            make(where, piecewise_constant={"learning_rate_boundaries": [every], "learning_rate_values": values})
        )
    data: dict[str, Any] = {"learning_rate": learning_rate, "decay_rate": decay, "transition_steps": every}
    data["staircase"] = stairs
    limits: tuple[tuple[int, str], ...] = ()
    if decay > 1:
        data["final_learning_rate"] = FLOAT32_MAX
        n = _first_power_over(learning_rate, decay)
        if n is not None:
            why = f"the rate passes float32's maximum {FLOAT32_MAX:.6g}, where the config holds it"
            limits = ((n * every, why),)
    return Converted(make(where, exponential_decay=data), limits)


def _first_power_over(learning_rate: float, decay: float) -> int | None:
    """The least ``n`` with ``learning_rate * decay ** n > FLOAT32_MAX`` (None when the rate is 0)."""
    if learning_rate <= 0:
        return None

    def value(n: int) -> float:
        try:
            return learning_rate * decay**n
        except OverflowError:
            return math.inf

    n = max(0, math.floor(math.log(FLOAT32_MAX / learning_rate) / math.log(decay)))
    while n > 0 and value(n - 1) > FLOAT32_MAX:
        n -= 1
    while value(n) <= FLOAT32_MAX:
        n += 1
    return n
