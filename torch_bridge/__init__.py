"""The torch side of functional-opt: schedulers and optimizer builders for PyTorch and torchrec.

Every learning rate comes from the JAX schedules of ``functional_opt.schedules``;
nothing here re-implements a schedule or the recap grouping rule. The one update
rule written here is torch's own Adam, as the loop that
:class:`~torch_bridge.flat_adam.FlatAdam` runs over one buffer
(``flat_adam_kernel.c``), tested against ``torch.optim.Adam`` step by step.

torchrec is imported only by the functions that need it
(:func:`build_recap_optimizer`, or a :class:`RecapLRShim` given a torchrec
optimizer), so plain-torch users do not pay for its import.
"""

from torch_bridge.flat_adam import FlatAdam
from torch_bridge.from_torch import learning_rates_from_torch
from torch_bridge.optimizers import build_optimizer
from torch_bridge.recap import build_recap_optimizer
from torch_bridge.recap_scheduler import RecapLRShim
from torch_bridge.schedulers import LRShim
from torch_bridge.state_transfer import export_state, import_state
from torch_bridge.tables import apply_table_optimizers, build_embedding_optimizer

__all__ = [
    "FlatAdam",
    "LRShim",
    "RecapLRShim",
    "apply_table_optimizers",
    "build_embedding_optimizer",
    "build_optimizer",
    "build_recap_optimizer",
    "export_state",
    "import_state",
    "learning_rates_from_torch",
]
