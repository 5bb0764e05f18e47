"""``FlatAdam``: torch's Adam with one param group per tower, stepped in one pass over one buffer per dtype.

torch's Adam pays its Python and dispatch cost per param group and per tensor,
so a recap model with a group per tower steps many times slower than one
fused Adam over the same number of elements. ``FlatAdam`` is a
``torch.optim.Adam(fused=True)`` whose parameters, gradients and state live in
one contiguous buffer per dtype: each parameter's ``.data`` becomes a view of
the parameter buffer, each ``.grad`` a view of the gradient buffer, and each
``exp_avg`` / ``exp_avg_sq`` / ``step`` in ``optimizer.state`` a view of theirs.
A step reads every group's ``"lr"`` and applies, per parameter, torch's rule

    m = lerp(m, g, 1 - beta1);  v = beta2 v + (1 - beta2) g^2
    p -= lr_group / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

in one call of a compiled loop (:mod:`torch_bridge.flat_kernel`) per buffer.

What stays torch's: the param groups (same keys and values as
``Adam(fused=True)``), the state (same entries, shapes and dtypes, keyed by
parameter), so checkpoints load across the flat and the per-group optimizers;
a parameter whose ``.grad`` is None is skipped and keeps its own step count;
``zero_grad()`` sets gradients to None (each step then copies autograd's
fresh gradients into the buffer, in one call) and ``zero_grad(set_to_none=False)``
makes them views of the buffer and zeroes it in one call (backward then
accumulates in place: the fastest loop). Whatever the loop does not cover (``amsgrad``,
decoupled weight decay, AMP's ``grad_scale``, groups whose betas, eps, weight
decay or maximize differ, a parameter whose ``.data`` was replaced since, a
machine without a C compiler) is stepped by torch's own fused Adam on the same
state, so the result is torch's either way.

Example:
    >>> import torch
    >>> a, b = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    >>> opt = FlatAdam([{"params": a.parameters(), "lr": 0.1}, {"params": b.parameters(), "lr": 0.01}])
    >>> a.weight.untyped_storage().data_ptr() == b.bias.untyped_storage().data_ptr()
    True
    >>> (a(torch.ones(3)) + b(torch.ones(3))).sum().backward()
    >>> opt.step()
    >>> [float(opt.state[p]["step"]) for p in a.parameters()]
    [1.0, 1.0]
"""

from __future__ import annotations

import inspect
import math
import operator
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from torch_bridge.flat_buffers import FLAT_DTYPES, FlatBuffer, unviewable
from torch_bridge.flat_kernel import adam_kernel, kernel_problem

__all__ = ["FlatAdam"]

_KERNEL_HYPER = operator.itemgetter(
    "betas", "eps", "weight_decay", "maximize", "amsgrad", "decoupled_weight_decay", "differentiable"
)
_LR = operator.itemgetter("lr")
# torch's Optimizer._patch_step_function wraps a subclass's step in the step hooks: the fallback calls
# Adam's undecorated step so that the hooks run once.
_TORCH_ADAM_STEP = inspect.unwrap(torch.optim.Adam.step)


