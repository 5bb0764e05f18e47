"""Fuzzed optimizer configs: every input either loads and gives finite schedules, or fails naming a field.

hypothesis generates YAML-shaped inputs for ``LearningRate``, ``OptimizerConfig``
and ``RecapOptimizerConfig``: valid configs with extreme values (learning
rates up to float32's max, step counts up to 2**60, unicode and dotted tower
names), the same configs with one part broken (wrong type, NaN/inf, negative
or huge numbers, a key removed or added, an empty dict), and random YAML
values. For each input, exactly one of:

* it validates, and every schedule it holds is finite and within
  ``[0, max learning rate]`` at random steps in ``[0, 2**31)``, in float32 and
  in float64 (``jax.enable_x64``); the float64 value equals an independent
  Python reference of DESIGN.md's formulas;
* it raises ``pydantic.ValidationError`` (or ``ValueError``) whose every error
  names a field: a non-empty location, or a message that contains a field name.

Any other exception, or a non-finite learning rate, fails. The same input is
written to a YAML file and loaded with ``load_config_from_yaml``: the outcome
must be the same, and a loaded config dumped to YAML loads back equal.

CI runs a fixed number of derandomized examples per test (profile
``reliability-fuzz-ci``). ``FUZZ_EXAMPLES=N`` runs N examples per test with
fresh random data (profile ``reliability-fuzz``; a failure prints the seed
to replay it with ``--hypothesis-seed``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from lr_reference import peak, reference_lr

from functional_opt import config, grouping, schedules

CI_EXAMPLES = 75
"""Examples per test in CI (three fuzz tests plus the YAML round trip: 300 in all)."""

settings.register_profile(
    "reliability-fuzz-ci",
    max_examples=CI_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "reliability-fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES") or CI_EXAMPLES),
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_SETTINGS = settings.get_profile("reliability-fuzz" if os.environ.get("FUZZ_EXAMPLES") else "reliability-fuzz-ci")

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_STEP = 2**31 - 1

CONFIG_MODELS: tuple[type[pydantic.BaseModel], ...] = (
    config.PiecewiseConstant,
    config.LinearRampToConstant,
    config.LinearRampToCosine,
    config.LearningRate,
    config.AdamConfig,
    config.SgdConfig,
    config.AdagradConfig,
    config.OptimizerConfig,
    config.RecapAdamConfig,
    config.MultiTaskLearningRates,
    config.RecapOptimizerConfig,
    config.EmbeddingOptimizerConfig,
)
FIELD_NAMES = frozenset(name for model in CONFIG_MODELS for name in model.model_fields)
ROOT_TYPE_ERRORS = frozenset({"model_type", "model_attributes_type", "dict_type"})

# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------

# "$" is left out: load_config_from_yaml substitutes $VARS from the environment, by design.
TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="$"), max_size=10)

SPECIAL_NUMBERS = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        -0.0,
        -1.0,
        -1,
        0,
        5e-324,
        1e-45,
        FLOAT32_MAX,
        3.5e38,
        float(np.nextafter(FLOAT32_MAX, math.inf)),
        1e308,
        -(2**31),
        2**31 - 1,
        2**31,
        2**63,
        2**80,
        -(2**80),
        True,
        False,
    ]
)

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    SPECIAL_NUMBERS,
    TEXT,
)

YAML_VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(TEXT, st.sampled_from(sorted(FIELD_NAMES))), children, max_size=4),
    ),
    max_leaves=12,
)

LR_VALUES = st.one_of(
    st.floats(min_value=0.0, max_value=FLOAT32_MAX, allow_nan=False),
    st.sampled_from([0.0, 5e-324, 1e-45, 1e-8, 0.1, 1.0, FLOAT32_MAX]),
)
# Step counts are int64 (config.MAX_STEP): up to 2**60 here, so that sums of a few stay within it.
STEP_COUNTS = st.one_of(
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=2**31),
    st.integers(min_value=2**31, max_value=2**60),
    st.sampled_from([1, 2, 2**24, 2**31 - 1, 2**31, 2**53 + 1, 2**60]),
)


@st.composite
def with_nulls(draw: st.DrawFn, chosen: dict[str, Any], others: tuple[str, ...]) -> dict[str, Any]:
    """TML's YAML lists the unused alternatives as explicit nulls; sometimes do the same."""
    out = dict(chosen)
    for name in others:
        if name not in out and draw(st.booleans()):
            out[name] = None
    return out


