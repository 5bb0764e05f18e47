"""TML's embedding-table configs: the TwHIN layout, the recap layout, per-table schedules in the tools."""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

import pydantic
import pytest
import yaml

from functional_opt import config, schedules, table_config
from functional_opt.cli import main
from functional_opt.config_file import ConfigFileError, load_config_file

REPO = Path(__file__).resolve().parents[1]
TWHIN = REPO / "examples" / "twhin.yaml"

# TML's projects/twhin/config/local.yaml, model section, as TML ships it (constant schedules).
TML_TWHIN_MODEL = """
model:
  translation_optimizer:
    sgd:
      lr: 0.05
    learning_rate:
      constant: 0.05
  embeddings:
    tables:
      - name: user
        num_embeddings: 424_241
        embedding_dim: 4
        data_type: fp32
        optimizer:
          sgd:
            lr: 0.01
          learning_rate:
            constant: 0.01
      - name: tweet
        num_embeddings: 72_543
        embedding_dim: 4
        data_type: fp32
        optimizer:
          sgd:
            lr: 0.005
          learning_rate:
            constant: 0.005
  relations:
    - name: fav
      lhs: user
      rhs: tweet
      operator: translation
training:
  num_train_steps: 100000
"""

TWEET_SGD = "          sgd:\n            lr: 0.005"

