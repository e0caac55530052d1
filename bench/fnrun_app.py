"""The fnrun side: write a project, preload its store, run `fnrun run`, read its API.

Only documented interfaces are used (SPEC sections 2-8 and `runtime.store.base`),
so a part of fnrun that has not landed yet shows as `NotAvailable`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.harness import Context, NotAvailable
from bench.procs import REPO, Service, Timeout, free_port, wait_until


def require(module: str, what: str) -> None:
    """Raise NotAvailable unless `module` exists in the installed fnrun."""
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise NotAvailable(f"{what} not landed yet ({module} missing)")


def write_project(root: Path, declarations: str, files: dict[str, str]) -> Path:
    """A project folder: fnrun.yaml, functions/bench.yaml and the handler files."""
    functions = root / "functions"
    functions.mkdir(parents=True, exist_ok=True)
    (root / "fnrun.yaml").write_text("functions: functions\n")
    (functions / "bench.yaml").write_text(textwrap.dedent(declarations))
    for name, source in files.items():
        (functions / name).write_text(textwrap.dedent(source))
    return root


def sqlite_url(project: Path) -> str:
    return f"sqlite:///{(project / '.fnrun' / 'state.db').resolve()}"


def preload(store_url: str, event_type: str, targets: Sequence[str], total: int,
            tree: Path | None = None, keys: int = 0) -> float:
    """Durably publish `total` events with their deliveries through the store API of
    the fnrun in `tree` (this checkout by default); return the wall time of the first
    publish (epoch seconds)."""
    argv = [sys.executable, str(REPO / "bench" / "preload.py"), store_url, event_type,
            ",".join(targets), str(total), *([str(keys)] if keys else [])]
    env = {**os.environ, "PYTHONPATH": str(tree or REPO)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600,
                          check=False)
    began = re.search(r"^began (\S+)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or began is None:
        raise RuntimeError(f"preload failed ({done.returncode}): {done.stderr.strip()[-300:]}")
    return float(began.group(1))


class Supervisor:
    """One `fnrun run` process on a free port."""

    def __init__(self, ctx: Context, project: Path, store: str, *, reload: bool = False,
                 name: str = "fnrun", tree: Path | None = None) -> None:
        require("runtime.cli.main", "the fnrun CLI")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-m", "runtime", "run", "--project", str(project),
                "--port", str(self.port), "--store", store]
        if reload:
            argv.append("--reload")
        env = None if tree is None else {"PYTHONPATH": str(tree)}  # fnrun from another checkout
        self.service = Service(argv, ctx.logs / f"{name}.log", env=env, cwd=project)
        self.http = httpx.Client(base_url=self.base, timeout=10)

    @property
    def pid(self) -> int:
        return self.service.pid

    def _healthy(self) -> bool:
        if not self.service.alive():
            raise NotAvailable(f"fnrun run exited: {self.service.tail(3)[:300]}")
        try:
            return self.http.get("/_/health").status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        try:
            wait_until(self._healthy, timeout, "GET /_/health to answer 200", every=0.02)
        except Timeout as exc:
            raise NotAvailable(f"{exc}: {self.service.tail(3)[:300]}") from exc

    def outstanding(self, function: str, total: int) -> int:
        """Pending + running deliveries of `function`; `total` while the API is not up."""
        try:
            answer = self.http.get("/_/functions")
        except httpx.HTTPError:
            return total
        if answer.status_code != 200:
            return total
        entry = _entry(answer.json(), function)
        counts = entry.get("counts", entry)
        return int(counts.get("pending", 0)) + int(counts.get("running", 0))

    def stop(self) -> None:
        self.http.close()
        self.service.stop(grace=35)


def _entry(listing: Any, function: str) -> dict[str, Any]:
    """`function`'s entry in GET /_/functions (a list, or {"functions": [...] or {...}})."""
    if isinstance(listing, dict):
        listing = listing.get("functions", listing)
    if isinstance(listing, dict):
        listing = [{"name": k, **v} for k, v in listing.items()]
    for entry in listing:
        if entry.get("name") == function:
            return dict(entry)
    raise NotAvailable(f"GET /_/functions does not list {function!r}")
