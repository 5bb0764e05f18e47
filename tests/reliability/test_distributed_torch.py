"""Two ranks of torchrec's DistributedModelParallel with the fused embedding optimizer and the bridge's recap optimizer.

Two processes (``torch.multiprocessing``, spawn) join a gloo group on
127.0.0.1 only: the rendezvous ``TCPStore`` listens on a loopback socket this
process opens on a free port, and gloo is pinned to the loopback interface.
The demo model's two tables are sharded table-wise (one per rank, FUSED
kernel, ``apply_optimizer_in_backward(SGD)``); DMP wraps the dense part in
``DistributedDataParallel``, which averages dense gradients over the ranks,
and torchrec divides the embedding gradients by the world size too, so two
ranks on half batches follow the same trajectory as one process on whole
batches (``_dist_torch_worker.py`` has the training loop).

Checks, over 30 steps of ``zero_grad -> forward -> backward -> step ->
scheduler.step``:

* every rank's dense-group and fused-group learning rates equal
  ``compute_lr(config, k)`` at step k (1e-12 relative), and the fused kernel
  ran backward k with ``float32(compute_lr(emb_config, k))``;
* the dense parameters are bitwise identical on both ranks after every step;
* the mean of the ranks' losses equals a single-process run's loss within
  float32 tolerance, and so do the final parameters;
* a checkpoint saved after step 15 (per rank: model, optimizer, scheduler),
  loaded by two new processes that finish the run, gives bitwise the same
  losses, learning rates and parameters as the uninterrupted run.

* ``export_state`` after the run, on both ranks, gives the same whole
  parameters (each table gathered from the rank that holds it) and, per table,
  the same accumulator, equal to what the owning rank holds; ``import_state``
  into a fresh build writes every rank's shards, accumulators, dense parameters
  and step back bitwise.

All of it three times: the recap optimizer with one embedding schedule (fused SGD,
checkpoints by ``torch.save`` per rank), and with every table on its own
optimizer and schedule (exact Adagrad and exact row-wise Adagrad, whose
accumulators must resume bitwise too; one DCP checkpoint written by both ranks).
And a third time with ``build_recap_optimizer(..., flat=True)``: the dense Adam
groups in one buffer, their gradients copied in from DDP's buckets.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import _dist_torch_worker as worker
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from functional_opt import schedules, table_config
from functional_opt.demo_model import init_arrays

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

LAUNCH_TIMEOUT_S = 240
"""A hang guard for one launch of both ranks, not a speed requirement."""

FLOAT32_RTOL = 1e-5


class Ranks:
    """Both ranks of one run, started at once; ``wait`` joins them or terminates them."""

    def __init__(self, run: str, out: Path, variant: str) -> None:
        self.run = run
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(worker.WORLD_SIZE * 4)
        port = listener.getsockname()[1]
        # The store serves on this loopback socket and closes it when it goes.
        self._store: dist.TCPStore | None = dist.TCPStore(
            "127.0.0.1",
            port,
            world_size=None,
            is_master=True,
            wait_for_workers=False,
            timeout=worker.TIMEOUT,
            master_listen_fd=listener.detach(),
        )
        self._context = mp.start_processes(
            worker.run_rank,
            args=(worker.WORLD_SIZE, port, str(out), run, variant),
            nprocs=worker.WORLD_SIZE,
            join=False,
            start_method="spawn",
        )

    def wait(self) -> None:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        try:
            while not self._context.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.run}: the ranks did not finish within {LAUNCH_TIMEOUT_S} s")
        finally:
            self.stop()

    def stop(self) -> None:
        for process in self._context.processes:
            if process.is_alive():
                process.terminate()
        for process in self._context.processes:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
        self._store = None


@pytest.fixture(scope="module", params=worker.VARIANTS)
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Both launches (the reference runs here while the first one starts), then their records."""
    variant = request.param
    out = tmp_path_factory.mktemp(f"distributed_torch_{variant}")
    full = Ranks("full", out, variant)
    try:
        reference = worker.run_single_process(variant)
        full.wait()
    finally:
        full.stop()
    resume = Ranks("resume", out, variant)
    resume.wait()

    def load(run: str) -> list[dict[str, Any]]:
        return [torch.load(out / f"{variant}_{run}_rank{r}.pt", weights_only=False) for r in range(worker.WORLD_SIZE)]

    return {"variant": variant, "full": load("full"), "resume": load("resume"), "reference": reference}