class FlatAdam(torch.optim.Adam):
    """``torch.optim.Adam(fused=True)`` over one buffer per dtype (see the module docstring).

    Args:
        params: parameters or param groups, as for ``torch.optim.Adam``; every
            parameter must be a dense CPU float32 / float64 tensor owning its
            storage (:func:`unviewable`).
        lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay:
            torch's Adam's (``lr`` a float or a 0-dim tensor, per group as usual).

    Raises:
        ValueError: a parameter cannot become a view of the buffer (its position
            and why), or torch's Adam refuses the arguments.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | torch.Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        self._building = True
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            fused=True,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        ordered = [p for group in self.param_groups for p in group["params"]]
        problems = unviewable(ordered)
        if problems:
            listed = "; ".join(f"parameter {i} (shape {tuple(ordered[i].shape)}): {why}" for i, why in problems)
            raise ValueError(f"FlatAdam: parameters that cannot become views of one buffer: {listed}")
        self._buffers = []
        for dtype in FLAT_DTYPES:
            members = [(gi, p) for gi, g in enumerate(self.param_groups) for p in g["params"] if p.dtype == dtype]
            if members:
                params, group_of = [p for _, p in members], [gi for gi, _ in members]
                self._buffers.append(FlatBuffer.build(params, dtype, self.state, group_of))
        for group in self.param_groups:
            if group["amsgrad"]:  # stepped by torch's Adam, which expects the entry from the first step on
                for p in group["params"]:
                    self.state[p]["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self._warned: set[str] = set()
        self._building = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's, while the optimizer is built; afterwards refused (the buffers are laid out at construction)."""
        if not getattr(self, "_building", True):
            raise ValueError("FlatAdam.add_param_group: the param groups are fixed when the buffers are built")
        super().add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam step of every group: the compiled loop where it applies, else torch's fused Adam.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        why = self._flat_step()
        if why is not None:
            self._warn_once(why)
            with torch.no_grad():
                _TORCH_ADAM_STEP(self)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``; ``set_to_none=False`` zeroes each gradient buffer in one call.

        With ``set_to_none=False`` the gradients become views of the buffer (see
        :meth:`~torch_bridge.flat_buffers.FlatBuffer.zero_grads`): the fastest loop.
        """
        if set_to_none:
            super().zero_grad(set_to_none=True)
            return
        for buffer in self._buffers:
            buffer.zero_grads()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch's ``load_state_dict``, the loaded state then copied into the buffers.

        Raises:
            ValueError: a loaded ``exp_avg`` / ``exp_avg_sq`` has another shape than
                its parameter (nothing is loaded).
        """
        state = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        ordered = [p for group in self.param_groups for p in group["params"]]
        for key, entry in state.items():
            if not isinstance(key, int) or not 0 <= key < len(ordered) or not isinstance(entry, dict):
                continue
            for name in ("exp_avg", "exp_avg_sq"):
                value = entry.get(name)
                if isinstance(value, torch.Tensor) and value.shape != ordered[key].shape:
                    raise ValueError(
                        f"FlatAdam.load_state_dict: state[{key}][{name!r}] has shape {tuple(value.shape)}, "
                        f"its parameter {tuple(ordered[key].shape)} (nothing was loaded)"
                    )
        super().load_state_dict(state_dict)
        for buffer in self._buffers:
            buffer.reattach(self.state)

    def _warn_once(self, why: str) -> None:
        if why not in self._warned:
            self._warned.add(why)
            warnings.warn(f"FlatAdam: {why}; this step and such steps run torch's fused Adam", stacklevel=3)

    @torch._dynamo.disable
    def _flat_step(self) -> str | None:
        """Steps every buffer with the compiled loop; returns why not (nothing changed) where it cannot."""
        if hasattr(self, "grad_scale") and getattr(self, "grad_scale", None) is not None:
            return "AMP's grad_scale is set"
        hyper = list(map(_KERNEL_HYPER, self.param_groups))
        if hyper.count(hyper[0]) != len(hyper):  # the loop takes one set for all groups; each its own lr
            return "the param groups' betas, eps, weight_decay, maximize or amsgrad differ"
        betas, eps, weight_decay, maximize, amsgrad, decoupled, differentiable = hyper[0]
        if amsgrad or differentiable or (decoupled and weight_decay):
            return "amsgrad, differentiable or decoupled weight decay is set"
        kernels = [adam_kernel(buffer.param.dtype) for buffer in self._buffers]
        if any(k is None for k in kernels):
            return f"the compiled loop is not available ({kernel_problem()})"
        if not all(buffer.intact() for buffer in self._buffers):
            return "a parameter's .data was replaced since the optimizer was built"
        lrs = list(map(_LR, self.param_groups))
        if set(map(type, lrs)) <= {float, int}:
            rates = np.asarray(lrs, dtype=np.float64)
        else:  # tensor_lr: 0-dim tensors the scheduler updates in place
            rates = torch.stack([torch.as_tensor(lr, dtype=torch.float64).reshape(()) for lr in lrs]).cpu().numpy()
        plans = []
        for buffer in self._buffers:
            active = buffer.gradients()
            if active is None:
                return "a gradient is sparse or has another shape or dtype than its parameter"
            plans.append(active)
        beta1, beta2 = float(betas[0]), float(betas[1])
        for buffer, kernel, active in zip(self._buffers, kernels, plans, strict=True):
            steps = buffer.steps.numpy()
            if active is True:
                starts, ends, count, group_of = buffer.starts, buffer.ends, steps, buffer.group_of
            else:
                starts, ends, count, group_of = (
                    buffer.starts[active],
                    buffer.ends[active],
                    steps[active],
                    buffer.group_of[active],
                )
            step_size, bias_correction2_sqrt = _step_scalars(rates[group_of], count, beta1, beta2)
            starts, ends = np.ascontiguousarray(starts), np.ascontiguousarray(ends)
            kernel(
                buffer.param.data_ptr(),
                buffer.grad.data_ptr(),
                buffer.exp_avg.data_ptr(),
                buffer.exp_avg_sq.data_ptr(),
                starts.ctypes.data,
                ends.ctypes.data,
                step_size.ctypes.data,
                bias_correction2_sqrt.ctypes.data,
                len(starts),
                beta1,
                beta2,
                float(eps),
                float(weight_decay),
                int(bool(maximize)),
            )
            if active is True:
                steps += 1.0
            else:
                steps[active] += 1.0
        return None


def _step_scalars(lr: np.ndarray, steps: np.ndarray, beta1: float, beta2: float) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's ``lr / (1 - beta1^t)`` and ``sqrt(1 - beta2^t)`` at its next step ``t``, in float64.

    torch's fused Adam computes both in double from the float32 step count; so
    does this (once when every parameter is at the same step).
    """
    if len(steps) and steps.min() == steps.max():
        t = float(steps[0]) + 1.0
        bias_correction2_sqrt = np.full(len(steps), math.sqrt(1.0 - beta2**t))
        return np.ascontiguousarray(lr / (1.0 - beta1**t)), bias_correction2_sqrt
    t = steps.astype(np.float64) + 1.0
    step_size = np.ascontiguousarray(lr / (1.0 - np.power(beta1, t)))
    return step_size, np.ascontiguousarray(np.sqrt(1.0 - np.power(beta2, t)))