FACTORS = st.one_of(st.floats(min_value=1e-6, max_value=1.0), st.sampled_from([1e-300, 0.5, 0.999999, 1.0]))
SMALL_COUNTS = st.one_of(
    st.just(0), st.integers(min_value=1, max_value=1000), st.integers(min_value=1, max_value=2**40)
)


def common_body(draw: st.DrawFn, kind: str, depth: int) -> Any:
    """A body for one of the kinds beyond TML's four (sequences nest up to three deep)."""
    if kind == "linear":
        return {
            "initial_learning_rate": draw(LR_VALUES),
            "final_learning_rate": draw(LR_VALUES),
            "num_steps": draw(STEP_COUNTS),
        }
    if kind == "warmup_stable_decay":
        shape = draw(st.sampled_from(["linear", "cosine", "one_minus_sqrt", "polynomial"]))
        body = {
            "learning_rate": draw(LR_VALUES),
            "final_learning_rate": draw(LR_VALUES),
            "num_warmup_steps": draw(SMALL_COUNTS),
            "num_stable_steps": draw(SMALL_COUNTS),
            "num_decay_steps": draw(STEP_COUNTS),
            "decay_shape": shape,
        }
        if shape == "polynomial" and draw(st.booleans()):
            body["power"] = draw(st.floats(min_value=0.1, max_value=10.0))
        return body
    if kind == "exponential_decay":
        grows = draw(st.booleans())
        body = {
            "learning_rate": draw(LR_VALUES),
            "decay_rate": draw(st.floats(min_value=1.0, max_value=4.0, exclude_min=True) if grows else FACTORS),
            "transition_steps": draw(STEP_COUNTS),
            "transition_begin": draw(SMALL_COUNTS),
            "staircase": draw(st.booleans()),
        }
        if grows or draw(st.booleans()):
            body["final_learning_rate"] = draw(LR_VALUES)
        return body
    if kind == "multi_step":
        return {
            "learning_rate": draw(LR_VALUES),
            "milestones": draw(st.lists(SMALL_COUNTS, max_size=5)),
            "gamma": draw(st.one_of(st.just(0.0), FACTORS)),
        }
    if kind == "cosine_restarts":
        return {
            "learning_rate": draw(LR_VALUES),
            "final_learning_rate": draw(LR_VALUES),
            "cycle_steps": draw(STEP_COUNTS),
            "cycle_mult": draw(st.integers(min_value=1, max_value=4)),
        }
    if kind == "one_cycle":
        return {
            "max_learning_rate": draw(LR_VALUES),
            "total_steps": draw(st.integers(min_value=100, max_value=2**40)),
            "pct_start": draw(st.floats(min_value=0.05, max_value=0.45)),
            "anneal_strategy": draw(st.sampled_from(["cos", "linear"])),
            "div_factor": draw(st.floats(min_value=1.0, max_value=1e4)),
            "final_div_factor": draw(st.floats(min_value=1.0, max_value=1e6)),
            "three_phase": draw(st.booleans()),
        }
    if kind == "inverse_sqrt":
        return {"learning_rate": draw(LR_VALUES), "timescale": draw(STEP_COUNTS)}
    assert kind == "sequence"
    count = draw(st.integers(min_value=1, max_value=3))
    segments = []
    for i in range(count):
        segment: dict[str, Any] = {"learning_rate": draw(valid_learning_rate(depth + 1))}
        if i < count - 1:
            segment["num_steps"] = draw(STEP_COUNTS)
        if draw(st.booleans()):
            segment["from_step"] = draw(SMALL_COUNTS)
        segments.append(segment)
    return segments


