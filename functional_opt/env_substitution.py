"""Environment substitution in parsed YAML string values, and keeping the values out of messages.

TML substitutes ``$VAR`` / ``${VAR}`` in a config file's raw text, so a
variable's value can add keys or whole sections. Here the same substitution
(``string.Template.safe_substitute``, with ``USER`` from ``getpass.getuser()``
as TML does) is applied to each string value after parsing (see
:mod:`functional_opt.yaml_loading`), and :func:`hide_substituted_values` makes
an error about a substituted value name the variable instead of showing its
value.

Example:
    >>> substitute("${HOME_DIR}/x and $UNSET, $$5", {"HOME_DIR": "/h"})
    ('/h/x and $UNSET, $5', ('HOME_DIR',))
"""

from __future__ import annotations

import getpass
import os
import re
import string
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic
import pydantic_core
import yaml

if TYPE_CHECKING:
    from functional_opt.yaml_loading import YamlDocument

__all__ = [
    "MERGE_TAG",
    "environment",
    "hide_substituted_values",
    "locations",
    "protect_braces",
    "substitute",
    "unprotect",
]

MERGE_TAG = "tag:yaml.org,2002:merge"
_VARIABLE = re.compile(string.Template.pattern.pattern, re.VERBOSE | re.IGNORECASE)


def environment() -> dict[str, str]:
    """``os.environ`` with ``USER`` from ``getpass.getuser()`` (TML's ``safe_substitute(os.environ, USER=...)``)."""
    env = dict(os.environ)
    try:
        env["USER"] = getpass.getuser()
    except (KeyError, OSError):  # no user name anywhere: keep the environment's, if any
        pass
    return env


def substitute(text: str, env: Mapping[str, str]) -> tuple[str, tuple[str, ...]]:
    """``string.Template(text).safe_substitute(env)`` and the names it replaced."""
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group("escaped") is not None:
            return "$"
        name = match.group("named") or match.group("braced")
        if name is not None and name in env:
            used.append(name)
            return env[name]
        return match.group(0)

    return _VARIABLE.sub(replace, text), tuple(dict.fromkeys(used))


# "${VAR}" is no plain scalar inside a flow collection ("{lr: ${LR}}"): TML substitutes in the raw text, so
# there it works. Before parsing, "${VAR}" becomes "$<U+2060>VAR<U+2060>" (U+2060, WORD JOINER, is neither a flow
# indicator nor likely in a config); every scalar gets its "${VAR}" back before substitution.
_JOINER = "\u2060"
_PROTECTED = re.compile(r"\$\u2060([_a-z][_a-z0-9]*)\u2060", re.IGNORECASE)


def protect_braces(text: str) -> tuple[str, bool]:
    """``text`` with each ``${VAR}`` written so that the parser takes it as part of a plain scalar."""
    if "${" not in text or _JOINER in text:
        return text, False

    def protect(match: re.Match[str]) -> str:
        braced = match.group("braced")
        return f"${_JOINER}{braced}{_JOINER}" if braced is not None else match.group(0)

    return _VARIABLE.sub(protect, text), True


def unprotect(value: str) -> str:
    """Undoes :func:`protect_braces` in one scalar."""
    return _PROTECTED.sub(r"${\1}", value) if _JOINER in value else value


def locations(
    root: yaml.Node, changed: Mapping[int, tuple[str, ...]], loader: yaml.SafeLoader
) -> dict[tuple[Any, ...], tuple[str, ...]]:
    """Every location of the nodes in ``changed`` (a node reached through aliases has several)."""
    found: dict[tuple[Any, ...], tuple[str, ...]] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack and len(found) < 10_000:
        node, where = stack.pop()
        if id(node) in changed:
            found[where] = changed[id(node)]
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*where, i)) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.tag == MERGE_TAG:
                    merged = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    stack.extend((m, where) for m in merged)
                elif isinstance(key_node, yaml.ScalarNode):
                    stack.append((value_node, (*where, loader.construct_object(key_node, deep=True))))
    return found


def _value_at(data: Any, where: tuple[Any, ...]) -> Any:
    for key in where:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def hide_substituted_values(
    error: pydantic.ValidationError, document: YamlDocument, prefix: tuple[Any, ...] = ()
) -> pydantic.ValidationError:
    """``error`` with every value that came from an environment variable replaced by the variable's name.

    An error located at a substituted value, or at a section holding one, gets
    ``" (the value of $VAR)"`` appended and ``$VAR`` as its input, and every
    spelling of the value in its message is replaced by ``$VAR``, so a
    variable's value (a token, a path) is never printed.

    Args:
        error: the validation error of ``document.data`` (or of its section at ``prefix``).
        document: the document validated.
        prefix: location of the validated section in the document.

    Returns:
        ``error`` itself when no substituted value is involved, else a new error.
    """
    if not document.substitutions:
        return error
    details: list[Any] = []
    changed = False
    for item in error.errors(include_url=False):
        loc = (*prefix, *item["loc"])
        hits = {
            where: names
            for where, names in document.substitutions.items()
            if where[: len(loc)] == loc or loc[: len(where)] == where
        }
        message = str(item["msg"])
        value: Any = item.get("input")
        if hits:
            changed = True
            names = tuple(dict.fromkeys(name for found in hits.values() for name in found))
            shown = " ".join(f"${name}" for name in names)
            for where in hits:
                found = _value_at(document.data, where)
                for spelling in sorted({str(found), repr(found)} - {"", "None"}, key=len, reverse=True):
                    # Whole tokens only: the value "1" must not be cut out of "100".
                    pattern = rf"(?<![\w.]){re.escape(spelling)}(?![\w.])"
                    message = re.sub(pattern, lambda _match, text=shown: text, message)
            message = f"{message} (the value of {shown})"
            value = shown
        details.append(
            {
                "type": pydantic_core.PydanticCustomError(str(item["type"]), message),
                "loc": item["loc"],
                "input": value,
            }
        )
    if not changed:
        return error
    return pydantic_core.ValidationError.from_exception_data(error.title, details)
