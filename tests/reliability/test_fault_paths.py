"""Fault paths: foreign checkpoints, NaN/inf gradients, YAML with Python object tags.

* A scheduler or optimizer ``state_dict`` saved under another config (other
  towers, another number of groups, another schedule) is refused with a
  message naming the mismatch, and the live optimizer and scheduler are left
  exactly as they were (every state tensor, every group's hyper-parameters, the
  scheduler's step).
* NaN or inf gradients never make a learning rate non-finite, in torch (the
  bridge's shims) or in JAX (the optax builders): the k-th step still uses
  ``compute_lr(config, k)``.
* YAML is read with ``yaml.safe_load`` only: a ``!!python/...`` tag is refused
  with an error that names the file, and the command inside never runs.
"""

from __future__ import annotations

import ast
import copy
import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from torch import nn

from functional_opt import config, config_file, grouping, optimizers, schedules
from torch_bridge import build_optimizer, build_recap_optimizer

REPO = Path(__file__).resolve().parents[2]

EMB_CONFIG = config.EmbeddingOptimizerConfig(
    learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.5, "num_ramp_steps": 10}}
)


def ramp(learning_rate: float) -> dict[str, Any]:
    return {"linear_ramp_to_constant": {"learning_rate": learning_rate, "num_ramp_steps": 4}}


def multi_task(towers: list[str], backbone: float = 0.01) -> config.RecapOptimizerConfig:
    return config.RecapOptimizerConfig(
        adam={},
        multi_task_learning_rates={
            "tower_learning_rates": {t: ramp(0.1) for t in towers},
            "backbone_learning_rate": {"constant": backbone},
        },
    )


SINGLE_TASK = config.RecapOptimizerConfig(adam={}, single_task_learning_rate={"constant": 0.02})


def tower_model(towers: list[str]) -> nn.Module:
    """Towers under ``towers.<sanitized name>``, a backbone and a (non-fused) embedding table."""
    torch.manual_seed(0)
    model = nn.Module()
    model.towers = nn.ModuleDict({grouping.sanitize(t): nn.Linear(3, 1) for t in towers})
    model.backbone = nn.Linear(3, 3)
    model.emb = nn.Module()
    model.emb.embedding_bags = nn.ModuleDict({"table": nn.EmbeddingBag(5, 3, mode="sum")})
    return model


def trained(model: nn.Module, built: tuple[Any, Any], steps: int = 3, seed: int = 0) -> tuple[Any, Any]:
    """``steps`` optimizer steps with random gradients, so that the optimizer has state."""
    optimizer, scheduler = built
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        optimizer.zero_grad()
        for param in model.parameters():
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def recap(
    towers: list[str] | None,
    seed: int,
    model_towers: list[str] | None = None,
    backbone: float = 0.01,
    emb_config: config.EmbeddingOptimizerConfig = EMB_CONFIG,
) -> tuple[Any, Any]:
    """A trained recap optimizer: multi-task over ``towers``, or single-task when ``towers`` is None."""
    model = tower_model(model_towers or towers or ["a.b", "c"])
    cfg = SINGLE_TASK if towers is None else multi_task(towers, backbone)
    return trained(model, build_recap_optimizer(model, cfg, emb_config), seed=seed)


def snapshot(optimizer: Any, scheduler: Any) -> dict[str, Any]:
    """What a load could change: optimizer state by parameter name, param groups (less params), scheduler state."""
    names = {id(param): name for name, param in optimizer.params.items()}
    state = {}
    for param, values in optimizer.state.items():
        state[names[id(param)]] = {
            k: v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in values.items()
        }
    groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {"state": state, "groups": groups, "scheduler": copy.deepcopy(scheduler.state_dict())}


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before["groups"] == after["groups"]
    assert before["scheduler"] == after["scheduler"]
    assert before["state"].keys() == after["state"].keys()
    for key, values in before["state"].items():
        assert values.keys() == after["state"][key].keys()
        for name, value in values.items():
            other = after["state"][key][name]
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, other), f"optimizer state {name!r} changed"
            else:
                assert value == other, f"optimizer state {name!r} changed"


