"""The config schema: TML's YAML loads unchanged, every invalid value is refused with a message
that names the field and the value, and YAML loading is safe and says where it failed."""

from __future__ import annotations

import re
from pathlib import Path

import pydantic
import pytest
import yaml

from functional_opt import config, schedules

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _ramp_to_cosine(**overrides):
    kwargs = dict(learning_rate=0.1, final_learning_rate=0.01, num_ramp_steps=10, final_num_steps=100)
    return {**kwargs, **overrides}


TOWER = {"recap.engagement.is_favorited": {"constant": 0.1}}

# (model, input, pattern the message must match: the field and the value)
INVALID = {
    "piecewise_too_few_values": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[10, 20], learning_rate_values=[1.0, 0.5]),
        r"len\(learning_rate_values\)=2 and len\(learning_rate_boundaries\)=2",
    ),
    "piecewise_too_many_values": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[10], learning_rate_values=[1.0, 0.5, 0.25]),
        r"len\(learning_rate_values\)=3 and len\(learning_rate_boundaries\)=1",
    ),
    "piecewise_values_missing": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[10], learning_rate_values=None),
        r"\['learning_rate_values'\] must be set \(got null\)",
    ),
    "piecewise_equal_boundaries": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[10, 10], learning_rate_values=[1.0, 0.5, 0.25]),
        r"learning_rate_boundaries\[0\]=10 >= learning_rate_boundaries\[1\]=10",
    ),
    "piecewise_decreasing_boundaries": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[5, 20, 15], learning_rate_values=[1.0, 0.5, 0.25, 0.1]),
        r"learning_rate_boundaries\[1\]=20 >= learning_rate_boundaries\[2\]=15",
    ),
    "piecewise_negative_boundary": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[-1, 5], learning_rate_values=[1.0, 0.5, 0.25]),
        r"learning_rate_boundaries\[0\]=-1 must be >= 0",
    ),
    "cosine_final_equals_ramp": (
        config.LinearRampToCosine,
        _ramp_to_cosine(num_ramp_steps=100, final_num_steps=100),
        r"final_num_steps=100 must be > num_ramp_steps=100",
    ),
    "cosine_final_before_ramp": (
        config.LinearRampToCosine,
        _ramp_to_cosine(num_ramp_steps=100, final_num_steps=50),
        r"final_num_steps=50 must be > num_ramp_steps=100",
    ),
    "ramp_steps_zero": (
        config.LinearRampToConstant,
        dict(learning_rate=0.1, num_ramp_steps=0),
        r"num_ramp_steps\n.*greater than 0.*input_value=0",
    ),
    "constant_nan": (config.LearningRate, dict(constant=float("nan")), r"constant=nan must be a finite number"),
    "constant_inf": (config.LearningRate, dict(constant=float("inf")), r"constant=inf must be a finite number"),
    "constant_negative": (config.LearningRate, dict(constant=-0.5), r"constant=-0\.5 must be >= 0"),
    "constant_beyond_float32": (config.LearningRate, dict(constant=1e39), r"constant=1e\+39 does not fit in float32"),
    "ramp_lr_nan": (
        config.LinearRampToConstant,
        dict(learning_rate=float("nan"), num_ramp_steps=10),
        r"learning_rate=nan must be a finite number",
    ),
    "cosine_final_lr_negative": (
        config.LinearRampToCosine,
        _ramp_to_cosine(final_learning_rate=-1e-3),
        r"final_learning_rate=-0\.001 must be >= 0",
    ),
    "cosine_lr_inf": (
        config.LinearRampToCosine,
        _ramp_to_cosine(learning_rate=float("-inf")),
        r"learning_rate=-inf must be a finite number",
    ),
    "piecewise_value_beyond_float32": (
        config.PiecewiseConstant,
        dict(learning_rate_boundaries=[1], learning_rate_values=[1.0, 3.5e38]),
        r"learning_rate_values\[1\]=3\.5e\+38 does not fit in float32",
    ),
    "adam_lr_nan": (config.AdamConfig, dict(lr=float("nan")), r"lr=nan must be a finite number"),
    "sgd_lr_negative": (config.SgdConfig, dict(lr=-1.0), r"lr=-1\.0 must be >= 0"),
    "adam_beta1_one": (config.AdamConfig, dict(lr=0.1, betas=(1.0, 0.999)), r"betas\[0\]=1\.0 must be in \[0, 1\)"),
    "adam_beta2_negative": (
        config.AdamConfig,
        dict(lr=0.1, betas=(0.9, -0.1)),
        r"betas\[1\]=-0\.1 must be in \[0, 1\)",
    ),
    "recap_beta1_one": (config.RecapAdamConfig, dict(beta_1=1.0), r"beta_1=1\.0 must be in \[0, 1\)"),
    "recap_beta2_above_one": (config.RecapAdamConfig, dict(beta_2=1.5), r"beta_2=1\.5 must be in \[0, 1\)"),
    "recap_beta2_nan": (config.RecapAdamConfig, dict(beta_2=float("nan")), r"beta_2=nan must be in \[0, 1\)"),
    "adam_eps_negative": (config.AdamConfig, dict(lr=0.1, eps=-1e-8), r"eps=-1e-08 must be a finite number >= 0"),
    "recap_epsilon_negative": (
        config.RecapAdamConfig,
        dict(epsilon=-1.0),
        r"epsilon=-1\.0 must be a finite number >= 0",
    ),
    "adagrad_eps_negative": (config.AdagradConfig, dict(lr=0.1, eps=-0.5), r"eps=-0\.5 must be a finite number >= 0"),
    "empty_tower_learning_rates": (
        config.MultiTaskLearningRates,
        dict(tower_learning_rates={}),
        r"tower_learning_rates=\{\} must name at least one tower",
    ),
    "two_schedules": (
        config.LearningRate,
        dict(constant=0.1, linear_ramp_to_constant=dict(learning_rate=0.1, num_ramp_steps=10)),
        r"exactly one of .* must be set, got \['constant', 'linear_ramp_to_constant'\]",
    ),
    "two_schedules_nested_in_a_tower": (
        config.MultiTaskLearningRates,
        dict(
            tower_learning_rates={
                "recap.is_clicked": dict(constant=0.1, piecewise_constant=None, linear_ramp_to_cosine=_ramp_to_cosine())
            }
        ),
        r"tower_learning_rates\.`recap\.is_clicked`\n.*got \['constant', 'linear_ramp_to_cosine'\]",
    ),
    "no_schedule": (
        config.LearningRate,
        dict(constant=None, linear_ramp_to_cosine=None, linear_ramp_to_constant=None, piecewise_constant=None),
        r"exactly one of \['constant', 'linear_ramp_to_cosine', 'linear_ramp_to_constant', 'piecewise_constant', "
        r"'linear', .*'sequence'\]"
        r".*got none",
    ),
    "two_algorithms": (
        config.OptimizerConfig,
        dict(adam=dict(lr=0.1), sgd=dict(lr=0.1)),
        r"exactly one of \['adam', 'sgd', 'adagrad'\].*got \['adam', 'sgd'\]",
    ),
    "no_algorithm": (
        config.OptimizerConfig,
        dict(learning_rate=dict(constant=0.1)),
        r"exactly one of \['adam', 'sgd', 'adagrad'\].*got none",
    ),
    "extra_key": (
        config.LearningRate,
        dict(constant=0.1, warmup_steps=5),
        r"warmup_steps\n\s+Extra inputs are not permitted.*input_value=5",
    ),
    "extra_key_nested": (
        config.OptimizerConfig,
        dict(adam=dict(lr=0.1, momentum=0.9)),
        r"adam\.momentum\n\s+Extra inputs are not permitted.*input_value=0\.9",
    ),
    "multi_and_single_task": (
        config.RecapOptimizerConfig,
        dict(
            adam={},
            multi_task_learning_rates=dict(tower_learning_rates=TOWER),
            single_task_learning_rate=dict(constant=0.1),
        ),
        r"got \['multi_task_learning_rates', 'single_task_learning_rate'\]",
    ),
    "neither_multi_nor_single_task": (
        config.RecapOptimizerConfig,
        dict(adam={}, multi_task_learning_rates=None, single_task_learning_rate=None),
        r"exactly one of \['multi_task_learning_rates', 'single_task_learning_rate'\].*got none",
    ),
    "embedding_init_lr_negative": (
        config.EmbeddingOptimizerConfig,
        dict(learning_rate=dict(constant=0.1), init_learning_rate=-1.0),
        r"init_learning_rate=-1\.0 must be >= 0",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_config_is_refused_naming_field_and_value(case):
    model, data, pattern = INVALID[case]
    with pytest.raises(pydantic.ValidationError, match=pattern):
        model.model_validate(data)


def test_invalid_assignment_is_refused():
    lr = config.LinearRampToCosine(**_ramp_to_cosine())
    with pytest.raises(pydantic.ValidationError, match=r"final_num_steps=5 must be > num_ramp_steps=10"):
        lr.final_num_steps = 5


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (config.PiecewiseConstant, dict(learning_rate_boundaries=[], learning_rate_values=[0.1])),
        (
            config.PiecewiseConstant,
            dict(learning_rate_boundaries=[0, 1], learning_rate_values=[0.0, 0.1, 3.4028234663852886e38]),
        ),
        (config.LinearRampToCosine, _ramp_to_cosine(num_ramp_steps=1, final_num_steps=2)),
        (config.LinearRampToCosine, _ramp_to_cosine(final_learning_rate=0.5)),
        (config.AdamConfig, dict(lr=0.0, betas=(0.0, 0.0), eps=0.0)),
        (config.RecapAdamConfig, dict(beta_1=0.0, beta_2=0.9999999, epsilon=0.0)),
        (config.LinearRampToCosine, _ramp_to_cosine(final_num_steps=1099511627776)),
    ],
)
def test_edge_values_are_accepted(model, data):
    model.model_validate(data)