def _lr_configs() -> dict[str, Any]:
    multi = worker.RECAP_CONFIG.multi_task_learning_rates
    return {**multi.tower_learning_rates, "backbone": multi.backbone_learning_rate}


def _fused_lr_configs(variant: str) -> dict[str, Any]:
    """The schedule of each fused group by name: the one embedding schedule, or each table's own."""
    if variant == "tables":
        return table_config.table_learning_rates(worker.TABLES)
    return {"embeddings": worker.EMB_CONFIG.learning_rate}


def test_tables_are_split_across_the_ranks(runs: dict[str, Any]) -> None:
    owned = [sorted(record["tables"]) for record in runs["full"]]
    assert all(len(tables) == 1 for tables in owned), owned
    assert sorted(t for tables in owned for t in tables) == sorted(runs["reference"]["tables"]), owned


@pytest.mark.parametrize("run", ["full", "resume"])
def test_every_rank_uses_compute_lr_at_every_step(runs: dict[str, Any], run: str) -> None:
    configs = _lr_configs()
    fused_configs = _fused_lr_configs(runs["variant"])
    first = 0 if run == "full" else worker.CHECKPOINT_STEP
    for record in runs[run]:
        assert len(record["dense_lrs"]) == worker.STEPS - first
        for offset, (dense, fused, kernel) in enumerate(
            zip(record["dense_lrs"], record["fused_lrs"], record["kernel_lrs"], strict=True)
        ):
            k = first + offset
            assert list(dense) == list(configs), (k, list(dense))
            for group, lr in dense.items():
                expected = schedules.compute_lr(configs[group], k)
                assert abs(lr - expected) <= 1e-12 * max(1.0, abs(expected)), (record["rank"], k, group, lr, expected)
            assert fused, "the rank has no fused embedding group"
            kernel_expected = []
            for name, lr in fused.items():
                expected = schedules.compute_lr(fused_configs[name], k)
                assert abs(lr - expected) <= 1e-12 * max(1.0, abs(expected)), (record["rank"], k, name, lr)
                kernel_expected.append(float(np.float32(expected)))
            assert kernel == kernel_expected, (record["rank"], k, kernel)


def test_dense_params_identical_across_ranks(runs: dict[str, Any]) -> None:
    rank0, rank1 = runs["full"]
    assert rank0["dense_in_ddp"] and rank1["dense_in_ddp"], "DMP did not wrap the dense part in DistributedDataParallel"
    assert len(rank0["digests"]) == worker.STEPS
    assert rank0["digests"] == rank1["digests"]
    assert sorted(rank0["dense"]) == sorted(rank1["dense"])
    for name in rank0["dense"]:
        assert torch.equal(rank0["dense"][name], rank1["dense"][name]), name


