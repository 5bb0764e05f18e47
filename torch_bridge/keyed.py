"""The torchrec ``CombinedOptimizer`` returned by :func:`torch_bridge.build_recap_optimizer`.

It is torchrec's own class with one change: a state that belongs to another
optimizer (other towers, another group count, other shapes) is refused whole,
with a message naming each difference, before a single value is copied.
torchrec's ``KeyedOptimizer.load_state_dict`` copies parameter by parameter
and stops at the first one it lacks, after overwriting those before it, and
(saving no param groups by default) loads a state of another grouping silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchrec.optim.keyed import CombinedOptimizer

from torch_bridge.state_checks import GROUPS_KEY, group_records, keyed_state_problems

__all__ = ["RecapOptimizer"]


class RecapOptimizer(CombinedOptimizer):
    """torchrec's ``CombinedOptimizer`` whose ``load_state_dict`` refuses a foreign state whole.

    ``state_dict()`` is torchrec's keyed one (parameter names as keys) plus an
    entry ``"functional_opt_param_groups"``: ``[{"name": ..., "params": [keys]}, ...]``.
    """

    def state_dict(self) -> dict[str, Any]:
        """torchrec's keyed state plus the param groups' names and parameter keys."""
        state = super().state_dict()
        state[GROUPS_KEY] = group_records(self)
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Loads a state made by an optimizer with the same groups and parameters.

        Raises:
            ValueError: the state is malformed, or its param groups, parameter keys,
                state entries or shapes differ from the live optimizer's; the message
                names each difference and nothing has been loaded.
        """
        problems = keyed_state_problems(self, state_dict)
        if problems:
            raise ValueError(
                "RecapOptimizer.load_state_dict: the state belongs to another optimizer (nothing was loaded): "
                + "; ".join(problems)
            )
        super().load_state_dict({k: v for k, v in state_dict.items() if k != GROUPS_KEY})
