"""One named broker's connection, kept up: connect, notice loss, reconnect with backoff.

A `Link` owns its adapter (`base.Broker`) and its state, which `/_/health`,
`fnrun ls` and `/_/metrics` show: connecting, up or down, with the last
error and since when. Sources and sinks ask it for the connected adapter
and report a lost one back (`lost`); the link then closes it and opens a
new one after a delay that doubles from `MIN_BACKOFF` to `MAX_BACKOFF`
with full jitter, so that many nodes do not come back in step. Nothing
here raises into the supervisor: an error is a state.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import anyio

from runtime.brokers.base import Broker, BrokerError, open_broker
from runtime.brokers.specs import BrokerSpec
from runtime.brokers.urls import redact

log = logging.getLogger("fnrun.brokers")

MIN_BACKOFF, MAX_BACKOFF = 0.5, 30.0
State = Literal["connecting", "up", "down"]


def backoff(failures: int, rand: Callable[[], float] = random.random) -> float:
    """The wait before reconnect attempt `failures + 1`: doubling, capped, full jitter
    over its upper half (never less than half the step, so a flapping broker is not
    hammered)."""
    step = min(MAX_BACKOFF, MIN_BACKOFF * 2.0 ** min(max(failures - 1, 0), 16))
    return step / 2 + rand() * step / 2


@dataclass(frozen=True)
class Status:
    """A link's state as shown to users; `since` is a wall-clock time (epoch seconds)."""

    state: State
    since: float
    error: str | None = None
    url: str | None = None


def resolve_url(spec: BrokerSpec, environ: Mapping[str, str] = os.environ) -> str:
    """The URL to connect to (raises `BrokerError` when its variable is not set)."""
    if spec.url is not None:
        return spec.url
    value = environ.get(spec.url_env or "")
    if not value:
        raise BrokerError(f"broker {spec.name!r}: environment variable {spec.url_env} is not set")
    return value


class Link:
    """The connection of one declared broker, reconnected until `run` is cancelled."""

    def __init__(self, spec: BrokerSpec, opener: Callable[[str], Broker] = open_broker) -> None:
        self.spec = spec
        self._open = opener
        self._broker: Broker | None = None
        self._up = anyio.Event()
        self._lost = anyio.Event()
        self._failures = 0
        self.status = Status("connecting", time.time())
        self.connects = 0
        """How many times it connected (1 after the first success)."""

    @property
    def kind(self) -> str | None:
        """The adapter's CloudEvents binding once connected (`mqtt3` for MQTT 3.1.1)."""
        return self._broker.binding if self._broker is not None else None

    def current(self) -> Broker | None:
        """The connected adapter, or None while connecting or down."""
        return self._broker if self.status.state == "up" else None

    async def broker(self) -> Broker:
        """Wait until connected; the adapter."""
        while True:
            broker = self.current()
            if broker is not None:
                return broker
            await self._up.wait()

    def lost(self, broker: Broker, error: BaseException) -> None:
        """`broker` failed (a `BrokerUnavailable` from it): reconnect, unless already doing so."""
        if broker is self._broker and self.status.state == "up":
            self._set("down", str(error))
            self._up = anyio.Event()
            self._lost.set()

    async def run(self) -> None:
        """Connect, wait for a loss, close, back off, again; until cancelled (then close)."""
        try:
            while True:
                broker = await self._connect()
                if broker is None:
                    await anyio.sleep(backoff(self._failures))
                    continue
                await self._lost.wait()
                self._lost = anyio.Event()
                await self._close(broker)
                self._failures = 1
                await anyio.sleep(backoff(self._failures))
        finally:
            broker, self._broker = self._broker, None
            if broker is not None:
                with anyio.CancelScope(shield=True):
                    await self._close(broker)

    async def _connect(self) -> Broker | None:
        self._set("connecting", self.status.error)
        try:
            url = resolve_url(self.spec)
            self.status = Status("connecting", self.status.since, self.status.error, redact(url))
            broker = self._open(url)
            with anyio.fail_after(30):
                await broker.connect()
        except (BrokerError, TimeoutError, OSError) as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 10 == 0:
                log.warning("broker %s: %s (attempt %d; trying again)", self.spec.name,
                            exc or type(exc).__name__, self._failures)
            self._set("down", str(exc) or type(exc).__name__)
            return None
        if self._failures:
            log.info("broker %s: connected again (after %d failed attempts)", self.spec.name,
                     self._failures)
        self._failures = 0
        self._broker = broker
        self.connects += 1
        self._set("up", None)
        self._up.set()
        return broker

    async def _close(self, broker: Broker) -> None:
        if broker is self._broker:
            self._broker = None
        try:
            with anyio.move_on_after(10):
                await broker.close()
        except Exception as exc:  # noqa: BLE001 - a dead connection may fail its close; gone anyway
            log.debug("broker %s: close failed: %s", self.spec.name, exc)

    def _set(self, state: State, error: str | None) -> None:
        since = self.status.since if state == self.status.state else time.time()
        self.status = Status(state, since, error, self.status.url)
