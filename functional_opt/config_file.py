"""Reading an optimizer config from any YAML file a user may hold.

The command-line tool accepts these layouts:

1. **The optimizer section itself**: the keys of a
   :class:`~functional_opt.config.RecapOptimizerConfig`
   (``adam`` + ``multi_task_learning_rates`` or ``single_task_learning_rate``)
   or of a generic :class:`~functional_opt.config.OptimizerConfig`
   (``learning_rate`` + one of ``adam`` / ``sgd`` / ``adagrad``).
2. **A whole TML config** with an ``optimizer:`` key holding that section.
   Every other top-level key (``training``, ``train_data``, ...) is ignored,
   except the embedding optimizer at ``model.large_embeddings.optimizer``
   (an :class:`~functional_opt.config.EmbeddingOptimizerConfig`), whose
   ``learning_rate`` drives the embedding tables.
3. In either layout, a top-level ``emb_optimizer:`` or ``embedding_optimizer:``
   section (an ``EmbeddingOptimizerConfig``) may give the embedding optimizer instead.
4. **A whole TML config listing its tables** at ``model.large_embeddings``:
   TML's recap shape (``tables`` + one ``optimizer`` for all, a
   :class:`~functional_opt.table_config.RecapLargeEmbeddingsConfig`) or the
   shared shape (``tables``, each with its own ``optimizer``, a
   :class:`~functional_opt.table_config.LargeEmbeddingsConfig`).
5. **A TwHIN config** (no ``optimizer:`` key; ``model`` holds ``embeddings``,
   ``relations`` and ``translation_optimizer``, a
   :class:`~functional_opt.table_config.TwhinModelConfig`): the translation
   optimizer is the optimizer section, each table has its own optimizer.

Which optimizer schema applies is decided by the keys of the section:
``multi_task_learning_rates`` / ``single_task_learning_rate`` mean recap;
``learning_rate`` / ``sgd`` / ``adagrad`` mean generic; a section with only
``adam`` is generic when ``adam`` has ``lr``, ``betas`` or ``eps`` (torch's names)
and recap otherwise (``beta_1``, ``beta_2``, ``epsilon``).

Every problem is raised as :class:`ConfigFileError` with a one-line message
naming the file and, for a schema error, the dotted path of the field in the file.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "opt.yaml")
    >>> _ = open(path, "w").write(
    ...     "optimizer:\\n"
    ...     "  adam: {beta_1: 0.9}\\n"
    ...     "  single_task_learning_rate: {constant: 0.01}\\n"
    ...     "model:\\n"
    ...     "  large_embeddings:\\n"
    ...     "    optimizer: {learning_rate: {constant: 0.5}, init_learning_rate: 0.5}\\n")
    >>> loaded = load_config_file(path)
    >>> loaded.kind, list(loaded.learning_rates())
    ('recap', ['single_task', 'embeddings'])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic

from functional_opt import config as config_lib
from functional_opt import table_config, yaml_loading
from functional_opt.cli_args import printable
from functional_opt.config_errors import format_validation_error, one_line, short

__all__ = [
    "EMBEDDINGS",
    "ConfigFileError",
    "LoadedConfig",
    "format_validation_error",
    "load_config_file",
    "schedule_horizon",
]

EMBEDDINGS = "embeddings"
"""Label of the embedding learning rate (fused tables and ``dense_ebc``) in plots and tables."""

RECAP_KEYS = ("multi_task_learning_rates", "single_task_learning_rate")
GENERIC_KEYS = ("learning_rate", "sgd", "adagrad")
TORCH_ADAM_KEYS = ("lr", "betas", "eps")
EMBEDDING_SECTIONS = ("emb_optimizer", "embedding_optimizer")
TML_EMBEDDING_PATH = ("model", "large_embeddings", "optimizer")
TML_TABLES_PATH = ("model", "large_embeddings")
TWHIN_KEYS = ("embeddings", "translation_optimizer")


class ConfigFileError(ValueError):
    """A config file that cannot be used; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class LoadedConfig:
    """An optimizer config read from a file.

    Attributes:
        path: the file.
        optimizer: the validated optimizer section.
        embedding: the embedding optimizer, when the file has one.
        optimizer_path: dotted location of the optimizer section in the file (``""`` for the top level).
        embedding_path: dotted location of the embedding optimizer section, if any.
        tables: the embedding tables, when the file lists them: each with its own
            optimizer (:class:`~functional_opt.table_config.LargeEmbeddingsConfig`)
            or all under one (:class:`~functional_opt.table_config.RecapLargeEmbeddingsConfig`).
        tables_path: dotted location of the tables' section, if any.
    """

    path: Path
    optimizer: config_lib.RecapOptimizerConfig | config_lib.OptimizerConfig
    embedding: config_lib.EmbeddingOptimizerConfig | None = None
    optimizer_path: str = ""
    embedding_path: str | None = None
    tables: table_config.LargeEmbeddingsConfig | table_config.RecapLargeEmbeddingsConfig | None = None
    tables_path: str | None = None

    @property
    def table_optimizers(self) -> dict[str, table_config.TableOptimizerConfig]:
        """Each table's own optimizer by table name (empty unless the tables carry optimizers)."""
        if not isinstance(self.tables, table_config.LargeEmbeddingsConfig):
            return {}
        return {t.name: t.optimizer for t in self.tables.tables}

    @property
    def kind(self) -> Literal["recap", "generic"]:
        """``"recap"`` for a :class:`RecapOptimizerConfig`, ``"generic"`` for an :class:`OptimizerConfig`."""
        return "recap" if isinstance(self.optimizer, config_lib.RecapOptimizerConfig) else "generic"

    @property
    def embedding_learning_rate(self) -> config_lib.LearningRate | None:
        """The embedding schedule, or None when the file gives none."""
        return None if self.embedding is None else self.embedding.learning_rate

    def learning_rates(self) -> dict[str, config_lib.LearningRate]:
        """Every schedule of the file, by group label, in a stable order.

        Recap: each tower (config order), then ``backbone`` or ``single_task``.
        Generic: one entry named after the algorithm (``adam``, ``sgd`` or
        ``adagrad``); with ``learning_rate: null`` it is the constant ``lr``.
        Last, ``embeddings`` when the file has an embedding learning rate, or
        each table by name when the tables carry their own optimizers.

        Returns:
            label -> schedule.
        """
        rates: dict[str, config_lib.LearningRate] = {}
        opt = self.optimizer
        if isinstance(opt, config_lib.RecapOptimizerConfig):
            multi = opt.multi_task_learning_rates
            if multi is not None:
                rates.update(multi.tower_learning_rates)
                if multi.backbone_learning_rate is not None:
                    rates["backbone"] = multi.backbone_learning_rate
            elif opt.single_task_learning_rate is not None:
                rates["single_task"] = opt.single_task_learning_rate
        else:
            rates[opt.algorithm_name] = config_lib.learning_rate_of(opt)
        if self.embedding_learning_rate is not None:
            rates[EMBEDDINGS] = self.embedding_learning_rate
        if isinstance(self.tables, table_config.LargeEmbeddingsConfig):
            rates.update(table_config.table_learning_rates(self.tables))
        return rates

    def describe(self) -> str:
        """One line saying what was found where, e.g. for a log header (control characters escaped)."""
        where = f"'{self.optimizer_path}'" if self.optimizer_path else "the top level"
        kind = "RecapOptimizerConfig" if self.kind == "recap" else "OptimizerConfig"
        text = f"{printable(str(self.path))}: {kind} at {where}"
        if self.embedding_path is not None:
            state = "with" if self.embedding_learning_rate is not None else "without"
            text += f", embedding optimizer at '{self.embedding_path}' ({state} a learning rate)"
        if self.tables is not None:
            own = "each with its own optimizer" if self.table_optimizers else "under one optimizer"
            text += f", {len(self.tables.tables)} tables at '{self.tables_path}' ({own})"
        return text


