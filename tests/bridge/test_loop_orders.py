"""Step k of every fused embedding table uses emb_schedule(k), whatever the loop order.

torchrec's fused (TBE) optimizer updates the rows inside ``backward`` with the
rate its kernel holds, and torchrec hands the kernel ``param_groups[0]["lr"]``
only in the fused optimizer's ``zero_grad()`` / ``step()``. Each loop below
(TML's, two common manual ones, Hugging Face's, ``model.zero_grad()`` only, and
Lightning's automatic optimisation) must move every looked-up row by exactly
``-float32(lr_k) * grad`` (one float32 rounding), step 0 included, where the
schedule is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import bridge_toys as toys
import pytest
import torch
from torch import nn

from functional_opt.schedules import compute_lr
from torch_bridge import build_recap_optimizer

STEPS = 12
FUSED_TABLES = [f"ebc.embedding_bags.{t}.weight" for t, _, _ in toys.TABLES]


def tables(model: nn.Module) -> dict[str, torch.Tensor]:
    state = toys.dense_state(model)
    return {name: state[name] for name in FUSED_TABLES}


def fused_step_error(k: int, before: dict, after: dict, batch: toys.Batch, grad: torch.Tensor) -> float:
    """Largest gap, in float32 units in the last place, between the rows and ``row - float32(lr_k) * grad``."""
    lr32 = torch.tensor(compute_lr(toys.emb_learning_rate(), k), dtype=torch.float32)
    worst = 0.0
    for j, (table, feature, _) in enumerate(toys.TABLES):
        name = f"ebc.embedding_bags.{table}.weight"
        g = torch.zeros_like(before[name])
        g[batch.ids[feature]] = grad[:, j * toys.EMB_DIM : (j + 1) * toys.EMB_DIM]  # ids are distinct in a batch
        expected = (before[name].double() - lr32.double() * g.double()).float()
        ulp = torch.nextafter(expected.abs(), torch.tensor(float("inf"))) - expected.abs()
        worst = max(worst, float(((after[name] - expected).abs() / ulp).max()))
    return worst


def _tml(model, opt, sched, batch, record) -> None:
    opt.zero_grad()
    record(lambda: toys.loss_fn(model, batch).backward())
    opt.step()
    sched.step()


def _zero_grad_after_step(model, opt, sched, batch, record) -> None:
    record(lambda: toys.loss_fn(model, batch).backward())
    opt.step()
    opt.zero_grad()
    sched.step()


def _hugging_face(model, opt, sched, batch, record) -> None:
    record(lambda: toys.loss_fn(model, batch).backward())
    opt.step()
    sched.step()
    opt.zero_grad()


def _model_zero_grad_only(model, opt, sched, batch, record) -> None:
    record(lambda: toys.loss_fn(model, batch).backward())
    opt.step()
    sched.step()
    model.zero_grad()


ORDERS: dict[str, Callable] = {
    "tml": _tml,
    "zero_grad_after_step": _zero_grad_after_step,
    "scheduler_before_zero_grad": _hugging_face,
    "model_zero_grad_only": _model_zero_grad_only,
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_fused_rows_follow_the_schedule_in_every_manual_loop_order(fused_model: nn.Module, order: str) -> None:
    inner: toys.RecapToyModel = fused_model.module
    opt, sched = build_recap_optimizer(fused_model, toys.recap_config(), toys.emb_config())
    errors = []
    for k, batch in enumerate(toys.make_batches(STEPS)):

        def backward(run: Callable[[], None], k: int = k, batch: toys.Batch = batch) -> None:
            before = tables(fused_model)
            run()
            errors.append(fused_step_error(k, before, tables(fused_model), batch, inner.pooled.grad))

        ORDERS[order](fused_model, opt, sched, batch, backward)
    assert compute_lr(toys.emb_learning_rate(), 0) == 0.0
    assert max(errors) <= 1.0, errors


@pytest.mark.slow
def test_fused_rows_follow_the_schedule_under_lightning(fused_model: nn.Module) -> None:
    import lightning.pytorch as pl

    inner: toys.RecapToyModel = fused_model.module
    batches = toys.make_batches(STEPS)
    errors: list[float] = []

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = fused_model
            self.before: dict[str, torch.Tensor] = {}
            self.current: toys.Batch | None = None

        def transfer_batch_to_device(self, batch, device, dataloader_idx):  # the toy batch is a frozen dataclass
            return batch

        def training_step(self, batch: toys.Batch, batch_idx: int) -> torch.Tensor:
            self.current = batch
            return toys.loss_fn(self.net, batch)

        def on_before_backward(self, loss: torch.Tensor) -> None:
            self.before = tables(self.net)

        def on_after_backward(self) -> None:
            k = self.trainer.global_step
            errors.append(fused_step_error(k, self.before, tables(self.net), self.current, inner.pooled.grad))

        def configure_optimizers(self):
            opt, sched = build_recap_optimizer(self.net, toys.recap_config(), toys.emb_config())
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    trainer = pl.Trainer(
        max_steps=STEPS,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Module(), loader)
    assert len(errors) == STEPS
    assert max(errors) <= 1.0, errors


def test_every_group_is_logged_by_name_fused_embeddings_included(fused_model: nn.Module) -> None:
    opt, sched = build_recap_optimizer(fused_model, toys.recap_config(), toys.emb_config())
    dense = toys.dense_group_learning_rates()
    for k, batch in enumerate(toys.make_batches(3)):
        rates = sched.learning_rates()
        assert list(rates) == [*dense, "embeddings"]
        assert rates["embeddings"] == compute_lr(toys.emb_learning_rate(), k)
        assert all(rates[name] == compute_lr(cfg, k) for name, cfg in dense.items())
        opt.zero_grad()
        toys.loss_fn(fused_model, batch).backward()
        opt.step()
        sched.step()
