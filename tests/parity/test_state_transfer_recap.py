"""A recap run moved between torch and JAX lands where it would have landed had it never moved.

The demo model (two towers, backbone, two embedding tables): torch for N steps,
``export_state``, JAX for N more == torch for 2N; and JAX for N steps,
``import_state`` into a fresh torch build, torch for N more == torch for 2N.
float64 with the tables as ``dense_ebc`` (``torch.nn.EmbeddingBag``, plain SGD):
max |Δparam| <= 1e-12; float32 with the tables sharded by torchrec's
``DistributedModelParallel`` and updated by the fused TBE kernel in backward
(their rows gathered from the shards on export, written back on import):
<= 1e-5 x param scale. Switching in the warmup, at a schedule boundary and after
every schedule's end.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from transfer_runs import SPEC, gap, jax_steps, torch_steps

import torch_bridge
from functional_opt import config, demo_model, optimizers, schedules
from torch_bridge import demo_model as torch_demo
from torch_bridge.recap_transfer import recap_configs_of

BAR64, BAR32 = 1e-12, 1e-5
RAMP, END = 4, 12
SWITCHES = (2, RAMP, END + 3)
RECAP = config.RecapOptimizerConfig.model_validate(
    {
        "adam": {"beta_1": 0.8, "beta_2": 0.95, "epsilon": 1e-7},
        "multi_task_learning_rates": {
            "tower_learning_rates": {
                "recap.is_clicked": {
                    "linear_ramp_to_cosine": {
                        "learning_rate": 0.02,
                        "final_learning_rate": 0.002,
                        "num_ramp_steps": RAMP,
                        "final_num_steps": END,
                    }
                },
                "recap.is_replied": {"linear_ramp_to_constant": {"learning_rate": 0.01, "num_ramp_steps": RAMP + 2}},
            },
            "backbone_learning_rate": {
                "piecewise_constant": {
                    "learning_rate_boundaries": [RAMP, END],
                    "learning_rate_values": [0.01, 0.005, 0.001],
                }
            },
        },
    }
)
EMB = config.EmbeddingOptimizerConfig.model_validate(
    {"learning_rate": {"linear_ramp_to_constant": {"learning_rate": 0.5, "num_ramp_steps": RAMP + 1}}}
)


def batches(n: int) -> list[demo_model.Batch]:
    return demo_model.make_batches(SPEC, n, 16, seed=1)


@contextlib.contextmanager
def torch_side(dtype: torch.dtype) -> Iterator[None]:
    """float32: the tables sharded under a gloo process group of world size 1; float64: plain."""
    with torch_demo.single_process_group() if dtype == torch.float32 else contextlib.nullcontext():
        yield


def build(dtype: torch.dtype) -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    model: torch.nn.Module = torch_demo.DemoRankingModel(SPEC, seed=0, dtype=dtype)
    if dtype == torch.float32:
        model = torch_demo.shard_with_fused_embeddings(model, schedules.compute_lr(EMB.learning_rate, 0))
    return (model, *torch_bridge.build_recap_optimizer(model, RECAP, EMB))


def scale_of(arrays: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(v).max()) for v in arrays.values())


CASES = [pytest.param(torch.float64, s, id=f"float64-switch{s}") for s in SWITCHES] + [
    pytest.param(torch.float32, RAMP, id=f"float32-fused-switch{RAMP}"),
    pytest.param(torch.float32, END + 3, id=f"float32-fused-switch{END + 3}"),
]


@functools.cache
def jax_recap(float64: bool) -> optax.GradientTransformation:
    """The JAX recap optimizer for the demo model's params (one per float type: its step compiles once)."""
    with jax.enable_x64(float64):
        params = demo_model.params_from_arrays(demo_model.init_arrays(SPEC, 0), jnp.float64 if float64 else jnp.float32)
        return optimizers.build_recap_optimizer(params, RECAP, EMB)


