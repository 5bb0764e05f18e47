"""Reading an optimizer config from any YAML file a user may hold.

The command-line tool accepts three layouts:

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
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pydantic

from functional_opt import config as config_lib
from functional_opt import yaml_loading
from functional_opt.cli_args import printable

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
    """

    path: Path
    optimizer: config_lib.RecapOptimizerConfig | config_lib.OptimizerConfig
    embedding: config_lib.EmbeddingOptimizerConfig | None = None
    optimizer_path: str = ""
    embedding_path: str | None = None

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
        Last, ``embeddings`` when the file has an embedding learning rate.

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
            algorithm = config_lib.get_optimizer_algorithm_config(opt)
            rates[opt.algorithm_name] = (
                opt.learning_rate if opt.learning_rate is not None else config_lib.LearningRate(constant=algorithm.lr)
            )
        if self.embedding_learning_rate is not None:
            rates[EMBEDDINGS] = self.embedding_learning_rate
        return rates

    def describe(self) -> str:
        """One line saying what was found where, e.g. for a log header (control characters escaped)."""
        where = f"'{self.optimizer_path}'" if self.optimizer_path else "the top level"
        kind = "RecapOptimizerConfig" if self.kind == "recap" else "OptimizerConfig"
        text = f"{printable(str(self.path))}: {kind} at {where}"
        if self.embedding_path is not None:
            state = "with" if self.embedding_learning_rate is not None else "without"
            text += f", embedding optimizer at '{self.embedding_path}' ({state} a learning rate)"
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
        raise ConfigFileError(_one_line(str(exc))) from exc
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ConfigFileError(_one_line(str(exc) if str(exc).startswith(str(file)) else f"{file}: {exc}")) from exc
    data = document.data

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
        got = f"the value of ${' $'.join(variables)}" if variables else _short(section)
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
    if embedding_sections:
        embedding_path = embedding_sections[0]
        emb_path = tuple(embedding_path.split("."))
        emb_data = _get_path(data, emb_path)
        if emb_data is not None:
            embedding = _validate(document, config_lib.EmbeddingOptimizerConfig, emb_data, emb_path)
    return LoadedConfig(
        path=file,
        optimizer=optimizer,
        embedding=embedding,
        optimizer_path=".".join(section_path),
        embedding_path=embedding_path,
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _short(value: Any, limit: int = 60) -> str:
    return yaml_loading.short_repr(value, limit)


_FIELD_IN_MESSAGE = re.compile(r"^(?:(?P<owner>\w+): )?(?P<field>\w+)(?P<index>(?:\[\d+\])*)=")


def format_validation_error(
    error: pydantic.ValidationError,
    model_type: type[pydantic.BaseModel] | None = None,
    prefix: Sequence[str | int] = (),
) -> str:
    """One line for a pydantic error: the dotted path of the first bad field and what is wrong.

    A check on a whole model whose message names the field it is about (e.g.
    ``"linear_ramp_to_cosine: final_num_steps=5 must be > num_ramp_steps=10"``)
    gets that field appended to the path. An unknown key lists the keys allowed there.

    Args:
        error: the validation error.
        model_type: the model that was validated (to list allowed keys).
        prefix: path of the validated section inside the file.

    Returns:
        ``"<path>: <message>"``, plus ``" (and N more errors)"`` when there are several.

    Example:
        >>> import pydantic
        >>> try:
        ...     config_lib.LearningRate.model_validate(
        ...         {"linear_ramp_to_cosine": dict(learning_rate=1, final_learning_rate=0,
        ...                                        num_ramp_steps=10, final_num_steps=5)})
        ... except pydantic.ValidationError as exc:
        ...     print(format_validation_error(exc, config_lib.LearningRate, ["lr"]))
        lr.linear_ramp_to_cosine.final_num_steps: final_num_steps=5 must be > num_ramp_steps=10
    """
    errors = error.errors(include_url=False)
    first = errors[0]
    loc = [*prefix, *first["loc"]]
    message = str(first["msg"])
    kind = first["type"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
        match = _FIELD_IN_MESSAGE.match(message)
        if match and loc:
            owner, field, index = match["owner"], match["field"], match["index"]
            if owner is not None and owner == loc[-1]:
                loc.append(field + index)
                message = message[len(owner) + 2 :]
            elif field == loc[-1] and index:
                loc[-1] = field + index
    elif kind == "extra_forbidden":
        allowed = _allowed_keys(model_type, first["loc"][:-1]) if model_type is not None else None
        message = "unknown key" + (f" (allowed here: {', '.join(allowed)})" if allowed else "")
    elif kind == "missing":
        message = "required field is missing"
    else:
        message = f"{message} (got {_short(first.get('input'))})"
    path = _dotted(loc) or "top level"
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return _one_line(f"{path}: {message}{suffix}")


def _dotted(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _allowed_keys(model_type: type[pydantic.BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The field names of the model found by following ``loc`` from ``model_type``."""
    annotation: Any = model_type
    for part in loc:
        model = _model_in(annotation)
        if model is not None:
            if not isinstance(part, str) or part not in model.model_fields:
                return None
            annotation = model.model_fields[part].annotation
            continue
        mapping_value = _mapping_value_type(annotation)
        if mapping_value is None:
            return None
        annotation = mapping_value
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else None


def _union_args(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _model_in(annotation: Any) -> type[pydantic.BaseModel] | None:
    for arg in _union_args(annotation):
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            return arg
    return None


def _mapping_value_type(annotation: Any) -> Any:
    for arg in _union_args(annotation):
        if typing.get_origin(arg) is dict:
            return typing.get_args(arg)[1]
    return None
