"""JSON from users (request bodies, `--data`) as RFC 8259 defines it.

Python's `json` also takes `NaN`, `Infinity` and `-Infinity`, which no other
JSON reader accepts and which fnrun could not hand on (a handler's result
holding one is refused as "not JSON"); it reads a number past a double's
range (`1e999`) as the same infinity; and it raises `RecursionError`, not
`ValueError`, on a document nested a few thousand levels deep. Here all are
a `ValueError` with a one-line message, like every other syntax error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

MAX_SHOWN = 40
"""Longest number literal quoted in an error (one may be as long as the body)."""


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


def loads(text: str | bytes) -> Any:
    """The JSON value of `text` (bytes in UTF-8, -16 or -32, as `json.loads` detects).

    Raises:
        ValueError: not JSON, `NaN`/`Infinity`, a number past a double's range,
            or nested too deeply.
    """
    try:
        return json.loads(text, parse_constant=_refuse, parse_float=_finite)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# Set by JSONDecoder.__init__ (json/decoder.py) but missing from typeshed.
scan_once: Callable[[str, int], tuple[Any, int]] = DECODER.scan_once  # type: ignore[attr-defined]
"""The raw scanner of `loads`: (value, end) of the JSON value at an index of a str.

No whitespace skipping and no encoding detection, so a caller with a small
body in hand skips most of `loads`' cost. It raises `StopIteration` or
`ValueError` on bad input, and `RecursionError` when nested too deeply."""
