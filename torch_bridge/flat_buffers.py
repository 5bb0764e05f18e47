"""The buffers of :class:`torch_bridge.flat_adam.FlatAdam`: parameters, gradients and state as views of one tensor each.

A :class:`FlatBuffer` holds the parameters of one dtype. Each parameter's
``.data`` is a view of :attr:`FlatBuffer.param`, its ``.grad`` (once it has one)
a view of :attr:`FlatBuffer.grad`, and its Adam state a view of
:attr:`FlatBuffer.exp_avg`, :attr:`FlatBuffer.exp_avg_sq` and :attr:`FlatBuffer.steps`.

Checking each parameter every step costs torch's per-tensor Python (about
0.2-0.5 us per attribute read), which is what the flat step exists to avoid.
So a step first compares the use counts of the parameter and gradient
storages with those seen when every parameter and gradient was last checked
one by one: a parameter whose ``.data`` was replaced, or a gradient set to None
or to another tensor, lowers its buffer's count. Only when a count differs are
the tensors checked one by one (and the counts taken anew).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2, 2))
    >>> buffer = FlatBuffer.build([w], torch.float32, {})
    >>> w.data_ptr() == buffer.param.data_ptr(), buffer.intact()
    (True, True)
"""

from __future__ import annotations

import operator
from collections.abc import MutableMapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import torch

__all__ = ["FLAT_DTYPES", "FlatBuffer", "unviewable"]

FLAT_DTYPES = (torch.float32, torch.float64)


def unviewable(params: Sequence[torch.Tensor]) -> list[tuple[int, str]]:
    """The parameters that cannot become views of one buffer, as ``(position, reason)``.

    A parameter can when it is a plain dense CPU float32 / float64 tensor that
    owns its storage alone (a parameter sharing storage with another tensor
    would stop sharing it).

    Example:
        >>> w = torch.zeros(4)
        >>> unviewable([torch.nn.Parameter(w), torch.nn.Parameter(w[:2]), torch.zeros(2, dtype=torch.int64)])
        [(1, 'shares its storage with another tensor'), (2, 'dtype torch.int64 (the buffers are float32 or float64)')]
    """
    problems = []
    seen: set[int] = set()
    for i, p in enumerate(params):
        plain = type(p) in (torch.Tensor, torch.nn.Parameter) and p.layout == torch.strided
        if not plain:
            problems.append((i, f"a {type(p).__name__} with layout {p.layout}, not a dense tensor"))
        elif p.device.type != "cpu":
            problems.append((i, f"on {p.device} (the flat step runs on the CPU)"))
        elif p.dtype not in FLAT_DTYPES:
            problems.append((i, f"dtype {p.dtype} (the buffers are float32 or float64)"))
        elif (
            p.storage_offset() != 0
            or p.untyped_storage().nbytes() != p.numel() * p.element_size()
            or p.untyped_storage().data_ptr() in seen
        ):
            problems.append((i, "shares its storage with another tensor"))
        if plain and p.numel():
            seen.add(p.untyped_storage().data_ptr())
    return problems


def _use_count(tensor: torch.Tensor) -> int:
    """How many tensors (and other holders) share ``tensor``'s storage."""
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


