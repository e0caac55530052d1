"""The composition root: wires store, pools, dispatchers, triggers and HTTP.

Only the CLI imports this module. Everything runs in one anyio task group
that drains on stop (SPEC 5.7): stop taking work, let running invocations
finish within the grace period, then kill them (their deliveries stay
`running` or are recorded failed, and run again on the next start).
"""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from runtime import plugins
from runtime.brokers.hub import BrokerHub
from runtime.brokers.sinks import SinkPublisher
from runtime.brokers.sources import node_name
from runtime.brokers.specs import SinkSpec
from runtime.clock import Clock, SystemClock
from runtime.delivery.dispatcher import Dispatcher
from runtime.delivery.intake import Intake, Phase
from runtime.errors import UsageError
from runtime.flow.batch import flow_dispatcher
from runtime.http.catalog import base_url, webhook_lines
from runtime.http.view import LiveView
from runtime.ingress import HttpTrigger, Router, Trigger
from runtime.metrics import Metrics
from runtime.pool import sandbox
from runtime.pool.launcher import FORK_SERVER
from runtime.pool.warmup import LoadFailure, warm_all
from runtime.pool.workerpool import WorkerPool
from runtime.project.manifest import function_fingerprint, load_project, scan_files
from runtime.project.registry import Diff, diff
from runtime.project.reload_plan import ReloadPlan, Serving
from runtime.project.settings_loader import serving_problem
from runtime.specs import FunctionSpec, Project, Settings
from runtime.worker import confine

if TYPE_CHECKING:
    from runtime.http.server import Listening

log = logging.getLogger("fnrun")

RETENTION_INTERVAL = 300.0
GC_YOUNG_THRESHOLD = 10_000
"""Net new container objects between young-generation collections (Python's default
is 700). Under load the requests and deliveries in flight hold a few thousand such
objects at once, freed by reference counting when each finishes, and at 700 the
collector mostly scanned them. Async webhooks under wrk (a 2 s warm-up and 5 s):
at 700, 787 collections took 312 ms, about 4% of the supervisor's CPU; at 10,000,
88 took 15 ms."""
IDLE_POLL = 300.0
"""Longest an idle dispatcher sleeps without a wake-up. Stores wake dispatchers
when work arrives (and poll for other processes' work themselves), so this is
only a safety net; a short one costs a claim per function per period (with
1,000 functions, 30 s cost 3% of a core at idle)."""


@dataclass
class Running:
    """One function live on this node: its pool and its delivery loop."""

    spec: FunctionSpec
    fingerprint: str
    pool: WorkerPool
    dispatcher: Dispatcher
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


@dataclass
class RunningSink:
    """One sink live on this node (SPEC 10): its delivery loop, publishing to its broker."""

    spec: SinkSpec
    pool: SinkPublisher
    dispatcher: Dispatcher
    done: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)