@functools.cache
def straight_run(dtype: torch.dtype, steps: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The unmoved torch run of ``steps`` steps: ``(initial, final)`` parameters (one run per case, both tests)."""
    with torch_side(dtype):
        built = build(dtype)
        initial = torch_demo.named_arrays(built[0])
        torch_steps(built, batches(steps), dtype)
        return initial, torch_demo.named_arrays(built[0])


def bar_of(dtype: torch.dtype, straight: dict[str, np.ndarray]) -> float:
    return BAR64 if dtype == torch.float64 else BAR32 * scale_of(straight)


@pytest.mark.parity
@pytest.mark.parametrize(("dtype", "switch"), CASES)
def test_recap_torch_then_jax_equals_torch_throughout(dtype: torch.dtype, switch: int) -> None:
    data = batches(2 * switch)
    initial, straight = straight_run(dtype, 2 * switch)
    with torch_side(dtype):
        first = build(dtype)
        torch_steps(first, data[:switch], dtype)
        params, opt_state, step = torch_bridge.export_state(*first)
        assert recap_configs_of(first[1], first[2]) == (RECAP, EMB)
    assert step == switch and int(opt_state.count) == switch
    with jax.enable_x64(dtype == torch.float64):
        optimizers.check_state(opt_state, optimizers.build_recap_optimizer(params, RECAP, EMB).init(params))
        final, _ = jax_steps(jax_recap(dtype == torch.float64), params, opt_state, data[switch:])
        moved = demo_model.named_arrays(final)
    worst, bar = gap(straight, moved), bar_of(dtype, straight)
    print(f"recap {dtype}, torch -> JAX at step {switch}: max |Δparam| = {worst:.3g} (bar {bar:.3g})")
    assert worst <= bar, (switch, worst, bar)
    tables = [n for n in straight if ".embedding_bags." in n]
    # Every parameter, the tables included, moved by far more than the gap: the comparison proves something.
    assert tables and all(np.abs(straight[n] - initial[n]).max() > 100 * max(worst, BAR64) for n in straight)


@pytest.mark.parity
@pytest.mark.parametrize(("dtype", "switch"), CASES)
def test_recap_jax_then_torch_equals_torch_throughout(dtype: torch.dtype, switch: int) -> None:
    data = batches(2 * switch)
    jdtype = jnp.float64 if dtype == torch.float64 else jnp.float32
    initial, straight = straight_run(dtype, 2 * switch)
    with torch_side(dtype):
        with jax.enable_x64(dtype == torch.float64):
            params = demo_model.params_from_arrays(initial, jdtype)
            tx = jax_recap(dtype == torch.float64)
            params, state = jax_steps(tx, params, tx.init(params), data[:switch])
        second = build(dtype)
        torch_bridge.import_state(*second, params, state)
        assert second[2].last_epoch == switch
        torch_steps(second, data[switch:], dtype)
        moved = torch_demo.named_arrays(second[0])
    worst, bar = gap(straight, moved), bar_of(dtype, straight)
    print(f"recap {dtype}, JAX -> torch at step {switch}: max |Δparam| = {worst:.3g} (bar {bar:.3g})")
    assert worst <= bar, (switch, worst, bar)


@pytest.mark.usefixtures("x64")
def test_a_recap_state_that_does_not_fit_is_refused_and_nothing_changes() -> None:
    model, optimizer, scheduler = build(torch.float64)
    torch_steps((model, optimizer, scheduler), batches(2), torch.float64)
    before = {n: p.clone() for n, p in model.named_parameters()}
    moments = {n: optimizer.state[p]["exp_avg"].clone() for n, p in model.named_parameters() if "towers" in n}
    params, state, _ = torch_bridge.export_state(model, optimizer, scheduler)
    renamed = {**params, "heads": params["towers"]}
    del renamed["towers"]
    with pytest.raises(ValueError, match=r"names differ: the model has \['towers\.recap__is_clicked"):
        torch_bridge.import_state(model, optimizer, scheduler, renamed, state)
    other = RECAP.model_copy(update={"adam": config.RecapAdamConfig(beta_1=0.5)})
    with pytest.raises(ValueError, match="b1"):
        torch_bridge.import_state(
            model, optimizer, scheduler, params, optimizers.build_recap_optimizer(params, other, EMB).init(params)
        )
    generic = optimizers.build_optimizer(
        config.OptimizerConfig(adam={"lr": 0.1}, learning_rate={"constant": 0.1})
    ).init(params)
    with pytest.raises(ValueError, match="not the state of build_recap_optimizer"):
        torch_bridge.import_state(model, optimizer, scheduler, params, generic)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    for n, m in moments.items():
        assert torch.equal(optimizer.state[dict(model.named_parameters())[n]]["exp_avg"], m), n
    assert scheduler.last_epoch == 2
