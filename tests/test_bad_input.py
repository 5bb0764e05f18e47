"""Hostile and malformed input: nothing hangs, nothing is misread, every error is one clear line.

Each test feeds one bad input to the YAML reader, the config schema, the
schedules, the grouping rule or the command line, and checks that it is
refused with a message naming the file, field or option and what was
expected, or, for the ordinary uses that must keep working, that it reads
as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pydantic
import pytest

from functional_opt import config, schedules, yaml_loading
from functional_opt.config_file import ConfigFileError, load_config_file

GENERIC = "sgd: {lr: 0.1}\nlearning_rate: {constant: 0.1}\n"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    """The one-line message ``load_config_file`` refuses ``path`` with."""
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return message


# ----------------------------------------------------------------------------- duplicate keys


def test_duplicate_key_is_refused_naming_key_and_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.yaml", "sgd:\n  lr: 0.1\n  lr: 0.5\nlearning_rate: {constant: 0.1}\n")
    message = load_error(path)
    assert "duplicate key 'lr' (first at line 2, again at line 3)" in message
    with pytest.raises(ValueError, match=r"duplicate key 'lr' \(first at line 2, again at line 3\)"):
        config.load_config_from_yaml(config.OptimizerConfig, path)


def test_duplicate_top_level_section_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.yaml", GENERIC + "sgd: {lr: 9.0}\n")
    assert "duplicate key 'sgd' (first at line 1, again at line 3)" in load_error(path)


def test_duplicate_tower_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path / "dup.yaml",
        """
        adam: {}
        multi_task_learning_rates:
          tower_learning_rates:
            a: {constant: 0.1}
            a: {constant: 0.2}
        """,
    )
    assert "duplicate key 'a' (first at line 4, again at line 5)" in load_error(path)


def test_merge_keys_may_override(tmp_path: Path) -> None:
    """A merged mapping's keys are overridden by explicit ones, as YAML says: that is no duplicate."""
    path = write(
        tmp_path / "merge.yaml",
        """
        base: &base {learning_rate: 0.1, num_ramp_steps: 10}
        sgd: {lr: 0.1}
        learning_rate:
          linear_ramp_to_constant:
            <<: *base
            num_ramp_steps: 20
        """,
    )
    with pytest.raises(ConfigFileError, match="base: unknown key"):
        load_config_file(path)  # the top-level layout reads every key: 'base' is unknown, but the YAML loads
    data = yaml_loading.read_yaml_document(path).data
    assert data["learning_rate"]["linear_ramp_to_constant"] == {"learning_rate": 0.1, "num_ramp_steps": 20}


# ----------------------------------------------------------------------------- aliases

BILLION_LAUGHS = "\n".join(
    [f'a: &a [{",".join(["lol"] * 9)}]']
    + [f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
)

MEASURE = """
import json, resource, sys
from functional_opt import config_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    config_file.load_config_file(sys.argv[1])
    outcome = "loaded"
except config_file.ConfigFileError as exc:
    outcome = str(exc)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
added = (after - before) / 1024
print(json.dumps({"outcome": outcome, "peak_mib": after / 1024, "added_mib": added}))
"""


def measure_load(path: Path, timeout: float = 120) -> dict[str, object]:
    """Loads ``path`` in a fresh interpreter; returns its outcome and peak memory (printed for the record).

    The time of these loads is measured by ``benchmarks/bench_yaml.py``, as a ratio.
    """
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, timeout=timeout, check=True
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"{path.name}: {figures}")
    return figures


def test_billion_laughs_is_refused_fast_and_small(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS + "\n", encoding="utf-8")
    assert path.stat().st_size < 400
    figures = measure_load(path, timeout=60)
    outcome = str(figures["outcome"])
    assert "refused as an alias bomb" in outcome, outcome
    assert len(outcome) < 400, outcome
    assert float(figures["added_mib"]) < 200  # the expanded document would take gigabytes