class Supervisor:
    """Runs a project until told to stop: composition, lifecycle and the one writer of what
    runs. Events come in through its `ingress`; `/_/` reads it through its `view`."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        grace: float = 30.0,
        handle_signals: bool = True,
        reload: bool = False,
        freeze_heap: bool = False,
        isolate: bool = False,
        announce: Callable[[LiveView], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.announce = announce
        """Shows the project once it serves (the CLI passes `fnrun dev`'s banner, which
        lists the webhooks); without it the webhooks are logged."""
        self.freeze_heap = freeze_heap
        """Whether this supervisor owns its process: see `_serve`."""
        self.isolate = isolate
        """Whether workers are confined and the process closed to them (SPEC 6), as
        `fnrun run` does; both change process-wide state, so only an owner may."""
        self.reload = reload
        self.clock: Clock = clock or SystemClock()
        self.grace = grace
        self.handle_signals = handle_signals
        self.metrics = Metrics()
        self.store = plugins.store_for(settings.store)
        self.ingress = Intake(self.store, self.clock, self.metrics, self._pool_of)
        """Where events come in: triggers, the HTTP API and broker sources publish there."""
        self.project: Project | None = None
        """Every function declared and bound (events for it are stored), served or not."""
        self.declaration_errors: tuple[str, ...] = ()
        """FILE:LINE:COL lines of the files left out (or kept at their last good version)."""
        self.load_failures: dict[str, LoadFailure] = {}
        """Functions of `project` whose newest code does not load: each serves its last
        good version, or nothing (its deliveries wait in the store, SPEC 5.5)."""
        self.http_server: Listening | None = None
        """Where HTTP is served, once it is (the real port when 0 was asked for)."""
        self._functions: dict[str, Running] = {}
        self._sinks: dict[str, RunningSink] = {}
        self.brokers = BrokerHub(self.ingress, node_name(settings.http.port))
        """Links to the project's brokers and its sources (SPEC 10)."""
        self._triggers: dict[str, Trigger] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop = anyio.Event()
        self.metrics.set_sources(self._depth, self.live_workers)
        self.metrics.brokers.view = self.brokers.describe
        self.view = LiveView(self, self.ingress, self.metrics, self.brokers, self.clock)
        """What the HTTP API, the dashboard and the banner read of this node."""

    # -- what runs, as the view reads it ---------------------------------------

    @property
    def draining(self) -> bool:
        return self.ingress.phase is Phase.STOPPING

    def live_workers(self) -> Mapping[str, int]:
        return {name: r.pool.live_workers for name, r in self._functions.items()}

    def claim_error(self) -> str | None:
        troubles = (r.dispatcher.store_error for r in self._functions.values())
        return next((t for t in troubles if t is not None), None)

    def _pool_of(self, function: str) -> WorkerPool | None:
        running = self._functions.get(function)
        return running.pool if running is not None else None

    async def _depth(self) -> Mapping[str, tuple[int, int, int]]:
        counts = await self.store.counts()
        return {name: (c.pending, c.running, c.dead) for name, c in counts.items()}

    # -- lifecycle ------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a graceful stop (what SIGTERM does)."""
        self._stop.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Load, bind, serve, and drain on stop."""
        from runtime.http import app as http  # the HTTP stack loads only where it serves

        # One clear line for a host that cannot be bound (or a blank token), where the
        # token rule below would say "set FNRUN_TOKEN"; a thread, as a name is looked up.
        problem = await anyio.to_thread.run_sync(serving_problem, self.settings.http.host)
        if problem:
            raise UsageError(problem)
        http.check_bind(self.settings)  # refuse an unsafe address before touching anything
        project = self._declared()
        if self.isolate:
            # Before any worker exists: no same-user process can read this one's
            # environment (FNRUN_TOKEN, every function's secrets) or memory.
            confine.undumpable()
        try:
            await self._serve(project, task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(FORK_SERVER.stop)  # the pools are closed

    def _declared(self) -> Project:
        """The project to start: all of it, or (reloading) what loads, the errors reported.

        Without reload a project with errors is refused, as `fnrun validate`
        refuses it: nothing would pick up the fix. With reload, the valid
        files' functions start and the fix is picked up on save.
        """
        if not self.reload:
            return load_project(self.settings)
        scan = scan_files(self.settings)
        self.declaration_errors = tuple(str(e) for e in scan.errors)
        for line in self.declaration_errors:
            log.error("%s", line)
        return scan.project

    async def _load(self, project: Project) -> tuple[dict[str, WorkerPool], dict[str, str]]:
        """Start each distinct handler once in a worker: (warm pools, fingerprints).

        Those that do not load are recorded in `load_failures` and not started.
        Fingerprints are taken before any code loads (see the reloader).
        """
        fingerprints = {n: function_fingerprint(s) for n, s in project.functions.items()}
        pools, failed = await warm_all(
            list(project.functions.values()), self.new_pool, lambda pool: pool.warm()
        )
        self.load_failures = {n: LoadFailure(fingerprints[n], line) for n, line in failed.items()}
        if failed:
            log.warning("%d function%s cannot load: %s (see /_/health)", len(failed),
                        "" if len(failed) == 1 else "s", ", ".join(sorted(failed)))
        return pools, fingerprints

    async def _serve(self, project: Project, task_status: anyio.abc.TaskStatus[None]) -> None:
        async with self.store:
            self.store.configure(_leases(project))
            recovered = await self.store.recover()
            if recovered:
                log.warning("recovered %d deliveries left running by a previous run", recovered)
            if self.isolate:  # the store's files (its lock too) exist now: seal and hide them
                await anyio.to_thread.run_sync(self._confine_workers)
            FORK_SERVER.start()  # so that even the first workers fork from the template
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if self.handle_signals:
                    tg.start_soon(self._watch_signals)
                pools, fingerprints = await self._load(project)
                self._bind_triggers(project)
                for trigger in self._triggers.values():
                    tg.start_soon(trigger.run)
                for name, spec in project.functions.items():
                    if name not in self.load_failures:
                        self._start_function(spec, fingerprints[name], pools.get(name))
                await self._start_http(tg)
                if self.http_server is not None:  # the port served names this node's consumers
                    self.brokers.node = node_name(self.http_server.port)
                await self._apply_brokers(project)
                tg.start_soon(self._retention_loop)
                tg.start_soon(self.ingress.calls.run)
                if self.freeze_heap:
                    # What startup loaded lives as long as the process: keep it
                    # out of the collector's full passes, each of which stalled
                    # the event loop 20-30 ms every few seconds under load.
                    gc.freeze()
                    _, older, oldest = gc.get_threshold()
                    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
                self.ingress.serve()
                log.info("ready: %d functions, serving %s", len(project.functions),
                         base_url(self.view.served))
                if self.announce is None:
                    for line in webhook_lines(project, self.view.served):
                        log.info("%s", line)
                if self.reload:
                    from runtime.project.reloader import (
                        Reloader,  # watchfiles loads only when reloading
                    )

                    # The reloader announces first: no reload line comes before the banner.
                    tg.start_soon(Reloader(self, self.settings, announce=self._announce).run)
                else:
                    tg.start_soon(self._announce)
                task_status.started()
                await self._stop.wait()
                await self._drain()
                tg.cancel_scope.cancel()

    async def _announce(self) -> None:
        if self.announce is not None:
            await self.announce(self.view)

    def _confine_workers(self) -> None:
        """Blocking: close the store to workers and plan their sandbox (`runtime.pool.sandbox`)."""
        sandbox.seal_store(self.settings)
        planned = sandbox.plan(self.settings)
        FORK_SERVER.configure(planned)
        log.debug("%s", sandbox.describe(planned))
        for note in planned.notes:
            log.warning("isolation: %s", note)

    def serving(self) -> Serving:
        """What runs now, as the reloader plans from it (a snapshot: it changes only in `apply`)."""
        return Serving(
            self.project, {name: r.fingerprint for name, r in self._functions.items()},
            dict(self.load_failures), bool(self.declaration_errors or self.load_failures),
        )

    async def apply(self, plan: ReloadPlan) -> Diff:
        """Apply one hot reload's plan: the only way a reload changes this supervisor.

        `plan.errors` become the declaration errors shown; a skipped reload
        (`plan.project` None) changes nothing else. Otherwise the supervisor
        runs under `plan.settings` and switches function by function:
        `plan.project` is every function to bind (events for it are stored);
        `plan.serve` has the fingerprints of the versions to serve: a function
        absent there is not served (its code does not load), one whose
        fingerprint is the running one keeps running untouched. Only added and
        changed functions get new workers (`plan.pools`, already warmed, so
        their first invocation does not wait for a worker to start); a changed
        or removed function's old dispatcher stops taking work and its running
        invocations finish under the old version (each invocation runs under
        one version). Deliveries live in the store, so nothing pending is lost:
        a function not served keeps its deliveries until it comes back (SPEC 5.5).
        """
        self.declaration_errors = plan.errors
        if plan.project is None or plan.settings is None:
            return Diff()
        assert self._tg is not None, "apply() needs a running supervisor"
        self.settings = plan.settings
        project, fingerprints = plan.project, plan.serve
        change = diff({n: r.fingerprint for n, r in self._functions.items()}, fingerprints)
        self.store.configure(_leases(project))
        self._bind_triggers(project)
        for name in change.removed + change.changed:
            self._tg.start_soon(self._stop_loop, self._functions.pop(name), self.grace)
        warmed = dict(plan.pools)
        for name in change.added + change.changed:
            self._start_function(
                project.functions[name], fingerprints[name], warmed.pop(name, None)
            )
        for unused in warmed.values():
            self._tg.start_soon(unused.aclose, 0.0)
        await self._apply_brokers(project)
        self.load_failures = {n: f for n, f in plan.failures.items() if n in project.functions}
        return change

    async def _apply_brokers(self, project: Project) -> None:
        """Links, sources and sinks as `project` declares them (SPEC 10)."""
        assert self._tg is not None
        await self.brokers.apply(self._tg, project.brokers, project.sources, project.sinks)
        for name, running in list(self._sinks.items()):
            if project.sinks.get(name) != running.spec:
                self._tg.start_soon(self._stop_loop, self._sinks.pop(name), self.grace)
        for name, spec in project.sinks.items():
            if name not in self._sinks:
                self._start_sink(spec)

    def _start_sink(self, spec: SinkSpec) -> None:
        assert self._tg is not None
        publisher = SinkPublisher(spec, lambda: self.brokers.link(spec.broker), self.clock)
        dispatcher = Dispatcher(
            spec, publisher, self.store, clock=self.clock, metrics=self.metrics,
            route=self.ingress.route, log=logging.getLogger(f"fnrun.sink.{spec.name}"),
            poll=IDLE_POLL,
            pipelined=publisher.pipelined,
        )
        running = self._sinks[spec.name] = RunningSink(spec, publisher, dispatcher)
        self._tg.start_soon(self._run_loop, running)

    def _bind_triggers(self, project: Project) -> None:
        self.project = project
        if not self._triggers:
            for kind, module in plugins.TRIGGERS.items():
                trigger = self._triggers[kind] = plugins.load(f"{module}:Trigger")(self.ingress)
                if isinstance(trigger, Router):
                    self.ingress.route_by(trigger)
        for trigger in self._triggers.values():
            trigger.bind(project)

    async def _start_http(self, tg: anyio.abc.TaskGroup) -> None:
        from runtime.http import app as http  # the HTTP stack loads only where it serves
        from runtime.http import server

        webhooks = next((t.asgi for t in self._triggers.values() if isinstance(t, HttpTrigger)),
                        None)
        app = http.create_app(self.view, webhooks)
        self.http_server = await tg.start(server.serve, app, self.settings.http)

    def new_pool(self, spec: FunctionSpec) -> WorkerPool:
        """A worker pool for `spec`, configured as this supervisor runs them."""
        return WorkerPool(spec, log=logging.getLogger(f"fnrun.fn.{spec.name}"))

    def _start_function(
        self, spec: FunctionSpec, fingerprint: str | None = None, pool: WorkerPool | None = None
    ) -> None:
        assert self._tg is not None
        fn_log = logging.getLogger(f"fnrun.fn.{spec.name}")
        pool = pool or self.new_pool(spec)
        dispatcher = flow_dispatcher(
            spec, pool, self.store,
            clock=self.clock, metrics=self.metrics, route=self.ingress.route, log=fn_log,
            poll=IDLE_POLL,
        )
        running = Running(spec, fingerprint or function_fingerprint(spec), pool, dispatcher)
        self._functions[spec.name] = running
        self._tg.start_soon(self._run_loop, running)

    async def _run_loop(self, running: Running | RunningSink) -> None:
        try:
            with running.scope:
                await running.dispatcher.run()
        finally:
            running.done.set()

    async def _stop_loop(self, running: Running | RunningSink, grace: float) -> None:
        """Stop one function or sink: no new work, what runs finishes within `grace`.

        Invocations (or publishes) still running after it are cancelled, which
        kills their workers; their deliveries stay `running` and are retried on
        the next start (SPEC 5.7), without counting as a failure now. Sync
        webhook calls, which the dispatcher does not track, get what is left
        of the grace period from the pool (a sink's publisher has nothing to close).
        """
        deadline = anyio.current_time() + grace
        running.dispatcher.stop()
        with anyio.move_on_after(grace):
            await running.done.wait()
        with anyio.CancelScope(shield=True):
            if not running.done.is_set():
                running.scope.cancel()
                await running.done.wait()
            await running.pool.aclose(grace=max(0.0, deadline - anyio.current_time()))

    async def _drain(self) -> None:
        self.ingress.stop()
        log.info("stopping: letting running invocations finish (grace %.0fs)", self.grace)
        await self.brokers.stop_sources()  # each acknowledges what it stored, no more
        async with anyio.create_task_group() as tg:
            for running in list(self._functions.values()):
                tg.start_soon(self._stop_loop, running, self.grace)
            for sink in list(self._sinks.values()):
                tg.start_soon(self._stop_loop, sink, self.grace)
        self._functions.clear()
        self._sinks.clear()
        await self.brokers.close()

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if self._stop.is_set():
                    log.warning("second %s: stopping now", signal.Signals(signum).name)
                    for running in self._functions.values():
                        running.scope.cancel()
                else:
                    again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
                    log.info("%s received%s", signal.Signals(signum).name, again)
                    self._stop.set()

    async def _retention_loop(self) -> None:
        retention = self.settings.retention
        while True:
            now = self.clock.now()
            try:
                await self.store.prune(now - retention.events, now - retention.history)
            except Exception:
                log.exception("retention pruning failed; will try again")
            await anyio.sleep(RETENTION_INTERVAL)


def _leases(project: Project) -> dict[str, float]:
    """How long an attempt of each subscriber may run: functions' and sinks' timeouts."""
    leases = {n: s.timeout for n, s in project.functions.items()}
    leases.update({n: s.timeout for n, s in project.sinks.items()})
    return leases
