"""PyYAML's syntax errors said in words, on one line (issue 22, point 5).

PyYAML names parser states (`expected <block end>, but found '<block mapping
start>'`) where a user needs to hear what is wrong with the line: most of
its errors in a hand-written file are indentation, tabs, or an unquoted
`: `. Each message here is one line; the caller adds FILE:LINE:COL.
"""

from __future__ import annotations

import yaml
from yaml.reader import ReaderError

__all__ = ["bad_character", "in_words", "one_line"]


def in_words(exc: yaml.MarkedYAMLError) -> str:
    """What a positioned YAML error means, in one line."""
    problem = (exc.problem or "").strip()
    context = (exc.context or "").strip()
    mark, at = exc.context_mark, exc.problem_mark
    if problem.startswith("expected <block end>, but found") and mark and at:
        return _out_of_block(problem.rpartition("found ")[2].strip("'"), context, mark, at)
    if problem.startswith("found character '\\t'"):
        return "a tab character: YAML indents with spaces only, never tabs"
    if problem == "mapping values are not allowed here":
        return ("unexpected ':' here: quote a value that holds ': ', and indent a key "
                "exactly as the keys beside it")
    if problem == "but found another document":
        return "a second YAML document ('---'): the file must hold one"
    if context and mark and at and (mark.line, mark.column) != (at.line, at.column):
        return one_line(f"{problem} ({context} at line {mark.line + 1})")
    return one_line(problem or context or str(exc))


_FOUND = {
    "<block mapping start>": "a key", "?": "a key", "<block sequence start>": "a list item",
    "-": "a list item", ":": "a ':' with no key before it", "<scalar>": "a value",
    "]": "a ']' with no '[' before it", "}": "a '}' with no '{' before it",
}


def _out_of_block(found: str, context: str, mark: yaml.Mark, at: yaml.Mark) -> str:
    """`expected <block end>, but found X`: a line that fits no block above it."""
    words = _FOUND.get(found, found)
    start = f"line {mark.line + 1}"
    if found in ("<block mapping start>", "<block sequence start>") and at.column > mark.column:
        return (f"bad indentation: this line is indented more than the key above it expects "
                f"(column {at.column + 1}; the keys of this block, from {start}, "
                f"are at column {mark.column + 1})")
    in_list = "mapping" not in context  # PyYAML: "while parsing a block collection"
    mixed = words == ("a key" if in_list else "a list item")
    why = "; a list and keys cannot share one indentation" if mixed else ""
    return f"did not expect {words} here (in the block that starts at {start}{why})"


def bad_character(exc: ReaderError) -> str:
    """PyYAML's reader refusing a character (a control character, U+FFFE ...)."""
    character = exc.character
    code = ord(character) if isinstance(character, str) else int(character)
    return f"character U+{code:04X} is not allowed in YAML ({exc.reason})"


def one_line(error: object) -> str:
    """`error` as text on one line (PyYAML's own text spans several)."""
    return " ".join(str(error).split())
