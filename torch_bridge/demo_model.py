"""The demo multi-task ranking model in torch, twin of ``functional_opt.demo_model``.

Same sizes (:class:`functional_opt.demo_model.ModelSpec`), same parameter
names, same initial weights (:func:`functional_opt.demo_model.init_arrays`)
and the same forward maths as the JAX model::

    ebc.embedding_bags.<table>.weight                 torchrec EmbeddingBagCollection (sum pooling)
    backbone.layers.<i>.weight / .bias                 Linear + ReLU
    towers.<sanitized task>.layers.<i>.weight / .bias  Linear + ReLU ..., last Linear to one logit

Embeddings: ``embedding="ebc"`` uses torchrec's ``EmbeddingBagCollection``;
``embedding="embedding_bag"`` puts ``torch.nn.EmbeddingBag(mode="sum")``
modules under the same names (``ebc.embedding_bags.<table>.weight``). The
EBC pools in float32 whatever the dtype of its weights, so a float64 model
must use ``"embedding_bag"`` (the default ``"auto"`` picks it for float64).

:func:`shard_with_fused_embeddings` wraps the model in torchrec's
``DistributedModelParallel`` with table-wise sharding and the FUSED compute
kernel, so its tables are updated by a fused SGD inside ``backward``.

Example:
    >>> import torch
    >>> from functional_opt.demo_model import ModelSpec, make_batches
    >>> from torch_bridge import demo_model
    >>> spec = ModelSpec()
    >>> model = demo_model.DemoRankingModel(spec, seed=0)
    >>> dense, kjt, labels = demo_model.to_torch(make_batches(spec, 1, batch_size=4)[0], spec)
    >>> model(dense, kjt).shape
    torch.Size([4, 2])
    >>> [n for n, _ in model.named_parameters()][:2]
    ['ebc.embedding_bags.user_id.weight', 'ebc.embedding_bags.tweet_id.weight']
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType

from functional_opt import grouping
from functional_opt.demo_model import EMBEDDING_ATTR, Batch, ModelSpec, init_arrays

__all__ = [
    "DemoRankingModel",
    "EmbeddingBags",
    "loss_fn",
    "named_arrays",
    "shard_with_fused_embeddings",
    "single_process_group",
    "to_torch",
]

EmbeddingKind = Literal["auto", "ebc", "embedding_bag"]


class MLP(nn.Module):
    """Linear layers under ``layers.<i>``, ReLU after each (after the last only if ``final_relu``)."""

    def __init__(self, widths: Sequence[int], *, final_relu: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.final_relu or i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


class EmbeddingBags(nn.Module):
    """``torch.nn.EmbeddingBag(mode="sum")`` tables under ``embedding_bags.<table>``, like an EBC.

    Pools in the dtype of its weights (float64 included). ``forward`` takes a
    ``KeyedJaggedTensor`` whose keys are the table names and returns
    ``{table: (B, dim)}``.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.embedding_bags = nn.ModuleDict(
            {table: nn.EmbeddingBag(rows, spec.embedding_dim, mode="sum") for table, rows in spec.tables}
        )

    def forward(self, features: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        return {
            table: bag(features[table].values(), features[table].offsets()[:-1])
            for table, bag in self.embedding_bags.items()
        }


class DemoRankingModel(nn.Module):
    """The demo multi-task ranking model (see the module docstring).

    Args:
        spec: the model's sizes.
        seed: seed of :func:`functional_opt.demo_model.init_arrays` (the JAX model's weights too).
        dtype: ``torch.float32`` or ``torch.float64``.
        embedding: ``"ebc"`` (torchrec), ``"embedding_bag"`` (``torch.nn.EmbeddingBag``) or
            ``"auto"`` (``"ebc"`` in float32, ``"embedding_bag"`` in float64).

    Raises:
        ValueError: an unknown ``embedding``, or an EBC in float64.
    """

    def __init__(
        self,
        spec: ModelSpec | None = None,
        *,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        embedding: EmbeddingKind = "auto",
    ) -> None:
        super().__init__()
        spec = ModelSpec() if spec is None else spec
        if embedding == "auto":
            embedding = "ebc" if dtype == torch.float32 else "embedding_bag"
        if embedding not in ("ebc", "embedding_bag"):
            raise ValueError(f"DemoRankingModel: embedding={embedding!r} must be 'auto', 'ebc' or 'embedding_bag'")
        if embedding == "ebc" and dtype != torch.float32:
            raise ValueError(
                f"DemoRankingModel: embedding='ebc' with dtype={dtype}: torchrec's EmbeddingBagCollection "
                "pools in float32 whatever its weights' dtype; use embedding='embedding_bag'"
            )
        self.spec = spec
        self.embedding = embedding
        if embedding == "ebc":
            tables = [
                EmbeddingBagConfig(
                    name=table,
                    embedding_dim=spec.embedding_dim,
                    num_embeddings=rows,
                    feature_names=[table],
                    pooling=PoolingType.SUM,
                )
                for table, rows in spec.tables
            ]
            ebc: nn.Module = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
        else:
            ebc = EmbeddingBags(spec)
        setattr(self, EMBEDDING_ATTR, ebc)
        self.backbone = MLP([spec.input_width, *spec.backbone_sizes], final_relu=True)
        self.towers = nn.ModuleDict(
            {
                grouping.sanitize(task): MLP([spec.backbone_sizes[-1], *spec.tower_sizes, 1], final_relu=False)
                for task in spec.tasks
            }
        )
        self.to(dtype)
        self.load_arrays(init_arrays(spec, seed))

    @torch.no_grad()
    def load_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copies ``{parameter name: array}`` into the parameters (each cast to its dtype).

        Raises:
            ValueError: the names differ from the model's.
        """
        params = dict(self.named_parameters())
        if set(params) != set(arrays):
            raise ValueError(
                f"load_arrays: names differ: missing {sorted(set(params) - set(arrays))}, "
                f"extra {sorted(set(arrays) - set(params))}"
            )
        for name, param in params.items():
            param.copy_(torch.as_tensor(np.asarray(arrays[name])))

    def forward(self, dense: torch.Tensor, features: KeyedJaggedTensor) -> torch.Tensor:
        """Logits ``(B, num_tasks)`` in ``spec.tasks`` order."""
        pooled = getattr(self, EMBEDDING_ATTR)(features)
        if not isinstance(pooled, dict):  # torchrec's KeyedTensor
            pooled = pooled.to_dict()
        h = torch.cat([dense, *(pooled[table] for table, _ in self.spec.tables)], dim=1)
        h = self.backbone(h)
        return torch.cat([self.towers[grouping.sanitize(task)](h) for task in self.spec.tasks], dim=1)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over tasks of the mean binary cross-entropy with logits (the JAX model's loss)."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=0).sum()


def to_torch(
    batch: Batch, spec: ModelSpec, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, KeyedJaggedTensor, torch.Tensor]:
    """A :class:`functional_opt.demo_model.Batch` as ``(dense, KeyedJaggedTensor, labels)``.

    The KJT's keys are the table names; padding ids are dropped.
    """
    values = []
    for t in range(len(spec.tables)):
        values.append(np.asarray(batch.ids[t])[: int(np.asarray(batch.lengths[t]).sum())])
    features = KeyedJaggedTensor.from_lengths_sync(
        keys=[table for table, _ in spec.tables],
        values=torch.as_tensor(np.concatenate(values), dtype=torch.int64),
        lengths=torch.as_tensor(np.asarray(batch.lengths).reshape(-1), dtype=torch.int32),
    )
    dense = torch.as_tensor(np.asarray(batch.dense), dtype=dtype)
    labels = torch.as_tensor(np.asarray(batch.labels), dtype=dtype)
    return dense, features, labels


def named_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """``{parameter name: numpy copy}``, sharded tables included (read from their local shard).

    Names are those of ``model.named_parameters()``; a
    ``DistributedModelParallel`` wrapper's ``module.`` prefix is removed.
    """
    names = {name.removeprefix("module.") for name, _ in model.named_parameters()}
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in model.state_dict().items():
        name = name.removeprefix("module.")
        if name not in names:
            continue
        if hasattr(tensor, "local_shards"):  # ShardedTensor of a sharded table (world size 1: one shard)
            shards = tensor.local_shards()
            if len(shards) != 1:
                raise ValueError(f"named_arrays: {name} has {len(shards)} local shards, expected 1")
            tensor = shards[0].tensor
        arrays[name] = tensor.detach().cpu().numpy().copy()
    return arrays


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """A gloo process group of world size 1 in this process (no network), destroyed on exit.

    Does nothing when a default process group already exists.
    """
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard_with_fused_embeddings(model: DemoRankingModel, learning_rate: float, *, tables: Any = None) -> nn.Module:
    """Wraps ``model`` in ``DistributedModelParallel`` with fused SGD embedding tables.

    Every table is sharded table-wise on rank 0 with the FUSED compute kernel;
    its optimizer (``apply_optimizer_in_backward`` SGD, initial LR
    ``learning_rate``) updates the rows inside ``backward`` and is reachable as
    ``wrapped.fused_optimizer``. Needs a process group
    (:func:`single_process_group`) and a float32 model with ``embedding="ebc"``.

    Args:
        model: the model (its tables move into the sharded module).
        learning_rate: the fused optimizer's initial learning rate.
        tables: each table's own optimizer instead (table configs, see
            :func:`torch_bridge.apply_table_optimizers`); ``learning_rate`` is then unused.

    Returns:
        The ``DistributedModelParallel`` module.

    Raises:
        ValueError: the model does not use torchrec's EBC.
        RuntimeError: no process group is initialized.
    """
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    if model.embedding != "ebc":
        raise ValueError(f"shard_with_fused_embeddings: the model must use embedding='ebc', got {model.embedding!r}")
    if not dist.is_initialized():
        raise RuntimeError("shard_with_fused_embeddings: no process group; use single_process_group()")
    ebc = getattr(model, EMBEDDING_ATTR)
    if tables is None:
        apply_optimizer_in_backward(torch.optim.SGD, ebc.parameters(), {"lr": float(learning_rate)})
    else:
        from torch_bridge.tables import apply_table_optimizers

        apply_table_optimizers(model, tables)
    constraints = {
        table: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value],
            compute_kernels=[EmbeddingComputeKernel.FUSED.value],
        )
        for table, _ in model.spec.tables
    }
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(), compute_device="cpu"), constraints=constraints
    )
    sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    tables = {name: array for name, array in named_arrays(model).items() if ".embedding_bags." in name}
    sharded = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan, sharders=sharders)
    # The sharded tables are created afresh; give them the model's weights back.
    with torch.no_grad():
        for name, tensor in sharded.state_dict().items():
            name = name.removeprefix("module.")
            if name not in tables:
                continue
            full = torch.as_tensor(tables[name])
            if not hasattr(tensor, "local_shards"):
                tensor.copy_(full)
                continue
            # Each rank holds the shards the plan gave it (none, for a table on another rank).
            for shard in tensor.local_shards():
                rows, cols = shard.metadata.shard_offsets
                height, width = shard.metadata.shard_sizes
                shard.tensor.copy_(full[rows : rows + height, cols : cols + width])
    return sharded
