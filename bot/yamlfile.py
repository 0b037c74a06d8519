"""YAML loading that remembers where every value came from.

Config and playbooks are validated with pydantic; its errors name a path of keys and indexes.
This module maps such a path back to the line in the file, so an error reads
``playbooks/disk.yaml:14: steps.0.tool: Field required`` instead of a bare traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bot.errors import ConfigError, SecretInputError

Loc = tuple[str | int, ...]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that records the line of every mapping key and sequence item."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _index_lines(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*loc, key_node.value)
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*loc, i), lines)


class YamlDocument:
    """Parsed YAML data plus a way to find the line of any key path in it."""

    def __init__(self, path: Path, data: Any, lines: dict[Loc, int]) -> None:
        self.path = path
        self.data = data
        self._lines = lines

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest key on ``loc`` that exists in the file."""
        probe = tuple(loc)
        while probe:
            if probe in self._lines:
                return self._lines[probe]
            probe = probe[:-1]
        return 1

    def problems(self, exc: ValidationError, prefix: Loc = ()) -> list[str]:
        """One line per pydantic error: ``file:line: field.path: message``."""
        out = []
        for err in exc.errors(include_url=False):
            loc = (*prefix, *err["loc"])
            field = ".".join(str(p) for p in loc) or "(top level)"
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key; check the spelling or remove it"
            elif ("input" in err and err["type"] not in {"missing"} and _short(err["input"])
                  and not isinstance(err.get("ctx", {}).get("error"), SecretInputError)):
                message = f"{message} (got {err['input']!r})"
            out.append(f"{self.path}:{self.line_of(loc)}: {field}: {message}")
        return out


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(str(value)) <= 80


def load_yaml(path: Path) -> YamlDocument:
    """Read and parse a YAML file, raising ``ConfigError`` with file and line on bad syntax."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read file: {exc.strerror}; check the path") from exc
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlDocument:
    try:
        node = yaml.compose(text, Loader=_LineLoader)
        data = _LineLoader(text).get_single_data() if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(f"{path}:{line}: invalid YAML: {exc.problem or exc}") from exc
    lines: dict[Loc, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
    return YamlDocument(path, data, lines)
