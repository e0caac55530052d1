"""Trying a function's new code before it serves: start one worker, read its first word.

The worker is started with the pool's own command line and environment, so
what loads here loads in the pool. Used by the reloader to keep the old
version when new code does not import (SPEC 5.5).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
from typing import Any

import anyio

from runtime.specs import FunctionSpec


async def first_worker_error(spec: FunctionSpec) -> str | None:
    """Start one worker of `spec` as its pool would and stop it: the load error, or None.

    The worker is started with the pool's own command line and environment,
    so what loads here loads in the pool.
    """
    from anyio.abc import UNIXSocketStream
    from anyio.streams.buffered import BufferedByteReceiveStream

    from runtime import pool, protocol

    ours, theirs = socket.socketpair()
    try:
        process = await anyio.to_thread.run_sync(_start_probe, spec, theirs.fileno())
    except OSError as exc:
        ours.close()
        return f"cannot start a worker: {exc}"
    finally:
        theirs.close()
    first: dict[str, Any] | None = None
    async with await UNIXSocketStream.from_socket(ours) as stream:
        reader = BufferedByteReceiveStream(stream)
        with anyio.move_on_after(pool.LOAD_TIMEOUT + spec.timeout):
            try:
                size = protocol.frame_size(await reader.receive_exactly(protocol.HEADER))
                first = protocol.unpack(await reader.receive_exactly(size))
            except (anyio.EndOfStream, anyio.IncompleteRead, protocol.ProtocolError, OSError):
                first = {"kind": "exit"}
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    code = await anyio.to_thread.run_sync(process.wait)
    if first is None:
        return f"handler did not load within {pool.LOAD_TIMEOUT + spec.timeout:g}s"
    if first["kind"] == "ready":
        return None
    if first["kind"] == "load_error":
        return str(first.get("error"))
    return f"{pool.describe_exit(code)} while loading the handler"


def _start_probe(spec: FunctionSpec, proto_fd: int) -> subprocess.Popen[bytes]:
    from runtime import pool

    env = pool.worker_env(spec, os.environ, logging.getLogger(f"fnrun.fn.{spec.name}"))
    return subprocess.Popen(
        pool.child_command(spec, proto_fd),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        pass_fds=(proto_fd, pool.lifeline()), start_new_session=True, env=env,
    )
