"""The SQLite store's run record queries (SPEC 11): filtered, paged by `seq`, server-side.

Records are rows of `history` (see `sqlite_schema`), written by the outcome's
own commit; `seq` is the row id. Each filter has an index walked newest
first, so a page costs about `limit` rows read whatever the table holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from runtime.store.runs import has_wildcard
from runtime.store.sqlite_schema import RUN_SELECT

TOPIC_FUNCTION = "fnrun_topic"
"""SQL function `fnrun_topic(pattern, type)` on the read connection (`runtime.topics`)."""


def runs_query(
    *, function: str | None, status: str | None, event_type: str | None,
    event_id: str | None, since: float | None, before_seq: int | None,
    after_seq: int | None, limit: int,
) -> tuple[str, dict[str, Any], bool]:
    """The SELECT for `Store.runs`, its parameters, and whether its rows come oldest first."""
    where: list[str] = []
    params: dict[str, Any] = {"limit": max(0, limit)}
    for column, value in (("function", function), ("status", status), ("event_id", event_id)):
        if value is not None:
            where.append(f"{column} = :{column}")
            params[column] = value
    if status is not None and status != "ok":
        where.append("status != 'ok'")  # as history_failures says: the planner may use it
    if event_type is not None:
        params["event_type"] = event_type
        if has_wildcard(event_type):
            # GLOB (in C) keeps a superset; the exact match is asked only of those.
            params["type_glob"] = type_glob(event_type)
            where.append("event_type GLOB :type_glob"
                         f" AND {TOPIC_FUNCTION}(:event_type, event_type)")
        else:
            where.append("event_type = :event_type")
    if since is not None:
        where.append("started >= :since")
        params["since"] = since
    if before_seq is not None:
        where.append("id < :before")
        params["before"] = before_seq
    if after_seq is not None:
        where.append("id > :after")
        params["after"] = after_seq
    # Right after `after_seq` when only it bounds the page: a follower misses nothing.
    ascending = after_seq is not None and before_seq is None
    sql = RUN_SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY id {'ASC' if ascending else 'DESC'} LIMIT :limit"
    return sql, params, ascending


def type_glob(pattern: str) -> str:
    """A GLOB matching every type `pattern` matches (and maybe more): each `*` or `**`
    becomes `*`, and GLOB's own special characters stand for themselves."""
    escaped = "".join(f"[{c}]" if c in "?[]" else c for c in pattern)
    out = ".".join("*" if segment in ("*", "**") else segment for segment in escaped.split("."))
    # "a.**" also matches "a" (`**` is zero or more segments): the dot goes with it.
    return out.replace(".*", "*") if "**" in pattern else out


def runs_for_events_query(event_ids: Sequence[str]) -> tuple[str, tuple[str]]:
    return (RUN_SELECT + " WHERE event_id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json.dumps(list(event_ids)),))


RUN_BY_INVOCATION = RUN_SELECT + " WHERE invocation = ? ORDER BY id DESC LIMIT 1"
"""Walks back from the newest record, so a recent run is found at once and the oldest
of 100,000 in ~35 ms (bench/README.md): no index on every outcome's commit for it."""
