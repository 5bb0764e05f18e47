"""torch learning-rate schedulers driven by the JAX schedules of ``functional_opt``.

:class:`LRShim` gives every param group of a torch optimizer its own schedule:
a :class:`~functional_opt.config.LearningRate` config (TML's YAML format) or any
``optax.Schedule``. :class:`~torch_bridge.recap_scheduler.RecapLRShim` is TML's recap variant: one schedule per
dense group of a torchrec ``CombinedOptimizer`` plus one embedding schedule that
drives every group of its fused (in-backward) embedding optimizers.

Both are closed form, like ``LambdaLR``: the k-th ``optimizer.step()``
(k = 0, 1, ...) runs with ``lr = schedule(k)`` and ``k`` is ``last_epoch``
alone, so a scheduler restored at step k continues exactly and nothing drifts.
With TML's loop ``zero_grad -> forward -> backward -> optimizer.step ->
scheduler.step`` the constructor sets ``schedule(0)`` and each
``scheduler.step()`` sets the value for the next optimizer step.

Fused (TBE) embedding optimizers of torchrec get their rate in their kernel as
soon as the scheduler sets it, so the loop order does not matter
(:func:`torch_bridge.workarounds.set_fused_kernel_learning_rates`). A schedule
given as a callable is checked at every step: NaN, inf, a negative value or a
non-scalar is refused, naming the group and the step, before any group changes.

Values are the float64 results of the JAX schedules: they equal
:func:`functional_opt.schedules.compute_lr` to ``1e-12 * max(1, |lr|)``. They are
tabulated a block of steps at a time (:class:`~functional_opt.tabulate.ScheduleTable`),
so ``step()`` makes no JAX call and costs about as much as a bare loop
assigning ``group["lr"]``: less than torch's own ``LambdaLR.step()``.

A group whose ``"lr"`` is a ``torch.Tensor`` when the scheduler is built (or
when its state is loaded) is updated in place (``fill_``), so a
``torch.compile``'d optimizer step sees the new value without recompiling.
To turn the learning rates of an optimizer that already has a scheduler into
tensors, replace them, then call ``scheduler.load_state_dict(scheduler.state_dict())``.

Example:
    >>> import torch
    >>> from functional_opt import config
    >>> from torch_bridge import LRShim
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> opt = torch.optim.SGD([w], lr=1.0)
    >>> ramp = config.LearningRate(linear_ramp_to_constant={"learning_rate": 0.5, "num_ramp_steps": 4})
    >>> sched = LRShim(opt, {"w": ramp})
    >>> lrs = []
    >>> for _ in range(5):
    ...     lrs.append(opt.param_groups[0]["lr"])
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.0, 0.125, 0.25, 0.375, 0.5]
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from functional_opt.tabulate import ScheduleTable
from torch_bridge.group_names import check_names, group_label, group_labels, param_keys
from torch_bridge.scheduler_records import (
    LearningRateSpec,
    Resolved,
    check_value,
    compare_records,
    copy_record,
    resolve,
    shown,
)
from torch_bridge.workarounds import fused_leaves, set_fused_kernel_learning_rates

__all__ = ["BLOCK_SIZE", "MAX_STEP", "LRShim", "LearningRateSpec"]

# Steps evaluated per JAX call: one call every BLOCK_SIZE scheduler steps.
BLOCK_SIZE = 2048

# The largest step a scheduler takes: a step count is an int64 on every side.
MAX_STEP = 2**62


def _schedule_table(resolved: Sequence[Resolved]) -> ScheduleTable:
    """A :class:`ScheduleTable` of one schedule per group (configs are evaluated as data: nothing compiles)."""
    return ScheduleTable([schedule for schedule, _ in resolved], block_size=BLOCK_SIZE)


class LRShim(LRScheduler):
    """Closed-form scheduler: param group ``i`` follows the ``i``-th schedule of ``lr_dict``.

    The k-th ``optimizer.step()`` (k = 0, 1, ...) uses ``lr_i = schedule_i(k)``,
    where ``schedule_i`` is :func:`functional_opt.schedules.schedule_from_config`
    of a config or the given callable, evaluated in float64.

    Works on any ``torch.optim.Optimizer``, including torchrec's
    ``KeyedOptimizer`` and ``CombinedOptimizer`` (whose ``param_groups`` are its
    optimizers' groups, in order). When every group carries a ``"name"`` entry
    (the builders of this package set one), the names of ``lr_dict`` must be
    those names, in that order.

    ``state_dict()`` holds the step and the configs (JSON-able; a callable is
    recorded by its qualified name and its values at a few steps, so that two
    callables are told apart), never closures. ``load_state_dict`` checks
    that the saved configs are this scheduler's, then restores the step and
    writes that step's learning rates into the optimizer.

    Args:
        optimizer: the optimizer whose param groups are driven.
        lr_dict: group name -> ``LearningRate`` config (or a mapping that validates
            as one) or ``optax.Schedule``; one entry per param group, in order.
        last_epoch: torch's resume argument: the index of the last step taken
            (-1 for a fresh start; other values need ``initial_lr`` in every group).

    Raises:
        ValueError: the number (or the names) of the schedules and of the param
            groups differ; the message gives both counts and all names.
        TypeError: a key is not a string or a value is neither a config nor a callable.

    Example:
        >>> import optax, torch
        >>> from torch_bridge import LRShim
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([w], lr=0.0)
        >>> sched = LRShim(opt, {"all": optax.linear_schedule(0.0, 1.0, transition_steps=4)})
        >>> for _ in range(2):
        ...     opt.step()
        ...     sched.step()
        >>> sched.last_epoch, sched.get_last_lr()
        (2, [0.5])
    """

    def __init__(self, optimizer: Optimizer, lr_dict: Mapping[str, LearningRateSpec], last_epoch: int = -1) -> None:
        if not isinstance(lr_dict, Mapping):
            raise TypeError(f"{type(self).__name__}: lr_dict must be a mapping, got {type(lr_dict).__name__}")
        bad_keys = [k for k in lr_dict if not isinstance(k, str)]
        if bad_keys:
            raise TypeError(f"{type(self).__name__}: lr_dict keys must be group names (str), got {bad_keys}")
        self.lr_dict = dict(lr_dict)
        self.group_names = list(self.lr_dict)
        resolved = [resolve(type(self).__name__, n, v) for n, v in self.lr_dict.items()]
        self._resolved = resolved
        self._records = {n: r for n, (_, r) in zip(self.group_names, resolved, strict=True)}
        group_schedules = self._assign_schedules(optimizer)
        self._table = _schedule_table(group_schedules)
        self._num_groups = len(group_schedules)
        # Groups driven by a callable: their values are checked at every step (configs are checked when read).
        self._checked = [i for i, (_, record) in enumerate(group_schedules) if "callable" in record]
        self._labels = group_labels(optimizer, self.group_names)
        self._fused = fused_leaves(optimizer)
        self._tensor_lrs = _has_tensor_lr(optimizer)
        super().__init__(optimizer, last_epoch)

    # --- validation ---------------------------------------------------------------------------

    def _assign_schedules(self, optimizer: Optimizer) -> list[Resolved]:
        """One (schedule, record) per param group of ``optimizer``, in order (validates counts and names)."""
        groups = list(optimizer.param_groups)
        keys = param_keys(optimizer)
        labels = [group_label(i, g, keys) for i, g in enumerate(groups)]
        if len(groups) != len(self._resolved):
            raise ValueError(
                f"{type(self).__name__}: the optimizer has {len(groups)} param groups {labels} "
                f"but lr_dict has {len(self._resolved)} learning rates {self.group_names}"
            )
        check_names(type(self).__name__, groups, labels, self.group_names)
        return list(self._resolved)

    # --- stepping ------------------------------------------------------------------------------

    def step(self, epoch: int | None = None) -> None:
        """Moves to the next step and writes its learning rates into the param groups.

        Call it after ``optimizer.step()``. ``epoch`` (deprecated in torch) jumps to
        that step instead.

        Raises:
            ValueError: ``epoch`` is negative or the optimizer's param groups changed
                in number since the scheduler was built.
        """
        groups = self.optimizer.param_groups
        if len(groups) != self._num_groups:
            self._group_count_changed(len(groups))
        if epoch is None:
            step = self.last_epoch + 1
        else:
            warnings.warn(
                "The epoch parameter in `scheduler.step()` is deprecated: use `scheduler.step()` without it",
                UserWarning,
                stacklevel=2,
            )
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"{type(self).__name__}.step: epoch={epoch!r} must be an integer >= 0")
            step = epoch
        if self._step_count == 1:
            self._warn_step_order()
        row = self._row(step)
        self._apply(groups, row)
        self.last_epoch = step
        self._step_count += 1
        self._last_lr = row

    def _row(self, step: int) -> list[float]:
        """The learning rates at ``step``, checked (groups driven by a callable) before anything is written.

        Raises:
            ValueError: ``step`` is negative or beyond :data:`MAX_STEP`, or a callable gives
                NaN, inf, a negative number or a non-scalar (naming the group, the
                step and the value).
        """
        if not 0 <= step <= MAX_STEP:
            raise ValueError(f"{type(self).__name__}: step {step} must be in [0, {MAX_STEP}]")
        try:
            row = self._table.row(step)
        except (OverflowError, TypeError, ValueError) as exc:
            raise ValueError(f"{type(self).__name__}: cannot evaluate the schedules at step {step}: {exc}") from None
        for i in self._checked:
            value = row[i]
            if not (isinstance(value, float) and 0.0 <= value <= _FLOAT_MAX):
                check_value(type(self).__name__, self._labels[i], step, value)
        return row

    def _apply(self, groups: Sequence[dict[str, Any]], row: Sequence[float]) -> None:
        """Writes ``row`` into the param groups (tensors in place) and hands the fused kernels their rates."""
        if self._tensor_lrs:
            for group, lr in zip(groups, row, strict=True):
                current = group["lr"]
                if isinstance(current, torch.Tensor):
                    current.fill_(lr)
                else:
                    group["lr"] = lr
        else:
            for group, lr in zip(groups, row, strict=True):
                group["lr"] = lr
        if self._fused:
            set_fused_kernel_learning_rates(self._fused)

    def learning_rates(self) -> dict[str, float]:
        """``{group name: learning rate}`` of the step the optimizer takes next, as floats.

        Every group is named: its ``"name"`` entry or its ``lr_dict`` name
        (fused embedding groups: ``"embeddings"``, or ``"embeddings.<i>"`` when there
        are several). The values are copies, also for tensor learning rates, so a
        logger that keeps them keeps each step's value (``self.log_dict(...)`` in
        Lightning, ``Trainer.log`` in Hugging Face, a TensorBoard ``SummaryWriter``).

        Example:
            >>> import torch
            >>> from functional_opt import config
            >>> w = torch.nn.Parameter(torch.zeros(1))
            >>> opt = torch.optim.SGD([{"params": [w], "lr": torch.tensor(0.0), "name": "all"}])
            >>> sched = LRShim(opt, {"all": config.LearningRate(constant=0.25)})
            >>> sched.learning_rates()
            {'all': 0.25}
        """
        return {label: float(lr) for label, lr in zip(self._labels, self._last_lr, strict=True)}

    def _warn_step_order(self) -> None:
        """torch's warnings for a scheduler stepped before its optimizer.

        ``LRScheduler.__init__`` marks the ``optimizer.step`` it wraps with
        ``_wrapped_by_lr_sched`` and the wrapper sets ``optimizer._opt_called``:
        these private markers of torch are the only way to give torch's warning,
        and they are read once, at the first step.
        """
        if not hasattr(self.optimizer.step, "_wrapped_by_lr_sched"):
            warnings.warn(
                "Seems like `optimizer.step()` has been overridden after learning rate scheduler "
                "initialization. Please, make sure to call `optimizer.step()` before `lr_scheduler.step()`.",
                UserWarning,
                stacklevel=3,
            )
        elif not getattr(self.optimizer, "_opt_called", False):
            warnings.warn(
                "Detected call of `lr_scheduler.step()` before `optimizer.step()`. Call them in the "
                "opposite order: `optimizer.step()` before `lr_scheduler.step()`; otherwise the first "
                "value of the learning rate schedule is skipped.",
                UserWarning,
                stacklevel=3,
            )

    def _group_count_changed(self, count: int) -> None:
        raise ValueError(
            f"{type(self).__name__}.step: the optimizer now has {count} param groups, but the scheduler "
            f"was built for {self._num_groups}; build a new scheduler after adding param groups"
        )

    def _lrs_at(self, step: int) -> list[float]:
        return list(self._row(step))

    def get_lr(self) -> list[float | torch.Tensor]:
        """The learning rates at ``last_epoch`` (closed form), one per param group.

        Entries have the type of each group's ``"lr"``: a float, or a new tensor
        for a group whose learning rate is a tensor.
        """
        return self._typed(self._lrs_at(self.last_epoch))

    def get_last_lr(self) -> list[float | torch.Tensor]:
        """The learning rates the last ``step()`` set, one per param group (a new list).

        Entries are floats, or new tensors for groups whose ``"lr"`` is a tensor.
        """
        return self._typed(list(self._last_lr))

    def _typed(self, values: list[float]) -> list[float | torch.Tensor]:
        if not self._tensor_lrs:
            return list(values)
        out: list[float | torch.Tensor] = []
        for group, value in zip(self.optimizer.param_groups, values, strict=True):
            current = group["lr"]
            if isinstance(current, torch.Tensor):
                out.append(torch.full_like(current, value))
            else:
                out.append(value)
        return out

    # --- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state: the step and the learning-rate configs, all JSON-able.

        Returns:
            ``{"last_epoch", "_step_count", "_last_lr", "lr_dict"}`` (and, for
            :class:`RecapLRShim`, ``"emb_learning_rate"``), where each learning
            rate is ``{"config": <LearningRate as a dict>}`` or
            ``{"callable": "<module>.<qualname>", "steps": [...], "values": [...]}``.
        """
        return {
            "last_epoch": int(self.last_epoch),
            "_step_count": int(self._step_count),
            "_last_lr": [float(v) for v in self._last_lr],
            "lr_dict": {name: copy_record(r) for name, r in self._records.items()},
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores the step of a saved state made with the same learning rates.

        The learning rates of the restored step are written into the optimizer's
        param groups at once (torchrec's keyed optimizers do not save them), so
        the next ``optimizer.step()`` runs with ``schedule(last_epoch)``.

        Args:
            state_dict: a dict returned by :meth:`state_dict`.

        Raises:
            ValueError: the state is malformed or was saved with different
                learning-rate names or configs; the message names each mismatch.
                The scheduler is left unchanged.
        """
        last_epoch, step_count = self._check_state(state_dict)
        row = self._row(last_epoch)  # raises before anything changes
        self._tensor_lrs = _has_tensor_lr(self.optimizer)
        self._apply(self.optimizer.param_groups, row)
        self.last_epoch = last_epoch
        self._step_count = step_count
        self._last_lr = row

    def _check_state(self, state_dict: Mapping[str, Any]) -> tuple[int, int]:
        owner = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{owner}: expected a dict from state_dict(), got {type(state_dict).__name__}")
        missing_keys = [k for k in ("last_epoch", "_step_count", "lr_dict") if k not in state_dict]
        if missing_keys:
            raise ValueError(f"{owner}: the state has no {missing_keys} entries (not a state of this scheduler)")
        last_epoch = state_dict["last_epoch"]
        step_count = state_dict["_step_count"]
        for key, value in (("last_epoch", last_epoch), ("_step_count", step_count)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEP:
                raise ValueError(f"{owner}: {key}={shown(value, 80)} must be an integer in [0, {MAX_STEP}]")
        groups = len(self.optimizer.param_groups)
        if groups != self._num_groups:
            raise ValueError(
                f"{owner}: the optimizer now has {groups} param groups, but the scheduler was built for "
                f"{self._num_groups}"
            )
        saved = state_dict["lr_dict"]
        if not isinstance(saved, Mapping):
            raise ValueError(f"{owner}: lr_dict must be a mapping, got {type(saved).__name__}")
        problems = compare_records("lr_dict", self._records, saved)
        problems += self._check_extra_state(state_dict)
        if problems:
            raise ValueError(f"{owner}: the saved state was made with different learning rates; " + "; ".join(problems))
        return last_epoch, step_count

    def _check_extra_state(self, state_dict: Mapping[str, Any]) -> list[str]:
        return []


# --- helpers ------------------------------------------------------------------------------------

_FLOAT_MAX = 1.7976931348623157e308


def _has_tensor_lr(optimizer: Optimizer) -> bool:
    return any(isinstance(g["lr"], torch.Tensor) for g in optimizer.param_groups)