def test_aliases_within_the_bound_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path / "alias.yaml",
        """
        adam: {}
        multi_task_learning_rates:
          tower_learning_rates:
            a: &shared {linear_ramp_to_constant: {learning_rate: 0.1, num_ramp_steps: 10}}
            b: *shared
          backbone_learning_rate: *shared
        """,
    )
    rates = load_config_file(path).learning_rates()
    assert rates["a"] == rates["b"] == rates["backbone"]


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "loop.yaml", "sgd: &x {lr: *x}\n")
    assert "a recursive alias" in load_error(path)


def test_no_message_prints_more_than_a_short_value(tmp_path: Path) -> None:
    long_list = "[" + ", ".join(str(i) for i in range(5000)) + "]"
    path = write(tmp_path / "long.yaml", f"sgd: {{lr: {long_list}}}\nlearning_rate: null\n")
    message = load_error(path)
    assert "sgd.lr" in message
    assert len(message) - len(str(path)) < 300, message


# ----------------------------------------------------------------------------- size, kinds of file, bytes


def test_big_file_loads_with_libyaml(tmp_path: Path) -> None:
    """A 5 MB whole TML config (a long train_data list beside the optimizer section) loads."""
    lines = [config_file_example_text(), "train_data:\n  files:\n"]
    size = sum(map(len, lines))
    index = 0
    while size < 5 * 2**20:
        line = f"    - {{path: gs://bucket/part-{index:08d}.tfrecord, weight: 0.5, tags: [a, b, c]}}\n"
        lines.append(line)
        size += len(line)
        index += 1
    path = tmp_path / "big.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    assert yaml_loading._SAFE_LOADER.__name__ == "CSafeLoader", "libyaml is installed in this environment"
    figures = measure_load(path, timeout=300)
    assert figures["outcome"] == "loaded", figures


def config_file_example_text() -> str:
    from functional_opt.cli import example_config_path

    return example_config_path().read_text(encoding="utf-8")


def test_file_over_the_size_cap_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml_loading, "MAX_CONFIG_BYTES", 1000)
    path = write(tmp_path / "big.yaml", GENERIC + "# padding\n" * 200)
    assert "over the 1000 bytes a config file may have" in load_error(path)


def test_size_cap_is_stated() -> None:
    assert yaml_loading.MAX_CONFIG_BYTES == 16 * 2**20


def test_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "conf.yaml"
    path.mkdir()
    assert load_error(path) == f"{path}: is a directory, not a YAML file"
    with pytest.raises(ValueError, match="is a directory"):
        config.load_config_from_yaml(config.OptimizerConfig, path)


def test_fifo_is_named_and_not_opened(tmp_path: Path) -> None:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    assert load_error(path) == f"{path}: is a FIFO (named pipe), not a YAML file"


def test_device_is_named() -> None:
    message = load_error(Path("/dev/null"))
    assert message == "/dev/null: is a character device, not a YAML file"


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "secret.yaml", GENERIC)

    def refuse(*args: object, **kwargs: object) -> int:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(yaml_loading.os, "open", refuse)
    assert load_error(path) == f"{path}: cannot be read: permission denied"


def test_missing_file_and_broken_link(tmp_path: Path) -> None:
    assert load_error(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "gone.yaml")
    assert load_error(link) == f"{link}: no such file (a broken symbolic link)"


def test_binary_garbage_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(bytes(range(256)) * 4)
    assert load_error(path) == f"{path}: is binary data (a NUL byte at offset 0), not YAML text"


def test_invalid_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("sgd: {lr: 0.1}\n# café\n".encode("latin-1"))
    assert load_error(path) == f"{path}: is not UTF-8 text: byte 0xe9 at line 2 (offset 20) is invalid"


def test_control_character_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bell.yaml"
    path.write_bytes(b"sgd: {lr: 0.1}\x07\n")
    assert "invalid YAML" in load_error(path) and "U+0007" in load_error(path)


