"""Embedding-table configs, field for field TML's: each table with its own optimizer and schedule.

TML has two shapes of ``LargeEmbeddingsConfig``:

* the shared one (TML's common embedding module, used by the TwHIN project):
  every :class:`EmbeddingBagConfig` carries its own ``optimizer``
  (an :class:`~functional_opt.config.OptimizerConfig` with its schedule) and
  ``data_type``; :class:`LargeEmbeddingsConfig` gathers them;
* the recap one: tables without an optimizer (:class:`RecapEmbeddingBagConfig`)
  and one :class:`~functional_opt.config.EmbeddingOptimizerConfig` for all of
  them (:class:`RecapLargeEmbeddingsConfig`), whose ``init_learning_rate`` TML
  requires.

A table's optimizer is a :class:`TableOptimizerConfig`: TML's
``OptimizerConfig`` plus ``rowwise_adagrad`` (torchrec's ``RowWiseAdagrad``,
fbgemm's exact row-wise Adagrad), the algorithms the fused (TBE) kernels run.
Its schedule is ``learning_rate``, or the algorithm's ``lr`` as a constant when
``learning_rate`` is null (TML's TwHIN reads it so). :class:`TwhinModelConfig`
is TwHIN's ``model:`` section: the tables, the relations between them and the
``translation_optimizer`` of the dense (translation) parameters.

Table names become parameter names (``...embedding_bags.<name>.weight``), so a
name is non-empty, without dots, whitespace or control characters, and unique.

Example:
    >>> tables = LargeEmbeddingsConfig(tables=[
    ...     {"name": "user", "num_embeddings": 10, "embedding_dim": 4, "data_type": "fp32",
    ...      "optimizer": {"sgd": {"lr": 0.01}, "learning_rate": {"constant": 0.01}}},
    ...     {"name": "tweet", "num_embeddings": 7, "embedding_dim": 4, "data_type": "fp32",
    ...      "optimizer": {"rowwise_adagrad": {"lr": 0.1}}}])
    >>> [(t.name, t.optimizer.algorithm_name) for t in tables.tables]
    [('user', 'sgd'), ('tweet', 'rowwise_adagrad')]
    >>> table_learning_rates(tables)["tweet"].constant
    0.1
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from functional_opt.config import (
    EmbeddingOptimizerConfig,
    LearningRate,
    OptimizerAlgorithmConfig,
    OptimizerConfig,
    get_optimizer_algorithm_config,
    learning_rate_of,
)
from functional_opt.config_values import Number, _check_eps
from functional_opt.schedule_config import BaseConfig

__all__ = [
    "FUSED_ALGORITHMS",
    "TABLE_ALGORITHM_FIELDS",
    "DataType",
    "EmbeddingBagConfig",
    "EmbeddingSnapshot",
    "LargeEmbeddingsConfig",
    "Operator",
    "RecapEmbeddingBagConfig",
    "RecapLargeEmbeddingsConfig",
    "Relation",
    "RowWiseAdagradConfig",
    "TableOptimizerConfig",
    "TwhinModelConfig",
    "fused_options",
    "table_configs",
    "table_learning_rates",
]

TABLE_ALGORITHM_FIELDS = ("adam", "sgd", "adagrad", "rowwise_adagrad")


class DataType(str, enum.Enum):
    """A table's storage type (TML's ``DataType``)."""

    FP32 = "fp32"
    FP16 = "fp16"


class EmbeddingSnapshot(BaseConfig):
    """Where a pretrained table comes from (TML's ``EmbeddingSnapshot``)."""

    emb_name: str = Field(..., description="Name of the embedding table from the loaded snapshot")
    embedding_snapshot_uri: str = Field(..., description="Path to torchsnapshot of the embedding")


class RowWiseAdagradConfig(OptimizerAlgorithmConfig):
    """torchrec's ``RowWiseAdagrad`` (fbgemm's exact row-wise Adagrad): one accumulator per row.

    The accumulator of a row adds the mean over the row of the squared gradient;
    the row moves by ``-lr * g / (sqrt(accumulator) + eps)``. ``eps`` defaults to
    torchrec's 1e-10.
    """

    lr: Number
    eps: Number = 1e-10

    @field_validator("eps")
    @classmethod
    def _eps(cls, value: float) -> float:
        return _check_eps(value, "eps")


class TableOptimizerConfig(OptimizerConfig):
    """A table's optimizer: TML's ``OptimizerConfig`` plus ``rowwise_adagrad``; exactly one algorithm.

    Attributes:
        learning_rate: the table's schedule; null means the algorithm's ``lr`` as a constant.
        rowwise_adagrad: see :class:`RowWiseAdagradConfig`.
    """

    algorithm_fields: ClassVar[tuple[str, ...]] = TABLE_ALGORITHM_FIELDS

    rowwise_adagrad: RowWiseAdagradConfig | None = Field(None)


def _check_table_name(name: str) -> str:
    if not name:
        raise ValueError("name='' must not be empty (it names the table's parameters)")
    bad = [c for c in name if c == "." or c.isspace() or unicodedata.category(c).startswith(("C", "Z"))]
    if bad:
        raise ValueError(
            f"name={name!r} must not hold dots, whitespace or control characters (got {bad[0]!r}): "
            "it becomes part of the parameter names embedding_bags.<name>.weight"
        )
    return name


class RecapEmbeddingBagConfig(BaseConfig):
    """A table of the recap project (TML's recap ``EmbeddingBagConfig``): no optimizer of its own."""

    name: str = Field(..., description="name of embedding bag")
    num_embeddings: int = Field(..., description="size of embedding dictionary", gt=0)
    embedding_dim: int = Field(..., description="size of each embedding vector", gt=0)
    pretrained: EmbeddingSnapshot | None = Field(None, description="Snapshot properties")
    vocab: str | None = Field(None, description="Directory to parquet files of mapping from entity ID to table index.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_table_name(value)


class EmbeddingBagConfig(RecapEmbeddingBagConfig):
    """A table with its own optimizer and storage type (TML's shared ``EmbeddingBagConfig``).

    Attributes:
        optimizer: the table's algorithm and schedule.
        data_type: ``fp32`` or ``fp16``.
    """

    optimizer: TableOptimizerConfig
    data_type: DataType


def _check_unique(tables: Sequence[RecapEmbeddingBagConfig]) -> None:
    if not tables:
        raise ValueError("tables=[] must list at least one table")
    names = [t.name for t in tables]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"tables: names {repeated} are given more than once; every table needs its own name")


def _check_tables_to_log(tables: Sequence[RecapEmbeddingBagConfig], tables_to_log: list[str] | None) -> None:
    if tables_to_log is None:
        return
    unknown = [n for n in tables_to_log if n not in {t.name for t in tables}]
    if unknown:
        raise ValueError(f"tables_to_log: {unknown} name no table (tables: {[t.name for t in tables]})")


class LargeEmbeddingsConfig(BaseConfig):
    """The tables of one ``EmbeddingBagCollection``, each with its own optimizer (TML's shared config).

    Attributes:
        tables: the tables, names unique.
        tables_to_log: names of tables to log (each must name a table).
    """

    tables: list[EmbeddingBagConfig] = Field(..., description="list of embedding tables")
    tables_to_log: list[str] | None = Field(
        None, description="list of embedding table names that we want to log during training"
    )

    @model_validator(mode="after")
    def _names(self) -> LargeEmbeddingsConfig:
        _check_unique(self.tables)
        _check_tables_to_log(self.tables, self.tables_to_log)
        return self


class RecapLargeEmbeddingsConfig(BaseConfig):
    """The recap project's tables and their one optimizer (TML's recap ``LargeEmbeddingsConfig``).

    Attributes:
        tables: the tables, names unique.
        optimizer: the schedule of every table; ``init_learning_rate`` is required, as in TML.
        tables_to_log: names of tables to log.
    """

    tables: list[RecapEmbeddingBagConfig] = Field(..., description="list of embedding tables")
    optimizer: EmbeddingOptimizerConfig
    tables_to_log: list[str] | None = Field(
        None, description="list of embedding table names that we want to log during training"
    )

    @field_validator("optimizer")
    @classmethod
    def _init_lr_required(cls, value: EmbeddingOptimizerConfig) -> EmbeddingOptimizerConfig:
        if value.init_learning_rate is None:
            raise ValueError("init_learning_rate: required field is missing (TML requires it here)")
        return value

    @model_validator(mode="after")
    def _names(self) -> RecapLargeEmbeddingsConfig:
        _check_unique(self.tables)
        _check_tables_to_log(self.tables, self.tables_to_log)
        return self


class Operator(str, enum.Enum):
    """How TwHIN transforms a relation's left-hand side (TML's ``Operator``)."""

    TRANSLATION = "translation"


class Relation(BaseConfig):
    """A relation between two tables of a TwHIN model (TML's ``Relation``)."""

    name: str = Field(..., description="Relationship name.")
    lhs: str = Field(..., description="Name of the entity on the left-hand-side of this relation.")
    rhs: str = Field(..., description="Name of the entity on the right-hand-side of this relation.")
    operator: Operator = Field(Operator.TRANSLATION, description="Transformation to apply to lhs embedding.")


class TwhinModelConfig(BaseConfig):
    """TwHIN's ``model:`` section: the tables (one embedding dim and data type), relations, translation optimizer.

    Attributes:
        embeddings: the tables, each with its optimizer.
        relations: each relation's ``lhs`` and ``rhs`` name tables.
        translation_optimizer: the optimizer of the dense (translation) parameters.
    """

    embeddings: LargeEmbeddingsConfig
    relations: list[Relation]
    translation_optimizer: OptimizerConfig

    @model_validator(mode="after")
    def _consistent(self) -> TwhinModelConfig:
        tables = self.embeddings.tables
        for field in ("embedding_dim", "data_type"):
            values = {t.name: getattr(t, field) for t in tables}
            if len(set(values.values())) > 1:
                shown = {k: getattr(v, "value", v) for k, v in values.items()}
                raise ValueError(f"embeddings.tables: {field} must be the same for every table, got {shown}")
        names = [t.name for t in tables]
        for i, relation in enumerate(self.relations):
            for side in ("lhs", "rhs"):
                value = getattr(relation, side)
                if value not in names:
                    raise ValueError(f"relations[{i}].{side}={value!r} names no table (tables: {names})")
        return self


def table_learning_rates(
    tables: LargeEmbeddingsConfig | RecapLargeEmbeddingsConfig | Sequence[EmbeddingBagConfig],
) -> dict[str, LearningRate]:
    """Every table's schedule by table name, in config order.

    A recap config gives every table its one ``optimizer.learning_rate`` (or the
    constant ``init_learning_rate`` when that is null).
    """
    if isinstance(tables, RecapLargeEmbeddingsConfig):
        emb = tables.optimizer
        lr = emb.learning_rate or LearningRate(constant=emb.init_learning_rate)
        return {t.name: lr for t in tables.tables}
    listed: Sequence[Any] = tables.tables if isinstance(tables, LargeEmbeddingsConfig) else tables
    return {t.name: learning_rate_of(t.optimizer) for t in listed}


def table_configs(owner: str, tables: Any) -> dict[str, EmbeddingBagConfig]:
    """``{name: EmbeddingBagConfig}`` of a ``LargeEmbeddingsConfig`` or a list of table configs (type-checked).

    Raises:
        TypeError: anything else, naming ``owner``.
    """
    listed = tables.tables if isinstance(tables, LargeEmbeddingsConfig) else tables
    if isinstance(listed, (str, bytes)) or not isinstance(listed, Sequence):
        raise TypeError(f"{owner}: tables must be a LargeEmbeddingsConfig or a list of EmbeddingBagConfig")
    bad = [type(t).__name__ for t in listed if not isinstance(t, EmbeddingBagConfig)]
    if bad:
        raise TypeError(f"{owner}: tables must be EmbeddingBagConfig (each with its optimizer), got {bad}")
    return {t.name: t for t in listed}


FUSED_ALGORITHMS = ("sgd", "adagrad", "rowwise_adagrad")
"""The table algorithms fbgemm's CPU fused kernels run (exact SGD, Adagrad and row-wise Adagrad)."""


def fused_options(owner: str, table: EmbeddingBagConfig) -> tuple[str, dict[str, float]]:
    """A table's algorithm and the hyper-parameters its fused kernel takes besides the rate (``eps``).

    Raises:
        ValueError: an algorithm or option no fused kernel has (``adam``, SGD momentum,
            Adagrad's ``lr_decay`` or ``initial_accumulator_value``), naming the table.

    Example:
        >>> t = EmbeddingBagConfig(name="t", num_embeddings=2, embedding_dim=2, data_type="fp32",
        ...                        optimizer={"rowwise_adagrad": {"lr": 0.1, "eps": 1e-8}})
        >>> fused_options("build", t)
        ('rowwise_adagrad', {'eps': 1e-08})
    """
    algorithm = table.optimizer.algorithm_name
    options = get_optimizer_algorithm_config(table.optimizer)
    where = f"{owner}: table {table.name!r}"
    if algorithm not in FUSED_ALGORITHMS:
        raise ValueError(
            f"{where}: {algorithm} has no fused CPU kernel in fbgemm; a table's optimizer is sgd, adagrad or "
            "rowwise_adagrad"
        )
    if algorithm == "sgd":
        if options.momentum:
            raise ValueError(f"{where}: sgd.momentum={options.momentum} has no fused kernel; use momentum 0")
        return algorithm, {}
    if algorithm == "adagrad":
        extra = {k: getattr(options, k) for k in ("lr_decay", "initial_accumulator_value") if getattr(options, k)}
        if extra:
            raise ValueError(f"{where}: adagrad {extra} have no fused kernel (fbgemm's exact Adagrad); set them to 0")
    return algorithm, {"eps": options.eps}
