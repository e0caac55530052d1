"""Durations and sizes as users write them: 500ms, 30s, 5m, 1h, 7d; 512KiB, 1MiB."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$")
_SIZE_UNITS = {
    None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2,
    "GB": 1000**3, "GiB": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from `500ms`, `30s`, `5m`, `1h`, `7d` or a plain number.

    Raises:
        ValueError: with a message fit to show the user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 30s, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"bad duration {value!r} (use e.g. 500ms, 30s, 5m, 1h, 7d)")
        seconds = float(match[1]) * _DURATION_UNITS[match[2]]
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `1MiB`, `512KiB`, `10MB` or a plain integer."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 1MiB, got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if not match:
            raise ValueError(f"bad size {value!r} (use e.g. 512KiB, 1MiB, 10MB)")
        size = int(match[1]) * _SIZE_UNITS[match[2]]
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def format_size(size: int) -> str:
    """Bytes as users write them: `1 MiB`, `16 KiB`, `1500 bytes` (exact, never rounded)."""
    for unit in ("GiB", "MiB", "KiB"):
        if size >= _SIZE_UNITS[unit] and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]} {unit}"
    return f"{size} byte{'s' if size != 1 else ''}"


def parse_since(raw: str | None, now: float) -> float:
    """`--since 1h` or `--since 2024-05-01T12:00` as epoch seconds; 0 = all retained."""
    if raw is None:
        return 0.0
    try:
        return max(0.0, now - parse_duration(raw))  # `--since 100000d`: everything
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is neither a duration (1h) nor an ISO time") from None
    try:
        moment = parsed.timestamp()
    except (ValueError, OverflowError, OSError):  # year 1 or 9999 in a local zone
        moment = 0.0 if parsed.year < 1970 else math.inf
    if moment > now:
        now_text = datetime.fromtimestamp(now, UTC).isoformat()
        raise ValueError(f"{raw!r} is in the future (now is {now_text})")
    return max(0.0, moment)
