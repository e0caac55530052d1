"""What a function declares for flow control, and the key of an event under it.

Leaf module: the standard library only. Pure functions, tested from tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_KEY: tuple[str, ...] = ("extensions", "partitionkey")
"""Without `key:`, an event's key is its CloudEvents `partitionkey` extension."""
TOP_FIELDS = ("id", "type", "source", "subject", "data", "extensions")
"""Where a key path may start: the fields of an event's envelope (`Event.to_dict`)."""
SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,128}")
MAX_SEGMENTS = 16
MAX_KEY_CHARS = 256
"""A key longer than this is cut: keys name per-key state in the store."""


@dataclass(frozen=True)
class RateLimit:
    """At most `limit` starts per `period` seconds (per key when `per_key`)."""

    limit: int
    period: float


@dataclass(frozen=True)
class Batching:
    """Up to `max_size` events per invocation, the first waiting at most `max_wait` s."""

    max_size: int
    max_wait: float


@dataclass(frozen=True)
class FlowRules:
    """A function's flow-control declarations (SPEC 12), validated.

    `per_key` is None when runs of one key are not bounded; `order` implies
    `per_key` 1 and publish order within a key.
    """

    key: tuple[str, ...] = DEFAULT_KEY
    keyed: bool = False
    """`key:` was declared (rate limits are then per key)."""
    order: bool = False
    per_key: int | None = None
    limit: int = 1
    """Most runs at once in all (the function's `concurrency`)."""
    rate: RateLimit | None = None
    debounce: float | None = None
    """Seconds of quiet per key before its last event runs; earlier ones are superseded."""
    batch: Batching | None = None

    @property
    def by_key(self) -> bool:
        """Whether claims must look at keys or rates (else the store's own claim will do)."""
        return bool(self.keyed or self.order or self.per_key or self.rate or self.debounce)

    @property
    def most_running(self) -> int:
        """Most deliveries running at once: `limit` invocations, each of a batch."""
        return self.limit * (self.batch.max_size if self.batch else 1)

    @property
    def key_limit(self) -> int | None:
        """Most runs of one key at once, None for unbounded."""
        return 1 if self.order else self.per_key


def key_path_problem(text: str) -> str | None:
    """What is wrong with a dotted key path like `data.customer_id`; None if nothing."""
    parts = text.split(".")
    if parts[0] not in TOP_FIELDS:
        return (f"key {text!r} must start with one of {', '.join(TOP_FIELDS)}"
                " (like data.customer_id or extensions.partitionkey)")
    if len(parts) > MAX_SEGMENTS:
        return f"key {text!r} has more than {MAX_SEGMENTS} segments"
    for part in parts:
        if not SEGMENT.fullmatch(part):
            return f"key {text!r}: segment {part!r} must be letters, digits, '_' or '-'"
    if parts[0] in ("extensions", "data") or len(parts) == 1:
        return None
    return f"key {text!r}: {parts[0]} has no fields (use {parts[0]} alone)"


def key_of(envelope: Mapping[str, Any], path: tuple[str, ...]) -> str:
    """The key of an event (its envelope, `Event.to_dict`) under a key path.

    A missing field, or null, is the empty key (those events share one key).
    Strings are taken as they are, other JSON values as compact JSON.
    """
    value: Any = envelope
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return ""
        if value is None:
            return ""
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int):
        text = str(value)
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True)
    return text[:MAX_KEY_CHARS]