def schedule_horizon(lr: config_lib.LearningRate) -> int:
    """The last step at which ``lr`` changes shape (0 for a constant).

    Example:
        >>> schedule_horizon(config_lib.LearningRate(linear_ramp_to_constant=dict(learning_rate=1, num_ramp_steps=7)))
        7
    """
    return max(lr.breakpoints, default=0)


def load_config_file(path: str | os.PathLike[str]) -> LoadedConfig:
    """Reads and validates the optimizer (and embedding optimizer) config of a YAML file.

    See the module docstring for the layouts accepted.

    Args:
        path: the YAML file.

    Returns:
        The validated configs.

    Raises:
        ConfigFileError: the file is missing or unreadable, is not valid YAML
            (the message gives the line), or does not validate (the message
            gives the dotted path of the first bad field and says what is wrong).
    """
    file = Path(path)
    try:
        document = yaml_loading.read_yaml_document(file)
    except FileNotFoundError as exc:
        raise ConfigFileError(one_line(str(exc))) from exc
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(one_line(str(exc) if str(exc).startswith(str(file)) else f"{file}: {exc}")) from exc
    data = document.data
    model = data.get("model")
    if "optimizer" not in data and isinstance(model, Mapping) and all(k in model for k in TWHIN_KEYS):
        return _load_twhin(document, file)

    embedding_sections = [key for key in EMBEDDING_SECTIONS if key in data]
    if "optimizer" in data:
        section_path: tuple[str, ...] = ("optimizer",)
        section = data["optimizer"]
        tml_embedding = _get_path(data, TML_EMBEDDING_PATH)
        if tml_embedding is not None:
            embedding_sections.insert(0, ".".join(TML_EMBEDDING_PATH))
    else:
        section_path = ()
        section = {k: v for k, v in data.items() if k not in EMBEDDING_SECTIONS}

    where = ".".join(section_path) or "the top level"
    if not isinstance(section, Mapping) or not section:
        variables = document.substitutions.get(section_path)
        got = f"the value of ${' $'.join(variables)}" if variables else short(section)
        raise ConfigFileError(
            f"{file}: {where}: expected an optimizer section (adam / sgd / adagrad with learning_rate, or adam with "
            f"multi_task_learning_rates / single_task_learning_rate), got {got}"
        )
    model_type = _detect_schema(file, section, where)
    optimizer = _validate(document, model_type, section, section_path)

    if len(embedding_sections) > 1:
        raise ConfigFileError(
            f"{file}: more than one embedding optimizer section: {embedding_sections}; keep exactly one"
        )
    embedding = None
    embedding_path = None
    tables = _tables(document, section_path)
    if isinstance(tables, table_config.RecapLargeEmbeddingsConfig):
        embedding = tables.optimizer
    if embedding_sections:
        embedding_path = embedding_sections[0]
        emb_path = tuple(embedding_path.split("."))
        emb_data = _get_path(data, emb_path)
        if emb_data is not None and embedding is None:
            embedding = _validate(document, config_lib.EmbeddingOptimizerConfig, emb_data, emb_path)
    loaded = LoadedConfig(
        path=file,
        optimizer=optimizer,
        embedding=embedding,
        optimizer_path=".".join(section_path),
        embedding_path=embedding_path,
        tables=tables,
        tables_path=None if tables is None else ".".join(TML_TABLES_PATH),
    )
    _check_labels(loaded)
    return loaded