@pytest.mark.parametrize("shape", ["flow", "block", "mapping"])
def test_over_deep_nesting_is_one_line(tmp_path: Path, shape: str) -> None:
    depth = 100_000
    if shape == "flow":
        text = "sgd: " + "[" * depth + "]" * depth + "\n"
    elif shape == "block":
        text = "sgd:\n  " + "- " * depth + "x\n"
    else:
        text = "".join(" " * i + f"k{i}:\n" for i in range(300)) + " " * 300 + "v: 1\n"
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    message = load_error(path)
    assert "nest" in message, message
    assert "RecursionError" not in message


def test_over_deep_nesting_with_the_pure_python_loader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without libyaml PyYAML's composer recurses per level: that too is one line, not a RecursionError."""
    import yaml

    monkeypatch.setattr(yaml_loading, "_Loader", yaml_loading._make_loader(yaml.SafeLoader))
    path = tmp_path / "deep.yaml"
    path.write_text("sgd:\n  " + "- " * 5000 + "x\n", encoding="utf-8")
    assert "nested deeper than" in load_error(path)
    assert load_config_file(write(tmp_path / "fine.yaml", GENERIC)).kind == "generic"


def test_python_tags_stay_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "evil.yaml", "sgd: {lr: !!python/object/apply:os.getcwd []}\n")
    assert "python/object/apply" in load_error(path)


# ----------------------------------------------------------------------------- environment substitution


def test_env_value_cannot_inject_structure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FO_INJECT", "0.1\nadam: {lr: 100.0}")
    path = write(tmp_path / "opt.yaml", "sgd: {lr: $FO_INJECT}\nlearning_rate: null\n")
    message = load_error(path)
    assert message == (
        f"{path}: sgd.lr: Input should be a valid number, got the string $FO_INJECT (the value of $FO_INJECT)"
    )
    assert "100" not in message
    with pytest.raises(pydantic.ValidationError, match=r"the value of \$FO_INJECT") as info:
        config.load_config_from_yaml(config.OptimizerConfig, path)
    assert "100" not in str(info.value)


def test_env_value_never_printed_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FO_TOKEN", "-7.5")
    path = write(tmp_path / "opt.yaml", "sgd: {lr: $FO_TOKEN}\nlearning_rate: null\n")
    message = load_error(path)
    assert "$FO_TOKEN" in message and "7.5" not in message, message
    monkeypatch.setenv("FO_STEPS", "5")
    path = write(
        tmp_path / "cos.yaml",
        "sgd: {lr: 0.1}\nlearning_rate:\n  linear_ramp_to_cosine:\n"
        "    {learning_rate: 0.1, final_learning_rate: 0, num_ramp_steps: 10, final_num_steps: ${FO_STEPS}}\n",
    )
    message = load_error(path)
    assert "$FO_STEPS" in message and "=5 " not in message, message


def test_env_ordinary_uses_keep_their_meaning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FO_LR", "0.25")
    monkeypatch.setenv("FO_STEPS", "40")
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.delenv("FO_UNSET", raising=False)
    path = write(
        tmp_path / "opt.yaml",
        """
        sgd: {lr: $FO_LR}
        learning_rate: {linear_ramp_to_constant: {learning_rate: "${FO_LR}", num_ramp_steps: $FO_STEPS}}
        """,
    )
    with pytest.raises(
        ConfigFileError, match=r"learning_rate: Input should be a valid number.*\(the value of \$FO_LR\)"
    ):
        load_config_file(path)  # quoted: a string, as TML's substitution in the raw text gives
    path = write(
        tmp_path / "opt.yaml",
        """
        sgd: {lr: $FO_LR}
        learning_rate: {linear_ramp_to_constant: {learning_rate: ${FO_LR}, num_ramp_steps: $FO_STEPS}}
        paths: {home: "${HOME}/x", other: $FO_UNSET/y, price: $$5, user: $USER}
        """,
    )
    data = yaml_loading.read_yaml_document(path).data
    assert data["sgd"]["lr"] == 0.25
    assert data["learning_rate"]["linear_ramp_to_constant"] == {"learning_rate": 0.25, "num_ramp_steps": 40}
    import getpass

    assert data["paths"] == {
        "home": "/home/someone/x",
        "other": "$FO_UNSET/y",
        "price": "$5",
        "user": getpass.getuser(),
    }