# ---------------------------------------------------------------------------------------------
# TML's YAML
# ---------------------------------------------------------------------------------------------


class TmlRecapFile(config.BaseConfig):
    """A TML project config reduced to its ``optimizer`` section."""

    optimizer: config.RecapOptimizerConfig


def test_tml_recap_yaml_loads_unchanged():
    path = EXAMPLES / "tml_recap_optimizer.yaml"
    raw = yaml.safe_load(path.read_text())["optimizer"]
    loaded = config.load_config_from_yaml(TmlRecapFile, path).optimizer
    assert loaded.model_dump(mode="json") == raw
    towers = loaded.multi_task_learning_rates.tower_learning_rates
    assert list(towers) == list(raw["multi_task_learning_rates"]["tower_learning_rates"])
    assert {lr.schedule_name for lr in towers.values()} == {
        "constant",
        "linear_ramp_to_constant",
        "linear_ramp_to_cosine",
        "piecewise_constant",
    }
    assert loaded.adam == config.RecapAdamConfig(beta_1=0.95, beta_2=0.999, epsilon=1e-7)
    assert loaded.single_task_learning_rate is None
    assert schedules.compute_lr(towers["recap.engagement.is_favorited"], 2500) == pytest.approx(0.0004, rel=1e-15)
    assert schedules.compute_lr(towers["recap.engagement.is_replied"], 10000) == 0.0005


