"""The builders under Lightning and the Hugging Face ``Trainer``: one closure call, exact resume, learning-rate logs.

The models are tiny and built here; nothing is downloaded. Resume: a run of 2N
steps straight against N steps, a checkpoint written by the framework, a fresh
module / optimizer / scheduler (other initial weights) and the framework's own
resume to 2N: parameters and learning rates must be bitwise equal.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from test_resume_clients import GENERIC, SMALL_EMB, N, Small, small_batches, small_recap_config

import torch_bridge
from functional_opt.schedules import compute_lr

pytestmark = pytest.mark.slow


def build(model: torch.nn.Module, builder: str, tensor_lr: bool = False):
    if builder == "recap":
        return torch_bridge.build_recap_optimizer(model, small_recap_config(), SMALL_EMB, tensor_lr=tensor_lr)
    return torch_bridge.build_optimizer(model, GENERIC[builder], tensor_lr=tensor_lr)


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


# --- Lightning ----------------------------------------------------------------------------------


def lightning_module(builder: str, seed: int, tensor_lr: bool = False):
    import lightning.pytorch as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = Small(seed)
            self.calls = 0
            self.scheduler = None
            self.logged: list[dict[str, float]] = []

        def training_step(self, batch, batch_idx):
            # Step k trains on batch k, whatever Lightning's epoch bookkeeping replays on resume.
            self.calls += 1
            return self.net(**BATCHES[self.global_step])["loss"]

        def on_train_batch_start(self, batch, batch_idx):
            rates = self.scheduler.learning_rates()
            self.logged.append(rates)
            self.log_dict({f"lr/{name}": lr for name, lr in rates.items()})

        def configure_optimizers(self):
            opt, self.scheduler = build(self.net, builder, tensor_lr)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler, "interval": "step"}}

    return Module()


def lightning_trainer(max_steps: int, tmp_path: Path, **kwargs):
    import lightning.pytorch as pl

    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        enable_checkpointing="callbacks" in kwargs,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


BATCHES = small_batches(2 * N)


def loader():
    return torch.utils.data.DataLoader(range(N), batch_size=None)  # one epoch = N steps


@pytest.mark.parametrize(("builder", "tensor_lr"), [("recap", False), ("recap", True), ("adam", False), ("sgd", False)])
def test_lightning_resume_is_bitwise_equal_and_runs_the_closure_once(
    tmp_path: Path, builder: str, tensor_lr: bool
) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    straight = lightning_module(builder, 0, tensor_lr)
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=N, save_top_k=-1)
    trainer = lightning_trainer(2 * N, tmp_path, logger=False, callbacks=[saver])
    trainer.fit(straight, loader())
    assert straight.calls == 2 * N  # one training_step per step, dense_ebc's SGD included
    checkpoint = tmp_path / "ckpt" / f"epoch=0-step={N}.ckpt"

    resumed = lightning_module(builder, 7, tensor_lr)
    lightning_trainer(2 * N, tmp_path, logger=False).fit(resumed, loader(), ckpt_path=checkpoint)
    assert resumed.calls == N
    assert resumed.scheduler.last_epoch == straight.scheduler.last_epoch == 2 * N
    expected = params(straight.net)
    for name, value in params(resumed.net).items():
        assert torch.equal(value, expected[name]), name
    assert resumed.logged == straight.logged[N:]


def test_lightning_logs_every_group_rate_as_values_with_tensor_learning_rates(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import LearningRateMonitor
    from lightning.pytorch.loggers import CSVLogger

    module = lightning_module("recap", 0, tensor_lr=True)
    monitor = LearningRateMonitor(logging_interval="step")
    lightning_trainer(
        N, tmp_path, logger=CSVLogger(tmp_path, name="logs"), callbacks=[monitor], log_every_n_steps=1
    ).fit(module, loader())
    names = ["task.a", "task.b", "backbone", "dense_ebc"]
    assert [list(r) for r in module.logged] == [names] * N
    configs = [*small_recap_config().multi_task_learning_rates.tower_learning_rates.values()]
    configs += [small_recap_config().multi_task_learning_rates.backbone_learning_rate, SMALL_EMB.learning_rate]
    for k, rates in enumerate(module.logged):
        assert list(rates.values()) == [compute_lr(c, k) for c in configs], k
    rows = list(csv.DictReader(open(next(tmp_path.glob("logs/*/metrics.csv")))))
    logged = [float(r["lr/task.a"]) for r in rows if r.get("lr/task.a")]
    assert logged == [pytest.approx(compute_lr(configs[0], k), rel=1e-7) for k in range(N)]
    # Lightning's own monitor names the groups by their "name" entries.
    assert sorted(monitor.lrs) == sorted(f"lr-RecapOptimizer/{n}" for n in names)


# --- Hugging Face Trainer -----------------------------------------------------------------------


def hf_run(tmp_path: Path, builder: str, seed: int, tensor_lr: bool, resume: str | None = None):
    from transformers import Trainer, TrainingArguments

    class SequentialTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

    samples = [
        {key: value[i] for key, value in batch.items()} for batch in small_batches(N) for i in range(len(batch["x"]))
    ]
    model = Small(seed)
    calls = []
    forward = model.forward

    def counted(x: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        calls.append(1)
        return forward(x, ids, labels)

    model.forward = counted
    opt, sched = build(model, builder, tensor_lr)
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        max_steps=2 * N,
        per_device_train_batch_size=4,
        save_strategy="steps",
        save_steps=N,
        report_to="none",
        use_cpu=True,
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = SequentialTrainer(model=model, args=args, train_dataset=samples, optimizers=(opt, sched))
    trainer.train(resume_from_checkpoint=resume)
    return model, sched, len(calls)


@pytest.mark.parametrize(("builder", "tensor_lr"), [("recap", False), ("recap", True), ("adam", False)])
def test_hugging_face_resume_is_bitwise_equal(tmp_path: Path, builder: str, tensor_lr: bool) -> None:
    straight, straight_sched, calls = hf_run(tmp_path, builder, 0, tensor_lr)
    assert calls == 2 * N
    checkpoint = tmp_path / "hf" / f"checkpoint-{N}"
    assert checkpoint.is_dir()
    resumed, resumed_sched, calls = hf_run(tmp_path / "again", builder, 7, tensor_lr, resume=str(checkpoint))
    assert calls == N
    assert resumed_sched.last_epoch == straight_sched.last_epoch == 2 * N
    assert resumed_sched.learning_rates() == straight_sched.learning_rates()
    expected = params(straight)
    for name, value in params(resumed).items():
        assert torch.equal(value, expected[name]), name