# --- foreign scheduler and optimizer state ---------------------------------------------------------

FOREIGN = {
    "other towers": lambda: recap(["a.b", "d"], seed=2),
    "other group count": lambda: recap(None, seed=3, model_towers=["a.b", "c"]),
    "other schedule": lambda: recap(["a.b", "c"], seed=4, backbone=0.5),
    "other embedding schedule": lambda: recap(
        ["a.b", "c"], seed=5, emb_config=config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.25})
    ),
}
"""Checkpoints of other configs than the live one (``recap(["a.b", "c"])``)."""

SCHEDULER_MISMATCH_NAMES = {
    "other towers": ["'c'", "'d'"],
    "other group count": ["'single_task'", "'backbone'"],
    "other schedule": ["'backbone'"],
    "other embedding schedule": ["'dense_ebc'"],
}
OPTIMIZER_MISMATCH_NAMES = {
    "other towers": ["towers.c", "towers.d"],
    "other group count": ["single_task", "param group"],
}


@pytest.mark.parametrize("case", list(SCHEDULER_MISMATCH_NAMES))
def test_foreign_scheduler_state_is_refused_and_changes_nothing(case: str) -> None:
    live = recap(["a.b", "c"], seed=1)
    _, foreign_scheduler = FOREIGN[case]()
    before = snapshot(*live)
    with pytest.raises(ValueError, match="different learning rates") as info:
        live[1].load_state_dict(foreign_scheduler.state_dict())
    for name in SCHEDULER_MISMATCH_NAMES[case]:
        assert name in str(info.value), f"{name} not named in: {info.value}"
    assert_same(before, snapshot(*live))


@pytest.mark.parametrize("case", list(OPTIMIZER_MISMATCH_NAMES))
def test_foreign_optimizer_state_is_refused_and_changes_nothing(case: str) -> None:
    """The optimizer of ``build_recap_optimizer`` must check a foreign state before it copies anything.

    torchrec's ``KeyedOptimizer.load_state_dict`` copies the state parameter by
    parameter and only then meets a parameter it lacks, and by default saves no
    param groups, so a state made under another grouping loads without a word.
    """
    live = recap(["a.b", "c"], seed=1)
    foreign_optimizer, _ = FOREIGN[case]()
    before = snapshot(*live)
    with pytest.raises(ValueError) as info:
        live[0].load_state_dict(foreign_optimizer.state_dict())
    message = str(info.value)
    assert any(name in message for name in OPTIMIZER_MISMATCH_NAMES[case]), message
    assert_same(before, snapshot(*live))


def test_own_optimizer_and_scheduler_state_round_trips() -> None:
    """The positive control of the tests above: a state of the same config loads and is then the live state."""
    source = recap(["a.b", "c"], seed=5)
    live = recap(["a.b", "c"], seed=1)
    assert not torch.equal(
        next(iter(live[0].state.values()))["exp_avg"], next(iter(source[0].state.values()))["exp_avg"]
    )
    live[0].load_state_dict(source[0].state_dict())
    live[1].load_state_dict(source[1].state_dict())
    assert_same(snapshot(*source), snapshot(*live))


# --- NaN / inf gradients ---------------------------------------------------------------------------

