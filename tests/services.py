"""Where the suite finds the shared services it tests against.

`FNRUN_TEST_REDIS_PORT` (default 6379) moves every Redis database the suite flushes to
another redis-server, so two runs of the suite on one machine never flush each other's data.
Under pytest-xdist, every worker but the first starts a redis-server of its own when this
module is first imported (conftests may import it before any pytest hook runs).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time

import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _own_redis(worker: str) -> int:
    """Start a throwaway redis-server for this xdist worker; it dies with the worker."""
    port = _free_port()
    folder = tempfile.mkdtemp(prefix=f"fnrun-redis-{worker}-")
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", folder,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def stop() -> None:
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)

    atexit.register(stop)
    deadline = time.monotonic() + 15
    while True:
        try:
            with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
                if client.ping():
                    return port
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _redis_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    if worker != "gw0" and shutil.which("redis-server") is not None:
        os.environ["FNRUN_TEST_REDIS_PORT"] = str(_own_redis(worker))
    return int(os.environ.get("FNRUN_TEST_REDIS_PORT", "6379"))


REDIS_PORT = _redis_port()


def redis_url(db: int) -> str:
    """The URL of test database `db` (never 0: the suite flushes what it uses)."""
    return f"redis://127.0.0.1:{REDIS_PORT}/{db}"
