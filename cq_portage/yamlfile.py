"""YAML config files whose errors name file:line.

Mappings load as `Node` dicts that remember the line of each key, so a validator can say
where a bad value is without a second parse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """One line: 'FILE:LINE: what is wrong'."""


class Node(dict):
    """A YAML mapping: `line` is where it starts, `lines[key]` where each key is."""

    line: int = 0
    lines: dict[str, int]


MAX_DEPTH = 100  # far beyond any real config; PyYAML's composer recurses once a level


class SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses nesting deeper than MAX_DEPTH with a marked error (the
    file's line), where 50,000 levels would otherwise end in a RecursionError."""

    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _Loader(SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Node:
    out = Node()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise yaml.MarkedYAMLError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = key_node.start_mark.line + 1
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: str | Path) -> Any:
    """Parse `path`; a missing file or bad YAML becomes a ConfigError naming file:line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: bad YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: bad YAML: {e}") from None
    return Node() if data is None else data


class Checker:
    """Validates one file's values, raising ConfigError with file:line."""

    def __init__(self, path: str | Path):
        self.path = path

    def error(self, node: Node, key: str | None, message: str) -> ConfigError:
        line = node.lines.get(key, node.line) if isinstance(node, Node) and key else getattr(
            node, "line", 0)
        return ConfigError(f"{self.path}:{line}: {message}" if line else f"{self.path}: {message}")

    def mapping(self, node: Any, where: str, allowed: set[str]) -> Node:
        if not isinstance(node, Node):
            raise ConfigError(f"{self.path}: {where} must be a mapping")
        for key in node:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise self.error(node, key, f"unknown key {key!r} in {where} (known: {known})")
        return node

    def get(self, node: Node, key: str, types: type | tuple[type, ...], default: Any = None,
            what: str | None = None) -> Any:
        if key not in node:
            return default
        value = node[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in (
                types if isinstance(types, tuple) else (types,))):
            names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
            raise self.error(node, key, f"{what or key} must be {names}, not {type(value).__name__}")
        return value
