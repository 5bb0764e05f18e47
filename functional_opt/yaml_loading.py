"""Reading a YAML config file safely: bounded, strict, one clear line per problem.

:func:`read_yaml_document` is the one reader of config files. It

* opens only regular files: a directory, FIFO, device or socket is named as
  such (and never opened for reading, so a FIFO cannot block it), a missing
  file raises :class:`FileNotFoundError`, an unreadable one says so;
* refuses a file over :data:`MAX_CONFIG_BYTES`, binary data (NUL bytes) and
  text that is not UTF-8;
* parses with libyaml (``yaml.CSafeLoader``) when it is installed, else with
  PyYAML's pure-Python ``SafeLoader``: only plain YAML types, no Python tags;
* refuses a key given twice in one mapping, naming the key and both lines;
* refuses nesting deeper than :data:`MAX_DEPTH` and aliases that expand the
  document by more than :data:`MAX_ALIAS_NODES` nodes (a "billion laughs"
  file is refused in milliseconds, before anything is built from it), and
  recursive aliases;
* reads ``1e-3`` (an exponent without a dot) as a float, as YAML 1.2 does;
  PyYAML alone reads it as a string;
* substitutes ``$VAR`` / ``${VAR}`` from the environment in string *values*
  only, after parsing, so a variable's value can never add keys or sections
  (``$$`` is a literal ``$``, an unset variable is left as it is, ``${USER}``
  is ``getpass.getuser()``, as in TML). A plain (unquoted) scalar that
  substitution changed is resolved again, so ``lr: $LR`` with ``LR=0.25``
  reads as the number 0.25, as TML's substitution in the raw text gives.
  Mapping keys are not substituted.

Every problem raises :class:`YamlFileError` (a ``ValueError``) whose message is
one line starting with the file's name; no message shows more than
:data:`MAX_SHOWN_CHARS` characters of a value.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "opt.yaml")
    >>> _ = open(path, "w").write("sgd: {lr: 1e-3}\\nsgd: {lr: 0.1}\\n")
    >>> read_yaml_document(path)
    Traceback (most recent call last):
    ...
    functional_opt.yaml_loading.YamlFileError: ...opt.yaml: invalid YAML at line 2, column 1: duplicate key 'sgd' \
(first at line 1, again at line 2)
"""

from __future__ import annotations

import dataclasses
import os
import re
import reprlib
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from functional_opt import env_substitution
from functional_opt.env_substitution import hide_substituted_values

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "MAX_SHOWN_CHARS",
    "YamlDocument",
    "YamlFileError",
    "hide_substituted_values",
    "read_yaml_document",
    "short_repr",
]

MAX_CONFIG_BYTES = 16 * 2**20
"""Largest config file read (16 MiB); a bigger file is refused before it is read."""
MAX_DEPTH = 100
"""Deepest nesting of mappings and sequences accepted."""
MAX_ALIAS_NODES = 1_000_000
"""How many nodes aliases may add to a document once expanded (each use of an alias counts its whole subtree)."""
MAX_SHOWN_CHARS = 200
"""Most characters of a value any message shows."""