def test_user_is_getpass_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import getpass

    monkeypatch.setenv("USER", "not-the-user")
    monkeypatch.setattr(getpass, "getuser", lambda: "the-user")
    path = write(tmp_path / "u.yaml", "who: ${USER}\n")
    assert yaml_loading.read_yaml_document(path).data == {"who": "the-user"}


def test_keys_are_not_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FO_NAME", "backbone")
    path = write(tmp_path / "k.yaml", "$FO_NAME: 1\n")
    assert yaml_loading.read_yaml_document(path).data == {"$FO_NAME": 1}


# ----------------------------------------------------------------------------- strict values


@pytest.mark.parametrize("word", ["yes", "on", "true", "True", "off"])
def test_boolean_where_a_number_is_expected_is_refused(tmp_path: Path, word: str) -> None:
    path = write(tmp_path / "b.yaml", f"sgd: {{lr: {word}}}\nlearning_rate: null\n")
    assert "sgd.lr: Input should be a valid number, got the boolean" in load_error(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate.linear_ramp_to_constant.learning_rate", "'0.1'"),
        ("learning_rate.linear_ramp_to_constant.num_ramp_steps", "'10'"),
        ("learning_rate.linear_ramp_to_constant.num_ramp_steps", "yes"),
    ],
)
def test_string_or_boolean_in_a_nested_field_names_the_dotted_path(tmp_path: Path, field: str, value: str) -> None:
    body = {"learning_rate": "0.1", "num_ramp_steps": "10"}
    body[field.rsplit(".", 1)[1]] = value
    inner = ", ".join(f"{k}: {v}" for k, v in body.items())
    path = write(tmp_path / "s.yaml", f"sgd: {{lr: 0.1}}\nlearning_rate: {{linear_ramp_to_constant: {{{inner}}}}}\n")
    message = load_error(path)
    assert f"{field}: Input should be a valid" in message, message


def test_integer_field_refuses_a_fraction_and_takes_an_integral_float() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"num_ramp_steps\n.*valid integer, got 10\.5"):
        config.LinearRampToConstant(learning_rate=0.1, num_ramp_steps=10.5)
    assert config.LinearRampToConstant(learning_rate=0.1, num_ramp_steps=10.0).num_ramp_steps == 10
    with pytest.raises(
        pydantic.ValidationError, match=r"learning_rate_boundaries\.0\n.*valid integer, got the boolean"
    ):
        config.PiecewiseConstant(learning_rate_boundaries=[True], learning_rate_values=[1.0, 2.0])


def test_strict_values_in_every_number_field() -> None:
    for model, field, good in [
        (config.AdamConfig, "eps", {"lr": 0.1}),
        (config.SgdConfig, "momentum", {"lr": 0.1}),
        (config.AdagradConfig, "lr_decay", {"lr": 0.1}),
        (config.RecapAdamConfig, "beta_1", {}),
        (config.EmbeddingOptimizerConfig, "init_learning_rate", {}),
    ]:
        for bad in (True, "0.5"):
            with pytest.raises(pydantic.ValidationError, match=rf"{field}\n.*Input should be a valid number"):
                model(**good, **{field: bad})
    with pytest.raises(pydantic.ValidationError, match=r"betas\.1\n.*got the string"):
        config.AdamConfig(lr=0.1, betas=(0.9, "0.99"))
    with pytest.raises(pydantic.ValidationError, match=r"constant\n.*got the boolean"):
        config.LearningRate(constant=True)


def test_exponent_without_a_dot_reads_as_a_number(tmp_path: Path) -> None:
    """``1e-3`` is a string to YAML 1.1 (and was turned into 0.001 by TML's lax schema): it still reads as 0.001."""
    path = write(
        tmp_path / "e.yaml",
        "sgd: {lr: 1e-3}\nlearning_rate: {linear_ramp_to_constant: " "{learning_rate: 5E-4, num_ramp_steps: 1e3}}\n",
    )
    loaded = load_config_file(path).optimizer
    assert loaded.sgd.lr == 0.001
    assert loaded.learning_rate.linear_ramp_to_constant.learning_rate == 5e-4
    assert loaded.learning_rate.linear_ramp_to_constant.num_ramp_steps == 1000


