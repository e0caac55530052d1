"""Run `wrk` (a real HTTP load generator) and read its summary."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from bench.harness import NotAvailable

CONNECTIONS = 32
THREADS = 2
SCRIPT = """\
wrk.method = "POST"
wrk.body = '{"bench": true}'
wrk.headers["Content-Type"] = "application/json"
"""
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def load(url: str, seconds: float, scratch: Path) -> dict[str, float]:
    """POST a small JSON body to `url` for `seconds` at 32 connections: req/s and p99.

    Raises:
        NotAvailable: wrk is not installed.
        RuntimeError: more than 1% of the answers were not 2xx/3xx, or sockets failed.
    """
    wrk = shutil.which("wrk")
    if wrk is None:
        raise NotAvailable("wrk not installed (apt-get install wrk)")
    script = scratch / "post.lua"
    script.write_text(SCRIPT)
    argv = [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s",
            "--latency", "--timeout", "5s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return _parse(out.stdout)


def _parse(text: str) -> dict[str, float]:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    total = re.search(r"(\d+) requests in", text)
    if not (rate and p99 and total):
        raise RuntimeError(f"cannot read wrk's output: {text[-300:]!r}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    if bad and int(bad.group(1)) > int(total.group(1)) / 100:
        raise RuntimeError(f"{bad.group(1)} of {total.group(1)} answers were not 2xx/3xx")
    if errors:
        raise RuntimeError(f"wrk socket errors: {errors.group(1)}")
    return {"req/s": float(rate.group(1)), "p99 ms": float(p99.group(1)) * UNITS[p99.group(2)]}
