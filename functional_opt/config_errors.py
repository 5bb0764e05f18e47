"""One-line messages for pydantic validation errors: the dotted path of the bad field and what is wrong.

Example:
    >>> import pydantic
    >>> from functional_opt import config
    >>> try:
    ...     config.LearningRate.model_validate({"constant": -1.0})
    ... except pydantic.ValidationError as exc:
    ...     print(format_validation_error(exc, config.LearningRate, ["lr"]))
    lr.constant: constant=-1.0 must be >= 0
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import pydantic

from functional_opt import yaml_loading

__all__ = ["format_validation_error", "one_line", "short"]


def one_line(text: str) -> str:
    return " ".join(text.split())


def short(value: Any, limit: int = 60) -> str:
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
        >>> from functional_opt import config as config_lib
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
        message = f"{message} (got {short(first.get('input'))})"
    path = _dotted(loc) or "top level"
    more = len(errors) - 1
    suffix = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return one_line(f"{path}: {message}{suffix}")


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
