"""The torchrec ``CombinedOptimizer`` returned by :func:`torch_bridge.build_recap_optimizer`.

It is torchrec's own class with these changes:

* ``step(closure)`` evaluates the closure once and returns its loss (torchrec
  hands the closure to every child optimizer, so a training step ran once per
  child);
* ``zero_grad(set_to_none)`` passes ``set_to_none`` on to the wrapped torch
  optimizers (torchrec's wrapper drops it);
* ``state_dict()`` also records each param group (name, parameter keys and
  hyper-parameters), so a state of another grouping or other hyper-parameters
  is told apart, and DCP's ``get_state_dict`` finds the ``param_groups`` entry it needs;
* ``load_state_dict`` takes torchrec's keyed states and DCP's positional ones,
  refuses a state that belongs to another optimizer (other towers, another group
  count, other shapes or dtypes, other hyper-parameters) whole, with a message
  naming each difference, before a single value is copied, and loads into a
  freshly built optimizer;
* ``state`` (read by ``state_dict``, ``load_state_dict`` and DCP) first creates
  the state torch's Adam creates at its first step, for the parameters that have
  none yet (:func:`torch_bridge.workarounds.initialise_state`): torchrec loads only
  into existing state, and DCP runs a step of its own on an optimizer without
  state. Building and stepping never pay for it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from torch_bridge.state_checks import GROUPS_KEY, group_records, keyed_state_problems
from torch_bridge.workarounds import evaluate_closure_once, initialise_state, keyed_from_positions, wrapped_optimizer

__all__ = ["RecapOptimizer"]


class RecapOptimizer(CombinedOptimizer):
    """torchrec's ``CombinedOptimizer`` with one closure call per step and a load that refuses a foreign state.

    ``state_dict()`` is torchrec's keyed one (parameter names as keys) plus
    ``"param_groups"`` (each group with its parameter keys, sorted, and its
    hyper-parameters, as torchrec's ``save_param_groups(True)`` writes them) and
    ``"functional_opt_param_groups"``: ``[{"name": ..., "params": [keys]}, ...]``.
    """

    @property
    def state(self) -> Mapping[torch.Tensor, Any]:  # type: ignore[override]
        """torchrec's combined state, the dense optimizers' state created first where a parameter has none."""
        if not getattr(self, "_dense_state_created", False):
            for _, child in self._optims:
                if isinstance(child, KeyedOptimizerWrapper):
                    initialise_state(wrapped_optimizer(child))
            self._dense_state_created = True
        return super().state

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Evaluates ``closure`` once (when given), then steps every child optimizer.

        Returns:
            The closure's loss, or None without a closure.
        """
        loss, closure = evaluate_closure_once(closure)
        super().step(closure=closure)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Every child's ``zero_grad(set_to_none)``; by default gradients become None, as before.

        torchrec's ``KeyedOptimizerWrapper.zero_grad`` drops its ``set_to_none``
        argument and calls the wrapped optimizer's ``zero_grad()`` (gradients set to
        None whatever was asked), and ``CombinedOptimizer.zero_grad`` defaults to
        False. Here the argument reaches the wrapped torch optimizers, and the
        default is what the dense optimizers always got: None.
        ``zero_grad(set_to_none=False)`` zeroes the gradients in place (with
        ``flat=True``: the gradient buffer in one call, the fastest loop).
        """
        for _, child in self._optims:
            if isinstance(child, KeyedOptimizerWrapper):
                wrapped_optimizer(child).zero_grad(set_to_none=set_to_none)
            else:
                child.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """torchrec's keyed state plus the param groups (names, parameter keys and hyper-parameters)."""
        state = super().state_dict()
        keys = {id(p): k for k, p in self.params.items()}
        state["param_groups"] = [
            {
                **{k: copy.deepcopy(v) for k, v in group.items() if k != "params"},
                "params": sorted(keys[id(p)] for p in group["params"]),
            }
            for group in self.param_groups
        ]
        state[GROUPS_KEY] = group_records(self)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Loads a state made by an optimizer with the same groups, parameters and hyper-parameters.

        The state may be keyed by parameter name (torchrec's format, this class's
        ``state_dict()``) or by position in ``param_groups`` (what DCP's
        ``set_state_dict`` hands over after its ``get_state_dict``). The live
        param groups are kept: their learning rates come from the scheduler.

        Raises:
            ValueError: the state is malformed, or its param groups, parameter keys,
                state entries, dtypes, shapes or hyper-parameters differ from the live
                optimizer's; the message names each difference and nothing has been loaded.
        """
        owner = "RecapOptimizer.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{owner}: expected a dict from state_dict(), got {type(state_dict).__name__}")
        order = {id(p): k for k, p in self.params.items()}
        keyed, problems = keyed_from_positions(
            state_dict, [order[id(p)] for group in self.param_groups for p in group["params"]]
        )
        problems += keyed_state_problems(self, keyed)
        if problems:
            raise ValueError(
                f"{owner}: the state belongs to another optimizer (nothing was loaded): " + "; ".join(problems)
            )
        live = {k for k, p in self.params.items() if p in self.state}
        super().load_state_dict({"state": {k: v for k, v in keyed["state"].items() if k in live}})
