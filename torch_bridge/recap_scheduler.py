"""``RecapLRShim``: TML's recap scheduler, dense groups from ``lr_dict`` and fused embedding groups from one schedule.

Everything else (closed-form steps, tables, state, checks) is
:class:`~torch_bridge.schedulers.LRShim`'s; this class only assigns the
schedules to the groups: dense groups in order, every group of a torchrec
fused (in-backward) embedding optimizer the embedding schedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer

from torch_bridge.group_names import check_names, fused_flags, group_label, param_keys
from torch_bridge.scheduler_records import LearningRateSpec, Resolved, compare_records, copy_record, resolve
from torch_bridge.schedulers import LRShim

__all__ = ["RecapLRShim"]


class RecapLRShim(LRShim):
    """TML's recap scheduler: dense groups from ``lr_dict``, fused embedding groups from ``emb_learning_rate``.

    The optimizer's groups are split by the optimizers that hold them (torchrec's
    ``CombinedOptimizer.optimizers``, recursively): groups of a torchrec
    ``FusedOptimizer`` (the in-backward TBE embedding optimizer of a
    ``DistributedModelParallel`` model) are embedding groups; all other groups
    are dense and take the schedules of ``lr_dict``, in order. ``emb_learning_rate``
    drives every embedding group.

    The embedding rows are updated during ``backward``, by a kernel that
    torchrec hands ``param_groups[0]["lr"]`` only in the fused optimizer's own
    ``zero_grad()`` and ``step()``. The scheduler therefore sets each fused
    kernel's rate itself whenever it sets a step's rates (construction,
    ``step()``, ``load_state_dict``), so backward k uses ``emb_schedule(k)``,
    like every dense group, whatever the loop order: ``zero_grad`` first (TML),
    ``zero_grad`` after ``optimizer.step``, ``scheduler.step`` before
    ``zero_grad`` (Hugging Face), ``model.zero_grad()`` only, or Lightning's
    automatic optimisation. The kernel stores the value in float32.

    Args:
        optimizer: typically the ``CombinedOptimizer`` of
            :func:`torch_bridge.build_recap_optimizer`; any optimizer works
            (a plain one has dense groups only).
        lr_dict: dense group name -> learning rate, one per dense group, in order.
        emb_learning_rate: the schedule of the fused embedding groups; required
            when there are any, and only then.
        last_epoch: see :class:`LRShim`.

    Raises:
        ValueError: the dense groups and ``lr_dict`` differ in number or names
            (both listed), fused embedding groups have no ``emb_learning_rate``,
            or ``emb_learning_rate`` is given with no fused embedding group.

    Example:
        >>> import torch
        >>> from functional_opt import config
        >>> from torch_bridge import RecapLRShim
        >>> opt = torch.optim.Adam([{"params": [torch.nn.Parameter(torch.zeros(1))], "name": "tower"},
        ...                         {"params": [torch.nn.Parameter(torch.zeros(1))], "name": "backbone"}])
        >>> sched = RecapLRShim(opt, {"tower": config.LearningRate(constant=0.1),
        ...                           "backbone": config.LearningRate(constant=0.01)}, None)
        >>> sched.get_last_lr()
        [0.1, 0.01]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lr_dict: Mapping[str, LearningRateSpec],
        emb_learning_rate: LearningRateSpec | None = None,
        last_epoch: int = -1,
    ) -> None:
        self.emb_learning_rate = emb_learning_rate
        if emb_learning_rate is None:
            self._emb_schedule, self._emb_record = None, None
        else:
            self._emb_schedule, self._emb_record = resolve(type(self).__name__, "emb_learning_rate", emb_learning_rate)
        super().__init__(optimizer, lr_dict, last_epoch)

    def _assign_schedules(self, optimizer: Optimizer) -> list[Resolved]:
        owner = type(self).__name__
        groups = list(optimizer.param_groups)
        fused = fused_flags(optimizer)
        if len(fused) != len(groups):
            raise ValueError(
                f"{owner}: the optimizer reports {len(groups)} param groups but its optimizers hold {len(fused)}"
            )
        keys = param_keys(optimizer)
        labels = [group_label(i, g, keys) for i, g in enumerate(groups)]
        dense = [i for i, f in enumerate(fused) if not f]
        embedding = [i for i, f in enumerate(fused) if f]
        dense_labels = [labels[i] for i in dense]
        if len(dense) != len(self._resolved):
            raise ValueError(
                f"{owner}: the optimizer has {len(dense)} dense param groups {dense_labels} "
                f"but lr_dict has {len(self._resolved)} learning rates {self.group_names}"
                + (f" (plus {len(embedding)} fused embedding groups)" if embedding else "")
            )
        check_names(owner, [groups[i] for i in dense], dense_labels, self.group_names)
        if embedding and self._emb_schedule is None:
            raise ValueError(
                f"{owner}: the optimizer has fused embedding optimizer groups {[labels[i] for i in embedding]} "
                "but emb_learning_rate is None; give the embedding schedule "
                "(EmbeddingOptimizerConfig.learning_rate)"
            )
        if not embedding and self._emb_schedule is not None:
            raise ValueError(
                f"{owner}: emb_learning_rate is set but the optimizer has no fused embedding optimizer "
                f"(its groups are {labels})"
            )
        emb = (self._emb_schedule, self._emb_record)
        dense_schedules = iter(self._resolved)
        return [emb if is_fused else next(dense_schedules) for is_fused in fused]  # type: ignore[misc]

    def state_dict(self) -> dict[str, Any]:
        """See :meth:`LRShim.state_dict`; adds ``"emb_learning_rate"`` (a record or None)."""
        state = super().state_dict()
        state["emb_learning_rate"] = copy_record(self._emb_record) if self._emb_record is not None else None
        return state

    def _check_extra_state(self, state_dict: Mapping[str, Any]) -> list[str]:
        saved = state_dict.get("emb_learning_rate", None)
        if saved is None and self._emb_record is None:
            return []
        if saved is None or self._emb_record is None:
            return [f"emb_learning_rate: saved {saved!r}, current {self._emb_record!r}"]
        return compare_records(
            "emb_learning_rate", {"emb_learning_rate": self._emb_record}, {"emb_learning_rate": saved}
        )