# ----------------------------------------------------------------------------- steps

ALL_KINDS = {
    "constant": lambda: schedules.constant(0.5),
    "piecewise_constant": lambda: schedules.piecewise_constant([10, 20], [1.0, 0.5, 0.25]),
    "linear_ramp_to_constant": lambda: schedules.linear_ramp_to_constant(1.0, 4),
    "linear_ramp_to_cosine": lambda: schedules.linear_ramp_to_cosine(1.0, 0.0, 2, 4),
}


@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
@pytest.mark.parametrize("step", [True, False, np.bool_(True), "step"], ids=["True", "False", "np.bool_", "str"])
def test_boolean_or_text_step_is_refused(kind: str, step: object) -> None:
    with pytest.raises(TypeError, match="the step must be a number"):
        ALL_KINDS[kind]()(step)


@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
def test_boolean_step_is_refused_under_jit(kind: str) -> None:
    with pytest.raises(TypeError, match="the step must be a number, got the boolean"):
        jax.jit(ALL_KINDS[kind]())(jnp.asarray([True, False]))


def piecewise_config(boundary: int) -> config.LearningRate:
    return config.LearningRate(
        piecewise_constant={"learning_rate_boundaries": [boundary], "learning_rate_values": [1.0, 2.0]}
    )


@pytest.mark.parametrize("boundary", [2**53 + 1, 2**62 + 1, 2**63 - 1])
def test_compute_lr_is_exact_beyond_2_53(boundary: int) -> None:
    lr = piecewise_config(boundary)
    assert schedules.compute_lr(lr, boundary - 1) == 1.0
    assert schedules.compute_lr(lr, boundary) == 2.0
    assert schedules.compute_lr(lr, np.int64(boundary) - 1) == 1.0
    assert schedules.compute_lr(lr, 2**70) == 2.0  # beyond int64: still exact


@pytest.mark.parametrize("count", [2**63, 10**30, "1" + "0" * 400])
def test_step_counts_beyond_int64_are_refused(count: object) -> None:
    value = int(count) if isinstance(count, str) else count
    with pytest.raises(pydantic.ValidationError, match=r"num_ramp_steps\n.*step count within int64") as info:
        config.LinearRampToConstant(learning_rate=0.1, num_ramp_steps=value)
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("x64", [False, True], ids=["float32", "float64"])
def test_piecewise_compares_int64_steps_exactly(x64: bool) -> None:
    boundary = 2**40
    sched = schedules.schedule_from_config(piecewise_config(boundary))
    with jax.enable_x64(x64):
        assert float(sched(boundary - 1)) == 1.0
        assert float(sched(boundary)) == 2.0
        steps = np.asarray([0, boundary - 1, boundary, 2**63 - 1], dtype=np.int64)
        assert np.asarray(sched(steps)).tolist() == [1.0, 1.0, 2.0, 2.0]
        assert np.asarray(sched(steps)).dtype == (np.float64 if x64 else np.float32)


def test_piecewise_exact_near_the_int64_limit_in_float32_mode() -> None:
    boundary = 2**63 - 2
    sched = schedules.piecewise_constant([5, boundary], [1.0, 2.0, 3.0])
    with jax.enable_x64(False):
        assert [float(sched(s)) for s in (boundary - 1, boundary, 2**63 - 1)] == [2.0, 3.0, 3.0]
        assert float(sched(np.int64(boundary - 1))) == 2.0


@pytest.mark.parametrize("step", [-1, -(2**40), np.int64(-3), -0.5])
def test_compute_lr_refuses_negative_steps(step: object) -> None:
    lr = config.LearningRate(constant=0.1)
    with pytest.raises(ValueError, match=r"compute_lr: step=.* must be >= 0"):
        schedules.compute_lr(lr, step)


