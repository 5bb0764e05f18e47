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
import json, resource, sys, time
from functional_opt import config_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    config_file.load_config_file(sys.argv[1])
    outcome = "loaded"
except config_file.ConfigFileError as exc:
    outcome = str(exc)
seconds = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
added = (after - before) / 1024
print(json.dumps({"outcome": outcome, "seconds": seconds, "peak_mib": after / 1024, "added_mib": added}))
"""


def measure_load(path: Path, timeout: float = 120) -> dict[str, object]:
    """Loads ``path`` in a fresh interpreter; returns its outcome, time and peak memory (printed for the record)."""
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
    # Wide bounds only: the precise figures are printed above (about 1 ms and no added memory here).
    assert float(figures["seconds"]) < 10
    assert float(figures["added_mib"]) < 200


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
    assert float(figures["seconds"]) < 120  # a wide bound; the pure-Python loader takes about a minute


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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_named_and_not_opened(tmp_path: Path) -> None:
    path = tmp_path / "pipe.yaml"
    os.mkfifo(path)
    assert load_error(path) == f"{path}: is a FIFO (named pipe), not a YAML file"


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null here")
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
    assert message == f"{path}: sgd.lr: value of $FO_INJECT: Input should be a valid number, got the string $FO_INJECT"
    assert "100" not in message
    with pytest.raises(pydantic.ValidationError, match=r"value of \$FO_INJECT") as info:
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
    with pytest.raises(ConfigFileError, match=r"learning_rate: value of \$FO_LR: .*valid number"):
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


@pytest.mark.parametrize("boundary", [2**53 + 1, 2**62 + 1, 2**63 - 1, 2**70 + 1])
def test_compute_lr_is_exact_beyond_2_53(boundary: int) -> None:
    lr = piecewise_config(boundary)
    assert schedules.compute_lr(lr, boundary - 1) == 1.0
    assert schedules.compute_lr(lr, boundary) == 2.0
    assert schedules.compute_lr(lr, np.int64(min(boundary, 2**63 - 1)) - 1) == 1.0


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