BAD_VALUES = [math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf", "-inf"])
def test_torch_recap_learning_rates_stay_finite_with_bad_gradients(bad: float) -> None:
    towers = ["a.b", "c"]
    cfg = multi_task(towers)
    model = tower_model(towers)
    optimizer, scheduler = build_recap_optimizer(model, cfg, EMB_CONFIG)
    expected = {
        **cfg.multi_task_learning_rates.tower_learning_rates,
        "backbone": cfg.multi_task_learning_rates.backbone_learning_rate,
    }
    expected["dense_ebc"] = EMB_CONFIG.learning_rate
    for k in range(8):
        optimizer.zero_grad()
        for i, param in enumerate(model.parameters()):
            param.grad = torch.full_like(param, bad) if (i + k) % 2 else torch.ones_like(param)
        for group in optimizer.param_groups:
            want = schedules.compute_lr(expected[group["name"]], k)
            assert math.isfinite(group["lr"]) and abs(group["lr"] - want) <= 1e-12 * max(1.0, want), (k, group["name"])
        optimizer.step()
        scheduler.step()
        assert all(math.isfinite(lr) for lr in scheduler.get_last_lr())
    assert any(not torch.isfinite(p).all() for p in model.parameters()), "the bad gradients never reached a parameter"


@pytest.mark.parametrize("algorithm", ["adam", "sgd", "adagrad"])
@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf", "-inf"])
def test_torch_optimizer_learning_rate_stays_finite_with_bad_gradients(algorithm: str, bad: float) -> None:
    lr_config = {
        "linear_ramp_to_cosine": {
            "learning_rate": 0.1,
            "final_learning_rate": 0.01,
            "num_ramp_steps": 2,
            "final_num_steps": 6,
        }
    }
    cfg = config.OptimizerConfig.model_validate({algorithm: {"lr": 0.1}, "learning_rate": lr_config})
    model = nn.Linear(3, 2)
    optimizer, scheduler = build_optimizer(model, cfg)
    for k in range(8):
        for param in model.parameters():
            param.grad = torch.full_like(param, bad)
        lr = optimizer.param_groups[0]["lr"]
        assert math.isfinite(lr) and abs(lr - schedules.compute_lr(cfg.learning_rate, k)) <= 1e-12, (k, lr)
        optimizer.step()
        scheduler.step()


def test_jax_recap_learning_rates_stay_finite_with_bad_gradients() -> None:
    towers = ["a.b", "c"]
    cfg = multi_task(towers)
    params = {
        "towers": {grouping.sanitize(t): {"w": jnp.ones((3, 1))} for t in towers},
        "backbone": {"w": jnp.ones((3, 3))},
        "emb": {"embedding_bags": {"table": jnp.ones((5, 3))}},
    }
    tx = optimizers.build_recap_optimizer(params, cfg, EMB_CONFIG)
    state = tx.init(params)
    expected = {
        **cfg.multi_task_learning_rates.tower_learning_rates,
        "backbone": cfg.multi_task_learning_rates.backbone_learning_rate,
    }
    expected["dense_ebc"] = EMB_CONFIG.learning_rate
    update = jax.jit(tx.update)
    for k in range(8):
        bad = BAD_VALUES[k % len(BAD_VALUES)]
        grads = jax.tree.map(lambda p, b=bad: jnp.full_like(p, b), params)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        used = optimizers.group_learning_rates(state)
        assert set(used) == set(expected)
        for group, value in used.items():
            value = float(value)
            want = schedules.compute_lr(expected[group], k)
            assert math.isfinite(value) and abs(value - want) <= 1e-6 * max(1.0, want), (k, group, value, want)
    assert not all(bool(jnp.isfinite(p).all()) for p in jax.tree.leaves(params))


@pytest.mark.parametrize("algorithm", ["adam", "sgd", "adagrad"])
def test_jax_optimizer_learning_rate_stays_finite_with_bad_gradients(algorithm: str) -> None:
    lr_config = {"piecewise_constant": {"learning_rate_boundaries": [2, 5], "learning_rate_values": [0.1, 0.05, 0.01]}}
    cfg = config.OptimizerConfig.model_validate(
        {algorithm: {"lr": 0.1, "momentum": 0.9} if algorithm == "sgd" else {"lr": 0.1}, "learning_rate": lr_config}
    )
    tx = optimizers.build_optimizer(cfg)
    params = {"w": jnp.ones(4)}
    state = tx.init(params)
    for k in range(8):
        grads = {"w": jnp.asarray([math.nan, math.inf, -math.inf, 1.0])}
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        value = float(optimizers.learning_rate(state))
        assert math.isfinite(value) and abs(value - schedules.compute_lr(cfg.learning_rate, k)) <= 1e-7, (k, value)


# --- YAML with Python object tags ------------------------------------------------------------------

UNSAFE_TAGS = {
    "object/apply": "!!python/object/apply:os.system [{command!r}]",
    "object/new": "!!python/object/new:subprocess.Popen [[sh, -c, {command!r}]]",
    "name": "!!python/name:os.system",
}


@pytest.mark.parametrize("tag", list(UNSAFE_TAGS))
@pytest.mark.parametrize(
    "loader",
    [
        lambda path: config.load_config_from_yaml(config.OptimizerConfig, path),
        lambda path: config.load_config_from_yaml(config.RecapOptimizerConfig, path),
        config_file.load_config_file,
    ],
    ids=["OptimizerConfig", "RecapOptimizerConfig", "load_config_file"],
)
def test_python_tags_in_yaml_are_refused(tmp_path: Path, tag: str, loader: Any) -> None:
    marker = tmp_path / "the command ran"
    command = f"touch '{marker}'"
    path = tmp_path / "evil.yaml"
    payload = UNSAFE_TAGS[tag].format(command=command)
    path.write_text(f"learning_rate:\n  constant: {payload}\nsgd:\n  lr: 0.1\n", encoding="utf-8")
    with pytest.raises(ValueError) as info:
        loader(path)
    assert str(path) in str(info.value), f"the error does not name the file: {info.value}"
    assert "python/" in str(info.value) or "constructor" in str(info.value).lower(), str(info.value)
    assert not marker.exists(), "the YAML tag ran a command"


YAML_SAFE_NAMES = {
    "safe_load",
    "safe_load_all",
    "safe_dump",
    "safe_dump_all",
    "YAMLError",
    "MarkedYAMLError",
    # The safe loaders themselves (the config reader subclasses one), their node types and error modules.
    "SafeLoader",
    "CSafeLoader",
    "Node",
    "ScalarNode",
    "SequenceNode",
    "MappingNode",
    "constructor",
    "reader",
}


def yaml_misuses(tree: ast.AST) -> list[ast.AST]:
    """Uses of ``yaml`` other than its safe functions: ``yaml.load``, ``from yaml import Loader``, ``Loader=``."""
    modules = {"yaml"}
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.asname or alias.name for alias in node.names if alias.name == "yaml"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "yaml":
            if any(alias.name not in YAML_SAFE_NAMES for alias in node.names):
                found.append(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            if node.attr not in YAML_SAFE_NAMES:
                found.append(node)
        elif isinstance(node, ast.Call) and any(k.arg == "Loader" for k in node.keywords):
            found.append(node)
    return found


def test_yaml_misuse_detector_detects() -> None:
    """The detector below flags an unsafe load and passes a safe one."""
    assert yaml_misuses(ast.parse("import yaml as y\ny.load(text, Loader=y.Loader)"))
    assert yaml_misuses(ast.parse("from yaml import unsafe_load"))
    assert not yaml_misuses(ast.parse("import yaml\nyaml.safe_load(text)\ntorch.load(path)"))


def test_sources_read_yaml_with_safe_load_only() -> None:
    """No module of the packages uses a YAML loader that can build Python objects."""
    offenders = []
    for package in ("functional_opt", "torch_bridge"):
        for source in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
            for node in yaml_misuses(tree):
                offenders.append(f"{source.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not offenders, offenders


def test_safe_yaml_still_loads(tmp_path: Path) -> None:
    """The positive control: the same file without the tag loads."""
    path = tmp_path / "fine.yaml"
    path.write_text("learning_rate:\n  constant: 0.5\nsgd:\n  lr: 0.1\n", encoding="utf-8")
    loaded = config.load_config_from_yaml(config.OptimizerConfig, path)
    assert loaded.learning_rate.constant == 0.5
    assert np.isclose(schedules.compute_lr(loaded.learning_rate, 10**9), 0.5)