@pytest.mark.parametrize("step", [True, np.bool_(False), "3", None])
def test_compute_lr_refuses_non_numbers(step: object) -> None:
    with pytest.raises(TypeError, match="compute_lr: step must be an integer"):
        schedules.compute_lr(config.LearningRate(constant=0.1), step)


def test_negative_steps_in_pure_schedules_are_as_documented() -> None:
    """The module docstring says: the formula as written (the ramps go negative)."""
    assert "Negative steps" in schedules.__doc__
    assert float(ALL_KINDS["constant"]()(-5)) == 0.5
    assert float(ALL_KINDS["piecewise_constant"]()(-5)) == 1.0
    assert float(ALL_KINDS["linear_ramp_to_constant"]()(-2)) == -0.5
    assert float(ALL_KINDS["linear_ramp_to_cosine"]()(-1)) == -0.5


# ----------------------------------------------------------------------------- tower and group names


def recap_towers(*names: str, backbone: bool = True) -> dict[str, object]:
    multi: dict[str, object] = {"tower_learning_rates": {n: {"constant": 0.1} for n in names}}
    if backbone:
        multi["backbone_learning_rate"] = {"constant": 0.01}
    return {"adam": {}, "multi_task_learning_rates": multi}


@pytest.mark.parametrize("name", list(config.RESERVED_GROUP_NAMES))
def test_reserved_group_names_are_refused_when_read(tmp_path: Path, name: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=rf"tower_learning_rates\n.*tower name '{name}' is reserved"):
        config.RecapOptimizerConfig.model_validate(recap_towers(name))
    path = write(
        tmp_path / "r.yaml",
        f"adam: {{}}\nmulti_task_learning_rates:\n  tower_learning_rates:\n" f"    {name}: {{constant: 0.1}}\n",
    )
    message = load_error(path)
    assert f"multi_task_learning_rates.tower_learning_rates: tower name '{name}' is reserved" in message, message


def test_reserved_names_are_the_groups_the_library_makes() -> None:
    from functional_opt import config_file, grouping

    assert set(config.RESERVED_GROUP_NAMES) == {
        grouping.BACKBONE,
        grouping.DENSE_EMBEDDINGS,
        grouping.SINGLE_TASK,
        config_file.EMBEDDINGS,
    }


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "must not be empty"),
        (" ", "whitespace or control"),
        ("a b", "whitespace or control"),
        ("tab\there", "whitespace or control"),
        ("red\x1b[31m", "whitespace or control"),
        ("line\nbreak", "whitespace or control"),
        ("bidi\u202eevil", "whitespace or control"),
        ("nbsp\u00a0x", "whitespace or control"),
    ],
)
def test_bad_tower_names_are_refused(name: str, fragment: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=fragment) as info:
        config.RecapOptimizerConfig.model_validate(recap_towers(name))
    assert "\x1b" not in str(info.value) and "\u202e" not in str(info.value)


def test_ordinary_tower_names_are_kept() -> None:
    names = ("recap.engagement.is_favorited", "0", "été", "塔", "a-b", "a__b")
    cfg = config.RecapOptimizerConfig.model_validate(recap_towers(*names))
    assert tuple(cfg.multi_task_learning_rates.tower_learning_rates) == names


def test_tower_capturing_embedding_tables_is_an_error_at_build_time() -> None:
    from functional_opt import grouping

    cfg = config.RecapOptimizerConfig.model_validate(recap_towers("t0"))
    emb = config.EmbeddingOptimizerConfig(learning_rate={"constant": 0.5})
    names = ["towers.t0.w", "backbone.w", "ebc.embedding_bags.t0.weight"]
    with pytest.raises(
        ValueError,
        match=r"Tower 't0' \(pattern '\.t0\.'\) captures embedding-table parameters "
        r"\['ebc\.embedding_bags\.t0\.weight'\]",
    ):
        grouping.recap_groups(names, cfg, emb)