@st.composite
def valid_learning_rate(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    kinds = config.SCHEDULE_FIELDS if depth < 3 else config.SCHEDULE_FIELDS[:-1]
    kind = draw(st.sampled_from(kinds))
    if kind == "constant":
        body: Any = draw(LR_VALUES)
    elif kind == "linear_ramp_to_constant":
        body = {"learning_rate": draw(LR_VALUES), "num_ramp_steps": draw(STEP_COUNTS)}
    elif kind == "linear_ramp_to_cosine":
        ramp = draw(STEP_COUNTS)
        body = {
            "learning_rate": draw(LR_VALUES),
            "final_learning_rate": draw(LR_VALUES),
            "num_ramp_steps": ramp,
            "final_num_steps": ramp + draw(STEP_COUNTS),
        }
    elif kind == "piecewise_constant":
        gaps = draw(st.lists(STEP_COUNTS, max_size=5))
        start = draw(st.integers(min_value=0, max_value=2**31))
        boundaries = [start + sum(gaps[:i]) for i in range(len(gaps))]
        values = draw(st.lists(LR_VALUES, min_size=len(boundaries) + 1, max_size=len(boundaries) + 1))
        body = {"learning_rate_boundaries": boundaries, "learning_rate_values": values}
    else:
        body = common_body(draw, kind, depth)
    return draw(with_nulls({kind: body}, config.TML_SCHEDULE_FIELDS))


@st.composite
def valid_optimizer_config(draw: st.DrawFn) -> dict[str, Any]:
    algorithm = draw(st.sampled_from(config.ALGORITHM_FIELDS))
    unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
    non_negative = st.floats(min_value=0.0, max_value=1e30)
    params: dict[str, Any] = {"lr": draw(LR_VALUES)}
    if algorithm == "adam":
        optional = {"betas": [draw(unit), draw(unit)], "eps": draw(non_negative)}
    elif algorithm == "sgd":
        optional = {"momentum": draw(non_negative)}
    else:
        optional = {name: draw(non_negative) for name in ("eps", "lr_decay", "initial_accumulator_value")}
    params.update({k: v for k, v in optional.items() if draw(st.booleans())})
    out: dict[str, Any] = {algorithm: params}
    if draw(st.booleans()):
        out["learning_rate"] = draw(valid_learning_rate())
    return draw(with_nulls(out, (*config.ALGORITHM_FIELDS, "learning_rate")))


TOWER_NAMES = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="$"), min_size=1, max_size=12),
    st.lists(st.sampled_from(["recap", "engagement", "is_favorited", "a", "b", "", "a__b", "été", "塔"]), min_size=1)
    .map(".".join)
    .filter(bool),
    st.sampled_from(["recap.engagement.is_favorited", "a.b", "a__b", "x", "x.y", "backbone", "dense_ebc", "..", " "]),
)


@st.composite
def valid_recap_config(draw: st.DrawFn) -> dict[str, Any]:
    unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
    adam = {
        k: v
        for k, v in {
            "beta_1": draw(unit),
            "beta_2": draw(unit),
            "epsilon": draw(st.floats(min_value=0.0, max_value=1.0)),
        }.items()
        if draw(st.booleans())
    }
    out: dict[str, Any] = {"adam": adam}
    if draw(st.booleans()):
        towers = draw(st.dictionaries(TOWER_NAMES, valid_learning_rate(), min_size=1, max_size=4))
        multi: dict[str, Any] = {"tower_learning_rates": towers}
        if draw(st.booleans()):
            multi["backbone_learning_rate"] = draw(st.one_of(st.none(), valid_learning_rate()))
        out["multi_task_learning_rates"] = multi
    else:
        out["single_task_learning_rate"] = draw(valid_learning_rate())
    return draw(with_nulls(out, ("multi_task_learning_rates", "single_task_learning_rate")))


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a nested dict/list, the root included."""
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.extend(_paths(value, (*prefix, key)))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            out.extend(_paths(value, (*prefix, index)))
    return out


def _get(obj: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def broken(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid config with one to three parts replaced, removed or added."""
    obj = draw(valid)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(obj)))
        replacement = draw(st.one_of(SPECIAL_NUMBERS, SCALARS, st.just({}), st.just([]), YAML_VALUES))
        if not path:
            return replacement
        parent = _get(obj, path[:-1])
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = replacement
        elif action == "delete":
            if isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        elif isinstance(parent, dict):
            key = draw(st.one_of(TEXT, st.sampled_from(sorted(FIELD_NAMES))))
            parent[key] = replacement
        else:
            parent.append(replacement)
    return obj


