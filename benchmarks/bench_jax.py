"""JAX side: a jitted train step with our schedules against optax's built-in ones, and schedule evaluation.

1. **Train step.** A small MLP, ``jax.grad`` of an MSE loss and the update of
   :func:`functional_opt.optimizers.build_optimizer` (torch's Adam rule) under
   one ``jax.jit``. For each schedule kind the step is timed with the config's
   schedule (what ``build_optimizer`` builds) and with optax's built-in
   equivalent fed to the same transformation
   (:func:`functional_opt.optimizers.torch_adam`):

   ===========================  ==========================================
   ours (config)                optax built-in
   ===========================  ==========================================
   ``linear_ramp_to_cosine``    ``optax.warmup_cosine_decay_schedule``
   ``linear_ramp_to_constant``  ``optax.linear_schedule``
   ``piecewise_constant``       ``optax.piecewise_constant_schedule``
   ``constant``                 ``optax.constant_schedule``
   ===========================  ==========================================

   plus the same step with a constant Python-float learning rate (no schedule
   at all). Bar: ours <= 1.05x optax's built-in. The schedule alone is also
   timed inside one jitted loop of 1000 calls (nanoseconds per call), which
   shows what the step's ratio cannot resolve.
2. **Schedule evaluation.** ``jax.jit(jax.vmap(schedule))`` over 10^6 steps
   against a numpy implementation of the same formula over the same steps, in
   float32 and in float64 (``jax.enable_x64``). Reported, no bar.

Run ``python benchmarks/bench_jax.py``; :func:`run` returns the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent)]

import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_common import interleave, paired_ratio, stats

from functional_opt import config, optimizers, schedules

BAR = 1.05  # ours / optax's built-in, at most
LAYERS = (32, 128, 128, 1)
BATCH = 64
ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}

# One config per schedule kind; the optax built-in equivalent of each is in optax_equivalent().
SCHEDULES: dict[str, dict[str, Any]] = {
    "linear_ramp_to_cosine": {
        "learning_rate": 1e-3,
        "final_learning_rate": 1e-5,
        "num_ramp_steps": 1000,
        "final_num_steps": 100_000,
    },
    "linear_ramp_to_constant": {"learning_rate": 1e-3, "num_ramp_steps": 1000},
    "piecewise_constant": {
        "learning_rate_boundaries": [1000, 5000, 20_000],
        "learning_rate_values": [1e-3, 5e-4, 1e-4, 1e-5],
    },
    "constant": 1e-3,
}
OPTAX_NAMES = {
    "linear_ramp_to_cosine": "warmup_cosine_decay_schedule",
    "linear_ramp_to_constant": "linear_schedule",
    "piecewise_constant": "piecewise_constant_schedule",
    "constant": "constant_schedule",
}


def lr_config(kind: str) -> config.LearningRate:
    """The config of schedule ``kind``."""
    return config.LearningRate.model_validate({kind: SCHEDULES[kind]})


def optax_equivalent(kind: str) -> optax.Schedule:
    """optax's built-in schedule with the same values as ``lr_config(kind)``."""
    args = SCHEDULES[kind]
    if kind == "linear_ramp_to_cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=args["learning_rate"],
            warmup_steps=args["num_ramp_steps"],
            decay_steps=args["final_num_steps"],
            end_value=args["final_learning_rate"],
        )
    if kind == "linear_ramp_to_constant":
        return optax.linear_schedule(0.0, args["learning_rate"], transition_steps=args["num_ramp_steps"])
    if kind == "piecewise_constant":
        values = args["learning_rate_values"]
        scales = {b: values[i + 1] / values[i] for i, b in enumerate(args["learning_rate_boundaries"])}
        return optax.piecewise_constant_schedule(values[0], scales)
    return optax.constant_schedule(args)