_STR = "tag:yaml.org,2002:str"
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlFileError(ValueError):
    """A config file that cannot be read as YAML; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class YamlDocument:
    """A parsed YAML file.

    Attributes:
        path: the file.
        data: the top-level mapping.
        substitutions: location in ``data`` (a tuple of keys and indices) of
            every value that environment substitution changed -> the names of
            the variables substituted there.
    """

    path: Path
    data: dict[Any, Any]
    substitutions: Mapping[tuple[Any, ...], tuple[str, ...]] = dataclasses.field(default_factory=dict)


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line and at most ``limit`` characters, computed without rendering all of it.

    Example:
        >>> short_repr(list(range(10**6)), 30)
        '[0, 1, 2, 3, 4, 5, ...]'
    """
    shortener = reprlib.Repr()
    shortener.maxstring = shortener.maxother = max(limit, 8)
    shortener.maxlist = shortener.maxdict = shortener.maxtuple = shortener.maxset = 6
    shortener.maxlevel = 3
    text = " ".join(shortener.repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _make_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """The config loader built on the safe loader ``base``: duplicate keys refused, ``1e-3`` a float."""

    class Loader(base):  # type: ignore[misc, valid-type]
        """The safe loader refusing duplicate keys, with a faster resolver."""

        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._tags: dict[tuple[str, bool, bool], str] = {}

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            if isinstance(node, yaml.MappingNode):
                first_line: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == env_substitution.MERGE_TAG:
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        line = first_line.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # an unhashable key: the base class says so
                        continue
                    if line != key_node.start_mark.line + 1:
                        raise yaml.constructor.ConstructorError(
                            None,
                            None,
                            f"duplicate key {short_repr(key)} (first at line {line}, again at line "
                            f"{key_node.start_mark.line + 1})",
                            key_node.start_mark,
                        )
            return super().construct_mapping(node, deep=deep)

        def resolve(self, kind: type[yaml.Node], value: Any, implicit: tuple[bool, bool]) -> str:
            """PyYAML's resolver, its results remembered (the parser calls it once per node)."""
            if kind is yaml.ScalarNode:
                key = (value, implicit[0], implicit[1])
                tag = self._tags.get(key)
                if tag is None:
                    tag = super().resolve(kind, value, implicit)
                    if len(self._tags) < 100_000:
                        self._tags[key] = tag
                return tag
            return super().resolve(kind, value, implicit)

    # YAML 1.2 floats with an exponent and no dot ("1e-3", "5E+4"), which YAML 1.1 reads as strings.
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
    )
    return Loader


_Loader = _make_loader(_SAFE_LOADER)


def _fail(path: Path, message: str) -> YamlFileError:
    return YamlFileError(f"{path}: {' '.join(message.split())}")


