"""Hot reload: watch the project, re-validate it on change, switch function by function.

A burst of saves becomes one reload: watchfiles groups changes (`step` ms of
quiet, at most `debounce` ms), and changes that arrive while a reload runs
are coalesced into the next one. Each reload re-reads fnrun.yaml and the
whole functions folder, and applies what is valid: a YAML file with errors
keeps its functions at their last good version (or out, if they never
loaded) and the errors show in /_/health. Only functions whose declaration
or code files changed (`runtime.project.code_files`) are restarted. A changed or
added function whose new code does not load keeps its old version (or is
not served) until it is fixed; its deliveries wait in the store (SPEC 5.5).
A bad fnrun.yaml, a missing functions folder or a webhook claimed twice
skips the whole reload.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from watchfiles import Change

from runtime.clock import Clock, SystemClock
from runtime.errors import ManifestError, UsageError
from runtime.pool.warmup import warm_all
from runtime.pool.workerpool import WorkerPool
from runtime.project import reload_rules as rules
from runtime.project.manifest import conflicts, load_settings, scan_files
from runtime.project.registry import Diff
from runtime.project.reload_plan import ReloadPlan, Target
from runtime.project.settings_loader import CONFIG_FILE
from runtime.specs import Settings

log = logging.getLogger("fnrun.reload")

Changes = AsyncIterator[set[tuple[Change, str]]]
LoadCheck = Callable[[WorkerPool], Awaitable[str | None]]
"""Start a new version's first worker in its pool: the load error, or None."""

DEBOUNCE_MS = 1600
"""Longest a burst of changes is grouped before a reload starts anyway."""
STEP_MS = 30
"""Quiet time that ends a burst (ms): a save starts its reload ~30-80 ms later."""


@dataclass(frozen=True)
class Result:
    """What one reload did."""

    change: Diff = Diff()
    errors: tuple[str, ...] = ()
    """Declaration errors: their files' functions were left as they were."""
    skipped: bool = False
    """Nothing was applied (a bad fnrun.yaml, no functions folder, a conflict)."""
    failed: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Function -> load error of its new code (old version kept, or not served)."""
    kept: tuple[str, ...] = ()
    """Functions of `failed` that keep serving their old version."""
    restart: tuple[str, ...] = ()
    """fnrun.yaml changes that need a restart."""
    reasons: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Changed function -> why: "code" or "config"."""
    millis: float = 0.0


