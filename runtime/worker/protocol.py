"""The supervisor <-> worker protocol: frames and the messages they carry.

Imported by the worker child, so: standard library only, and only modules
that cost nothing to import (a worker must be ready in ~25 ms; `json` alone
costs ~12 ms here because it pulls in `re`). Frames are a 4-byte big-endian
length then a `marshal` payload: parent and child are always the same
interpreter (`sys.executable`), marshal is builtin and several times faster
than json, and it carries `bytes` without base64. Payloads hold only JSON
types plus bytes; the child checks values with `runtime.results.json_value` before sending.

Messages (dicts with a "kind"):
- child -> parent `ready` {} once the handler is loaded, or
  `load_error` {error, traceback} and exit;
- parent -> child `invoke` {function, timeout (s), lines, items: [{event:
  Event.to_dict() (or a list of them: one call of a `batch:` handler),
  attempt, invocation}]}: a batch, run in order, one at a
  time; each item's `ctx.deadline` is its own start plus `timeout`; `lines`
  is `logs.max_lines_per_run`;
- child -> parent `done` {ok, result, emits: [{type, data, subject, id}],
  error, traceback, fatal, logs}, one per item as soon as it finishes, so the
  parent always knows which item is running (crash attribution, per-item
  timeouts). `fatal` (e.g. after a MemoryError): the worker should not be
  reused, and it runs nothing more of the batch. `logs`, only if the item
  wrote any: its lines as (epoch seconds, "log"/"stdout"/"stderr", level,
  text), at most `lines` plus a last one saying how many were cut.

A handler's return value travels encoded by `runtime.results.encode_result`.
"""

from __future__ import annotations

import marshal
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HEADER = 4
MAX_FRAME = 64 * 1024 * 1024
"""Largest frame either side accepts; a bigger result fails the attempt."""
MAX_LOG_LINE = 8192
"""Longest line a run record keeps (`done`'s `logs`); the drain logs long lines whole."""
OUTPUT_MARK = b"\x00\x1bfnrun-invocation "
"""Starts the line a worker writes to its output (fd 1) before each item, then
the item's invocation id: the pool's drain tags the lines after it with that
id (`runtime.pool.process`). Output is tagged by where it is in the stream, not by
when the drain reads it, which in a batch can be many items later."""
LEVEL_MARK = b"\x00\x1bfnrun-level "
"""Starts an output line that is not plain stdout, then its level name and a
space: `ctx.log` lines carry their level, lines written to `sys.stderr` carry
WARNING. The drain logs each at that level (`runtime.pool.process`), so a `fnrun
run` line shows its level once and stderr stands out from stdout."""


class ProtocolError(Exception):
    """A frame is malformed, oversized, or the peer closed mid-frame."""


def pack(message: dict[str, Any]) -> bytes:
    """One frame: length header and payload.

    Raises:
        ProtocolError: the payload is over `MAX_FRAME` or not marshallable.
    """
    try:
        payload = marshal.dumps(message)
    except ValueError as exc:
        raise ProtocolError(f"message cannot be sent: {exc}") from None
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"message of {len(payload)} bytes is over {MAX_FRAME}")
    return len(payload).to_bytes(HEADER, "big") + payload


def frame_size(header: bytes | bytearray) -> int:
    """The payload length a header announces, checked against `MAX_FRAME`."""
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes is over {MAX_FRAME}")
    return size


def unpack(payload: bytes | bytearray) -> dict[str, Any]:
    """Inverse of `pack` for the payload part."""
    try:
        message = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as exc:
        raise ProtocolError(f"bad frame: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ProtocolError("bad frame: not a message")
    return message


def read_frame(fd: int) -> dict[str, Any] | None:
    """Blocking read of one message from `fd`; None on a clean end of stream."""
    header = _read_exactly(fd, HEADER)
    if header is None:
        return None
    payload = _read_exactly(fd, frame_size(header))
    if payload is None:
        raise ProtocolError("peer closed mid-frame")
    return unpack(payload)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            if chunks:
                raise ProtocolError("peer closed mid-frame")
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def write_frame(fd: int, message: dict[str, Any]) -> None:
    """Blocking write of one message to `fd`."""
    view = memoryview(pack(message))
    while view:
        view = view[os.write(fd, view) :]
