"""Strict, positioned YAML reading: every value keeps its FILE:LINE:COL.

Declarations are composed (safe loader, never `yaml.load`) into nodes and
validated node by node, so each mistake is reported where it stands. Aliases
are refused outright (no billion-laughs), duplicate keys are errors.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.reader import ReaderError

from runtime.errors import ManifestError, Where
from runtime.project import yamlmessages
from runtime.units import parse_duration, parse_size

Node = yaml.Node


MAX_DEPTH = 64
"""Deepest nesting of lists and mappings read (PyYAML's composer recurses per level)."""
MAX_NODES = 10_000
"""Most values (scalars, lists, mappings) in one file: PyYAML reads ~10-20k a second,
so a megabyte of `- a` lines took seconds; 10,000 is ample for declarations."""
MAX_DIGITS = 30
"""Longest integer read: far past any count, short of int()'s 4,300-digit refusal."""


class _StrictLoader(yaml.SafeLoader):
    """Safe loader that refuses aliases (and so merge keys built on them),
    nesting past MAX_DEPTH (50,000 `[` ended in RecursionError) and more
    than MAX_NODES values."""

    _depth = 0
    _nodes = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem="YAML aliases are not allowed", problem_mark=event.start_mark
            )
        if self._depth >= MAX_DEPTH:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem=f"nested more than {MAX_DEPTH} levels deep",
                problem_mark=event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem=f"more than {MAX_NODES} values in one file", problem_mark=event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # PyYAML names it so
        # The scanner looks back over every open `[` for each token: 50,000 of
        # them on one line took seconds before the composer saw the depth.
        if self.flow_level >= MAX_DEPTH:
            raise yaml.MarkedYAMLError(
                problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=self.get_mark()
            )
        super().fetch_flow_collection_start(TokenClass)


def decode(file: Path, data: bytes) -> str:
    """The UTF-8 text of `data` read from `file`; a bad byte is an error at its place."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(
            Where(file, line, column),
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} here ({exc.reason}); save it as UTF-8",
        ) from None


def suggest(word: str, choices: Collection[str]) -> str:
    """`did you mean 'X'? ` for the choice closest to a mistyped `word`, or ""."""
    if len(word) > 100:  # difflib is quadratic; no one mistypes at that length
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean {close[0]!r}? " if close else ""


class Reader:
    """Reads one YAML file into nodes and typed values, raising ManifestError."""

    def __init__(self, file: Path, text: str | None = None) -> None:
        self.file = file
        self._text = text

    # -- parsing -------------------------------------------------------------

    def compose(self) -> Node | None:
        """The document's root node (None for an empty file)."""
        text = self._text if self._text is not None else self.file.read_text(encoding="utf-8")
        loader = None
        try:
            loader = _StrictLoader(text)  # which checks every character first
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = Where(self.file, mark.line + 1, mark.column + 1) if mark else None
            raise ManifestError(where, yamlmessages.in_words(exc)) from None
        except ReaderError as exc:
            raise ManifestError(
                _position(self.file, text, exc.position), yamlmessages.bad_character(exc)
            ) from None
        except yaml.YAMLError as exc:
            raise ManifestError(Where(self.file, 1, 1), yamlmessages.one_line(exc)) from None
        finally:
            if loader is not None:
                loader.dispose()
        if root is not None:
            self._check_duplicate_keys(root)
        return root

    def _check_duplicate_keys(self, root: Node) -> None:
        for node in _walk(root):
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key, _ in node.value:
                    if not isinstance(key, yaml.ScalarNode):
                        # `? [a, b]` makes a list a key: unhashable, and never meant.
                        raise ManifestError(
                            self.where(key), "a key must be a plain string, not a list or mapping"
                        )
                    if key.value in seen:
                        raise ManifestError(self.where(key), f"duplicate key {key.value!r}")
                    seen.add(key.value)

    # -- positions -------------------------------------------------------------

    def where(self, node: Node) -> Where:
        return Where(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, node: Node, message: str) -> ManifestError:
        return ManifestError(self.where(node), message)

    # -- typed access ----------------------------------------------------------

    def mapping(
        self,
        node: Node,
        what: str,
        allowed: Collection[str] | None = None,
        required: Collection[str] = (),
    ) -> dict[str, Node]:
        """A mapping of string keys to nodes; unknown or missing keys are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        out: dict[str, Node] = {}
        for key, value in node.value:
            if not (isinstance(key, yaml.ScalarNode) and key.tag == "tag:yaml.org,2002:str"):
                raise self.error(key, f"{what}: keys must be strings")
            if allowed is not None and key.value not in allowed:
                known = ", ".join(sorted(allowed))
                hint = suggest(key.value, allowed)
                raise self.error(
                    key, f"unknown key {key.value!r} in {what} ({hint}known: {known})"
                )
            out[key.value] = value
        for name in required:
            if name not in out:
                raise self.error(node, f"{what} needs {name!r}")
        return out

    def sequence(self, node: Node, what: str) -> list[Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, f"{what} must be a list")
        return list(node.value)

    def value(self, node: Node) -> Any:
        """The plain Python value of any node (for free-form data)."""
        loader = _StrictLoader("")
        try:
            return loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self.error(node, yamlmessages.in_words(exc)) from None
        except yaml.YAMLError as exc:
            raise self.error(node, yamlmessages.one_line(exc)) from None
        except (ValueError, OverflowError) as exc:  # 2001-13-45, an int past 4,300 digits
            reason = ("a number of more than 4,300 digits" if "integer string" in str(exc)
                      else str(exc))
            raise self.error(node, f"cannot read this value: {reason}") from None
        finally:
            loader.dispose()

    def string(self, node: Node, what: str) -> str:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str"):
            raise self.error(node, f"{what} must be a string")
        return str(node.value)

    def integer(self, node: Node, what: str, minimum: int | None = None) -> int:
        if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_DIGITS:
            raise self.error(node, f"{what} is too long a number ({len(node.value)} characters)")
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(node, f"{what} must be an integer")
        if minimum is not None and value < minimum:
            raise self.error(node, f"{what} must be at least {minimum}")
        return value

    def boolean(self, node: Node, what: str) -> bool:
        value = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(value, bool):
            raise self.error(node, f"{what} must be true or false")
        return value

    def duration(self, node: Node, what: str) -> float:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a duration like 30s")
        try:
            seconds = parse_duration(self.value(node))
        except OverflowError:  # an integer past a float's range (0xfff...)
            raise self.error(node, f"{what} is too large") from None
        except ValueError as exc:
            raise self.error(node, f"{what}: {exc}") from None
        if not math.isfinite(seconds):
            raise self.error(node, f"{what} must be a finite duration like 30s")
        return seconds

    def size(self, node: Node, what: str) -> int:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a size like 1MiB")
        try:
            return parse_size(self.value(node))
        except ValueError as exc:
            raise self.error(node, f"{what}: {exc}") from None



def _position(file: Path, text: str, index: int) -> Where:
    line = text.count("\n", 0, index) + 1
    return Where(file, line, index - (text.rfind("\n", 0, index) + 1) + 1)


def _walk(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        if isinstance(current, yaml.MappingNode):
            for key, value in current.value:
                stack.extend((key, value))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)