def _file_kind(mode: int) -> str | None:
    """What a non-regular file is, or None for a regular file."""
    for check, what in (
        (stat.S_ISDIR, "is a directory"),
        (stat.S_ISFIFO, "is a FIFO (named pipe)"),
        (stat.S_ISCHR, "is a character device"),
        (stat.S_ISBLK, "is a block device"),
        (stat.S_ISSOCK, "is a socket"),
    ):
        if check(mode):
            return what
    return None if stat.S_ISREG(mode) else "is not a regular file"


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, after checking it is a regular, readable file under the size cap."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if os.path.islink(path) else ""
        raise FileNotFoundError(f"{path}: no such file{broken}") from None
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or exc}") from exc
    kind = _file_kind(info.st_mode)
    if kind is not None:
        raise _fail(path, f"{kind}, not a YAML file")
    if info.st_size > MAX_CONFIG_BYTES:
        raise _fail(path, f"is {info.st_size} bytes, over the {MAX_CONFIG_BYTES} bytes a config file may have")
    try:
        # O_NONBLOCK: should the file have been replaced by a FIFO since the check, opening does not block.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except PermissionError as exc:
        raise _fail(path, "cannot be read: permission denied") from exc
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as file:
        kind = _file_kind(os.fstat(file.fileno()).st_mode)
        if kind is not None:
            raise _fail(path, f"{kind}, not a YAML file")
        try:
            raw = file.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise _fail(path, f"cannot be read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise _fail(path, f"is over the {MAX_CONFIG_BYTES} bytes a config file may have")
    return raw


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        raise _fail(path, f"is binary data (a NUL byte at offset {offset}), not YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(
            path, f"is not UTF-8 text: byte 0x{raw[exc.start]:02x} at line {line} (offset {exc.start}) is invalid"
        ) from None
    return text.removeprefix("\ufeff")


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> YamlFileError:
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unknown error"])[0]
    if isinstance(exc, yaml.reader.ReaderError):
        code = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        problem = f"{exc.reason}: character U+{code:04X} at offset {exc.position}"
    return _fail(path, f"invalid YAML{where}: {problem[: 2 * MAX_SHOWN_CHARS]}")


def _check_and_substitute(
    path: Path, root: yaml.Node, loader: yaml.SafeLoader, env: Mapping[str, str], protected: bool = False
) -> dict[int, tuple[str, ...]]:
    """Checks the node graph and substitutes variables in string values; returns {id(node): variable names}.

    Refuses recursive aliases, nesting deeper than MAX_DEPTH and alias expansion
    beyond MAX_ALIAS_NODES, in one iterative post-order walk over the distinct
    collection nodes (a node shared through aliases is walked once): the expanded
    size and the height of each node follow from its children's.
    """
    scalar_type, mapping_type = yaml.ScalarNode, yaml.MappingNode
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_stack: set[int] = set()
    changed: dict[int, tuple[str, ...]] = {}
    substituted: set[int] = set()
    distinct = 0

    def substitute(node: yaml.ScalarNode) -> None:
        if id(node) in substituted:
            return
        substituted.add(id(node))
        node.value = env_substitution.unprotect(node.value)
        value, used = env_substitution.substitute(node.value, env)
        if value != node.value:
            node.value = value
            if not node.style:  # plain (None, or "" from libyaml): resolve its type again
                node.tag = loader.resolve(scalar_type, value, (True, False))
        if used:
            changed[id(node)] = used

    if type(root) is scalar_type:
        return changed
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if type(node) is mapping_type:
            children = [n for pair in node.value for n in pair]
            values = [v for _, v in node.value]
        else:
            children = values = node.value
        if not finished:
            if key in size:
                continue
            on_stack.add(key)
            stack.append((node, True))
            for child in children:
                if type(child) is not scalar_type:
                    if id(child) in on_stack:
                        raise _fail(path, f"invalid YAML at line {child.start_mark.line + 1}: a recursive alias")
                    if id(child) not in size:
                        stack.append((child, False))
            continue
        on_stack.discard(key)
        total, tallest = 1, 0
        for child in children:
            if type(child) is scalar_type:
                total += 1
                tallest = tallest or 1
            else:
                total += size[id(child)]
                tallest = max(tallest, height[id(child)])
        for value_node in values:
            if type(value_node) is scalar_type and value_node.tag == _STR and "$" in value_node.value:
                substitute(value_node)
        if protected and type(node) is mapping_type:
            for key_node, _ in node.value:
                if type(key_node) is scalar_type:
                    key_node.value = env_substitution.unprotect(key_node.value)
        size[key] = total
        height[key] = tallest + 1
        distinct += 1 + sum(type(c) is scalar_type for c in children)
        if tallest + 1 > MAX_DEPTH:
            raise _fail(path, f"invalid YAML at line {node.start_mark.line + 1}: nested deeper than {MAX_DEPTH}")
    if size[id(root)] - distinct > MAX_ALIAS_NODES:
        raise _fail(
            path,
            f"invalid YAML: its aliases expand to {size[id(root)]} nodes from about {distinct} written (more than "
            f"{MAX_ALIAS_NODES} added); refused as an alias bomb",
        )
    return changed


def read_yaml_document(yaml_path: str | os.PathLike[str]) -> YamlDocument:
    """Reads a YAML config file (see the module docstring for every check).

    Args:
        yaml_path: the file.

    Returns:
        The document: its top-level mapping and where environment variables were substituted.

    Raises:
        FileNotFoundError: the file does not exist.
        YamlFileError: anything else that makes the file unusable as a YAML mapping.
    """
    path = Path(yaml_path)
    text, protected = env_substitution.protect_braces(_decode(path, _read_bytes(path)))
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
            if root is None:
                raise _fail(path, "expected a YAML mapping at the top level, got an empty file")
            changed = _check_and_substitute(path, root, loader, env_substitution.environment(), protected)
            substitutions = env_substitution.locations(root, changed, loader) if changed else {}
            data = loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise _yaml_problem(path, exc) from exc
    except RecursionError:  # the pure-Python composer recurses once per nesting level
        raise _fail(path, f"invalid YAML: nested deeper than {MAX_DEPTH}") from None
    if not isinstance(data, dict):
        raise _fail(path, f"expected a YAML mapping at the top level, got {type(data).__name__}")
    return YamlDocument(path=path, data=data, substitutions=substitutions)
