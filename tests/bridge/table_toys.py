"""A TwHIN-shaped toy: two tables (one feature each) and a translation parameter, sharded or not."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from functional_opt import table_config

DIM = 4
ROWS = {"user": 20, "tweet": 12}


def table(name: str, optimizer: dict, rows: int | None = None) -> dict:
    """One table's config (as a dict, the way a YAML file gives it)."""
    return {
        "name": name,
        "num_embeddings": rows or ROWS[name],
        "embedding_dim": DIM,
        "data_type": "fp32",
        "optimizer": optimizer,
    }


def sgd_tables() -> table_config.LargeEmbeddingsConfig:
    """Two SGD tables with different rates and schedules (every step's rate differs from the last)."""
    return table_config.LargeEmbeddingsConfig(
        tables=[
            table(
                "user",
                {
                    "sgd": {"lr": 0.5},
                    "learning_rate": {
                        "linear_ramp_to_cosine": {
                            "learning_rate": 0.5,
                            "final_learning_rate": 0.05,
                            "num_ramp_steps": 5,
                            "final_num_steps": 40,
                        }
                    },
                },
            ),
            table(
                "tweet",
                {
                    "sgd": {"lr": 0.3},
                    "learning_rate": {
                        "piecewise_constant": {
                            "learning_rate_boundaries": [3, 9],
                            "learning_rate_values": [0.3, 0.2, 0.1],
                        }
                    },
                },
            ),
        ]
    )


class TwhinToy(nn.Module):
    """Pooled table embeddings, the lhs translated by a per-relation vector, scored against the rhs."""

    def __init__(self, tables: Sequence[str] = tuple(ROWS), relations: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.tables = list(tables)
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=t, embedding_dim=DIM, num_embeddings=ROWS[t], feature_names=[t])
                for t in self.tables
            ],
            device=torch.device("cpu"),
        )
        self.all_trans_embs = nn.Parameter(torch.rand(relations, DIM))
        self.pooled: torch.Tensor | None = None

    def forward(self, kjt: KeyedJaggedTensor, rels: torch.Tensor) -> torch.Tensor:
        pooled = self.ebc(kjt).values()
        pooled.retain_grad()
        self.pooled = pooled
        lhs, rhs = pooled[:, :DIM], pooled[:, DIM : 2 * DIM]
        return ((lhs + self.all_trans_embs[rels]) * rhs).sum(-1)


class Batch(NamedTuple):
    kjt: KeyedJaggedTensor
    rels: torch.Tensor
    ids: dict[str, torch.Tensor]  # one id per example and table


def make_batches(num: int, batch: int = 5, seed: int = 1, tables: Sequence[str] = tuple(ROWS)) -> list[Batch]:
    """Batches of one distinct id per example and table (so a row's gradient is one example's)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(num):
        ids = {t: torch.randperm(ROWS[t], generator=g)[:batch] for t in tables}
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=list(tables),
            values=torch.cat([ids[t] for t in tables]),
            lengths=torch.ones(batch * len(tables), dtype=torch.int64),
        )
        out.append(Batch(kjt, torch.randint(0, 3, (batch,), generator=g), ids))
    return out


def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
    return torch.nn.functional.softplus(-model(batch.kjt, batch.rels)).mean()


def shard(model: TwhinToy) -> nn.Module:
    """``DistributedModelParallel`` over ``model``: tables table-wise on the FUSED kernel (their optimizers applied)."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
    from torchrec.distributed.types import ShardingType

    constraints = {
        t: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value], compute_kernels=[EmbeddingComputeKernel.FUSED.value]
        )
        for t in model.tables
    }
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=dist.get_world_size()), kernel_config=KernelConfig(compute_device="cpu")
    )
    sharders = [EmbeddingBagCollectionSharder()]
    plan = EmbeddingShardingPlanner(topology=topology, constraints=constraints).collective_plan(
        model, sharders, dist.GroupMember.WORLD
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return DistributedModelParallel(model, device=torch.device("cpu"), plan=plan, sharders=sharders)


def table_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Each table's rows (the local shard of a sharded table), copied."""
    out = {}
    for name, value in model.state_dict().items():
        if ".embedding_bags." not in name:
            continue
        if hasattr(value, "local_shards"):
            value = torch.cat([s.tensor for s in value.local_shards()])
        out[name.split(".embedding_bags.")[1].split(".")[0]] = value.detach().clone()
    return out
