"""Float64 values of several schedules, evaluated a block of steps at a time.

A jitted JAX call costs about 12 us from Python, far more than torch spends on
a whole scheduler step. :class:`ScheduleTable` therefore evaluates all of its
schedules over a block of consecutive steps at once, keeps the block as Python
floats, and answers every later step of the block with a list lookup.

Schedules given as :class:`~functional_opt.config.LearningRate` configs are
evaluated as data (:func:`functional_opt.schedule_plan.evaluate`: one numpy
float64 evaluation per kind, nothing compiled, whatever the number of groups
or of distinct values); schedules given as callables (any ``optax.Schedule``)
in one ``jit(vmap(...))`` call per block, compiled once per table. Both agree
with the scalar JAX schedules to about 1e-16 relative.

Example:
    >>> from functional_opt import config, schedules
    >>> from functional_opt.tabulate import ScheduleTable
    >>> ramp = config.LearningRate(linear_ramp_to_constant={"learning_rate": 1.0, "num_ramp_steps": 4})
    >>> table = ScheduleTable([schedules.constant(0.5), ramp])
    >>> table.row(0), table.row(2), table.row(10**6)
    ([0.5, 0.0], [0.5, 0.5], [0.5, 1.0])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from functional_opt import config as config_lib
from functional_opt import schedule_plan
from functional_opt.schedules import Schedule

__all__ = ["ScheduleTable"]

_MAX_BLOCK_VALUES = 1 << 18
_MIN_BLOCK = 16
_FIRST_BLOCK = 64


class ScheduleTable:
    """Row ``k`` is ``[schedule(k) for schedule in schedules]``, in float64.

    Args:
        schedules: ``LearningRate`` configs and any ``optax.Schedule`` (callables
            that cannot be jitted or vmapped are evaluated one step at a time).
        block_size: number of steps evaluated per fill, at most: a block holds at
            most about ``2**18`` values (2 MiB of floats, 8 MiB as Python floats),
            so with many schedules it covers fewer steps (never fewer than 16).

    Raises:
        ValueError: no schedules or a non-positive ``block_size``.
        TypeError: an entry is neither a config nor a callable.
    """

    def __init__(self, schedules: Sequence[config_lib.LearningRate | Schedule], block_size: int = 2048) -> None:
        if not schedules:
            raise ValueError("ScheduleTable: at least one schedule is needed")
        if block_size <= 0:
            raise ValueError(f"ScheduleTable: block_size={block_size} must be > 0")
        bad = [type(s).__name__ for s in schedules if not (isinstance(s, config_lib.LearningRate) or callable(s))]
        if bad:
            raise TypeError(f"ScheduleTable: schedules must be LearningRate configs or callables, got {bad}")
        self._configs = [(i, s) for i, s in enumerate(schedules) if isinstance(s, config_lib.LearningRate)]
        self._callables = [(i, s) for i, s in enumerate(schedules) if not isinstance(s, config_lib.LearningRate)]
        self._size = len(schedules)
        self.block_size = min(int(block_size), max(_MIN_BLOCK, _MAX_BLOCK_VALUES // len(schedules)))
        self._start = 0
        self._rows: list[list[float]] = []
        functions = [fn for _, fn in self._callables]
        self._batched: Callable[[jax.Array], jax.Array] | None = (
            jax.jit(jax.vmap(lambda step: jnp.stack([jnp.asarray(f(step), jnp.float64) for f in functions])))
            if functions
            else None
        )

    def __len__(self) -> int:
        return self._size

    def row(self, step: int) -> list[float]:
        """The values of every schedule at ``step`` (a list shared with the cache: do not modify)."""
        offset = step - self._start
        if 0 <= offset < len(self._rows):
            return self._rows[offset]
        self._fill(int(step))
        return self._rows[0]

    def _fill(self, start: int) -> None:
        # The first fill is short (a scheduler is often built and stepped a few times only); later ones full.
        length = self._block_length() if self._rows else min(_FIRST_BLOCK, self._block_length())
        steps = np.arange(start, start + length, dtype=np.int64)
        values = np.empty((length, self._size), dtype=np.float64)
        if self._configs:
            values[:, [i for i, _ in self._configs]] = schedule_plan.evaluate([c for _, c in self._configs], steps)
        if self._callables:
            values[:, [i for i, _ in self._callables]] = self._callable_values(steps)
        self._start, self._rows = start, values[: min(length, self._block_length())].tolist()

    def _block_length(self) -> int:
        return self.block_size if self._batched is not None or not self._callables else 1

    def _callable_values(self, steps: np.ndarray) -> np.ndarray:
        with jax.enable_x64(True):
            if self._batched is not None:
                try:
                    # A numpy range: jnp.arange would compile anew for every start.
                    return np.asarray(self._batched(steps), dtype=np.float64)
                except (jax.errors.JAXTypeError, TypeError, ValueError):
                    # A schedule with Python control flow on the step: fall back to scalar calls.
                    self._batched = None
            start = int(steps[0])
            row = [float(fn(jnp.asarray(start, jnp.int64))) for _, fn in self._callables]
            return np.broadcast_to(np.asarray(row, dtype=np.float64), (len(steps), len(row)))
