"""One rank of the distributed torchrec run of ``test_distributed_torch.py`` (also its single-process reference).

Each rank joins a gloo process group on 127.0.0.1 (through a ``TCPStore``
that the parent opened), wraps the demo model in torchrec's
``DistributedModelParallel`` (both tables sharded table-wise over the ranks,
FUSED compute kernel, ``apply_optimizer_in_backward(SGD)``), builds
``torch_bridge.build_recap_optimizer`` and trains on its half of each global
batch with TML's loop ``zero_grad -> forward -> backward -> step ->
scheduler.step``. It records, at every step, the loss, every dense group's
learning rate, the fused optimizer's group learning rates, the learning rate
the fused kernel held during backward, and a digest of the dense parameters;
at the end, the dense parameters and the rows of the tables this rank owns.
Everything goes to ``<out>/<run>_rank<r>.pt`` for the parent to compare.

``run="full"`` trains steps 0..29 and saves a checkpoint (model, optimizer,
scheduler; one file per rank) after step 14; ``run="resume"`` starts fresh
processes, loads that checkpoint and trains steps 15..29.

``variant="tables"`` gives each table its own optimizer and schedule instead
(:data:`TABLES`: exact Adagrad and exact row-wise Adagrad,
``torch_bridge.apply_table_optimizers`` before sharding,
``build_recap_optimizer(..., tables=TABLES)``) and checkpoints through DCP
(``torch.distributed.checkpoint``, both ranks writing one checkpoint); the
record then also holds the fused optimizers' accumulators of the tables this rank owns.

``variant="flat"`` is the recap run built with ``flat=True``: the dense Adam
groups step as one ``FlatAdam`` whose gradients arrive through the buckets of
DMP's ``DistributedDataParallel`` (``gradient_as_bucket_view=True``).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from functional_opt import config, table_config
from functional_opt.demo_model import Batch, ModelSpec, make_batches

STEPS = 30
CHECKPOINT_STEP = 15
GLOBAL_BATCH = 8
WORLD_SIZE = 2
TIMEOUT = datetime.timedelta(seconds=90)

SPEC = ModelSpec(tasks=("recap.engagement.is_favorited", "recap.engagement.is_replied"))
RECAP_CONFIG = config.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
        "multi_task_learning_rates": {
            "tower_learning_rates": {
                SPEC.tasks[0]: {
                    "linear_ramp_to_cosine": {
                        "learning_rate": 0.02,
                        "final_learning_rate": 0.002,
                        "num_ramp_steps": 5,
                        "final_num_steps": 25,
                    }
                },
                SPEC.tasks[1]: {"linear_ramp_to_constant": {"learning_rate": 0.01, "num_ramp_steps": 12}},
            },
            "backbone_learning_rate": {
                "piecewise_constant": {
                    "learning_rate_boundaries": [10, 20],
                    "learning_rate_values": [0.01, 0.005, 0.002],
                }
            },
        },
    }
)
EMB_CONFIG = config.EmbeddingOptimizerConfig(
    learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.3, "num_ramp_steps": 20}}, init_learning_rate=0.3
)


TABLE_OPTIMIZERS = (
    {
        "adagrad": {"lr": 0.2, "eps": 1e-8},
        "learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.2, "num_ramp_steps": 8}},
    },
    {
        "rowwise_adagrad": {"lr": 0.1, "eps": 1e-8},
        "learning_rate": {
            "piecewise_constant": {"learning_rate_boundaries": [10], "learning_rate_values": [0.1, 0.04]}
        },
    },
)
TABLES = table_config.LargeEmbeddingsConfig(
    tables=[
        {
            "name": name,
            "num_embeddings": rows,
            "embedding_dim": SPEC.embedding_dim,
            "data_type": "fp32",
            "optimizer": optimizer,
        }
        for (name, rows), optimizer in zip(SPEC.tables, TABLE_OPTIMIZERS, strict=True)
    ]
)
VARIANTS = ("recap", "tables", "flat")


def batches() -> list[Batch]:
    return make_batches(SPEC, STEPS, batch_size=GLOBAL_BATCH, seed=1)


def rank_slice(batch: Batch, rank: int, world_size: int) -> Batch:
    """Samples ``[rank * B / W, (rank + 1) * B / W)`` of a global batch, as a batch of its own."""
    per_rank = batch.dense.shape[0] // world_size
    lo, hi = rank * per_rank, (rank + 1) * per_rank
    width = per_rank * SPEC.max_ids_per_sample
    ids = np.zeros((len(SPEC.tables), width), dtype=batch.ids.dtype)
    segment_ids = np.full((len(SPEC.tables), width), per_rank, dtype=batch.segment_ids.dtype)
    for t in range(len(SPEC.tables)):
        offsets = np.concatenate([[0], np.cumsum(batch.lengths[t])])
        chunk = batch.ids[t, offsets[lo] : offsets[hi]]
        ids[t, : len(chunk)] = chunk
        segment_ids[t, : len(chunk)] = np.repeat(np.arange(per_rank), batch.lengths[t, lo:hi])
    return Batch(
        dense=batch.dense[lo:hi],
        labels=batch.labels[lo:hi],
        lengths=batch.lengths[:, lo:hi],
        ids=ids,
        segment_ids=segment_ids,
    )


def shard(model: torch.nn.Module, variant: str = "recap") -> torch.nn.Module:
    """``DistributedModelParallel`` over the process group: tables table-wise, FUSED kernel, fused SGD.

    ``variant="tables"``: each table's own optimizer (:data:`TABLES`) instead of SGD.

    DMP creates the sharded tables afresh, so the model's initial rows are
    copied into the shards this rank holds.
    """
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embedding_types import EmbeddingComputeKernel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

    initial = {n: p.detach().clone() for n, p in model.named_parameters() if ".embedding_bags." in n}
    if variant == "tables":
        from torch_bridge import apply_table_optimizers

        apply_table_optimizers(model, TABLES)
    else:
        apply_optimizer_in_backward(torch.optim.SGD, model.ebc.parameters(), {"lr": EMB_CONFIG.init_learning_rate})
    constraints = {
        table: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value],
            compute_kernels=[EmbeddingComputeKernel.FUSED.value],
        )
        for table, _ in SPEC.tables
    }
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(), compute_device="cpu"), constraints=constraints
    )
    sharders = [EmbeddingBagCollectionSharder()]
    plan = planner.collective_plan(model, sharders, dist.GroupMember.WORLD)
    sharded = DistributedModelParallel(model, device=torch.device("cpu"), plan=plan, sharders=sharders)
    with torch.no_grad():
        for name, rows in local_tables(sharded).items():
            rows.copy_(initial[name])
    return sharded


def build(variant: str = "recap") -> tuple[torch.nn.Module, Any, Any]:
    """The sharded demo model, the bridge's recap optimizer and its scheduler (needs a process group)."""
    from torch_bridge import build_recap_optimizer
    from torch_bridge.demo_model import DemoRankingModel

    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r} must be one of {VARIANTS}")
    model = shard(DemoRankingModel(SPEC, seed=0), variant)
    if variant == "tables":
        optimizer, scheduler = build_recap_optimizer(model, RECAP_CONFIG, tables=TABLES)
    else:
        optimizer, scheduler = build_recap_optimizer(model, RECAP_CONFIG, EMB_CONFIG, flat=variant == "flat")
    return model, optimizer, scheduler