def test_tower_zero_captures_a_backbone_layer() -> None:
    """The substring rule's pitfall, as the README shows it: tower "0" takes backbone.layers.0.weight."""
    from functional_opt import grouping

    cfg = config.RecapOptimizerConfig.model_validate(recap_towers("0"))
    groups = grouping.recap_groups(["backbone.layers.0.weight", "backbone.layers.1.weight"], cfg)
    assert {g.name: g.param_names for g in groups} == {
        "0": ("backbone.layers.0.weight",),
        "backbone": ("backbone.layers.1.weight",),
    }


# ----------------------------------------------------------------------------- the command line


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """``functional-opt ARGS`` in this process: (exit code, stdout, stderr)."""
    from functional_opt.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> str:
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("functional-opt"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "\x1b" not in lines[0]
    return lines[0]


def example_path() -> Path:
    from functional_opt.cli import example_config_path

    return example_config_path()


BAD_STEPS = ["0", "-1", str(10**30), "9" * 400, "ten", "1e3", "", "5" * 5000]


@pytest.mark.parametrize("steps", BAD_STEPS, ids=["0", "-1", "1e30", "400digits", "garbage", "float", "empty", "5000"])
@pytest.mark.parametrize("command", ["plot", "table", "check", "demo"])
def test_bad_steps_are_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, steps: str
) -> None:
    if command == "table" and steps in ("0",):
        steps = "-1"  # step 0 is a valid table step
    args: list[object] = [command, example_path(), "--steps", steps]
    if command in ("plot", "demo"):
        args += ["-o", tmp_path / "out.png"]
    code, out, err = run_main(capsys, *args)
    line = assert_one_line_error(code, err, "argument --steps")
    assert len(line) < 400, line
    assert out == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["check", "demo"])
@pytest.mark.parametrize("seed", ["-1", str(2**32), "x"])
def test_bad_seed_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, seed: str
) -> None:
    code, out, err = run_main(capsys, command, example_path(), "--seed", seed, "--steps", "2")
    assert_one_line_error(code, err, "argument --seed: expected an integer from 0 to 2**32 - 1")
    assert out == "" and list(tmp_path.iterdir()) == []


def test_plot_refuses_a_horizon_beyond_what_it_can_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "far.yaml",
        "sgd: {lr: 0.1}\nlearning_rate:\n"
        "  linear_ramp_to_constant: {learning_rate: 0.1, num_ramp_steps: 9000000000000000000}\n",
    )
    code, out, err = run_main(capsys, "plot", path, "-o", tmp_path / "lr.png")
    assert_one_line_error(code, err, "beyond what a plot can show", "pass --steps N")
    assert not (tmp_path / "lr.png").exists()
    code, out, err = run_main(capsys, "plot", path, "--steps", str(10**19), "-o", tmp_path / "lr.png")
    assert_one_line_error(code, err, "up to 2**53")
    assert not (tmp_path / "lr.png").exists()
    code, out, err = run_main(capsys, "plot", path, "--steps", "1000", "-o", tmp_path / "lr.png")
    assert code == 0 and (tmp_path / "lr.png").exists(), err


def test_table_steps_beyond_int64_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "table", example_path(), "--steps", f"0,{2**63}")
    assert_one_line_error(code, err, "up to 2**63 - 1")
    code, out, err = run_main(capsys, "table", example_path(), "--steps", f"0,{2**63 - 1}", "--format", "json")
    assert code == 0 and json.loads(out)["steps"] == [0, 2**63 - 1]


def test_check_with_tower_zero_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "zero.yaml",
        """
        adam: {}
        multi_task_learning_rates:
          tower_learning_rates:
            "0": {constant: 0.1}
            a: {constant: 0.1}
          backbone_learning_rate: {constant: 0.01}
        """,
    )
    code, out, err = run_main(capsys, "check", path, "--steps", "2")
    assert_one_line_error(code, err, "cannot build the optimizer for the demo model", "matched multiple towers")


