"""How a handler's return value travels: `encode_result` in the worker child,
`decode_result` where the answer is shaped (a sync webhook's reply, `fnrun invoke`).

A leaf imported by the worker child, so: standard library only, and only
modules that cost nothing to import (not `json`, not `re`; see `runtime.worker.protocol`).
`json_value` also checks what a handler emits.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_DEPTH = 100
"""Deepest nesting of a JSON value a worker sends."""
MAX_PATH = 120
"""Longest path in a "not JSON" message ("set at [0][0]...")."""
MAX_INT_DIGITS = 4200
MAX_INT_BITS = 13_950
"""Ints past this many bits have over `MAX_INT_DIGITS` digits: near the 4,300
that `json` writes and reads by default (sys.set_int_max_str_digits)."""
RESULT_SHAPES = "JSON, str, bytes or (status, body[, headers])"
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
"""The characters of an HTTP field name (RFC 9110 section 5.1). Not `re`: the
worker child would import it for this alone (11 ms of its start)."""


class _NotJSON(Exception):
    """What is not JSON, and the path to it (built innermost step first)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.steps: list[str] = []

    def describe(self) -> str:
        if not self.steps:
            return self.what
        path = "".join(reversed(self.steps))
        if len(path) > MAX_PATH:
            path = path[:MAX_PATH] + "..."
        return f"{self.what} at {path}"


def json_value(value: Any) -> tuple[Any, str | None]:
    """(`value` as plain JSON types, None), or (None, what keeps it from being JSON).

    "What" is one bounded line, such as "set at ['a'][2]" or "float nan".
    Tuples count as JSON arrays, as `json.dumps` treats them. Subclasses
    `json.dumps` accepts (StrEnum, IntEnum, OrderedDict, ...) come back as
    their base types: `marshal` refuses them. NaN, infinities and ints too
    long for `json` to write are refused: no store or HTTP client reads them.
    """
    try:
        if _needs_copy(value, 0):
            value = _plain_copy(value)
    except _NotJSON as exc:
        return None, exc.describe()
    return value, None


def _needs_copy(value: Any, depth: int) -> bool:
    """Check `value` (raising `_NotJSON`); whether it holds subclasses to convert."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return False
    if kind is int:
        if value.bit_length() > MAX_INT_BITS:
            raise _NotJSON(f"int of {MAX_INT_DIGITS:,} digits or more")
        return False
    if kind is float:
        if value - value != 0.0:  # NaN and the infinities (inf - inf is NaN)
            raise _NotJSON(f"float {value!r}")
        return False
    if isinstance(value, str):
        return True
    if isinstance(value, int):
        return _needs_copy(int.__int__(value), depth) or True
    if isinstance(value, float):
        return _needs_copy(float.__float__(value), depth) or True
    if depth > MAX_DEPTH:
        raise _NotJSON(f"nesting deeper than {MAX_DEPTH}")
    if isinstance(value, dict):
        return _dict_needs_copy(value, depth)
    if isinstance(value, list | tuple):
        return _list_needs_copy(value, depth)
    raise _NotJSON(type(value).__name__)


def _list_needs_copy(value: list[Any] | tuple[Any, ...], depth: int) -> bool:
    copy = type(value) is not list and type(value) is not tuple
    for index, item in enumerate(value):
        try:
            copy = _needs_copy(item, depth + 1) or copy
        except _NotJSON as exc:
            exc.steps.append(f"[{index}]")
            raise
    return copy


def _dict_needs_copy(value: dict[Any, Any], depth: int) -> bool:
    copy = type(value) is not dict
    for key, item in value.items():
        if type(key) is not str:
            if not isinstance(key, str):
                raise _NotJSON(f"{type(key).__name__} key {key!r:.40}")
            copy = True
        try:
            copy = _needs_copy(item, depth + 1) or copy
        except _NotJSON as exc:
            exc.steps.append(f"[{key!r:.40}]")
            raise
    return copy


def _plain_copy(value: Any) -> Any:
    """A copy of checked JSON `value` with exact str, int, float, dict and list types."""
    kind = type(value)
    if kind is str or kind is bool or kind is int or kind is float or value is None:
        return value
    if isinstance(value, dict):
        return {str.__str__(key): _plain_copy(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_copy(item) for item in value]
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    return float.__float__(value)


def encode_result(value: Any) -> dict[str, Any]:
    """A handler's return value as a JSON-safe dict.

    None/dict/list/int/float/bool -> {"json": v}; str -> {"text": v};
    bytes -> {"bytes": base64}; (status, body[, headers]) -> {"status": s,
    "body": <body encoded as above>, "headers": {...}}.

    Raises:
        TypeError: one clear line naming what cannot be returned.
    """
    if isinstance(value, tuple):
        return _encode_response(value)
    return _encode_body(value, "handler returned")


def _encode_body(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"text": str.__str__(value)}  # a plain str: marshal refuses subclasses
    if isinstance(value, bytes | bytearray | memoryview):
        import binascii

        return {"bytes": binascii.b2a_base64(bytes(value), newline=False).decode("ascii")}
    if value is None or isinstance(value, dict | list | int | float):
        plain, problem = json_value(value)
        if problem is None:
            return {"json": plain}
        if isinstance(value, dict | list):
            raise TypeError(f"{prefix} {type(value).__name__} with {problem}, which is not JSON")
        raise TypeError(f"{prefix} {problem}, which is not JSON")
    raise TypeError(f"{prefix} {type(value).__name__}, which is not {RESULT_SHAPES}")


def _encode_response(value: tuple[Any, ...]) -> dict[str, Any]:
    bad = f"handler returned a tuple that is not {RESULT_SHAPES}"
    if len(value) not in (2, 3):
        raise TypeError(f"{bad}: it has {len(value)} items")
    status, body = value[0], value[1]
    headers = value[2] if len(value) == 3 else {}
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise TypeError(f"{bad}: status {status!r:.40} is not an int from 100 to 599")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise TypeError(f"{bad}: headers must be a dict of str to str")
    for name, field in headers.items():
        if not name or not _TOKEN.issuperset(name):
            raise TypeError(f"{bad}: header name {name!r:.40} is not an HTTP token")
        if "\r" in field or "\n" in field or "\0" in field:
            # A CR or LF would let a handler forge further headers (response splitting).
            raise TypeError(f"{bad}: the value of header {name} has a line break or NUL")
    if isinstance(body, tuple):
        raise TypeError(f"{bad}: the body is itself a tuple")
    encoded = _encode_body(body, "handler returned a response body of")
    # Plain int and str (an HTTPStatus, a StrEnum): marshal refuses subclasses.
    plain_headers = {str.__str__(name): str.__str__(field) for name, field in headers.items()}
    return {"status": int.__int__(status), "body": encoded, "headers": plain_headers}


def decode_result(encoded: Any) -> tuple[int | None, str, Any, dict[str, str]]:
    """Inverse of `encode_result`: (status or None, body kind, body, headers).

    The body kind is "json", "text" or "bytes"; a "bytes" body comes back as
    bytes. Anything unrecognised decodes as a JSON body of its own value.
    """
    if isinstance(encoded, dict) and "status" in encoded and "body" in encoded:
        _, kind, body, _ = decode_result(encoded["body"])
        return int(encoded["status"]), kind, body, dict(encoded.get("headers") or {})
    if isinstance(encoded, dict) and len(encoded) == 1:
        (kind, body), = encoded.items()
        if kind == "bytes":
            import binascii

            return None, "bytes", binascii.a2b_base64(body), {}
        if kind in ("json", "text"):
            return None, kind, body, {}
    return None, "json", encoded, {}
