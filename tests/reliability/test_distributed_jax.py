"""The JAX recap optimizer sharded over two devices gives the parameters of a one-device run.

``_sharded_jax_run.py`` runs in a fresh interpreter with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (XLA reads the flag
once, when JAX starts, so it cannot be set inside this process). There,
parameters and optax state are placed with a ``NamedSharding`` on a 2-device
``Mesh`` (arrays split along their first axis, batches along their rows), 50
jitted updates run, and the same model, data and optimizer run again on one
device. Sharding changes the order of the gradient reductions, so the bars are
float32: 1e-5 of the parameter scale (the parity suite's bar), float64: 1e-12.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_sharded_jax_run.py")
TIMEOUT_S = 300

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def report() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join([env.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=2"]).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_ENABLE_X64", None)
    result = subprocess.run(
        [sys.executable, str(WORKER)],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"worker failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-4000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_worker_used_two_devices(report: dict) -> None:
    assert report["devices"] == 2
    assert report["steps"] == 50


@pytest.mark.parametrize(("precision", "relative_bar"), [("float32", 1e-5), ("float64", 1e-12)])
def test_sharded_params_equal_single_device(report: dict, precision: str, relative_bar: float, record_property) -> None:
    result = report[precision]
    record_property(f"{precision}_max_abs_diff", result["max_abs_diff"])
    diff, scale = result["max_abs_diff"], result["max_abs_param"]
    print(f"{precision}: max |sharded - single| = {diff:.3g} (param scale {scale:.3g})")
    assert result["finite"]
    assert result["max_move_from_init"] > 0.05, "the parameters barely moved: the comparison would prove nothing"
    assert result["max_abs_diff"] <= relative_bar * max(1.0, result["max_abs_param"]), result


@pytest.mark.parametrize(("precision", "bar"), [("float32", 1.2e-7), ("float64", 1e-12)])
def test_group_learning_rates_follow_compute_lr(report: dict, precision: str, bar: float) -> None:
    assert report[precision]["max_lr_gap"] <= bar, report[precision]
