"""Strict, positioned YAML reading: every value keeps its FILE:LINE:COL.

Declarations are composed (safe loader, never `yaml.load`) into nodes and
validated node by node, so each mistake is reported where it stands. Aliases
are refused outright (no billion-laughs), duplicate keys are errors.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import yaml

from runtime.errors import ManifestError, Where
from runtime.units import parse_duration, parse_size

Node = yaml.Node


class _StrictLoader(yaml.SafeLoader):
    """Safe loader that refuses aliases (and so merge keys built on them)."""

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(
                problem="YAML aliases are not allowed", problem_mark=event.start_mark
            )
        return super().compose_node(parent, index)


class Reader:
    """Reads one YAML file into nodes and typed values, raising ManifestError."""

    def __init__(self, file: Path, text: str | None = None) -> None:
        self.file = file
        self._text = text

    # -- parsing -------------------------------------------------------------

    def compose(self) -> Node | None:
        """The document's root node (None for an empty file)."""
        text = self._text if self._text is not None else self.file.read_text(encoding="utf-8")
        loader = _StrictLoader(text)
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = Where(self.file, mark.line + 1, mark.column + 1) if mark else None
            raise ManifestError(where, (exc.problem or str(exc)).strip()) from None
        except yaml.YAMLError as exc:
            raise ManifestError(Where(self.file, 1, 1), str(exc)) from None
        finally:
            loader.dispose()
        if root is not None:
            self._check_duplicate_keys(root)
        return root

    def _check_duplicate_keys(self, root: Node) -> None:
        for node in _walk(root):
            if isinstance(node, yaml.MappingNode):
                seen: set[Any] = set()
                for key, _ in node.value:
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
                raise self.error(key, f"unknown key {key.value!r} in {what} (known: {known})")
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
        except yaml.YAMLError as exc:
            raise self.error(node, str(exc)) from None
        finally:
            loader.dispose()

    def string(self, node: Node, what: str) -> str:
        if not (isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str"):
            raise self.error(node, f"{what} must be a string")
        return str(node.value)

    def integer(self, node: Node, what: str, minimum: int | None = None) -> int:
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
            return parse_duration(self.value(node))
        except ValueError as exc:
            raise self.error(node, f"{what}: {exc}") from None

    def size(self, node: Node, what: str) -> int:
        if not isinstance(node, yaml.ScalarNode):
            raise self.error(node, f"{what} must be a size like 1MiB")
        try:
            return parse_size(self.value(node))
        except ValueError as exc:
            raise self.error(node, f"{what}: {exc}") from None

    def strings(self, node: Node, what: str) -> list[str]:
        return [self.string(item, f"{what} item") for item in self.sequence(node, what)]

    def string_map(self, node: Node, what: str) -> dict[str, str]:
        """A mapping of string keys to scalar values, stringified (env vars)."""
        out = {}
        for key, value in self.mapping(node, what).items():
            if not isinstance(value, yaml.ScalarNode):
                raise self.error(value, f"{what}.{key} must be a scalar")
            out[key] = str(value.value)
        return out


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