def test_losses_and_params_match_single_process(runs: dict[str, Any], record_property) -> None:
    ranks, reference = runs["full"], runs["reference"]
    distributed = np.mean([record["losses"] for record in ranks], axis=0)
    single = np.asarray(reference["losses"])
    loss_diff = float(np.max(np.abs(distributed - single)))
    param_diff = 0.0
    for name, value in ranks[0]["dense"].items():
        param_diff = max(param_diff, float((value - reference["dense"][name]).abs().max()))
    for record in ranks:
        for name, value in record["tables"].items():
            param_diff = max(param_diff, float((value - reference["tables"][name]).abs().max()))
    record_property("max_loss_diff", loss_diff)
    record_property("max_param_diff", param_diff)
    print(f"2 ranks vs 1 process: max |loss diff| = {loss_diff:.3g}, max |param diff| = {param_diff:.3g}")
    assert np.allclose(distributed, single, rtol=FLOAT32_RTOL, atol=0.0), (distributed, single)
    scale = max(float(v.abs().max()) for v in reference["dense"].values())
    assert param_diff <= FLOAT32_RTOL * max(1.0, scale)
    initial = init_arrays(worker.SPEC, seed=0)
    moved = max(float(np.max(np.abs(v.numpy() - initial[n]))) for n, v in reference["dense"].items())
    assert moved > 100 * FLOAT32_RTOL * max(1.0, scale), "the parameters barely moved: the comparison proves nothing"


def test_resume_from_checkpoint_is_bitwise_equal(runs: dict[str, Any]) -> None:
    start = worker.CHECKPOINT_STEP
    for full, resumed in zip(runs["full"], runs["resume"], strict=True):
        assert resumed["rank"] == full["rank"]
        assert resumed["losses"] == full["losses"][start:]
        assert resumed["digests"] == full["digests"][start:]
        assert resumed["dense_lrs"] == full["dense_lrs"][start:]
        assert resumed["kernel_lrs"] == full["kernel_lrs"][start:]
        assert resumed["fused_lrs"] == full["fused_lrs"][start:]
        # Exact Adagrad / row-wise Adagrad keep an accumulator per table; fused SGD keeps none.
        assert bool(full["fused_state"]) == (runs["variant"] == "tables"), sorted(full["fused_state"])
        for part in ("dense", "tables", "fused_state"):
            assert sorted(resumed[part]) == sorted(full[part])
            for name, value in full[part].items():
                assert torch.equal(resumed[part][name], value), (full["rank"], name)


def test_export_gathers_every_shard_and_import_writes_them_back(runs: dict[str, Any]) -> None:
    ranks = runs["full"]
    exported = [record["exported"] for record in ranks]
    assert all(e["step"] == worker.STEPS for e in exported)
    names = sorted(exported[0]["params"])
    assert names == sorted([*ranks[0]["dense"], *runs["reference"]["tables"]])
    for name in names:
        assert np.array_equal(exported[0]["params"][name], exported[1]["params"][name]), name
    for record in ranks:  # the owner's rows and dense parameters, bitwise
        for part in ("dense", "tables"):
            for name, value in record[part].items():
                assert np.array_equal(exported[0]["params"][name], value.numpy()), (record["rank"], name)
    if runs["variant"] == "tables":
        assert sorted(exported[0]["accumulators"]) == ["tweet_id", "user_id"]
        owned = {k: v for record in ranks for k, v in record["fused_state"].items()}
        for table, accumulator in exported[0]["accumulators"].items():
            assert np.array_equal(accumulator, exported[1]["accumulators"][table]), table
            (held,) = [v for k, v in owned.items() if k.endswith(f"{table}.momentum1")]
            assert np.array_equal(accumulator, held.numpy().reshape(accumulator.shape)), table
            assert float(np.abs(accumulator).max()) > 0, table
    for record in ranks:
        imported = record["imported"]
        assert imported["last_epoch"] == worker.STEPS
        # The fresh kernels hold the rate of the next step, schedule(STEPS), as the scheduler's step sets it.
        fused_configs = _fused_lr_configs(runs["variant"])
        next_rates = [
            float(np.float32(schedules.compute_lr(fused_configs[name], worker.STEPS)))
            for name in record["fused_lrs"][-1]
        ]
        assert imported["kernel_lrs"] == next_rates, (record["rank"], imported["kernel_lrs"], next_rates)
        for part in ("dense", "tables", "fused_state"):
            assert sorted(imported[part]) == sorted(record[part]), part
            for name, value in record[part].items():
                assert torch.equal(imported[part][name], value), (record["rank"], part, name)