def local_tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``{table parameter name: local shard}`` for the tables this rank holds (views into the kernel's weights)."""
    out = {}
    for name, value in model.state_dict().items():
        if hasattr(value, "local_shards"):
            shards = value.local_shards()
            if len(shards) > 1:
                raise AssertionError(f"{name}: {len(shards)} local shards, table-wise sharding gives at most one")
            if shards:
                if list(shards[0].metadata.shard_offsets) != [0, 0]:
                    raise AssertionError(f"{name}: shard at {shards[0].metadata.shard_offsets}, expected a whole table")
                out[name.removeprefix("module.")] = shards[0].tensor
    return out


def dense_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter outside the embedding tables."""
    return {n.removeprefix("module."): p for n, p in model.named_parameters() if ".embedding_bags." not in n}


def digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def kernel_learning_rates(model: torch.nn.Module) -> list[float]:
    """The learning rate each fused TBE kernel holds now.

    torchrec exposes only ``param_groups[0]["lr"]``, which the kernel copies in
    ``zero_grad()``/``step()``; reading what backward really used needs the
    kernel itself (``EmbeddingFusedOptimizer._emb_module``), so this is the one
    place that touches a private torchrec attribute.
    """
    found: list[float] = []
    pending = [model.fused_optimizer]
    while pending:
        optimizer = pending.pop(0)
        if hasattr(optimizer, "optimizers"):  # a CombinedOptimizer: look inside, in order
            pending[:0] = [child for _, child in optimizer.optimizers]
        else:
            found.append(float(optimizer._emb_module.get_learning_rate()))
    return found


def fused_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The fused optimizers' state (accumulators) of the tables this rank owns, copied."""
    out = {}
    for key, entries in model.fused_optimizer.state_dict()["state"].items():
        for entry, value in entries.items():
            if hasattr(value, "local_shards"):
                shards = value.local_shards()
                if not shards:
                    continue
                value = torch.cat([shard.tensor for shard in shards])
            out[f"{key}.{entry}"] = value.detach().clone()
    return out


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    weights = {name: p.detach().clone() for name, p in dense_params(model).items()}
    weights.update({name: t.detach().clone() for name, t in local_tables(model).items()})
    torch.save({"model": weights, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)


def save_dcp(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    """Every rank at once: the model's and the optimizer's tensors through DCP (each shard and accumulator
    written by the rank that holds it); the rest of the optimizer's state and the scheduler's per rank.

    The param groups are rank-local (each rank's fused kernels are its own) and DCP keeps one copy of an
    entry that is not a tensor, so they travel with the per-rank file.
    """
    import torch.distributed.checkpoint as dcp

    state = optimizer.state_dict()
    dcp.save({"model": model.state_dict(), "optimizer": {"state": state["state"]}}, checkpoint_id=str(path))
    rest = {k: v for k, v in state.items() if k != "state"}
    torch.save({"optimizer": rest, "scheduler": scheduler.state_dict()}, path / f"rank{dist.get_rank()}.pt")


def load_dcp(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    """Into a fresh build: DCP fills the live state dicts in place, which are then loaded."""
    import torch.distributed.checkpoint as dcp

    target = {"model": model.state_dict(), "optimizer": {"state": optimizer.state_dict()["state"]}}
    dcp.load(target, checkpoint_id=str(path))
    local = torch.load(path / f"rank{dist.get_rank()}.pt", weights_only=True)
    model.load_state_dict(target["model"])
    optimizer.load_state_dict({**local["optimizer"], "state": target["optimizer"]["state"]})
    scheduler.load_state_dict(local["scheduler"])


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> None:
    checkpoint = torch.load(path, weights_only=False)
    targets = {**dense_params(model), **local_tables(model)}
    if set(targets) != set(checkpoint["model"]):
        raise AssertionError(f"checkpoint holds {sorted(checkpoint['model'])}, the model {sorted(targets)}")
    with torch.no_grad():
        for name, value in checkpoint["model"].items():
            targets[name].copy_(value)
    # torchrec's KeyedOptimizer loads state into existing tensors only: create Adam's state first.
    optimizer.init_state()
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])


def train(
    model: torch.nn.Module,
    optimizer: Any,
    scheduler: Any,
    data: list[Batch],
    start: int,
    stop: int,
    checkpoint: Path | None = None,
    save: Any = save_checkpoint,
) -> dict[str, Any]:
    from torch_bridge.demo_model import loss_fn, to_torch

    record: dict[str, Any] = {"losses": [], "dense_lrs": [], "fused_lrs": [], "kernel_lrs": [], "digests": []}
    for k in range(start, stop):
        dense, features, labels = to_torch(data[k], SPEC)
        optimizer.zero_grad()
        loss = loss_fn(model(dense, features), labels)
        loss.backward()
        record["kernel_lrs"].append(kernel_learning_rates(model))
        fused = {id(g) for g in model.fused_optimizer.param_groups}
        record["dense_lrs"].append({g["name"]: g["lr"] for g in optimizer.param_groups if id(g) not in fused})
        record["fused_lrs"].append({g["name"]: g["lr"] for g in model.fused_optimizer.param_groups})
        optimizer.step()
        scheduler.step()
        record["losses"].append(loss.item())
        record["digests"].append(digest(dense_params(model)))
        if checkpoint is not None and k + 1 == CHECKPOINT_STEP:
            save(checkpoint, model, optimizer, scheduler)
    record["dense"] = {n: p.detach().clone() for n, p in dense_params(model).items()}
    record["tables"] = {n: t.detach().clone() for n, t in local_tables(model).items()}
    record["fused_state"] = fused_state(model)
    return record


def move_there_and_back(variant: str, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """``export_state`` on every rank (each table gathered whole), then ``import_state`` into a fresh build."""
    from functional_opt.demo_model import named_arrays
    from torch_bridge import export_state, import_state

    moves = {"tables": TABLES, "dense": RECAP_CONFIG} if variant == "tables" else {}
    params, opt_state, step = export_state(model, optimizer, scheduler, **moves)
    accumulators = {}
    if variant == "tables":
        for label, masked in opt_state.inner_states.items():
            accumulator = getattr(masked.inner_state, "accumulator", None)
            if accumulator is not None:
                (accumulators[label],) = (a.copy() for a in named_arrays(accumulator).values())
    fresh_model, fresh_optimizer, fresh_scheduler = build(variant)
    import_state(fresh_model, fresh_optimizer, fresh_scheduler, params, opt_state, **moves)
    return {
        "exported": {"step": step, "params": named_arrays(params), "accumulators": accumulators},
        "imported": {
            "dense": {n: p.detach().clone() for n, p in dense_params(fresh_model).items()},
            "tables": {n: t.detach().clone() for n, t in local_tables(fresh_model).items()},
            "fused_state": fused_state(fresh_model),
            "last_epoch": fresh_scheduler.last_epoch,
            "kernel_lrs": kernel_learning_rates(fresh_model),
        },
    }


def run_rank(rank: int, world_size: int, port: int, out: str, run: str, variant: str = "recap") -> None:
    """Entry point of one spawned rank (``torch.multiprocessing.start_processes``)."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.manual_seed(1234 + rank)
    store = dist.TCPStore("127.0.0.1", port, world_size=None, is_master=False, timeout=TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=TIMEOUT)
    try:
        out_dir = Path(out)
        model, optimizer, scheduler = build(variant)
        # The recap and flat runs checkpoint with torch.save per rank, the per-table run through DCP.
        if variant == "tables":
            checkpoint, save, load = out_dir / "dcp_checkpoint", save_dcp, load_dcp
        else:
            checkpoint, save, load = out_dir / f"checkpoint_rank{rank}.pt", save_checkpoint, load_checkpoint
        data = [rank_slice(b, rank, world_size) for b in batches()]
        if run == "full":
            record = train(model, optimizer, scheduler, data, 0, STEPS, checkpoint=checkpoint, save=save)
            record.update(move_there_and_back(variant, model, optimizer, scheduler))
        elif run == "resume":
            load(checkpoint, model, optimizer, scheduler)
            record = train(model, optimizer, scheduler, data, CHECKPOINT_STEP, STEPS)
        else:
            raise ValueError(f"run={run!r} must be 'full' or 'resume'")
        record["rank"] = rank
        ddp = torch.nn.parallel.DistributedDataParallel
        record["dense_in_ddp"] = any(isinstance(m, ddp) for m in model.modules())
        torch.save(record, out_dir / f"{variant}_{run}_rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_single_process(variant: str = "recap") -> dict[str, Any]:
    """The same model, data and optimizer in this process, world size 1 (the whole global batch per step)."""
    from torch_bridge.demo_model import single_process_group

    with single_process_group():
        model, optimizer, scheduler = build(variant)
        return train(model, optimizer, scheduler, batches(), 0, STEPS)