RECAP_HEAD = """
optimizer:
  adam: {beta_1: 0.9, beta_2: 0.999, epsilon: 1.0e-7}
  single_task_learning_rate: {constant: 0.001}
model:
  large_embeddings:
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


def test_tml_twhin_file_loads_unchanged(tmp_path: Path) -> None:
    loaded = load_config_file(write(tmp_path / "local.yaml", TML_TWHIN_MODEL))
    assert loaded.optimizer_path == "model.translation_optimizer" and loaded.tables_path == "model.embeddings"
    assert loaded.kind == "generic" and loaded.optimizer.sgd.lr == 0.05
    assert {k: v.constant for k, v in loaded.learning_rates().items()} == {"sgd": 0.05, "user": 0.01, "tweet": 0.005}
    assert {k: v.algorithm_name for k, v in loaded.table_optimizers.items()} == {"user": "sgd", "tweet": "sgd"}
    assert "2 tables at 'model.embeddings' (each with its own optimizer)" in loaded.describe()


def test_the_twhin_example_has_one_schedule_per_table() -> None:
    loaded = load_config_file(TWHIN)
    rates = loaded.learning_rates()
    assert list(rates) == ["sgd", "user", "tweet"]
    assert rates["user"].linear_ramp_to_cosine is not None and rates["tweet"].piecewise_constant is not None
    data = yaml.safe_load(TWHIN.read_text())
    tables = table_config.TwhinModelConfig.model_validate(data["model"]).embeddings
    assert table_config.table_learning_rates(tables) == {"user": rates["user"], "tweet": rates["tweet"]}


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        (
            "        data_type: fp32\n        optimizer:\n          sgd:\n            lr: 0.005",
            "        data_type: fp32\n        pooling: sum\n        optimizer:\n          sgd:\n            lr: 0.005",
            "model.embeddings.tables[1].pooling: unknown key",
        ),
        ("      rhs: tweet", "      rhs: video", "relations[0].rhs='video' names no table"),
        (
            f"        embedding_dim: 4\n        data_type: fp32\n        optimizer:\n{TWEET_SGD}",
            f"        embedding_dim: 8\n        data_type: fp32\n        optimizer:\n{TWEET_SGD}",
            "embedding_dim must be the same for every table",
        ),
        ("      - name: tweet", "      - name: user", "names ['user'] are given more than once"),
        ("      - name: tweet", "      - name: tw.eet", "must not hold dots"),
        (
            "          sgd:\n            lr: 0.005",
            "          sgd:\n            lr: 0.005\n          adagrad: {lr: 0.1}",
            "exactly one of ['adam', 'sgd', 'adagrad', 'rowwise_adagrad']",
        ),
        (
            "        data_type: fp32\n        optimizer:\n          sgd:\n            lr: 0.005",
            "        data_type: fp64\n        optimizer:\n          sgd:\n            lr: 0.005",
            "model.embeddings.tables[1].data_type",
        ),
    ],
    ids=["extra key", "relation", "dims", "duplicate", "dot", "two algorithms", "data type"],
)
def test_a_bad_twhin_file_is_one_message_naming_the_field(tmp_path: Path, old: str, new: str, fragment: str) -> None:
    path = write(tmp_path / "bad.yaml", edited(TML_TWHIN_MODEL, old, new))
    with pytest.raises(ConfigFileError) as info:
        load_config_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert fragment in message, message


def test_a_table_named_like_another_group_is_refused(tmp_path: Path) -> None:
    text = TML_TWHIN_MODEL.replace("tweet", "sgd")
    with pytest.raises(ConfigFileError, match=r"table names \['sgd'\] are also the names of other groups"):
        load_config_file(write(tmp_path / "clash.yaml", text))


def test_recap_tables_under_one_optimizer_need_init_learning_rate(tmp_path: Path) -> None:
    tables = """
        tables:
          - {name: user, num_embeddings: 10, embedding_dim: 4}
          - {name: item, num_embeddings: 5, embedding_dim: 4, vocab: /data/vocab}
        optimizer:
          learning_rate: {constant: 0.3}
    """
    body = RECAP_HEAD + textwrap.indent(textwrap.dedent(tables), "    ")
    with pytest.raises(ConfigFileError, match=r"model\.large_embeddings\.optimizer.*init_learning_rate"):
        load_config_file(write(tmp_path / "recap.yaml", body))
    loaded = load_config_file(write(tmp_path / "recap.yaml", body + "      init_learning_rate: 0.3\n"))
    assert isinstance(loaded.tables, table_config.RecapLargeEmbeddingsConfig)
    assert [t.name for t in loaded.tables.tables] == ["user", "item"]
    assert loaded.embedding.learning_rate.constant == 0.3
    assert list(loaded.learning_rates()) == ["single_task", "embeddings"]
    assert table_config.table_learning_rates(loaded.tables) == {
        "user": config.LearningRate(constant=0.3),
        "item": config.LearningRate(constant=0.3),
    }


def test_recap_tables_with_their_own_optimizers(tmp_path: Path) -> None:
    tables = """
        tables:
          - name: user
            num_embeddings: 10
            embedding_dim: 4
            data_type: fp32
            optimizer: {rowwise_adagrad: {lr: 0.1, eps: 1.0e-8}}
          - name: item
            num_embeddings: 5
            embedding_dim: 4
            data_type: fp16
            optimizer:
              adagrad: {lr: 0.2}
              learning_rate: {linear_ramp_to_constant: {learning_rate: 0.2, num_ramp_steps: 10}}
        tables_to_log: [item]
    """
    loaded = load_config_file(
        write(tmp_path / "recap.yaml", RECAP_HEAD + textwrap.indent(textwrap.dedent(tables), "    "))
    )
    assert loaded.kind == "recap" and loaded.embedding is None
    assert list(loaded.learning_rates()) == ["single_task", "user", "item"]
    assert loaded.table_optimizers["user"].rowwise_adagrad.eps == 1e-8
    assert loaded.tables.tables[1].data_type is table_config.DataType.FP16


def test_tables_to_log_must_name_tables() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"tables_to_log: \['video'\] name no table"):
        table_config.RecapLargeEmbeddingsConfig(
            tables=[{"name": "user", "num_embeddings": 2, "embedding_dim": 2}],
            optimizer={"init_learning_rate": 0.1},
            tables_to_log=["video"],
        )


def test_a_table_without_schedule_runs_at_its_constant_lr() -> None:
    optimizer = table_config.TableOptimizerConfig(rowwise_adagrad={"lr": 0.25})
    assert config.learning_rate_of(optimizer) == config.LearningRate(constant=0.25)
    with pytest.raises(pydantic.ValidationError, match="lr=-1.0 must be >= 0"):
        table_config.TableOptimizerConfig(rowwise_adagrad={"lr": -1.0})


def test_table_and_plot_show_one_curve_per_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    steps = [0, 1, 999, 1000, 19999, 20000, 59999, 60000, 100000, 10**9]
    assert main(["table", str(TWHIN), "--steps", ",".join(map(str, steps)), "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    rates = load_config_file(TWHIN).learning_rates()
    assert [r[0] for r in rows[1:]] == ["sgd", "user", "tweet"]
    for name, *values in rows[1:]:
        assert [float(v) for v in values] == [schedules.compute_lr(rates[name], s) for s in steps]
    out = tmp_path / "twhin.png"
    assert main(["plot", str(TWHIN), "-o", str(out)]) == 0
    assert out.stat().st_size > 0