def numpy_schedule(kind: str, dtype: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The formula of schedule ``kind`` in numpy, computing in ``dtype``."""
    args = SCHEDULES[kind]
    if kind == "linear_ramp_to_cosine":
        lr, final = dtype(args["learning_rate"]), dtype(args["final_learning_rate"])
        ramp, end = dtype(args["num_ramp_steps"]), dtype(args["final_num_steps"])

        def cosine(steps: np.ndarray) -> np.ndarray:
            s = steps.astype(dtype)
            decay = final + (lr - final) * dtype(0.5) * (
                1 + np.cos(dtype(np.pi) * (np.clip(s, ramp, end) - ramp) / (end - ramp))
            )
            return np.where(s <= ramp, lr * np.minimum(s / ramp, 1), np.where(s < end, decay, final))

        return cosine
    if kind == "linear_ramp_to_constant":
        lr, ramp = dtype(args["learning_rate"]), dtype(args["num_ramp_steps"])
        return lambda steps: lr * np.minimum(steps.astype(dtype) / ramp, 1)
    if kind == "piecewise_constant":
        boundaries = np.asarray(args["learning_rate_boundaries"])
        values = np.asarray(args["learning_rate_values"], dtype=dtype)
        return lambda steps: values[np.searchsorted(boundaries, steps, side="right")]
    value = dtype(args)
    return lambda steps: np.full(steps.shape, value, dtype=dtype)


# --- 1. train step --------------------------------------------------------------------------------


def _mlp_params(key: jax.Array) -> dict[str, dict[str, jax.Array]]:
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(LAYERS)):
        key, sub = jax.random.split(key)
        params[f"layer_{i}"] = {"w": jax.random.normal(sub, (n_in, n_out)) / np.sqrt(n_in), "b": jnp.zeros(n_out)}
    return params


def _loss(params: dict[str, dict[str, jax.Array]], x: jax.Array, y: jax.Array) -> jax.Array:
    h = x
    for i in range(len(LAYERS) - 1):
        layer = params[f"layer_{i}"]
        h = h @ layer["w"] + layer["b"]
        if i < len(LAYERS) - 2:
            h = jnp.tanh(h)
    return jnp.mean((h - y) ** 2)


def _transformations() -> dict[str, optax.GradientTransformation]:
    b1, b2 = ADAM["betas"]
    out = {}
    for kind in SCHEDULES:
        out[f"ours: {kind}"] = optimizers.build_optimizer(
            config.OptimizerConfig(adam=ADAM, learning_rate=lr_config(kind))
        )
        out[f"optax: {OPTAX_NAMES[kind]}"] = optimizers.torch_adam(
            optax_equivalent(kind), b1=b1, b2=b2, eps=ADAM["eps"]
        )
    out["constant float lr"] = optimizers.torch_adam(ADAM["lr"], b1=b1, b2=b2, eps=ADAM["eps"])
    return out


def make_train_steppers() -> tuple[dict[str, Callable[[], None]], Callable[[], None]]:
    """One stepper per transformation (each owns its params and state) and a ``sync`` blocking on the last."""
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(jax.random.fold_in(key, 1), (BATCH, LAYERS[0]))
    y = jax.random.normal(jax.random.fold_in(key, 2), (BATCH, LAYERS[-1]))
    last: list[Any] = [None]
    steppers = {}
    for name, tx in _transformations().items():

        def train_step(params: Any, opt_state: Any, tx: optax.GradientTransformation = tx) -> tuple[Any, Any]:
            grads = jax.grad(_loss)(params, x, y)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state

        jitted = jax.jit(train_step)
        params = _mlp_params(key)
        carry = [params, tx.init(params)]

        def step(jitted: Any = jitted, carry: list[Any] = carry) -> None:
            carry[0], carry[1] = jitted(carry[0], carry[1])
            last[0] = carry[0]

        steppers[name] = step

    def sync() -> None:
        jax.block_until_ready(last[0])

    return steppers, sync


def run_train_step(repeats: int = 150, steps_per_repeat: int = 25) -> dict[str, Any]:
    """Times the jitted train step with each transformation; ratios ours / optax and each / constant."""
    steppers, sync = make_train_steppers()
    samples = interleave(steppers, repeats, steps_per_repeat, sync=sync)
    ratios = {
        kind: paired_ratio(samples[f"ours: {kind}"], samples[f"optax: {OPTAX_NAMES[kind]}"]) for kind in SCHEDULES
    }
    to_constant = {name: paired_ratio(v, samples["constant float lr"]) for name, v in samples.items()}
    return {
        "repeats": repeats,
        "steps_per_repeat": steps_per_repeat,
        "layers": LAYERS,
        "batch": BATCH,
        "us_per_step": {name: stats(v) for name, v in samples.items()},
        "ours_over_optax": ratios,
        "over_constant": to_constant,
        "bar": BAR,
    }


def run_schedule_call(calls: int = 1000, repeats: int = 20) -> dict[str, Any]:
    """Nanoseconds per schedule call inside one jitted ``fori_loop`` of ``calls`` calls: ours and optax's."""
    contenders: dict[str, Callable[[], None]] = {}
    for kind in SCHEDULES:
        for name, schedule in (
            (f"ours: {kind}", schedules.schedule_from_config(lr_config(kind))),
            (f"optax: {OPTAX_NAMES[kind]}", optax_equivalent(kind)),
        ):

            def loop(start: jax.Array, schedule: optax.Schedule = schedule) -> jax.Array:
                return jax.lax.fori_loop(0, calls, lambda i, acc: acc + schedule(start + i), jnp.zeros([]))

            jitted = jax.jit(loop)
            start = jnp.asarray(500, jnp.int32)
            contenders[name] = lambda jitted=jitted, start=start: jitted(start).block_until_ready()
    samples = interleave(contenders, repeats, 1, warmup_steps=2)
    ns = {name: stats([v * 1e3 / calls for v in values]) for name, values in samples.items()}
    ratios = {
        kind: paired_ratio(samples[f"ours: {kind}"], samples[f"optax: {OPTAX_NAMES[kind]}"]) for kind in SCHEDULES
    }
    return {"calls": calls, "repeats": repeats, "ns_per_call": ns, "ours_over_optax": ratios}


# --- 2. schedule evaluation -------------------------------------------------------------------------


def run_schedule_eval(num_steps: int = 1_000_000, repeats: int = 15) -> dict[str, Any]:
    """``jit(vmap(schedule))`` over ``num_steps`` steps against the numpy formula, float32 and float64."""
    results: dict[str, Any] = {"num_steps": num_steps, "repeats": repeats, "ms_per_eval": {}, "jax_over_numpy": {}}
    for x64 in (False, True):
        dtype_name = "float64" if x64 else "float32"
        with jax.enable_x64(x64):
            steps_jax = jnp.arange(num_steps)
            steps_np = np.arange(num_steps)
            dtype = np.float64 if x64 else np.float32
            contenders: dict[str, Callable[[], None]] = {}
            for kind in SCHEDULES:
                fn = jax.jit(jax.vmap(schedules.schedule_from_config(lr_config(kind))))
                np_fn = numpy_schedule(kind, dtype)
                got = np.asarray(fn(steps_jax))
                want = np_fn(steps_np)
                if got.dtype != want.dtype or not np.allclose(got, want, rtol=1e-5 if not x64 else 1e-12, atol=0):
                    raise AssertionError(f"bench_jax: numpy {kind} ({dtype_name}) does not match the JAX schedule")
                contenders[f"jax {kind}"] = lambda fn=fn, steps=steps_jax: fn(steps).block_until_ready()
                contenders[f"numpy {kind}"] = lambda np_fn=np_fn, steps=steps_np: np_fn(steps)
            samples = interleave(contenders, repeats, 1, warmup_steps=2)
        for kind in SCHEDULES:
            key = f"{kind} ({dtype_name})"
            results["ms_per_eval"][key] = {
                "jax": stats([v / 1e3 for v in samples[f"jax {kind}"]]),
                "numpy": stats([v / 1e3 for v in samples[f"numpy {kind}"]]),
            }
            results["jax_over_numpy"][key] = paired_ratio(samples[f"jax {kind}"], samples[f"numpy {kind}"])
    return results


def run(
    repeats: int = 150, steps_per_repeat: int = 25, eval_steps: int = 1_000_000, eval_repeats: int = 15
) -> dict[str, Any]:
    """Both parts: ``{"train_step": ..., "schedule_call": ..., "schedule_eval": ..., "devices": ...}``.

    Many short repeats: the two timings of a pair are then close in time, so
    the load of a shared machine hits both alike.
    """
    return {
        "train_step": run_train_step(repeats, steps_per_repeat),
        "schedule_call": run_schedule_call(repeats=max(2, eval_repeats)),
        "schedule_eval": run_schedule_eval(eval_steps, eval_repeats),
        "devices": [str(d) for d in jax.devices()],
    }


def passes(results: dict[str, Any]) -> dict[str, bool]:
    """Schedule kind -> whether ours / optax's built-in is within the bar."""
    train = results["train_step"]
    return {kind: r["median"] <= train["bar"] for kind, r in train["ours_over_optax"].items()}


def format_results(results: dict[str, Any]) -> str:
    """A plain-text table of :func:`run`'s results."""
    train = results["train_step"]
    lines = [
        f"jitted train step, MLP {train['layers']}, batch {train['batch']}, {train['repeats']} repeats x "
        f"{train['steps_per_repeat']} steps (us per step)",
    ]
    for name, s in train["us_per_step"].items():
        ratio = train["over_constant"][name]["median"]
        lines.append(f"  {name:45s} {s['median']:8.1f} {s['min']:8.1f} {s['max']:8.1f}  / constant {ratio:.3f}")
    for kind, r in train["ours_over_optax"].items():
        lines.append(f"  ours / optax {kind}: {r['median']:.3f} (bar {train['bar']})")
    calls = results["schedule_call"]
    lines.append(f"schedule alone, jitted loop of {calls['calls']} calls (ns per call)")
    for name, s in calls["ns_per_call"].items():
        lines.append(f"  {name:45s} {s['median']:8.1f}")
    evals = results["schedule_eval"]
    lines.append(f"schedule evaluation over {evals['num_steps']} steps (ms): jax, numpy, jax / numpy")
    for key, ms in evals["ms_per_eval"].items():
        ratio = evals["jax_over_numpy"][key]["median"]
        lines.append(f"  {key:36s} {ms['jax']['median']:8.2f} {ms['numpy']['median']:8.2f} {ratio:8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=150)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--eval-steps", type=int, default=1_000_000)
    parser.add_argument("--eval-repeats", type=int, default=15)
    args = parser.parse_args(argv)
    print(format_results(run(args.repeats, args.steps, args.eval_steps, args.eval_repeats)))


if __name__ == "__main__":
    main()
