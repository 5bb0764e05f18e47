"""A run moved between torch and JAX lands where it would have landed had it never moved.

torch for N steps, ``export_state``, JAX for N more == torch for 2N; and JAX for N
steps, ``import_state`` into a fresh torch build, torch for N more == torch for 2N.
float64, max |Δparam| <= 1e-12, for Adam, SGD with momentum and Adagrad (with
``lr_decay``), switching in the warmup, at the ramp's end and after the schedule's end.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from functional_opt import config, demo_model, optimizers
from torch_bridge import build_optimizer
from torch_bridge.state_transfer import export_state, import_state

BAR = 1e-12
RAMP, END = 4, 12
SWITCHES = (2, RAMP, END + 3)
SCHEDULE = {
    "linear_ramp_to_cosine": {
        "learning_rate": 0.05,
        "final_learning_rate": 0.005,
        "num_ramp_steps": RAMP,
        "final_num_steps": END,
    }
}
CONFIGS = {
    "adam": {"adam": {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-8}},
    "sgd-momentum": {"sgd": {"lr": 0.05, "momentum": 0.9}},
    "adagrad": {"adagrad": {"lr": 0.05, "lr_decay": 0.01, "eps": 1e-10}},
}


class Net(torch.nn.Module):
    def __init__(self, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(3, 4, dtype=dtype)
        self.out = torch.nn.Linear(4, 1, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


def jax_loss(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    h = jnp.tanh(x @ params["hidden"]["weight"].T + params["hidden"]["bias"])
    return jnp.mean((h @ params["out"]["weight"].T + params["out"]["bias"] - y) ** 2)


def batches(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(rng.normal(size=(8, 3)), rng.normal(size=(8, 1))) for _ in range(n)]


def cfg_of(name: str) -> config.OptimizerConfig:
    return config.OptimizerConfig.model_validate({"learning_rate": SCHEDULE, **CONFIGS[name]})


def torch_run(cfg: config.OptimizerConfig, data: list, start: int = 0, built=None):
    model, (opt, sched) = built if built is not None else (None, (None, None))
    if model is None:
        model = Net()
        opt, sched = build_optimizer(model, cfg)
    for x, y in data[start:]:
        opt.zero_grad()
        torch.mean((model(torch.as_tensor(x)) - torch.as_tensor(y)) ** 2).backward()
        opt.step()
        sched.step()
    return model, opt, sched


def jax_run(tx: optax.GradientTransformation, params: dict, state, data: list):
    grad = jax.jit(jax.grad(jax_loss))
    for x, y in data:
        updates, state = tx.update(grad(params, jnp.asarray(x), jnp.asarray(y)), state, params)
        params = optax.apply_updates(params, updates)
    return params, state


def weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy() for n, p in model.named_parameters()}


def gap(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[n] - b[n]).max()) for n in a)


@pytest.mark.parity
@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_then_jax_equals_torch_throughout(name: str, switch: int) -> None:
    cfg, data = cfg_of(name), batches(2 * switch)
    straight = weights(torch_run(cfg, data)[0])
    first = torch_run(cfg, data[:switch])
    params, opt_state, step = export_state(*first)
    assert step == switch
    tx = optimizers.build_optimizer(cfg)
    optimizers.check_state(opt_state, tx.init(params))
    final, _ = jax_run(tx, params, opt_state, data[switch:])
    moved = demo_model.named_arrays(final)
    worst = gap(straight, moved)
    print(f"{name}, torch -> JAX at step {switch}: max |Δparam| = {worst:.3g}")
    assert worst <= BAR, (name, switch, worst)
    assert gap(straight, weights(Net())) > 1e3 * BAR, "the run barely moved: the comparison proves nothing"


@pytest.mark.parity
@pytest.mark.usefixtures("x64")
@pytest.mark.parametrize("switch", SWITCHES)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_jax_then_torch_equals_torch_throughout(name: str, switch: int) -> None:
    cfg, data = cfg_of(name), batches(2 * switch)
    straight = weights(torch_run(cfg, data)[0])
    tx = optimizers.build_optimizer(cfg)
    params = demo_model.params_from_arrays(weights(Net()), jnp.float64)
    params, state = jax_run(tx, params, tx.init(params), data[:switch])
    model = Net()
    opt, sched = build_optimizer(model, cfg)
    import_state(model, opt, sched, params, state)
    assert sched.last_epoch == switch
    torch_run(cfg, data, start=switch, built=(model, (opt, sched)))
    worst = gap(straight, weights(model))
    print(f"{name}, JAX -> torch at step {switch}: max |Δparam| = {worst:.3g}")
    assert worst <= BAR, (name, switch, worst)


@pytest.mark.parity
@pytest.mark.parametrize("name", list(CONFIGS))
def test_float32_both_ways(name: str) -> None:
    """float32 (JAX's default float type): max |Δparam| <= 1e-5 x param scale, each way, switching at the ramp's end."""
    cfg, data = cfg_of(name), [(x.astype(np.float32), y.astype(np.float32)) for x, y in batches(2 * RAMP)]
    straight_model = Net(torch.float32)
    torch_run(cfg, data, built=(straight_model, build_optimizer(straight_model, cfg)))
    straight = weights(straight_model)
    scale = max(float(np.abs(v).max()) for v in straight.values())
    tx = optimizers.build_optimizer(cfg)
    model = Net(torch.float32)
    built = build_optimizer(model, cfg)
    torch_run(cfg, data[:RAMP], built=(model, built))
    params, opt_state, _ = export_state(model, *built)
    final, _ = jax_run(tx, params, opt_state, data[RAMP:])
    to_jax = gap(straight, demo_model.named_arrays(final))
    assert to_jax <= 1e-5 * scale
    params = demo_model.params_from_arrays(weights(Net(torch.float32)), jnp.float32)
    params, state = jax_run(tx, params, tx.init(params), data[:RAMP])
    model = Net(torch.float32)
    built = build_optimizer(model, cfg)
    import_state(model, *built, params, state)
    torch_run(cfg, data, start=RAMP, built=(model, built))
    to_torch = gap(straight, weights(model))
    bar = 1e-5 * scale
    print(f"{name} float32 at step {RAMP}: torch -> JAX {to_jax:.3g}, JAX -> torch {to_torch:.3g} (bar {bar:.3g})")
    assert to_torch <= 1e-5 * scale


@pytest.mark.usefixtures("x64")
def test_a_state_that_does_not_fit_is_refused_and_nothing_changes() -> None:
    cfg = cfg_of("adam")
    model = Net()
    opt, sched = build_optimizer(model, cfg)
    before = {n: p.clone() for n, p in model.named_parameters()}
    tx = optimizers.build_optimizer(cfg)
    params = demo_model.params_from_arrays(weights(Net()), jnp.float64)
    state = tx.init(params)
    renamed = {"hidden": params["hidden"], "output": params["out"]}
    with pytest.raises(ValueError, match=r"names differ: the model has \['out.bias', 'out.weight'\]"):
        import_state(model, opt, sched, renamed, state)
    reshaped = {**params, "out": {**params["out"], "weight": jnp.zeros((2, 4))}}
    with pytest.raises(ValueError, match=r"out.weight: params \(2, 4\), model \(1, 4\)"):
        import_state(model, opt, sched, reshaped, state)
    sgd_state = optimizers.build_optimizer(cfg_of("sgd-momentum")).init(params)
    with pytest.raises(ValueError, match="opt_state is not the state of build_optimizer for adam"):
        import_state(model, opt, sched, params, sgd_state)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert sched.last_epoch == 0 and not any(opt.state[p].get("exp_avg", torch.zeros(1)).any() for p in before)