class Reloader:
    """Reloads a running supervisor's project whenever its files change."""

    def __init__(
        self,
        supervisor: Target,
        settings: Settings,
        *,
        changes: Changes | None = None,
        clock: Clock | None = None,
        check: LoadCheck | None = None,
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Args:
            changes: scripted change sets (tests); None watches the filesystem.
            check: warms a new version's pool: its load error, or None (default `warm`).
            announce: shows the project before any reload (the CLI's banner).
        """
        self.supervisor = supervisor
        self.settings = settings
        """The settings of the last plan applied (the supervisor's, as it started)."""
        self.clock: Clock = clock or SystemClock()
        self.check: LoadCheck = check or _warm
        self.announce = announce
        self.reloads = 0
        self.last: Result | None = None
        self._changes = changes
        self._file = rules.file_settings(settings)
        self._pending: set[tuple[Change, str]] = set()
        self._wake = anyio.Event()
        self._rewatch = anyio.Event()
        self._watched: Path | None = None

    async def run(self) -> None:
        """Announce the project, then reload on every batch of changes, until cancelled."""
        if self.announce is not None:
            await self.announce()
        async with anyio.create_task_group() as tg:
            if self._changes is not None:
                tg.start_soon(self._collect, self._changes)
            else:
                tg.start_soon(self._watch_files)
            while True:
                await self._wake.wait()
                self._wake = anyio.Event()
                self._pending.clear()
                if self.supervisor.draining:
                    continue
                await self.reload()

    async def _collect(self, changes: Changes) -> None:
        async for batch in changes:
            if batch:
                # Only "something changed" matters; the set stays small as a record.
                if len(self._pending) < 1000:
                    self._pending.update(batch)
                self._wake.set()

    async def _watch_files(self) -> None:
        """Keep a watch on the functions folder and fnrun.yaml; re-made when it fails."""
        first = True
        while True:
            try:
                await self._watch_once(recheck=not first)
            except Exception:  # a broken watch must not take the supervisor down
                log.exception("watching files failed; watching again in 1 s")
                await anyio.sleep(1.0)
            first = False

    async def _recheck(self) -> None:
        # Saves made while the watch was being re-made were seen by no one;
        # one reload, once the new watchers have started, catches them up.
        await anyio.sleep(2 * STEP_MS / 1000)
        self._wake.set()

    async def _watch_once(self, *, recheck: bool) -> None:
        """Watch until the functions folder moves, appears or disappears."""
        from watchfiles import awatch  # the Rust watcher loads only where files are watched

        settings = self.settings
        watch_filter = rules.SourceFilter(settings.functions, settings.project / CONFIG_FILE)
        self._rewatch = anyio.Event()
        self._watched = settings.functions if settings.functions.is_dir() else None
        async with anyio.create_task_group() as tg:
            # The project root is watched flat: a recursive watch there would
            # walk .venv and the store's own busy .fnrun files.
            for path, recursive in ((self._watched, True), (settings.project, False)):
                if path is not None:
                    changes = awatch(
                        path, watch_filter=watch_filter, debounce=DEBOUNCE_MS,
                        step=STEP_MS, recursive=recursive,
                    )
                    tg.start_soon(self._collect, changes)
            if recheck:
                tg.start_soon(self._recheck)
            await self._rewatch.wait()
            tg.cancel_scope.cancel()

    async def reload(self) -> Result:
        """Re-read settings and functions, and switch what changed; never raises."""
        started = self.clock.monotonic()
        was_broken = self.supervisor.serving().broken
        try:
            result = await self._reload()
        except Exception as exc:  # a reload must never take the running version down
            log.exception("reload failed; still serving the last good version")
            result = Result(errors=(f"reload failed: {exc!r}",), skipped=True)
            await self.supervisor.apply(ReloadPlan(result.errors))
        result = dataclasses.replace(result, millis=(self.clock.monotonic() - started) * 1000)
        self.reloads += 1
        self.last = result
        functions = self.settings.functions
        if self._watched != (functions if functions.is_dir() else None):
            self._rewatch.set()
        if not result.skipped:
            log.info(rules.reload_line(
                result.change, result.reasons, result.millis,
                kept=result.kept, down=sorted(set(result.failed) - set(result.kept)),
                errors=len(result.errors),
                fixed=was_broken and not self.supervisor.serving().broken,
            ))
        return result

    async def _reload(self) -> Result:
        # Every file is read in a worker thread: however slow the disk (or an
        # NFS mount), the event loop keeps serving /_/health and webhooks.
        try:
            file_settings = await anyio.to_thread.run_sync(load_settings, self.settings.project)
        except (ManifestError, UsageError) as exc:
            return await self._broken([str(exc)])
        settings, restart = rules.live_settings(self.settings, self._file, file_settings)
        scan = await anyio.to_thread.run_sync(scan_files, settings)
        # Fingerprints are taken before any new code is loaded, never after: a
        # save that lands while this reload warms workers then still differs
        # from what runs, and the next reload picks it up instead of losing it.
        serving = self.supervisor.serving()
        old = serving.project
        project = rules.with_last_good(scan, old)
        clashes = conflicts(project.functions.values())
        if scan.unusable or clashes:
            return await self._broken([str(e) for e in scan.errors + clashes])
        for line in restart:
            log.warning(line)
        for error in scan.errors:
            log.error("%s", error)
        running, failures = serving.fingerprints, dict(serving.failures)
        last_good = set(project.functions) - set(scan.project.functions)
        # plan fingerprints the files and same_code reads them: in the thread too.
        plan = await anyio.to_thread.run_sync(
            lambda: rules.plan(project, old, running, failures, last_good)
        )
        pools, failed = await warm_all(
            [project.functions[n] for n in plan.trial], self.supervisor.new_pool, self.check
        )
        project, serve, failures, kept = rules.settle(project, old, plan, failed)
        errors = tuple(str(e) for e in scan.errors)
        change = await self.supervisor.apply(ReloadPlan(
            errors, settings=settings, project=project, serve=serve, pools=pools,
            failures=failures,
        ))
        self.settings = settings
        self._file = file_settings
        return Result(
            change=change, errors=errors, failed=failed,
            kept=kept, restart=tuple(restart), reasons=rules.reasons(old, project, change.changed),
        )

    async def _broken(self, errors: Sequence[str]) -> Result:
        for line in errors:
            log.error("%s", line)
        count = len(errors)
        log.error(
            "reload skipped: %d error%s; still serving the last good version",
            count, "" if count == 1 else "s",
        )
        await self.supervisor.apply(ReloadPlan(tuple(errors)))
        return Result(errors=tuple(errors), skipped=True)


async def _warm(pool: WorkerPool) -> str | None:
    return await pool.warm()
