"""The one reader of YAML config files (cq-server's and cq-emerge's).

A file is read into PyYAML's node tree, where every value (mapping, list or scalar) knows its
line, and a Checker walks it collecting every problem, so that one ConfigError lists them
all, one "FILE:LINE: what is wrong" line each, and a site fixes its config in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

MAX_DEPTH = 100  # far beyond any real config; PyYAML's composer recurses once a level


class ConfigError(ValueError):
    """Bad config: `problems` holds one "FILE:LINE: what is wrong" line per problem."""

    def __init__(self, problems: str | Iterable[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


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


def read(path: Path, hint: str = "") -> str:
    """The text of `path`; a missing or unreadable file is a ConfigError (`hint`: what to do)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config file: {e.strerror}{hint}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason})") from None


def compose(text: str, path: Path) -> yaml.Node | None:
    """The node tree of `text` (None: an empty file). Bad YAML is a ConfigError, and so is
    YAML that PyYAML cannot turn into values (a list as a key, an unknown tag, a value its
    explicit tag cannot take: !!int x): checked here, so that reading values later cannot
    fail."""
    try:
        root = yaml.compose(text, Loader=SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{mark.line + 1 if mark else 1}: invalid YAML: {problem}"
                          ) from None
    if root is not None and (unbuildable := _unbuildable(root)):
        line, problem = unbuildable
        raise ConfigError(f"{path}:{line + 1}: invalid YAML: {problem}")
    return root


def _unbuildable(root: yaml.Node) -> tuple[int, str] | None:
    """Where and why PyYAML cannot build `root`'s values, or None. Scalars one by one first:
    their constructors raise ValueError, KeyError, IndexError... without a mark."""
    loader = yaml.SafeLoader("")
    stack, seen = [root], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias, maybe of its own parent
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                value = loader.construct_object(node)
            except Exception as e:  # noqa: BLE001 - any of them: a value it cannot take
                return node.start_mark.line, (getattr(e, "problem", None)
                                              or "a value that its explicit tag cannot take")
            if isinstance(value, str) and not value.isascii():
                try:  # "\ud800" makes a string no path, argument or variable can hold
                    value.encode()
                except UnicodeEncodeError:
                    return node.start_mark.line, "a \\u escape that is no character"
        else:
            stack.extend(node.value if isinstance(node, yaml.SequenceNode)
                         else [n for pair in node.value for n in pair])
    try:
        yaml.SafeLoader("").construct_object(root, deep=True)  # as Checker.value builds them
    except yaml.constructor.ConstructorError as e:
        return (e.problem_mark or root.start_mark).line, e.problem
    return None


Entries = dict[str, tuple[yaml.Node, yaml.Node]]  # a mapping: key -> (key node, value node)


class Checker:
    """Walks one file's node tree, collecting a "FILE:LINE: message" line per problem."""

    def __init__(self, path: Path):
        self.path = path
        self.problems: list[str] = []
        self._loader = yaml.SafeLoader("")

    def error(self, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else 1
        self.problems.append(f"{self.path}:{line}: {message}")

    def check(self) -> None:
        """Raise every problem found so far, at once."""
        if self.problems:
            raise ConfigError(self.problems)

    def value(self, node: yaml.Node) -> Any:
        """The Python value of `node` (lists and mappings included)."""
        return self._loader.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node | None, what: str, allowed: Collection[str] | None
                ) -> Entries | None:
        """A mapping node's entries; None (and a problem) if it is not a mapping."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping (key: value), not {kind(node)}")
            return None
        entries: Entries = {}
        for key_node, value_node in node.value:
            key = self.value(key_node) if isinstance(key_node, yaml.ScalarNode) else key_node
            if not isinstance(key, str):
                self.error(key_node, f"keys of {what} must be text, not {kind(key_node)}")
            elif key in entries:
                self.error(key_node, f"duplicate key {key!r} in {what}")
            elif allowed is not None and key not in allowed:
                self.error(key_node, f"unknown key {key!r} in {what} "
                           f"(known keys: {', '.join(sorted(allowed))})")
            else:
                entries[key] = (key_node, value_node)
        return entries

    def get(self, entries: Entries, key: str, types: type | tuple[type, ...]) -> Any:
        """The value of `key` if it is one of `types`; None if absent or not (a problem)."""
        if key not in entries:
            return None
        node = entries[key][1]
        value, types = self.value(node), types if isinstance(types, tuple) else (types,)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = "/".join(t.__name__ for t in types)
            self.error(node, f"{key} must be {names}, not {type(value).__name__}")
            return None
        return value

    def renamed(self, entries: Entries, old: str, new: str, what: str) -> None:
        """Take `old` as the deprecated name of `new`, with a warning naming FILE:LINE."""
        if old not in entries:
            return
        key_node = entries[old][0]
        if new in entries:
            self.error(key_node, f"{what}: give {new} only ({old} is its deprecated name)")
            return
        log.warning("%s:%d: %s: '%s' is deprecated, name it '%s'", self.path,
                    key_node.start_mark.line + 1, what, old, new)
        entries[new] = entries.pop(old)


def seconds(high: float) -> Callable[[Checker, yaml.Node, str], float | None]:
    """The check of a number of seconds: more than 0 and at most `high` (.nan and .inf are
    neither). Past it a value is a typo, or one that overflows a timer of a running process
    instead of being refused when the config loads."""
    def check(c: Checker, node: yaml.Node, what: str) -> float | None:
        value = c.value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            c.error(node, f"{what} must be a number of seconds, not {kind(node)}")
        elif value <= 0:
            c.error(node, f"{what} must be positive")
        elif not value <= high:  # .nan compares false: refused too
            c.error(node, f"{what} must be between 0 and {high}, not {value}")
        else:
            return float(value)
        return None
    return check


def kind(node: yaml.Node | None) -> str:
    """What a node holds, for messages: "a list", "text 'x'", "a number (5)"..."""
    if node is None:
        return "nothing"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    return {"str": f"text {node.value!r}", "int": f"a number ({node.value})",
            "float": f"a number ({node.value})", "bool": f"a boolean ({node.value})",
            "null": "empty"}.get(tag, repr(node.value))
