"""The live brokers of a project: one link per broker, one task per source (SPEC 10).

The supervisor hands the hub each version of the project (`apply`, at start
and on every reload); the hub diffs the declarations (`plan`, pure) and
starts, restarts or stops links and sources to match. A source restarts
when its declaration or its broker's changes; a stopped source finishes the
publish it started and acknowledges only what is stored, and whatever it
held unacknowledged goes back to its broker. Sinks run as dispatchers of
the supervisor; the hub lends them its links (`link`). `describe` is what
`/_/health`, `fnrun ls` and `/_/metrics` show.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from runtime.brokers.links import Link
from runtime.brokers.sources import Publisher, Source
from runtime.brokers.specs import BrokerSpec, SinkSpec, SourceSpec
from runtime.brokers.urls import redact
from runtime.errors import Where

log = logging.getLogger("fnrun.brokers")

_NOWHERE = Where(Path(), 0, 0)


def _bare(spec: Any) -> Any:
    """`spec` without its position: moving a declaration is not changing it."""
    return dataclasses.replace(spec, where=_NOWHERE)


@dataclass(frozen=True)
class Plan:
    """What `apply` does, by name: links and sources to stop and to start."""

    stop_links: tuple[str, ...] = ()
    start_links: tuple[str, ...] = ()
    stop_sources: tuple[str, ...] = ()
    start_sources: tuple[str, ...] = ()


def plan(
    old_brokers: Mapping[str, BrokerSpec], old_sources: Mapping[str, SourceSpec],
    new_brokers: Mapping[str, BrokerSpec], new_sources: Mapping[str, SourceSpec],
) -> Plan:
    """Which links and sources change between two versions of the declarations."""
    def changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
        return {n for n in old.keys() & new.keys() if _bare(old[n]) != _bare(new[n])}

    links_changed = changed(old_brokers, new_brokers)
    stop_links = (old_brokers.keys() - new_brokers.keys()) | links_changed
    start_links = (new_brokers.keys() - old_brokers.keys()) | links_changed
    stop_sources = (old_sources.keys() - new_sources.keys()) | changed(old_sources, new_sources)
    stop_sources |= {n for n, s in old_sources.items() if s.broker in stop_links}
    start_sources = (new_sources.keys() - old_sources.keys()) | (stop_sources & new_sources.keys())
    return Plan(tuple(sorted(stop_links)), tuple(sorted(start_links)),
                tuple(sorted(stop_sources)), tuple(sorted(start_sources)))


@dataclass
class _Task:
    """A running link or source: cancel its scope, then wait for `done`."""

    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    done: anyio.Event = field(default_factory=anyio.Event)


class BrokerHub:
    """Owns every link and source of this node; one `apply` at a time."""

    def __init__(self, ingress: Publisher, node: str) -> None:
        self.ingress = ingress
        self.node = node
        self.brokers: dict[str, BrokerSpec] = {}
        self.links: dict[str, Link] = {}
        self.sources: dict[str, Source] = {}
        self.sinks: Mapping[str, SinkSpec] = {}
        self._tasks: dict[tuple[str, str], _Task] = {}
        self._imported: dict[str, int] = {}
        """Messages imported by each source's stopped runs (a counter outlives restarts)."""
        self._tg: anyio.abc.TaskGroup | None = None

    def link(self, broker: str) -> Link | None:
        """The live link of `broker` (None if it is not declared now)."""
        return self.links.get(broker)

    async def apply(
        self, tg: anyio.abc.TaskGroup, brokers: Mapping[str, BrokerSpec],
        sources: Mapping[str, SourceSpec], sinks: Mapping[str, SinkSpec],
    ) -> Plan:
        """Switch to these declarations; returns once what stops has stopped."""
        self._tg = tg
        old_sources = {n: s.spec for n, s in self.sources.items()}
        change = plan(self.brokers, old_sources, brokers, sources)
        async with anyio.create_task_group() as stopping:
            for name in change.stop_sources:
                stopping.start_soon(self._stop_source, name)
        async with anyio.create_task_group() as stopping:
            for name in change.stop_links:
                self.links.pop(name, None)
                stopping.start_soon(self._stop, ("link", name))
        self.brokers, self.sinks = dict(brokers), dict(sinks)
        for name in change.start_links:
            link = self.links[name] = Link(brokers[name])
            self._start(("link", name), link.run)
        for name in change.start_sources:
            spec = sources[name]
            known = self.links.get(spec.broker)
            if known is None:  # validation keeps this from happening; never crash on it
                log.error("source %s: broker %s is not declared", name, spec.broker)
                continue
            source = self.sources[name] = Source(spec, known, self.ingress, self.node)
            self._start(("source", name), source.run)
        if any((change.start_links, change.stop_links, change.start_sources,
                change.stop_sources)):
            log.info("brokers: %s", _describe(change))
        return change

    async def stop_sources(self) -> None:
        """Stop every source: each finishes what it started storing and acknowledges it."""
        async with anyio.create_task_group() as stopping:
            for name in list(self.sources):
                stopping.start_soon(self._stop_source, name)

    async def close(self) -> None:
        """Stop every source, then close every link."""
        await self.stop_sources()
        async with anyio.create_task_group() as stopping:
            for name in list(self.links):
                stopping.start_soon(self._stop, ("link", name))
        self.links.clear()

    def _start(self, key: tuple[str, str], run: Any) -> None:
        assert self._tg is not None
        task = self._tasks[key] = _Task()

        async def guarded() -> None:
            try:
                with task.scope:
                    await run()
            except Exception:  # never take the supervisor down; the state says what broke
                log.exception("%s %s stopped on an unexpected error", *key)
            finally:
                task.done.set()

        self._tg.start_soon(guarded)

    async def _stop_source(self, name: str) -> None:
        await self._stop(("source", name))
        source = self.sources.pop(name, None)
        if source is not None:
            self._imported[name] = self._imported.get(name, 0) + source.messages

    async def _stop(self, key: tuple[str, str]) -> None:
        task = self._tasks.pop(key, None)
        if task is not None:
            task.scope.cancel()
            with anyio.CancelScope(shield=True):
                await task.done.wait()

    def describe(self) -> dict[str, Any]:
        """Brokers, sources and sinks as declared, with their live state (health, ls)."""
        out = declared(self.brokers, {n: s.spec for n, s in self.sources.items()}, self.sinks)
        for name, broker in out["brokers"].items():
            link = self.links.get(name)
            if link is not None:
                status = link.status
                broker.update(state=status.state, since=status.since, error=status.error,
                              url=status.url or broker["url"])
        for name, source in out["sources"].items():
            live = self.sources[name]
            source.update(state=live.status.state, since=live.status.since,
                          error=live.status.error,
                          messages=self._imported.get(name, 0) + live.messages, lag=live.lag)
        return out


def declared(
    brokers: Mapping[str, BrokerSpec], sources: Mapping[str, SourceSpec],
    sinks: Mapping[str, SinkSpec],
) -> dict[str, Any]:
    """Brokers, sources and sinks as declared; `state` null where nothing runs them."""
    return {
        "brokers": {
            name: {"kind": spec.kind, "url": redact(spec.url) if spec.url else None,
                   "url_env": spec.url_env, "state": None, "since": None, "error": None}
            for name, spec in sorted(brokers.items())
        },
        "sources": {
            name: {"broker": spec.broker, "type": spec.type, "prefetch": spec.prefetch,
                   "state": None, "since": None, "error": None, "messages": None,
                   "lag": None}
            for name, spec in sorted(sources.items())
        },
        "sinks": {
            name: {"broker": spec.broker, "events": spec.events, "format": spec.format,
                   "pending": None}
            for name, spec in sorted(sinks.items())
        },
    }


def _describe(change: Plan) -> str:
    parts = []
    for verb, names in (("connecting", change.start_links), ("closed", change.stop_links),
                        ("started sources", change.start_sources),
                        ("stopped sources", change.stop_sources)):
        if names:
            parts.append(f"{verb} {', '.join(names)}")
    return "; ".join(parts)
