"""The torch bridge tests' toys: a small recap-shaped model, its configs, batches, a training loop, DMP.

The model has three towers whose names contain dots (modules named with
``grouping.sanitize``), a backbone, a torchrec ``EmbeddingBagCollection``
(``ebc``: dense here, sharded with the FUSED kernel by :func:`shard_fused`) and
a ``torch.nn.EmbeddingBag`` under ``side.embedding_bags`` (always dense), so
every recap group exists: towers, ``backbone``, ``dense_ebc`` and, under DMP,
the fused embedding optimizer.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from functional_opt import config, grouping

TOWERS = ("recap.engagement.is_favorited", "recap.engagement.is_replied", "recap.engagement.is_retweeted")
TABLES = (("t0", "f0", 32), ("t1", "f1", 24))  # (table, feature, rows) of the torchrec EBC
SIDE_ROWS = 16
EMB_DIM = 4
DENSE_DIM = 5
BATCH = 8


def tower_learning_rates() -> dict[str, config.LearningRate]:
    """One schedule kind per tower; every value changes within 60 steps."""
    return {
        TOWERS[0]: config.LearningRate(
            linear_ramp_to_cosine={
                "learning_rate": 0.02,
                "final_learning_rate": 0.002,
                "num_ramp_steps": 5,
                "final_num_steps": 40,
            }
        ),
        TOWERS[1]: config.LearningRate(
            piecewise_constant={"learning_rate_boundaries": [10, 25], "learning_rate_values": [0.01, 0.004, 0.001]}
        ),
        TOWERS[2]: config.LearningRate(linear_ramp_to_constant={"learning_rate": 0.015, "num_ramp_steps": 8}),
    }


def recap_config(*, backbone: bool = True) -> config.RecapOptimizerConfig:
    return config.RecapOptimizerConfig(
        adam={"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-6},
        multi_task_learning_rates={
            "tower_learning_rates": tower_learning_rates(),
            "backbone_learning_rate": config.LearningRate(constant=0.003) if backbone else None,
        },
    )


def emb_learning_rate() -> config.LearningRate:
    """Strictly increasing, then strictly decreasing up to step 80: step k and k +- 1 always differ."""
    return config.LearningRate(
        linear_ramp_to_cosine={
            "learning_rate": 0.5,
            "final_learning_rate": 0.05,
            "num_ramp_steps": 10,
            "final_num_steps": 80,
        }
    )


def emb_config() -> config.EmbeddingOptimizerConfig:
    return config.EmbeddingOptimizerConfig(learning_rate=emb_learning_rate())


def dense_group_learning_rates() -> dict[str, config.LearningRate]:
    """The schedule of every dense group that ``build_recap_optimizer`` makes from the toy configs, in order."""
    rates = dict(tower_learning_rates())
    rates["backbone"] = config.LearningRate(constant=0.003)
    rates["dense_ebc"] = emb_learning_rate()
    return rates


def close(a: float, b: float) -> bool:
    """The contract: ``|a - b| <= 1e-12 * max(1, |b|)``."""
    return abs(a - b) <= 1e-12 * max(1.0, abs(b))


class Tower(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(width, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class RecapToyModel(nn.Module):
    """Dense features + torchrec EBC + side embedding bag -> backbone -> one logit per tower.

    ``forward`` keeps the pooled EBC output in ``self.pooled`` (with its gradient
    retained) so tests can compute each embedding row's gradient.
    """

    def __init__(self, towers: Sequence[str] = TOWERS, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name=t, embedding_dim=EMB_DIM, num_embeddings=rows, feature_names=[f])
                for t, f, rows in TABLES
            ],
            device=torch.device("cpu"),
        )
        self.side = nn.ModuleDict({"embedding_bags": nn.ModuleDict({"t2": nn.EmbeddingBag(SIDE_ROWS, EMB_DIM)})})
        width = DENSE_DIM + EMB_DIM * (len(TABLES) + 1)
        self.backbone = nn.Sequential(nn.Linear(width, 16), nn.ReLU())
        self.towers = nn.ModuleDict({grouping.sanitize(t): Tower(16) for t in towers})
        self.pooled: torch.Tensor | None = None

    def forward(self, dense: torch.Tensor, kjt: KeyedJaggedTensor, side_ids: torch.Tensor) -> torch.Tensor:
        pooled = self.ebc(kjt).values()
        if pooled.requires_grad:
            pooled.retain_grad()
        self.pooled = pooled
        side = self.side["embedding_bags"]["t2"](side_ids.view(-1, 1))
        hidden = self.backbone(torch.cat([dense, pooled, side], dim=1))
        return torch.cat([tower(hidden) for tower in self.towers.values()], dim=1)


@dataclass(frozen=True)
class Batch:
    dense: torch.Tensor
    ids: dict[str, torch.Tensor]  # feature -> one id per example, distinct within the batch
    kjt: KeyedJaggedTensor
    side_ids: torch.Tensor
    labels: torch.Tensor


def make_batches(num: int, seed: int = 1, num_towers: int = len(TOWERS)) -> list[Batch]:
    """Deterministic batches; each example has one id per feature, ids distinct within a batch."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(num):
        ids = {f: torch.randperm(rows, generator=gen)[:BATCH] for _, f, rows in TABLES}
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=[f for _, f, _ in TABLES],
            values=torch.cat([ids[f] for _, f, _ in TABLES]),
            lengths=torch.ones(BATCH * len(TABLES), dtype=torch.int64),
        )
        batches.append(
            Batch(
                dense=torch.randn(BATCH, DENSE_DIM, generator=gen),
                ids=ids,
                kjt=kjt,
                side_ids=torch.randint(0, SIDE_ROWS, (BATCH,), generator=gen),
                labels=torch.randint(0, 2, (BATCH, num_towers), generator=gen).float(),
            )
        )
    return batches


