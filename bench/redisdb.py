"""The benchmark's Redis servers: one private redis-server per persistence mode.

Every Redis figure says what its server keeps, because that is most of what a
Redis-backed queue costs: `nothing` (`--save "" --appendonly no`, the mode of
every Redis figure before AOF cases were added), `everysec` (an append-only
file fsynced once a second) and `always` (fsynced before each reply, the
durability fnrun's SQLite store gives). Servers start on first use, on free
ports, with their files under the run's temporary folder (the same filesystem
as fnrun's SQLite stores), and are stopped by process id at the end. Only
database 12 is used and flushed. `--redis URL` replaces the `nothing` server
with one of your own, which must keep nothing too (checked: its figures say so).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from bench.harness import NotAvailable
from bench.procs import Service, Timeout, free_port, wait_until

NOTHING, EVERYSEC, ALWAYS = "nothing", "everysec", "always"
MODES = (NOTHING, EVERYSEC, ALWAYS)
LABELS = {
    NOTHING: "Redis keeps nothing",
    EVERYSEC: "Redis AOF fsync everysec",
    ALWAYS: "Redis AOF fsync always",
}
FLAGS = {
    NOTHING: ["--save", "", "--appendonly", "no"],
    EVERYSEC: ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"],
    ALWAYS: ["--save", "", "--appendonly", "yes", "--appendfsync", "always"],
}
DB = 12


class NoRedis(NotAvailable):
    """No redis-server could be started (not installed, or it did not answer)."""


class Servers:
    """Private redis-servers by persistence mode, started on first use."""

    def __init__(self, root: Path, logs: Path, external: str | None = None) -> None:
        self.root = root
        self.logs = logs
        self.external = external
        self._urls: dict[str, str] = {}
        self._services: list[Service] = []

    def url(self, mode: str) -> str:
        """The URL of the server for `mode`, started now if it is not running yet."""
        if mode == NOTHING and self.external:
            return self.external
        if mode not in self._urls:
            self._urls[mode] = self._start(mode)
        return self._urls[mode]

    def _start(self, mode: str) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise NoRedis("redis-server not installed (apt-get install redis-server)")
        folder = self.root / f"redis-{mode}"
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
                "--daemonize", "no", "--logfile", "", *FLAGS[mode]]
        service = Service(argv, self.logs / f"redis-{mode}.log")
        self._services.append(service)
        url = f"redis://127.0.0.1:{port}/{DB}"

        def answers() -> bool:
            if not service.alive():
                raise NoRedis(f"redis-server ({mode}) exited: {service.tail(3)[:300]}")
            try:
                return bool(client(url).ping())
            except redis.RedisError:
                return False

        try:
            wait_until(answers, 30, f"redis-server ({mode}) to answer", every=0.02)
        except Timeout as exc:
            raise NoRedis(str(exc)) from exc
        return url

    def stop(self) -> None:
        """Stop every server started here (SIGTERM to its process group, by pid)."""
        for service in self._services:
            service.stop()
        self._services.clear()
        self._urls.clear()


def describe(url: str) -> str:
    """What the server at `url` keeps, read from its CONFIG (for a --redis of your own)."""
    try:
        config = redis.Redis.from_url(url, decode_responses=True).config_get("*")
    except redis.RedisError:
        return "Redis persistence unknown"
    if config.get("appendonly") == "yes":
        return f"Redis AOF fsync {config.get('appendfsync', '?')}"
    if config.get("save"):
        return f"Redis RDB snapshots ({config['save']})"
    return LABELS[NOTHING]


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def flush(url: str) -> None:
    """Empty the benchmark's own database (FLUSHDB, never FLUSHALL)."""
    client(url).flushdb()


def commands_processed(conn: redis.Redis) -> int:
    """Commands the whole server has processed so far (INFO commandstats, summed)."""
    stats = conn.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())
