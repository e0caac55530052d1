"""Open-loop load at a steady rate, and latencies read back from the handlers' files.

Handlers append "<sent> <start>" (epoch seconds) to a file they own; a slow
send never delays the next one, because sends run on a small thread pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.procs import high_ms, percentile, wait_until

Sender = Callable[[float], object]
"""Sends one message stamped with its send time (epoch seconds)."""


def send_steadily(send: Sender, rate: float, count: int, threads: int = 16) -> None:
    """Call `send(sent_ts)` `count` times at `rate`/s on schedule; raise the first error.

    `threads=0` sends inline, for clients that are not thread-safe (kombu's
    Redis channel); a late send then delays the next one but stamps its own time.
    """
    if threads == 0:
        began = time.monotonic()
        for index in range(count):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            send(time.time())
        return
    with ThreadPoolExecutor(max_workers=threads) as pool:
        began = time.monotonic()
        futures = []
        for index in range(count):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(lambda: send(time.time())))
        for future in futures:
            future.result()


def lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def wait_for_lines(path: Path, count: int, timeout: float) -> list[str]:
    wait_until(lambda: len(lines(path)) >= count, timeout, f"{count} handler records",
               every=0.05)
    return lines(path)


def latency_ms(path: Path, count: int, timeout: float = 60) -> dict[str, float]:
    """p50 and p99 of start - sent over the records in `path` (the maximum below 1,000)."""
    records = wait_for_lines(path, count, timeout)
    delays = [(float(b) - float(a)) * 1000 for a, b in (r.split() for r in records)]
    return {"p50 ms": percentile(delays, 50), **high_ms(delays)}


def warm_up(send: Sender, path: Path, threads: int, count: int = 20) -> None:
    """Start the workers with a few events, then forget their records."""
    send_steadily(send, 100, count, threads)
    wait_for_lines(path, count, 60)
    path.write_text("")