def loss_fn(model: nn.Module, batch: Batch) -> torch.Tensor:
    logits = model(batch.dense, batch.kjt, batch.side_ids)
    return nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)


StepHook = Callable[[int, Batch], None]


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    batches: Sequence[Batch],
    *,
    before_forward: StepHook | None = None,
    before_step: StepHook | None = None,
) -> None:
    """TML's loop: zero_grad -> forward -> backward -> optimizer.step -> scheduler.step."""
    for k, batch in enumerate(batches):
        optimizer.zero_grad()
        if before_forward is not None:
            before_forward(k, batch)
        loss_fn(model, batch).backward()
        if before_step is not None:
            before_step(k, batch)
        optimizer.step()
        scheduler.step()


def roundtrip(obj: object) -> object:
    """``obj`` through ``torch.save`` / ``torch.load``, as a checkpoint on disk would be."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def dense_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.state_dict()`` as a plain tensor (local shard of a ShardedTensor)."""
    out = {}
    for name, value in model.state_dict().items():
        if hasattr(value, "local_shards"):
            value = torch.cat([s.tensor for s in value.local_shards()])
        out[name] = value.detach().clone()
    return out


def shard_fused(model: RecapToyModel, init_lr: float = 0.1, tables: object = None) -> nn.Module:
    """``DistributedModelParallel`` over ``model``: ``ebc`` table-wise, FUSED kernel, SGD in backward.

    With ``tables`` (table configs), each table's own optimizer instead (``torch_bridge.apply_table_optimizers``).
    """
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
    from torchrec.distributed.planner.types import KernelConfig, TopologyFactory, TrainerConfig
    from torchrec.distributed.types import ShardingType
    from torchrec.optim import apply_optimizer_in_backward

    if tables is None:
        apply_optimizer_in_backward(torch.optim.SGD, model.ebc.parameters(), {"lr": init_lr})
    else:
        from torch_bridge import apply_table_optimizers

        apply_table_optimizers(model, tables)
    constraints = {
        t: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value],
            compute_kernels=[EmbeddingComputeKernel.FUSED.value],
        )
        for t, _, _ in TABLES
    }
    topology = TopologyFactory.create_topology(
        trainer_config=TrainerConfig(world_size=1), kernel_config=KernelConfig(compute_device="cpu")
    )
    sharders = [EmbeddingBagCollectionSharder()]
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    with contextlib.redirect_stdout(io.StringIO()):
        return DistributedModelParallel(model, device=torch.device("cpu"), plan=plan, sharders=sharders)
