"""Reading flow-control keys of a function's YAML (SPEC 12) into `FlowRules`.

Every mistake is a `ManifestError` at the node that holds it (FILE:LINE:COL).
"""

from __future__ import annotations

from collections.abc import Mapping

from runtime.flow.rules import DEFAULT_KEY, Batching, FlowRules, RateLimit, key_path_problem
from runtime.project.settings_loader import MAX_CONCURRENCY
from runtime.project.yamlnodes import Node, Reader

FLOW_KEYS = ("key", "order", "rate_limit", "debounce", "batch")
"""Function keys that only flow control reads (`concurrency` may also be a mapping)."""
MAX_RATE = 1_000_000
MAX_DEBOUNCE = 7 * 86400.0
MAX_BATCH = 10_000
MAX_BATCH_WAIT = 3600.0


def declares_flow(keys: Mapping[str, Node]) -> bool:
    """Whether a function's mapping declares any flow rule."""
    concurrency = keys.get("concurrency")
    is_mapping = concurrency is not None and concurrency.tag == "tag:yaml.org,2002:map"
    return is_mapping or any(k in keys for k in FLOW_KEYS)


def concurrency_limits(reader: Reader, node: Node, owner: str) -> tuple[int, int | None]:
    """`concurrency: {limit, per_key}`: most runs in all, most runs of one key."""
    what = f"{owner}.concurrency"
    fields = reader.mapping(node, what, allowed=("limit", "per_key"), required=("limit",))
    limit = reader.integer(fields["limit"], f"{what}.limit", minimum=1)
    if limit > MAX_CONCURRENCY:
        raise reader.error(fields["limit"], f"{what}.limit must be at most {MAX_CONCURRENCY}")
    per_key = None
    if "per_key" in fields:
        per_key = reader.integer(fields["per_key"], f"{what}.per_key", minimum=1)
        if per_key > limit:
            raise reader.error(fields["per_key"], f"{what}.per_key must not exceed limit")
    return limit, per_key


def rate_limit(reader: Reader, node: Node, owner: str) -> RateLimit:
    what = f"{owner}.rate_limit"
    fields = reader.mapping(node, what, allowed=("limit", "period"), required=("limit", "period"))
    limit = reader.integer(fields["limit"], f"{what}.limit", minimum=1)
    if limit > MAX_RATE:
        raise reader.error(fields["limit"], f"{what}.limit must be at most {MAX_RATE}")
    period = reader.duration(fields["period"], f"{what}.period")
    if not 0.001 <= period <= 86400 * 7:
        raise reader.error(fields["period"], f"{what}.period must be between 1ms and 7d")
    return RateLimit(limit, period)


def flow_rules(
    reader: Reader, keys: Mapping[str, Node], owner: str, concurrency: int
) -> FlowRules:
    """The flow rules a function's mapping declares (`declares_flow` said it has some).

    `concurrency` is the function's plain concurrency (its own, or the default),
    used as `limit` when `concurrency` is not a mapping.
    """
    key, keyed = DEFAULT_KEY, "key" in keys
    if keyed:
        text = reader.string(keys["key"], f"{owner}.key")
        problem = key_path_problem(text)
        if problem:
            raise reader.error(keys["key"], problem)
        key = tuple(text.split("."))
    order = False
    if "order" in keys:
        if reader.string(keys["order"], f"{owner}.order") != "key":
            raise reader.error(keys["order"], f"{owner}.order must be 'key' (one at a time "
                                              "per key, in publish order)")
        order = True
    limit, per_key = concurrency, None
    node = keys.get("concurrency")
    if node is not None and node.tag == "tag:yaml.org,2002:map":
        limit, per_key = concurrency_limits(reader, node, owner)
        if order and per_key not in (None, 1):
            raise reader.error(node, f"{owner}: order: key runs one at a time per key;"
                                     " per_key must be 1 or left out")
    rate = rate_limit(reader, keys["rate_limit"], owner) if "rate_limit" in keys else None
    debounce = None
    if "debounce" in keys:
        debounce = reader.duration(keys["debounce"], f"{owner}.debounce")
        if not 0.001 <= debounce <= MAX_DEBOUNCE:
            raise reader.error(keys["debounce"], f"{owner}.debounce must be between 1ms and 7d")
    batch = batching(reader, keys["batch"], owner) if "batch" in keys else None
    return FlowRules(key=key, keyed=keyed, order=order, per_key=per_key, limit=limit, rate=rate,
                     debounce=debounce, batch=batch)


def batching(reader: Reader, node: Node, owner: str) -> Batching:
    what = f"{owner}.batch"
    fields = reader.mapping(node, what, allowed=("max_size", "max_wait"), required=("max_size",))
    size = reader.integer(fields["max_size"], f"{what}.max_size", minimum=1)
    if size > MAX_BATCH:
        raise reader.error(fields["max_size"], f"{what}.max_size must be at most {MAX_BATCH}")
    wait = 0.2
    if "max_wait" in fields:
        wait = reader.duration(fields["max_wait"], f"{what}.max_wait")
        if not 0 <= wait <= MAX_BATCH_WAIT:
            raise reader.error(fields["max_wait"], f"{what}.max_wait must be between 0s and 1h")
    return Batching(size, wait)
