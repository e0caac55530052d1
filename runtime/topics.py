"""Topic patterns over dot-separated event types (SPEC 4): `*` one segment, `**` zero or more.

Leaf module: the event trigger routes with it, and the stores filter run
records by event type with it (`Store.runs(event_type=...)`).
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1024)
def _segments(pattern: str) -> tuple[str, ...]:
    # Collapse runs of `**`: they match what one `**` matches, and fewer
    # wildcards keep the table below small.
    out: list[str] = []
    for segment in pattern.split("."):
        if segment == "**" and out and out[-1] == "**":
            continue
        out.append(segment)
    return tuple(out)


def matches(pattern: str, event_type: str) -> bool:
    """Whether `event_type` matches `pattern` (`*` one segment, `**` zero or more)."""
    pat = _segments(pattern)
    typ = event_type.split(".")
    # reach[j]: the pattern prefix seen so far can consume exactly typ[:j].
    reach = [True] + [False] * len(typ)
    for segment in pat:
        if segment == "**":
            for j in range(1, len(typ) + 1):
                reach[j] = reach[j] or reach[j - 1]
            continue
        new = [False] * (len(typ) + 1)
        for j in range(1, len(typ) + 1):
            if reach[j - 1] and (segment == "*" or segment == typ[j - 1]):
                new[j] = True
        reach = new
    return reach[-1]