def test_tml_optimizer_yaml_loads_unchanged():
    path = EXAMPLES / "tml_optimizer.yaml"
    raw = yaml.safe_load(path.read_text())
    loaded = config.load_config_from_yaml(config.OptimizerConfig, path)
    assert loaded.model_dump(mode="json") == raw
    assert loaded.algorithm_name == "adam"
    assert config.get_optimizer_algorithm_config(loaded) == config.AdamConfig(lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    assert loaded.learning_rate.schedule_name == "linear_ramp_to_cosine"


def test_a_schema_error_in_yaml_names_the_nested_field(tmp_path):
    text = (
        (EXAMPLES / "tml_recap_optimizer.yaml")
        .read_text()
        .replace("num_ramp_steps: 5000", "num_ramp_steps: 5000\n          warmup: 3")
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(
        pydantic.ValidationError,
        match=r"optimizer\.multi_task_learning_rates\.tower_learning_rates\.`recap\.engagement\.is_favorited`"
        r"\.linear_ramp_to_constant\.warmup\n\s+Extra inputs are not permitted.*input_value=3",
    ):
        config.load_config_from_yaml(TmlRecapFile, path)


def test_env_substitution(tmp_path, monkeypatch):
    monkeypatch.setenv("FO_TEST_LR", "0.25")
    monkeypatch.setenv("FO_TEST_STEPS", "40")
    path = tmp_path / "opt.yaml"
    path.write_text(
        "sgd:\n  lr: $FO_TEST_LR\n"
        "learning_rate:\n  linear_ramp_to_constant:\n"
        "    learning_rate: ${FO_TEST_LR}\n    num_ramp_steps: ${FO_TEST_STEPS}\n"
    )
    loaded = config.load_config_from_yaml(config.OptimizerConfig, path)
    assert loaded.sgd.lr == 0.25
    assert loaded.learning_rate.linear_ramp_to_constant == config.LinearRampToConstant(
        learning_rate=0.25, num_ramp_steps=40
    )


def test_unknown_env_var_is_left_as_is_and_reported(tmp_path, monkeypatch):
    monkeypatch.delenv("FO_TEST_UNSET", raising=False)
    path = tmp_path / "opt.yaml"
    path.write_text("sgd:\n  lr: $FO_TEST_UNSET\n")
    with pytest.raises(pydantic.ValidationError, match=r"sgd\.lr\n.*input_value='\$FO_TEST_UNSET'"):
        config.load_config_from_yaml(config.OptimizerConfig, path)


def test_python_object_tags_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("adam:\n  lr: !!python/object/apply:os.getcwd []\n")
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(path.read_text())
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": invalid YAML at line 2") as info:
        config.load_config_from_yaml(config.OptimizerConfig, path)
    assert isinstance(info.value.__cause__, yaml.constructor.ConstructorError)


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "missing.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        config.load_config_from_yaml(config.OptimizerConfig, path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("adam:\n  lr: 0.1\nlearning_rate:\n  constant: [0.1\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": invalid YAML at line \d+, column \d+"):
        config.load_config_from_yaml(config.OptimizerConfig, path)
    path.write_text("adam:\n  lr: 0.1\n lr2: 3\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": invalid YAML at line 3"):
        config.load_config_from_yaml(config.OptimizerConfig, path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=re.escape(str(path)) + r": expected a YAML mapping.*got list"):
        config.load_config_from_yaml(config.OptimizerConfig, path)
