"""The event trigger: topic patterns, fan-out routing and one-time backfills.

`event: order.created` or `event: {type: "order.*", from: beginning}` (SPEC
section 4). Types are dot-separated segments; in a pattern `*` stands for
exactly one segment and `**` for zero or more.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal, cast

import anyio
import yaml

from runtime.errors import FnrunError
from runtime.ingress import Ingress
from runtime.project.yamlnodes import Node, Reader
from runtime.specs import Project, TriggerSpec
from runtime.topics import matches as matches  # re-exported: routing and replay use it

log = logging.getLogger("fnrun.triggers.event")

Start = Literal["now", "beginning"]
MAX_PATTERN = 255
BACKFILL_TTL = 10 * 365 * 86400.0
"""Backfill markers outlive any retention: a backfill happens once, ever."""
_SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
_ROUTE_CACHE = 4096
_BACKFILL_TRIES = 5


@dataclass(frozen=True)
class EventSpec(TriggerSpec):
    """`event:` declaration: which event types reach the function, and since when."""

    kind: ClassVar[str] = "event"
    pattern: str = ""
    start: Start = "now"


def check_pattern(pattern: str) -> str | None:
    """Why `pattern` is not a valid topic pattern, or None if it is."""
    if not pattern:
        return "event pattern must not be empty"
    if len(pattern) > MAX_PATTERN:
        return f"event pattern is longer than {MAX_PATTERN} characters"
    for segment in pattern.split("."):
        if segment in ("*", "**") or _SEGMENT.match(segment):
            continue
        if not segment:
            return f"bad event pattern {pattern!r}: empty segment"
        return (
            f"bad event pattern {pattern!r}: segment {segment!r} must be letters, digits,"
            " '_' or '-', or a whole '*' or '**'"
        )
    return None


def parse(reader: Reader, node: Node) -> EventSpec:
    """Validate `event: PATTERN` or `event: {type: PATTERN, from: now|beginning}`."""
    start: Start = "now"
    target = node
    if isinstance(node, yaml.MappingNode):
        fields = reader.mapping(node, "event trigger", allowed=("type", "from"), required=("type",))
        target = fields["type"]
        if "from" in fields:
            value = reader.string(fields["from"], "event trigger 'from'")
            if value not in ("now", "beginning"):
                message = f"'from' must be now or beginning, not {value!r}"
                raise reader.error(fields["from"], message)
            start = cast(Start, value)
    pattern = reader.string(target, "event pattern")
    problem = check_pattern(pattern)
    if problem:
        raise reader.error(target, problem)
    return EventSpec(where=reader.where(node), pattern=pattern, start=start)


def patterns_of(project: Project) -> Iterator[tuple[str, str]]:
    """Every (subscriber, pattern) pair: functions' `event:` triggers, and sinks (SPEC 10),
    which get deliveries like functions."""
    for name, spec in project.functions.items():
        for t in spec.triggers_of("event"):
            yield name, cast(EventSpec, t).pattern
    for name, sink in project.sinks.items():
        yield name, sink.events


class Router:
    """Answers "which functions get this event type" fast, from one project."""

    def __init__(self, project: Project) -> None:
        self._exact: dict[str, set[str]] = {}
        self._wild: list[tuple[str, str]] = []
        for name, pattern in patterns_of(project):
            if "*" in pattern:
                self._wild.append((pattern, name))
            else:
                self._exact.setdefault(pattern, set()).add(name)
        self._cache: dict[str, list[str]] = {}

    def targets(self, event_type: str) -> list[str]:
        """Names of the functions with a pattern matching `event_type`, sorted."""
        hit = self._cache.get(event_type)
        if hit is not None:
            return list(hit)
        found = set(self._exact.get(event_type, ()))
        found.update(name for pattern, name in self._wild if matches(pattern, event_type))
        result = sorted(found)
        if len(self._cache) >= _ROUTE_CACHE:
            # Event types are user-controlled: bound the cache, start over when full.
            self._cache.clear()
        self._cache[event_type] = result
        return list(result)


def backfills(project: Project) -> set[tuple[str, str]]:
    """The (function, pattern) pairs that ask for a backfill (`from: beginning`)."""
    return {
        (name, cast(EventSpec, t).pattern)
        for name, spec in project.functions.items()
        for t in spec.triggers_of("event")
        if cast(EventSpec, t).start == "beginning"
    }


class Trigger:
    """The live event binding: routing for the ingress, backfills for new functions."""

    def __init__(self, ingress: Ingress) -> None:
        self.ingress = ingress
        self._router: Router | None = None
        self._bound: set[tuple[str, str]] = set()
        # Pending backfills are bounded by the declared (function, pattern) pairs.
        self._pending: dict[tuple[str, str], None] = {}
        self._wake = anyio.Event()

    def bind(self, project: Project) -> None:
        """Swap in a router for `project`; queue backfills for newly bound pairs."""
        self._router = Router(project)
        wanted = backfills(project)
        for pair in sorted(wanted - self._bound):
            self._pending[pair] = None
        for pair in self._bound - wanted:
            self._pending.pop(pair, None)
        self._bound = wanted
        if self._pending:
            self._wake.set()

    def targets(self, event_type: str) -> list[str]:
        """The functions whose event patterns match `event_type` right now."""
        return self._router.targets(event_type) if self._router else []

    async def run(self) -> None:
        """Perform pending backfills, then wait for the next bind to queue more."""
        while True:
            while self._pending:
                pair = next(iter(self._pending))
                del self._pending[pair]
                await self.backfill(*pair)
            await self._wake.wait()
            self._wake = anyio.Event()

    async def backfill(self, function: str, pattern: str) -> int:
        """Replay retained events matching `pattern` to `function`, once ever.

        The marker is written first so that it works as a claim: in a cluster
        only the node that wins `remember` replays. Returns how many
        deliveries were made (0 when the backfill had happened already).
        """
        store = self.ingress.store
        key = f"backfill:{function}:{pattern}"
        if await store.remember(key, True, ttl=BACKFILL_TTL) is not None:
            return 0
        accepts = functools.partial(matches, pattern)
        for attempt in range(1, _BACKFILL_TRIES + 1):
            try:
                count = await store.replay(
                    function, since=0.0, matches=accepts, now=self.ingress.clock.now()
                )
            except FnrunError as exc:
                # The claim is taken: retry here rather than lose the backfill.
                log.warning("backfill of %s (%s) failed, attempt %d: %s",
                            function, pattern, attempt, exc)
                await self.ingress.clock.sleep(min(30.0, 2.0**attempt))
                continue
            log.info("backfilled %d events of %r to %s", count, pattern, function)
            return count
        log.error("backfill of %s (%s) gave up; run `fnrun replay --function %s`",
                  function, pattern, function)
        return 0
