"""The ``functional-opt`` command line, driven as a subprocess (``python -m functional_opt``).

Every subcommand has a success test and the bad-input tests: one line on
stderr, no traceback, exit code 2, no output file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from functional_opt import config, plotting, schedules
from functional_opt.cli import example_config_path, main
from functional_opt.config_file import load_config_file

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = example_config_path()
TOWERS = ["recap.engagement.is_favorited", "recap.engagement.is_replied", "recap.engagement.is_retweeted"]


def run_cli(*args: str | os.PathLike[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m functional_opt ARGS`` in ``cwd``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "functional_opt", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def assert_bad_input(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit code 2, exactly one line on stderr containing ``fragments``, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert lines[0].startswith("functional-opt"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- bad inputs

BAD_INPUTS = {
    "missing": (None, ["missing.yaml: no such file"]),
    "yaml_syntax": (
        """
        adam:
          beta_1: 0.9
        multi_task_learning_rates:
          tower_learning_rates: {is_clicked: {constant: 0.1}
          backbone_learning_rate: {constant: 0.1}
        """,
        ["yaml_syntax.yaml: invalid YAML at line 5"],
    ),
    "unknown_key": (
        """
        adam: {beta_1: 0.9}
        multi_task_learning_rates:
          tower_learning_rates:
            is_clicked: {constant: 0.1}
          backbone_learing_rate: {constant: 0.1}
        """,
        ["multi_task_learning_rates.backbone_learing_rate: unknown key", "backbone_learning_rate"],
    ),
    "two_schedules": (
        """
        adam: {beta_1: 0.9}
        multi_task_learning_rates:
          tower_learning_rates:
            is_clicked:
              constant: 0.1
              linear_ramp_to_constant: {learning_rate: 0.1, num_ramp_steps: 10}
        """,
        ["multi_task_learning_rates.tower_learning_rates.is_clicked:", "exactly one of", "'linear_ramp_to_constant'"],
    ),
    "invalid_value": (
        """
        optimizer:
          adam: {beta_1: 0.9, beta_2: 0.999, epsilon: 1.0e-7}
          multi_task_learning_rates:
            backbone_learning_rate: null
            tower_learning_rates:
              is_clicked:
                constant: null
                linear_ramp_to_constant: null
                linear_ramp_to_cosine:
                  learning_rate: 0.1
                  final_learning_rate: 0.0
                  num_ramp_steps: 100
                  final_num_steps: 100
                piecewise_constant: null
          single_task_learning_rate: null
        """,
        [
            "optimizer.multi_task_learning_rates.tower_learning_rates.is_clicked.linear_ramp_to_cosine"
            ".final_num_steps: final_num_steps=100 must be > num_ramp_steps=100"
        ],
    ),
}


def bad_file(tmp_path: Path, case: str) -> Path:
    text, _ = BAD_INPUTS[case]
    path = tmp_path / f"{case}.yaml"
    if text is not None:
        write(path, text)
    return path


def command_for(subcommand: str, config_path: Path, out: Path) -> list[str | Path]:
    if subcommand == "plot":
        return ["plot", config_path, "-o", out / "lr.png"]
    if subcommand == "table":
        return ["table", config_path]
    if subcommand == "check":
        return ["check", config_path, "--steps", "2"]
    return ["demo", config_path, "--steps", "2", "-o", out / "demo.png"]


@pytest.mark.parametrize("subcommand", ["plot", "table", "check", "demo"])
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, subcommand: str, case: str) -> None:
    config_path = bad_file(tmp_path, case)
    out = tmp_path / "out"
    result = run_cli(*command_for(subcommand, config_path, out), cwd=tmp_path)
    assert_bad_input(result, *BAD_INPUTS[case][1])
    assert result.stdout == ""
    assert not out.exists()
    assert {p.name for p in tmp_path.iterdir()} <= {config_path.name}


def main_error(capsys: pytest.CaptureFixture[str], *args: str | os.PathLike[str]) -> str:
    """Runs ``main`` in this process; asserts exit code 2 and returns the one stderr line."""
    assert main([str(a) for a in args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and captured.out == "", captured
    return lines[0]


def test_invalid_value_in_embedding_section_names_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "emb.yaml",
        """
        adam: {beta_1: 0.9}
        single_task_learning_rate: {constant: 0.1}
        emb_optimizer:
          learning_rate: {piecewise_constant: {learning_rate_boundaries: [10, 5], learning_rate_values: [1, 2, 3]}}
        """,
    )
    line = main_error(capsys, "table", path)
    assert "emb.yaml: emb_optimizer.learning_rate.piecewise_constant.learning_rate_boundaries: " in line
    assert "strictly increasing" in line


def test_invalid_value_in_tml_embedding_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "tml.yaml",
        """
        optimizer: {adam: {}, single_task_learning_rate: {constant: 0.1}}
        model: {large_embeddings: {optimizer: {learning_rate: {constant: 0.1}, init_learning_rate: -1}}}
        """,
    )
    line = main_error(capsys, "table", path)
    assert "model.large_embeddings.optimizer.init_learning_rate: init_learning_rate=-1.0 must be >= 0" in line


def test_invalid_value_with_type_error_shows_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "t.yaml", "sgd: {lr: fast}\nlearning_rate: null\n")
    line = main_error(capsys, "table", path)
    assert "sgd.lr: Input should be a valid number" in line and "'fast'" in line


def test_several_errors_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "t.yaml", "adam: {beta_1: 2, beta_2: 3}\nsingle_task_learning_rate: {constant: 0.1}\n")
    line = main_error(capsys, "table", path)
    assert "adam.beta_1: beta_1=2.0 must be in [0, 1) (and 1 more error)" in line


def test_mixed_recap_and_generic_keys_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "m.yaml", "adam: {lr: 0.1}\nlearning_rate: {constant: 0.1}\nsingle_task_learning_rate: null\n"
    )
    assert "mixes recap optimizer keys" in main_error(capsys, "table", path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- 1\n- 2\n", "expected a YAML mapping at the top level"),
        ("optimizer: null\n", "optimizer: expected an optimizer section"),
        ("", "expected a YAML mapping"),
    ],
)
def test_not_an_optimizer_section(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert fragment in main_error(capsys, "table", path)


def test_two_embedding_sections_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "two_emb.yaml",
        """
        optimizer: {adam: {}, single_task_learning_rate: {constant: 0.01}}
        emb_optimizer: {learning_rate: {constant: 0.5}}
        model: {large_embeddings: {optimizer: {learning_rate: {constant: 0.5}, init_learning_rate: 0.5}}}
        """,
    )
    assert "more than one embedding optimizer section" in main_error(capsys, "table", path)


def test_output_inside_a_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    line = main_error(capsys, "plot", EXAMPLE, "-o", tmp_path / "afile" / "lr.png")
    assert line.endswith("afile is not a directory")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_demo_rejects_a_generic_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "adam.yaml", "adam: {lr: 0.01}\n")
    assert "demo trains with the recap optimizer" in main_error(capsys, "demo", path, "-o", tmp_path / "d.png")
    assert not (tmp_path / "d.png").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["table", "CONFIG", "--steps", "0,x"], "argument --steps: expected comma-separated non-negative integers"),
        (["plot", "CONFIG", "-o", "lr.jpg"], "must end in .png, .svg, .pdf"),
        (["check", "CONFIG", "--dtype", "float16"], "invalid choice: 'float16'"),
        (["demo", "--steps", "-3"], "expected a positive integer"),
    ],
)
def test_bad_options_are_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    args = [str(EXAMPLE) if a == "CONFIG" else a for a in args]
    result = run_cli(*args, cwd=tmp_path)
    assert_bad_input(result, fragment)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- layering


def test_import_cli_does_not_load_torch() -> None:
    code = (
        "import sys, functional_opt.cli, functional_opt.__main__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchrec', 'torch_bridge')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_plot_and_table_run_without_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now raises ImportError
        from functional_opt.cli import main
        assert main(["table", {str(EXAMPLE)!r}, "--steps", "0,10"]) == 0
        assert main(["plot", {str(EXAMPLE)!r}, "-o", {str(tmp_path / "lr.png")!r}, "--steps", "20"]) == 0
        sys.exit(main(["check", {str(EXAMPLE)!r}, "--steps", "1"]))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert (tmp_path / "lr.png").is_file()
    assert_bad_input(result, "needs PyTorch and torchrec")


def test_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "functional-opt"
    assert script.exists(), f"{script} missing: the package's console script is not installed (make setup)"
    result = subprocess.run([str(script), "table", str(EXAMPLE), "--steps", "0"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "recap.engagement.is_favorited" in result.stdout


def test_torch_commands_are_registered_plugins() -> None:
    """check and demo come from the torch side through entry points; functional_opt names no torch module."""
    import importlib.metadata

    from functional_opt import cli
    from torch_bridge import cli_commands, cli_demo

    registered = {ep.name: ep for ep in importlib.metadata.entry_points(group=cli.COMMAND_GROUP)}
    assert registered["check"].load() is cli_commands.run_check
    assert registered["demo"].load() is cli_demo.run_demo


# ----------------------------------------------------------------------------- plot


def test_plot_png_to_the_default_output(tmp_path: Path) -> None:
    result = run_cli("plot", EXAMPLE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "lr.png").read_bytes().startswith(b"\x89PNG")
    assert "wrote lr.png (5 schedules, steps 0..500)" in result.stdout  # 1.25 x the longest schedule (400 steps)
    assert result.stderr == ""


def test_plot_svg_log_scale_in_a_new_directory(tmp_path: Path) -> None:
    out = tmp_path / "figs" / "lr.svg"
    result = run_cli("plot", EXAMPLE, "-o", out, "--steps", "600", "--log-scale", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    svg = out.read_text()
    assert svg.startswith("<?xml")
    assert f"wrote {out} (5 schedules, steps 0..600)" in result.stdout
    for label in [*TOWERS, "backbone", "embeddings", "example_recap.yaml"]:
        assert label in svg


def test_plot_curves_are_the_schedules() -> None:
    rates = example_rates()
    steps, curves = plotting.lr_curves(rates, 10**9, max_points=50)
    assert steps[0] == 0 and steps[-1] == 10**9
    assert {49, 50, 99, 100, 249, 250} <= set(steps.tolist())  # breakpoints are drawn sharp
    for name, values in curves.items():
        chosen = list(range(0, len(steps), 7))
        assert [values[i] for i in chosen] == pytest.approx(
            [schedules.compute_lr(rates[name], int(steps[i])) for i in chosen], rel=1e-14, abs=1e-300
        )


# ----------------------------------------------------------------------------- table


def example_rates() -> dict[str, config.LearningRate]:
    return load_config_file(EXAMPLE).learning_rates()


def test_table_text(tmp_path: Path) -> None:
    result = run_cli("table", EXAMPLE, "--steps", "0,100,1000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["group", "step", "0", "step", "100", "step", "1000"]
    assert [line.split()[0] for line in lines[1:]] == [*TOWERS, "backbone", "embeddings"]
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert lines[2].split()[1:] == ["0", "0.001", "0.002"]


def test_table_csv_matches_compute_lr(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [0, 1, 49, 50, 51, 100, 250, 399, 400, 10**12]
    assert main(["table", str(EXAMPLE), "--steps", ",".join(map(str, steps)), "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["group", *map(str, steps)]
    rates = example_rates()
    assert [r[0] for r in rows[1:]] == list(rates)
    for name, *values in rows[1:]:
        assert [float(v) for v in values] == [schedules.compute_lr(rates[name], s) for s in steps]


def test_table_json_default_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table", str(EXAMPLE), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == [0, 1, 10, 100, 400, 1000]
    assert data["learning_rates"] == {
        name: [schedules.compute_lr(lr, s) for s in data["steps"]] for name, lr in example_rates().items()
    }


def table_json(capsys: pytest.CaptureFixture[str], path: Path, steps: str) -> dict:
    assert main(["table", str(path), "--steps", steps, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_table_generic_optimizer_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "generic.yaml",
        """
        learning_rate:
          constant: null
          linear_ramp_to_constant: {learning_rate: 0.2, num_ramp_steps: 10}
          linear_ramp_to_cosine: null
          piecewise_constant: null
        adam: null
        sgd: {lr: 0.2, momentum: 0.9}
        adagrad: null
        """,
    )
    assert table_json(capsys, path, "0,5,10")["learning_rates"] == {"sgd": [0.0, 0.1, 0.2]}


def test_table_generic_without_schedule_uses_lr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "adagrad.yaml", "adagrad: {lr: 0.05}\n")
    assert table_json(capsys, path, "0,7")["learning_rates"] == {"adagrad": [0.05, 0.05]}


@pytest.mark.parametrize("key", ["emb_optimizer", "embedding_optimizer"])
def test_table_embedding_optimizer_section_names(tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    path = write(
        tmp_path / f"{key}.yaml",
        f"""
        adam: {{}}
        single_task_learning_rate: {{constant: 0.01}}
        {key}: {{learning_rate: {{constant: 0.5}}}}
        """,
    )
    assert table_json(capsys, path, "3")["learning_rates"] == {"single_task": [0.01], "embeddings": [0.5]}


def test_table_whole_tml_config_ignores_other_sections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(
        tmp_path / "tml.yaml",
        """
        training: {num_train_steps: 10, save_dir: /tmp/x}
        model:
          large_embeddings: null
          tasks: {recap.engagement.is_favorited: {mlp_config: {layer_sizes: [1]}}}
        optimizer:
          adam: {beta_1: 0.95, beta_2: 0.999, epsilon: 1.0e-07}
          multi_task_learning_rates:
            backbone_learning_rate: {constant: 0.0001}
            tower_learning_rates:
              recap.engagement.is_favorited: {linear_ramp_to_constant: {learning_rate: 0.0008, num_ramp_steps: 5000}}
          single_task_learning_rate: null
        """,
    )
    assert table_json(capsys, path, "2500")["learning_rates"] == {
        "recap.engagement.is_favorited": [0.0004],
        "backbone": [0.0001],
    }


# ----------------------------------------------------------------------------- check


def check_lines(stdout: str) -> dict[str, list[str]]:
    """The rows of check's table, by group."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("group "))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith(("OK", "FAIL")) or ": " in line:
            break
        rows[line.split()[0]] = line.split()
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_example_passes(tmp_path: Path, dtype: str) -> None:
    result = run_cli("check", EXAMPLE, "--steps", "6", "--dtype", dtype, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert f"OK: JAX and PyTorch agree within the {dtype} bars on all 5 groups" in result.stdout
    rows = check_lines(result.stdout)
    assert list(rows) == [*TOWERS, "backbone", "embeddings"]
    for row in rows.values():
        assert row[-1] == "ok"
        lr_diff, lr_bar, param_diff, param_bar, moved = map(float, row[2:7])
        assert lr_diff <= lr_bar and param_diff <= param_bar and moved > 100 * param_diff
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "groups", "dtype"),
    [
        ("twhin.yaml", ["sgd", "user", "tweet"], "float64"),
        ("recap_tables.yaml", [*TOWERS[:2], "backbone", "user_id", "tweet_id", "author_id"], "float32"),
    ],
)
def test_check_covers_tables_with_their_own_optimizers(tmp_path: Path, example: str, groups: list, dtype: str) -> None:
    result = run_cli("check", REPO / "examples" / example, "--steps", "12", "--dtype", dtype, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    rows = check_lines(result.stdout)
    assert list(rows) == groups
    for name, row in rows.items():
        lr_diff, lr_bar, param_diff, param_bar, moved = map(float, row[2:7])
        assert row[-1] == "ok" and lr_diff <= lr_bar and param_diff <= param_bar, (name, row)
        assert moved > 10 * param_diff, (name, row)
    fused = "on fused kernels, DistributedModelParallel" in result.stdout
    assert fused == (dtype == "float32")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_check_exit_1_when_a_group_is_beyond_the_bars(tmp_path: Path) -> None:
    # torch's Adagrad and its JAX twin both divide 0 by 0 with eps=0: a diverged run never passes.
    path = write(tmp_path / "adagrad.yaml", "adagrad: {lr: 0.1, eps: 0.0}\n")
    result = run_cli("check", path, "--steps", "2", cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert check_lines(result.stdout)["adagrad"][-1] == "FAIL"
    assert "FAIL: 1 of 1 groups differ beyond the float64 bars: ['adagrad']" in result.stdout
    assert "NaN or inf" in result.stdout


def test_judge_applies_the_bars() -> None:
    from torch_bridge.cli_commands import FLOAT32_RELATIVE_BAR, judge

    lrs = {"g": np.array([0.0, 0.5])}
    initial = {"w": np.zeros(3)}
    final = {"w": np.array([1.0, -2.0, 0.5])}

    def verdict(jax_final: np.ndarray, dtype: str, jax_lrs: np.ndarray | None = None) -> bool:
        jl = {"g": jax_lrs} if jax_lrs is not None else lrs
        (result,) = judge({"g": ["w"]}, lrs, jl, final, {"w": jax_final}, initial, dtype)
        return result.ok

    assert verdict(final["w"] + 1e-13, "float64")
    assert not verdict(final["w"] + 2e-12, "float64")
    assert not verdict(final["w"], "float64", np.array([0.0, 0.5 + 1e-11]))
    assert verdict(final["w"] + 0.9 * FLOAT32_RELATIVE_BAR * 2.0, "float32")
    assert not verdict(final["w"] + 1.1 * FLOAT32_RELATIVE_BAR * 2.0, "float32")
    assert not verdict(np.array([1.0, np.nan, 0.5]), "float64")


# ----------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_default_config_and_output(tmp_path: Path) -> None:
    result = run_cli("demo", "--steps", "12", "--log-every", "5", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    out = result.stdout
    assert f"config: {EXAMPLE}: RecapOptimizerConfig at 'optimizer'" in out
    assert "FUSED kernel" in out
    log = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in log] == ["0", "5", "10", "11"]
    # Logged learning rates are the schedules' values at that step (tower names without 'recap.engagement.').
    rates = example_rates()
    for line in log:
        step = int(line.split()[1])
        logged = dict(item.split("=") for item in line.split("lr: ")[1].split())
        assert float(logged["is_favorited"]) == pytest.approx(
            schedules.compute_lr(rates["recap.engagement.is_favorited"], step), rel=1e-3
        )
        assert float(logged["embeddings"]) == pytest.approx(schedules.compute_lr(rates["embeddings"], step), rel=1e-3)
    assert "wrote out/demo.png" in out
    assert (tmp_path / "out" / "demo.png").read_bytes().startswith(b"\x89PNG")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_demo_single_task_config_without_embedding_lr(tmp_path: Path) -> None:
    path = write(tmp_path / "single.yaml", "adam: {}\nsingle_task_learning_rate: {constant: 0.003}\n")
    result = run_cli("demo", path, "--steps", "3", "-o", tmp_path / "d.svg", "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "has no embedding learning rate; the demo model's embedding tables use a constant 0.01" in result.stdout
    assert "optimizer groups: ['single_task', 'embeddings']" in result.stdout
    assert (tmp_path / "d.svg").read_text().startswith("<?xml")


def test_table_and_plot_of_every_schedule_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "examples" / "schedule_kinds.yaml"
    loaded = load_config_file(path)
    recap = loaded.optimizer
    assert isinstance(recap, config.RecapOptimizerConfig) and recap.multi_task_learning_rates is not None
    towers = recap.multi_task_learning_rates.tower_learning_rates
    assert {lr.schedule_name for lr in towers.values()} == set(config.SCHEDULE_FIELDS)
    steps = sorted({0, 1, 2999, 10**9} | {b + d for lr in towers.values() for b in lr.breakpoints for d in (-1, 0, 1)})
    data = table_json(capsys, path, ",".join(map(str, steps)))
    for name, lr in towers.items():
        assert data["learning_rates"][name] == [schedules.compute_lr(lr, s) for s in steps], name
    out = tmp_path / "kinds.png"
    assert main(["plot", str(path), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- check --switch-at


@pytest.mark.slow
def test_check_switch_at_moves_the_run_both_ways(tmp_path: Path) -> None:
    result = run_cli("check", EXAMPLE, "--steps", "8", "--switch-at", "3", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "the run moves at step 3" in result.stdout
    assert "OK: moved at step 3 either way, all 5 groups land where the unmoved torch run does" in result.stdout
    rows = check_lines(result.stdout)
    assert list(rows) == [*TOWERS, "backbone", "embeddings"]
    for name, row in rows.items():
        to_jax, to_torch, bar, lr_gap, moved = map(float, row[2:7])
        assert row[-1] == "ok" and max(to_jax, to_torch) <= bar == 1e-12 and lr_gap <= 1e-12, (name, row)
        assert moved > 1e3 * bar, (name, row)
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_check_switch_at_on_a_generic_config(tmp_path: Path, dtype: str) -> None:
    from torch_bridge.cli_commands import run_check

    path = write(
        tmp_path / "sgd.yaml",
        "sgd: {lr: 0.1, momentum: 0.9}\n"
        "learning_rate: {linear_ramp_to_constant: {learning_rate: 0.1, num_ramp_steps: 4}}\n",
    )
    out = io.StringIO()
    assert run_check(load_config_file(path), steps=8, dtype=dtype, switch_at=4, out=out) == 0, out.getvalue()
    (row,) = check_lines(out.getvalue()).values()
    assert row[0] == "sgd" and row[-1] == "ok"
    to_jax, to_torch, bar, _, moved = map(float, row[2:7])
    assert max(to_jax, to_torch) <= bar and moved > 100 * bar


@pytest.mark.slow
def test_check_switch_at_moves_tables_on_fused_kernels_with_their_accumulators(tmp_path: Path) -> None:
    path = REPO / "examples" / "recap_tables.yaml"
    result = run_cli("check", path, "--steps", "8", "--switch-at", "4", "--dtype", "float32", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "on fused kernels, DistributedModelParallel in torch" in result.stdout
    rows = check_lines(result.stdout)
    assert list(rows) == [*TOWERS[:2], "backbone", "user_id", "tweet_id", "author_id"]
    for name, row in rows.items():
        to_jax, to_torch, bar, _, moved = map(float, row[2:7])
        assert row[-1] == "ok" and max(to_jax, to_torch) <= bar and moved > 100 * max(to_jax, to_torch), (name, row)
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr


@pytest.mark.slow
def test_check_switch_at_fails_when_the_moments_are_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jax

    import torch_bridge
    from torch_bridge.cli_commands import run_check

    export_state = torch_bridge.export_state

    def forgetful(*args: object) -> tuple:
        params, state, step = export_state(*args)
        return params, state._replace(mu=jax.tree.map(np.zeros_like, state.mu)), step

    monkeypatch.setattr(torch_bridge, "export_state", forgetful)
    out = io.StringIO()
    assert run_check(load_config_file(EXAMPLE), steps=6, switch_at=3, out=out) == 1
    text = out.getvalue()
    # Every group: the towers' and backbone's moments are lost, and the tables see their outputs.
    assert "FAIL: moved at step 3, 5 groups differ from the unmoved run" in text
    assert "(torch -> JAX)" in text and "(JAX -> torch)" not in text
    assert all(row[-1] == "FAIL" for row in check_lines(text).values())


def test_check_switch_at_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE), "--steps", "5", "--switch-at", "5"]) == 2
    assert "--switch-at 5 must be a step inside the run: 1 .. 4 (--steps 5)" in capsys.readouterr().err
    assert main(["check", str(EXAMPLE), "--switch-at", "0"]) == 2
    assert "--switch-at" in capsys.readouterr().err
