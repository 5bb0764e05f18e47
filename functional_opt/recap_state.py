"""The state of the recap optimizer (:func:`functional_opt.recap_rules.grouped_torch_rules`) and its layouts.

Example:
    >>> import jax.numpy as jnp
    >>> values = GroupValues(jnp.asarray([0.1, 0.2]), ("a", "b"))
    >>> {k: round(float(v), 6) for k, v in values.as_dict().items()}
    {'a': 0.1, 'b': 0.2}
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax

__all__ = ["RECAP_LAYOUT", "GroupValues", "RecapState", "describe_layout"]

RECAP_LAYOUT = 3
"""The version of :class:`RecapState`'s layout.

1 was one ``optax.partition`` entry per group, 2 one torch-rule state per
group (its own count, rate and records); 3 holds one count, one vector of the
groups' rates and one record for all groups, so a state has about as many
leaves as a single optimizer's over the same parameters.
"""


@dataclasses.dataclass(frozen=True)
class GroupValues:
    """One row of ``values`` per group, in the order of ``names`` (static: part of the tree structure).

    Attributes:
        values: an array whose first axis is the group.
        names: the groups' names.
    """

    values: jax.Array
    names: tuple[str, ...]

    def as_dict(self) -> dict[str, jax.Array]:
        """Group name -> its row."""
        return {name: self.values[g] for g, name in enumerate(self.names)}


jax.tree_util.register_dataclass(GroupValues, data_fields=["values"], meta_fields=["names"])


class RecapState(NamedTuple):
    """State of :func:`grouped_torch_rules`.

    Attributes:
        count: the number of updates, one for every group (int32).
        learning_rates: each group's rate of the last update (``schedule_g(0)``
            right after ``init``), a :class:`GroupValues` of shape ``(G,)``.
        mu: Adam group name -> the first moments of its leaves, in parameter order.
        nu: Adam group name -> the second moments of its leaves.
        built_from: the records :func:`functional_opt.opt_state.check_state`
            compares: ``b1``, ``b2``, ``eps`` and ``learning_rate`` (a
            :class:`GroupValues` of each group's rate at ``PROBE_STEPS``).
        recap_layout: :data:`RECAP_LAYOUT`, as an int32 array (it survives checkpoints).
    """

    count: jax.Array
    learning_rates: GroupValues
    mu: dict[str, tuple[Any, ...]]
    nu: dict[str, tuple[Any, ...]]
    built_from: dict[str, Any]
    recap_layout: jax.Array


_LAYOUTS = {
    1: "an optax.partition holding one masked copy of the parameter tree per group",
    2: "one torch-rule state per group, each with its own count, rate and records",
    3: "one count, one rate vector and one record for all groups",
}


def describe_layout(version: int) -> str:
    """``"layout N (what it holds)"`` for a :class:`RecapState` layout version."""
    return f"layout {version} ({_LAYOUTS.get(version, 'unknown to this version')})"
