"""JSON from users (request bodies, `--data`) as RFC 8259 defines it.

Python's `json` also takes `NaN`, `Infinity` and `-Infinity`, which no other
JSON reader accepts and which fnrun could not hand on (a handler's result
holding one is refused as "not JSON"); it reads a number past a double's
range (`1e999`) as the same infinity; and it takes nesting up to the
recursion limit (about a thousand levels, then `RecursionError`), which no
event needs and every later reader (the store, the worker, a handler's own
recursion) pays for. Here all are a `ValueError` with a one-line message,
like every other syntax error, and more than `MAX_DEPTH` levels is one too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

MAX_SHOWN = 40
"""Longest number literal quoted in an error (one may be as long as the body)."""
MAX_DEPTH = 64
"""Most levels of arrays and objects a document may nest (SPEC 8: deeper is a 400)."""
TOO_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels)"

# A string (skipped whole, brackets in it do not count) or a bracket.
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _finite(number: str) -> float:
    # json's scanner calls this for numbers with a fraction or an exponent
    # only, so integers and bodies without such numbers pay nothing.
    value = float(number)
    if math.isinf(value):
        shown = number if len(number) <= MAX_SHOWN else number[: MAX_SHOWN - 3] + "..."
        raise ValueError(f"{shown} is out of range (a double's range is about -1.8e308 to 1.8e308)")
    return value


DECODER = json.JSONDecoder(parse_constant=_refuse, parse_float=_finite)


def check_depth(text: str) -> None:
    """Refuse a document nesting arrays and objects more than `MAX_DEPTH` deep.

    Counting brackets is enough for nearly every body (C speed, no parse);
    only one holding more than `MAX_DEPTH` of them is scanned, skipping strings.

    Raises:
        ValueError: nested too deeply.
    """
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError(TOO_DEEP)
        elif token in "]}":
            depth -= 1


def loads(text: str | bytes) -> Any:
    """The JSON value of `text` (bytes in UTF-8, -16 or -32, as `json.loads` detects).

    Raises:
        ValueError: not JSON, `NaN`/`Infinity`, a number past a double's range,
            or nested more than `MAX_DEPTH` levels.
    """
    if isinstance(text, bytes | bytearray):
        # As json.loads decodes bytes, so that the depth check reads the same text.
        text = bytes(text).decode(json.detect_encoding(text), "surrogatepass")
    check_depth(text)
    try:
        return json.loads(text, parse_constant=_refuse, parse_float=_finite)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None


# Set by JSONDecoder.__init__ (json/decoder.py) but missing from typeshed.
scan_once: Callable[[str, int], tuple[Any, int]] = DECODER.scan_once  # type: ignore[attr-defined]
"""The raw scanner of `loads`: (value, end) of the JSON value at an index of a str.

No whitespace skipping, no encoding detection and no depth check (call
`check_depth` first), so a caller with a small body in hand skips most of
`loads`' cost. It raises `StopIteration` or `ValueError` on bad input, and
`RecursionError` when nested past the recursion limit."""