def inputs_for(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[Any]:
    """Valid configs, broken ones, random YAML values and empty dicts."""
    return st.one_of(valid, broken(valid), broken(valid), YAML_VALUES, st.just({}))


STRATEGIES: dict[type[pydantic.BaseModel], st.SearchStrategy[dict[str, Any]]] = {
    config.LearningRate: valid_learning_rate(),
    config.OptimizerConfig: valid_optimizer_config(),
    config.RecapOptimizerConfig: valid_recap_config(),
}

# ---------------------------------------------------------------------------
# Oracle
# ---------------------------------------------------------------------------


def schedules_of(cfg: pydantic.BaseModel) -> dict[str, config.LearningRate]:
    """Every schedule a loaded config holds, by a readable name."""
    if isinstance(cfg, config.LearningRate):
        return {"lr": cfg}
    if isinstance(cfg, config.OptimizerConfig):
        if cfg.learning_rate is not None:
            return {"learning_rate": cfg.learning_rate}
        return {"algorithm lr": config.LearningRate(constant=config.get_optimizer_algorithm_config(cfg).lr)}
    assert isinstance(cfg, config.RecapOptimizerConfig)
    if cfg.single_task_learning_rate is not None:
        return {"single_task": cfg.single_task_learning_rate}
    multi = cfg.multi_task_learning_rates
    out = {f"tower {name!r}": lr for name, lr in multi.tower_learning_rates.items()}
    if multi.backbone_learning_rate is not None:
        out["backbone"] = multi.backbone_learning_rate
    return out


def check_schedule(name: str, lr: config.LearningRate, steps: list[int]) -> None:
    """Finite, within [0, max lr], in float32 and float64; float64 equals the reference."""
    top = peak(lr)
    for x64 in (False, True):
        with jax.enable_x64(x64):
            schedule = schedules.schedule_from_config(lr)
            dtype = jnp.float64 if x64 else jnp.float32
            bound = float(np.asarray(top, dtype=dtype)) * (1 + 4 * float(np.finfo(dtype).eps))
            batched = np.asarray(schedule(jnp.asarray(steps, dtype=jnp.int32)))
            scalars = [float(schedule(s)) for s in steps[:2]]
            assert batched.dtype == dtype, (name, lr, batched.dtype)
            for step, value in [*zip(steps, batched.tolist(), strict=True), *zip(steps, scalars, strict=False)]:
                assert math.isfinite(value), f"{name}: non-finite lr {value} at step {step} (x64={x64}) for {lr!r}"
                assert 0.0 <= value <= bound, f"{name}: lr {value} outside [0, {top}] at step {step} (x64={x64})"
                if x64:
                    expected = reference_lr(lr, step)
                    # XLA on CPU flushes subnormal numbers to zero, hence the absolute floor.
                    tolerance = max(1e-12 * top, float(np.finfo(np.float64).tiny))
                    assert math.isclose(
                        value, expected, rel_tol=1e-12, abs_tol=tolerance
                    ), f"{name}: lr {value} != reference {expected} at step {step} for {lr!r}"


def check_error_names_a_field(exc: pydantic.ValidationError) -> None:
    for error in exc.errors():
        if error["loc"]:
            continue
        if error["type"] in ROOT_TYPE_ERRORS:
            continue  # the input itself is not a mapping: nothing narrower than the model to name
        assert any(field in error["msg"] for field in FIELD_NAMES), f"error names no field: {error}"


def outcome(model: type[pydantic.BaseModel], data: Any, steps: list[int]) -> pydantic.BaseModel | None:
    """The validated config (after checking its schedules), or None after checking the error."""
    try:
        cfg = model.model_validate(data)
    except pydantic.ValidationError as exc:
        event("rejected")
        check_error_names_a_field(exc)
        return None
    except ValueError as exc:
        assert any(field in str(exc) for field in FIELD_NAMES), f"ValueError names no field: {exc}"
        return None
    event("loaded")
    for name, lr in schedules_of(cfg).items():
        check_schedule(name, lr, steps)
    return cfg


STEPS = st.lists(st.integers(min_value=0, max_value=MAX_STEP), min_size=1, max_size=6).map(lambda s: [0, MAX_STEP, *s])


# ---------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(STRATEGIES), ids=lambda m: m.__name__)
def test_fuzzed_config_loads_finite_or_names_a_field(model: type[pydantic.BaseModel]) -> None:
    @FUZZ_SETTINGS
    @given(data=inputs_for(STRATEGIES[model]), steps=STEPS)
    def run(data: Any, steps: list[int]) -> None:
        cfg = outcome(model, data, steps)
        if cfg is not None and isinstance(cfg, config.RecapOptimizerConfig):
            check_tower_grouping(cfg)

    run()


def check_tower_grouping(cfg: config.RecapOptimizerConfig) -> None:
    """One parameter per tower (named as TML names tower modules) either groups one-to-one or fails by name."""
    multi = cfg.multi_task_learning_rates
    if multi is None:
        return
    towers = list(multi.tower_learning_rates)
    names = [f"towers.{grouping.sanitize(t)}.weight" for t in towers] + ["backbone_mlp.weight"]
    if multi.backbone_learning_rate is None:
        names.pop()
    try:
        groups = grouping.recap_groups(names, cfg)
    except ValueError as exc:
        clashes = {grouping.sanitize(t) for t in towers}
        reserved = {grouping.BACKBONE, grouping.DENSE_EMBEDDINGS, grouping.SINGLE_TASK}
        assert len(clashes) < len(towers) or reserved & set(towers), f"unexpected error for towers {towers}: {exc}"
        assert any(repr(t) in str(exc) for t in towers), f"grouping error names no tower: {exc}"
        return
    by_name = {g.name: g.param_names for g in groups}
    for tower, param in zip(towers, names, strict=False):
        assert by_name[tower] == (param,), (tower, by_name)


@FUZZ_SETTINGS
@given(
    model=st.sampled_from(list(STRATEGIES)),
    choice=st.integers(min_value=0, max_value=4),
    data=st.data(),
    steps=STEPS,
)
def test_yaml_file_round_trip(model: type[pydantic.BaseModel], choice: int, data: st.DataObject, steps: list[int]):
    raw = data.draw(inputs_for(STRATEGIES[model]) if choice else STRATEGIES[model])
    in_memory = outcome(model, raw, steps)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzzed config.yaml"
        path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
        try:
            from_file = config.load_config_from_yaml(model, path)
        except pydantic.ValidationError as exc:
            check_error_names_a_field(exc)
            from_file = None
        except ValueError as exc:
            assert not isinstance(raw, dict), f"{path}: unexpected ValueError for a mapping: {exc}"
            assert str(path) in str(exc), f"error does not name the file: {exc}"
            from_file = None
        assert (in_memory is None) == (from_file is None), (raw, in_memory, from_file)
        if in_memory is None:
            return
        assert from_file == in_memory
        path.write_text(yaml.safe_dump(in_memory.model_dump(mode="json"), allow_unicode=True), encoding="utf-8")
        assert config.load_config_from_yaml(model, path) == in_memory