def _tables(
    document: yaml_loading.YamlDocument, section_path: tuple[str, ...]
) -> table_config.LargeEmbeddingsConfig | table_config.RecapLargeEmbeddingsConfig | None:
    """The tables at ``model.large_embeddings`` of a whole TML config, when that section lists them."""
    if section_path != ("optimizer",):
        return None
    section = _get_path(document.data, TML_TABLES_PATH)
    if not isinstance(section, Mapping) or "tables" not in section:
        return None
    # The recap shape has one optimizer for every table; the shared shape one optimizer per table.
    model_type = (
        table_config.RecapLargeEmbeddingsConfig if "optimizer" in section else table_config.LargeEmbeddingsConfig
    )
    return _validate(document, model_type, section, TML_TABLES_PATH)


def _load_twhin(document: yaml_loading.YamlDocument, file: Path) -> LoadedConfig:
    """A TwHIN config: ``model`` holds the tables (each with its optimizer), relations and translation optimizer."""
    model = _validate(document, table_config.TwhinModelConfig, document.data["model"], ("model",))
    loaded = LoadedConfig(
        path=file,
        optimizer=model.translation_optimizer,
        optimizer_path="model.translation_optimizer",
        tables=model.embeddings,
        tables_path="model.embeddings",
    )
    _check_labels(loaded)
    return loaded


def _check_labels(loaded: LoadedConfig) -> None:
    """A table named like another group (a tower, ``backbone``, the algorithm) would share its label."""
    if not loaded.table_optimizers:
        return
    others = LoadedConfig(loaded.path, loaded.optimizer, loaded.embedding).learning_rates()
    clash = [name for name in loaded.table_optimizers if name in others]
    if clash:
        raise ConfigFileError(
            f"{loaded.path}: {loaded.tables_path}.tables: table names {clash} are also the names of other groups "
            f"({list(others)}); rename the tables"
        )


def _detect_schema(
    file: Path, section: Mapping[str, Any], where: str
) -> type[config_lib.RecapOptimizerConfig] | type[config_lib.OptimizerConfig]:
    recap = [k for k in RECAP_KEYS if k in section]
    generic = [k for k in GENERIC_KEYS if k in section]
    if recap and generic:
        raise ConfigFileError(
            f"{file}: {where}: mixes recap optimizer keys {recap} with generic optimizer keys {generic}; "
            "a RecapOptimizerConfig has adam + multi_task_learning_rates / single_task_learning_rate, "
            "an OptimizerConfig has learning_rate + one of adam / sgd / adagrad"
        )
    if recap:
        return config_lib.RecapOptimizerConfig
    if generic:
        return config_lib.OptimizerConfig
    adam = section.get("adam")
    if isinstance(adam, Mapping) and any(k in adam for k in TORCH_ADAM_KEYS):
        return config_lib.OptimizerConfig
    return config_lib.RecapOptimizerConfig


def _validate(
    document: yaml_loading.YamlDocument, model_type: type[config_lib.ConfigT], data: Any, prefix: Sequence[str]
) -> config_lib.ConfigT:
    try:
        return model_type.model_validate(data)
    except pydantic.ValidationError as exc:
        error = yaml_loading.hide_substituted_values(exc, document, tuple(prefix))
        raise ConfigFileError(f"{document.path}: {format_validation_error(error, model_type, prefix)}") from None


def _get_path(data: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data