def test_control_characters_in_names_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "evil\x1b[2J.yaml", 'sgd: {lr: 0.1}\nlearning_rate: null\n"\\e]0;title\\a": 1\n')
    code, out, err = run_main(capsys, "table", path)
    line = assert_one_line_error(code, err, "evil\\x1b[2J.yaml", "\\x1b]0;title\\x07: unknown key")
    assert "\x07" not in line
    code, out, err = run_main(capsys, "plot", write(tmp_path / "ok.yaml", GENERIC), "-o", tmp_path / "x\x1b.png")
    assert code == 0 and "x\\x1b.png" in out and "\x1b" not in out


def test_csv_and_json_are_written_by_the_standard_writers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import csv
    import io

    name = "a,\"b'c"
    path = write(
        tmp_path / "q.yaml",
        f"adam: {{}}\nmulti_task_learning_rates:\n  tower_learning_rates:\n    {json.dumps(name)}: {{constant: 0.5}}\n",
    )
    code, out, err = run_main(capsys, "table", path, "--steps", "0,7", "--format", "csv")
    assert code == 0, err
    assert list(csv.reader(io.StringIO(out))) == [["group", "0", "7"], [name, "0.5", "0.5"]]
    code, out, err = run_main(capsys, "table", path, "--steps", "0,7", "--format", "json")
    assert json.loads(out) == {"steps": [0, 7], "learning_rates": {name: [0.5, 0.5]}}


@pytest.mark.parametrize("case", ["bomb", "dup", "deep", "binary", "directory", "env"])
def test_bad_files_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, monkeypatch) -> None:
    path = tmp_path / f"{case}.yaml"
    if case == "bomb":
        path.write_text(BILLION_LAUGHS + "\n")
    elif case == "dup":
        write(path, GENERIC + "sgd: {lr: 1.0}\n")
    elif case == "deep":
        path.write_text("sgd: " + "[" * 5000 + "]" * 5000 + "\n")
    elif case == "binary":
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00" * 100)
    elif case == "directory":
        path.mkdir()
    else:
        monkeypatch.setenv("FO_SECRET", "hunter2\nadam: {lr: 5}")
        write(path, "sgd: {lr: $FO_SECRET}\nlearning_rate: null\n")
    for command in (["table", path], ["plot", path, "-o", tmp_path / "lr.png"]):
        code, out, err = run_main(capsys, *command)
        line = assert_one_line_error(code, err, str(path))
        assert "hunter2" not in line and len(line) < 500, line
        assert not (tmp_path / "lr.png").exists()


def test_check_header_escapes_the_file_name(tmp_path: Path) -> None:
    path = write(tmp_path / "bell\x07.yaml", GENERIC)
    text = load_config_file(path).describe()
    assert "bell\\x07.yaml" in text and "\x07" not in text


def test_hidden_value_is_replaced_as_a_whole_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FO_RAMP", "100")
    path = write(
        tmp_path / "cos.yaml",
        "sgd: {lr: 0.1}\nlearning_rate:\n  linear_ramp_to_cosine:\n"
        "    learning_rate: 0.1\n    final_learning_rate: 0\n    num_ramp_steps: $FO_RAMP\n"
        "    final_num_steps: 1000\n",
    )
    assert schedules.compute_lr(load_config_file(path).optimizer.learning_rate, 100) == 0.1
    monkeypatch.setenv("FO_RAMP", "1")  # "1" is also in "1000": only the whole token is hidden
    monkeypatch.setenv("FO_FINAL", "1")
    path.write_text(path.read_text().replace("final_num_steps: 1000", "final_num_steps: $FO_FINAL"))
    message = load_error(path)
    assert "final_num_steps: final_num_steps=$FO_FINAL $FO_RAMP must be > num_ramp_steps=$FO_FINAL $FO_RAMP" in message
    monkeypatch.setenv("FO_RAMP", "2000")
    path.write_text(path.read_text().replace("$FO_FINAL", "1000"))
    message = load_error(path)
    assert message.endswith(
        "linear_ramp_to_cosine.final_num_steps: final_num_steps=1000 must be > num_ramp_steps=$FO_RAMP "
        "(the value of $FO_RAMP)"
    ), message