class FlatBuffer:
    """The parameters of one dtype, in one buffer, and their gradient and Adam-state buffers.

    Attributes:
        params: the parameters, in param-group order.
        group_of: int64, each parameter's param-group index.
        starts, ends: int64, each parameter's element range in the buffers.
        param, grad, exp_avg, exp_avg_sq: the buffers (1-D, the parameters' dtype).
        steps: float32, each parameter's step count (torch's fused Adam counts in float32).
    """

    def __init__(self, params: list[torch.Tensor], group_of: list[int], dtype: torch.dtype) -> None:
        sizes = np.asarray([p.numel() for p in params], dtype=np.int64)
        self.params = params
        self.group_of = np.asarray(group_of, dtype=np.int64)
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes
        total = int(self.ends[-1]) if len(sizes) else 0
        self.param, self.grad, self.exp_avg, self.exp_avg_sq = (torch.zeros(total, dtype=dtype) for _ in range(4))
        self.steps = torch.zeros(len(params), dtype=torch.float32)
        self._param_count = -1
        self._grad_count = -1
        self._grad_alone = _use_count(self.grad)  # no parameter's .grad views the gradient buffer

    @classmethod
    def build(
        cls,
        params: list[torch.Tensor],
        dtype: torch.dtype,
        state: MutableMapping[torch.Tensor, Any],
        group_of: list[int] | None = None,
    ) -> FlatBuffer:
        """Moves ``params`` (of ``dtype``) into a new buffer; their gradients and fresh Adam state into theirs."""
        buffer = cls(params, group_of if group_of is not None else [0] * len(params), dtype)
        with torch.no_grad():
            for i, p in enumerate(params):
                view = buffer._view(buffer.param, i)
                view.copy_(p)
                p.data = view
                if p.grad is not None:
                    grad = buffer._view(buffer.grad, i)
                    grad.copy_(p.grad)
                    p.grad = grad
                state[p] = buffer.state_views(i)
        buffer.intact()
        buffer.gradients()
        return buffer

    def _view(self, flat: torch.Tensor, i: int) -> torch.Tensor:
        return flat[int(self.starts[i]) : int(self.ends[i])].view(self.params[i].shape)

    def state_views(self, i: int) -> dict[str, torch.Tensor]:
        """Parameter ``i``'s Adam state: ``step``, ``exp_avg`` and ``exp_avg_sq``, views of the buffers."""
        return {
            "step": self.steps[i],
            "exp_avg": self._view(self.exp_avg, i),
            "exp_avg_sq": self._view(self.exp_avg_sq, i),
        }

    def intact(self) -> bool:
        """Whether every parameter's ``.data`` is still its view of :attr:`param`."""
        if _use_count(self.param) == self._param_count:
            return True
        base, size = self.param.data_ptr(), self.param.element_size()
        if any(
            p.numel() and p.data_ptr() != base + int(a) * size for p, a in zip(self.params, self.starts, strict=True)
        ):
            return False
        self._param_count = _use_count(self.param)
        return True

    def gradients(self) -> np.ndarray | bool | None:
        """Brings every present gradient into :attr:`grad`.

        When no parameter's gradient views the buffer yet and none is None (what
        autograd leaves after ``zero_grad()``), all are copied in with one call and
        the parameters keep them. Otherwise each gradient that is not a view is
        copied in and replaced by its view.

        Returns:
            True when every parameter has a gradient, else the boolean mask of those
            that have one; None when one cannot be copied in (sparse, another shape
            or dtype), with nothing changed.
        """
        count = _use_count(self.grad)
        if count == self._grad_count:
            return True
        grads = [p.grad for p in self.params]
        # ``None in grads`` would compare tensors with ``==``: identity only.
        if (
            count == self._grad_alone
            and grads
            and all(map(operator.is_not, grads, repeat(None)))
            and self._copy_all(grads)
        ):
            return True
        base, size = self.grad.data_ptr(), self.grad.element_size()
        foreign = [
            i
            for i, g in enumerate(grads)
            if g is not None and (not g.numel() or g.data_ptr() != base + int(self.starts[i]) * size)
        ]
        for i in foreign:
            g, p = grads[i], self.params[i]
            if g.layout != torch.strided or g.shape != p.shape or g.dtype != p.dtype or g.device != p.device:
                return None
        if foreign:
            views = [self._view(self.grad, i) for i in foreign]
            torch._foreach_copy_(views, [grads[i] for i in foreign])
            for i, view in zip(foreign, views, strict=True):
                self.params[i].grad = view
            del views
        del grads
        present = np.fromiter((p.grad is not None for p in self.params), dtype=bool, count=len(self.params))
        if present.all():
            self._grad_count = _use_count(self.grad)
            return True
        return present

    def _copy_all(self, grads: list[torch.Tensor]) -> bool:
        """Copies every gradient (none of them a view of :attr:`grad`) into it in one call; False if it cannot.

        What a loop with ``zero_grad()`` hands over at every step: autograd's fresh
        gradients. torch's ``.grad`` setter and autograd keep each gradient's shape,
        dtype and device those of its parameter; a sparse one is left to the caller.
        The parameters' ``.grad`` stay the given tensors (making each a view would
        cost a Python object per parameter per step).
        """
        try:
            flat = torch._utils._flatten_dense_tensors(grads)
        except RuntimeError:
            return False
        if flat.numel() != self.grad.numel() or flat.dtype != self.grad.dtype:
            return False
        self.grad.copy_(flat)
        return True

    def zero_grads(self) -> None:
        """Zeroes every present gradient, as ``zero_grad(set_to_none=False)`` does: :attr:`grad` in one call.

        A gradient that is not a view of :attr:`grad` (autograd's fresh one after
        ``zero_grad()``) is replaced by its zeroed view, once: from then on backward
        accumulates into the buffer and each step reads it in place. Gradients that
        are None stay None; a sparse one is zeroed where it is.
        """
        if _use_count(self.grad) != self._grad_count:
            base, size = self.grad.data_ptr(), self.grad.element_size()
            with torch.no_grad():
                for i, p in enumerate(self.params):
                    g = p.grad
                    if g is None or (g.numel() and g.data_ptr() == base + int(self.starts[i]) * size):
                        continue
                    if g.layout != torch.strided:
                        g.zero_()
                    else:
                        p.grad = self._view(self.grad, i)
                del g
            if all(p.grad is not None for p in self.params):
                self._grad_count = _use_count(self.grad)
        self.grad.zero_()

    def reattach(self, state: MutableMapping[torch.Tensor, Any]) -> None:
        """Copies each state entry that is not a view of the buffers into them and makes the entry the view."""
        with torch.no_grad():
            for i, p in enumerate(self.params):
                entry = state[p]
                for name, view in self.state_views(i).items():
                    value = entry.get(name)
                    if value is None:
                        view.zero_()
                    elif value.data_ptr() != view.data_ptr() or value.shape != view.shape:
                        view.copy_(value)
                    entry[name] = view
