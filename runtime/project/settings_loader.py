"""Project settings: fnrun.yaml, then FNRUN_* environment, then explicit flags (SPEC 2).

Relative paths, including the file of a SQLite store URL, resolve against the
project folder. SQLite URLs follow SQLAlchemy's convention: three slashes
then a relative path, four slashes for an absolute one. The path is
%-decoded: a `%`, `?` or `#` in it is written %25, %3F or %23 (the SQLite
store takes no `?parameters`, so a bare `?` or `#` is refused, not cut at).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import stat
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from runtime.errors import ManifestError, UsageError
from runtime.plugins import STORES
from runtime.project.projectfiles import read_regular, resolve
from runtime.project.yamlnodes import Node, Reader, decode
from runtime.specs import (
    DEFAULT_STORE,
    Defaults,
    HttpSettings,
    Isolation,
    Logs,
    Retention,
    RetryPolicy,
    Settings,
)
from runtime.store.sqlite_schema import (
    SQLITE_PREFIX,
    path_of,
    raw_path_of,
    sqlite_url_problem,
    url_of,
)

CONFIG_FILE = "fnrun.yaml"
MAX_CONCURRENCY = 256
MAX_ATTEMPTS = 1000
MAX_CONFIG_BYTES = 1024 * 1024


def load_settings(
    project: Path,
    *,
    functions: str | None = None,
    store: str | None = None,
    host: str | None = None,
    port: int | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """The project's settings: file < environment < explicit arguments.

    Raises:
        UsageError: the project folder is missing, or FNRUN_PORT/`port` is bad.
        ManifestError: fnrun.yaml is invalid (at FILE:LINE:COL).
    """
    root = Path(project).expanduser()
    try:
        mode: int | None = os.stat(root).st_mode
    except FileNotFoundError:
        mode = None
    except (OSError, ValueError) as exc:  # a name too long, a link loop
        reason = getattr(exc, "strerror", None) or exc
        raise UsageError(f"project folder {root}: {reason}") from None
    if mode is None or not stat.S_ISDIR(mode):
        what = "does not exist" if mode is None else "is not a folder"
        raise UsageError(f"project folder {root} {what}")
    root = root.resolve()
    config = root / CONFIG_FILE
    # lexists, not is_file: a FIFO or a link loop named fnrun.yaml is refused by
    # read_config in one line, not skipped as if there were no file.
    raw: dict[str, Any] = read_config(config) if os.path.lexists(config) else {}
    env_store = environ.get("FNRUN_STORE") or None
    overrides = {
        "functions": environ.get("FNRUN_FUNCTIONS") or None,
        "store": env_store,
        "host": environ.get("FNRUN_HOST") or None,
        "port": _env_port(environ.get("FNRUN_PORT")),
    }
    explicit = {"functions": functions, "store": store, "host": host, "port": port}
    for key, value in (*overrides.items(), *explicit.items()):
        if value is not None:
            raw[key] = value
    for source, url in (("--store", store), ("FNRUN_STORE", env_store)):
        problem = None if url is None else store_url_problem(url)
        if problem:
            raise UsageError(f"{source}: {problem}")
        if url is not None:
            break  # --store wins: a bad FNRUN_STORE under it does not matter
    http: HttpSettings = raw.get("http", HttpSettings())
    if "host" in raw:
        http = replace(http, host=raw["host"])
    if "port" in raw:
        http = replace(http, port=_check_port(raw["port"], "--port"))
    functions_dir = _functions_folder(root / raw.get("functions", "functions"))
    store_url = resolve_store_url(raw.get("store", DEFAULT_STORE), root)
    if store_url.startswith(SQLITE_PREFIX) and (path := path_of(store_url)).is_dir():
        raise UsageError(f"the SQLite store {path} is a folder, not a file")
    return Settings(
        project=root,
        functions=functions_dir,
        store=store_url,
        http=http,
        defaults=raw.get("defaults", Defaults()),
        retention=raw.get("retention", Retention()),
        isolation=raw.get("isolation", Isolation()),
        logs=raw.get("logs", Logs()),
        config_file=config if config.is_file() else None,
    )


def _functions_folder(path: Path) -> Path:
    """The functions folder, resolved; one that does not exist is the scan's to report."""
    try:
        folder = resolve(path)
        mode = os.stat(folder).st_mode
    except ManifestError as exc:  # a link loop: said without a position, as a missing folder
        raise ManifestError(None, f"functions folder {path} {exc.message}") from None
    except FileNotFoundError:
        return folder
    except OSError as exc:  # a name too long
        raise ManifestError(None, f"functions folder {path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(mode):
        raise UsageError(f"functions folder {folder} is a file, not a folder")
    return folder


def resolve_store_url(url: str, project: Path) -> str:
    """Make a relative SQLite URL absolute against `project`; other URLs unchanged.

    The project's path is escaped into the URL (`url_of`), so a folder named
    `what?y#z` keeps its store inside it.
    """
    if not url.startswith(SQLITE_PREFIX) or sqlite_url_problem(url):
        return url
    path = raw_path_of(url)
    if path.startswith("/"):
        return url
    return url_of((project / path).resolve())


def store_url_problem(url: str) -> str | None:
    """What is wrong with a store URL, before any adapter tries it; None if nothing.

    redis-py reads `redis://host/abc` as database 0, a port of 0 as 6379, and
    fails on a bad port or an unknown `?parameter` with a bare exception, so
    these are caught here. fnrun documents no parameters: every one is refused.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # `redis://[::1`
        return f"bad store URL {url!r}: {exc}"
    if parts.scheme not in STORES:
        known = ", ".join(f"{s}://" for s in STORES)
        return f"unknown store URL {url!r} (known: {known})"
    if parts.scheme == "sqlite":
        return sqlite_url_problem(url)
    try:
        port = parts.port
    except ValueError:
        return f"bad port in store URL {url!r}"
    if port == 0:
        return f"bad port 0 in store URL {url!r} (use a port from 1 to 65535, or leave it out)"
    if not parts.hostname:
        return f"no host in store URL {url!r} (use redis://HOST:PORT/DB)"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"bad Redis database {db!r} in store URL {url!r} (use a number: redis://HOST:PORT/0)"
    if parts.query or parts.fragment:
        named = ", ".join(sorted({n for n, _ in parse_qsl(parts.query, keep_blank_values=True)}))
        tail = url[min(i for i in (url.find("?"), url.find("#")) if i >= 0):]
        what = f"unknown parameter {named}" if named else f"{tail!r}"
        return (f"{what} in store URL {url!r}: fnrun takes redis://[USER:PASSWORD@]HOST:PORT/DB "
                "and no parameters")
    return None


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def serving_problem(host: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """What forbids serving HTTP on `host` with `environ`'s FNRUN_TOKEN; None if nothing.

    `fnrun run` asks before the token rule (`http.check_bind`), whose "set
    FNRUN_TOKEN" misled for a host that could never be bound. Only `run`
    asks: for `ls`, a bad host just means no supervisor there. Blocking: a
    host name is looked up.
    """
    if not _is_host(host):
        hint = "; an IPv6 address goes without brackets" if host.startswith("[") else ""
        return (f"cannot serve on host {host!r}: not an IP address or a host name "
                f"(--host, FNRUN_HOST or http.host in fnrun.yaml{hint})")
    try:
        socket.getaddrinfo(host, None)
    except OSError as exc:
        return f"cannot serve on host {host!r}: {exc.strerror or exc}"
    token = environ.get("FNRUN_TOKEN", "")
    if token and not token.strip():  # empty means unset, as everywhere; blank is a mistake
        return "FNRUN_TOKEN is blank (only whitespace): set a real token, or unset it"
    return None


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in labels)


def _env_port(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"FNRUN_PORT must be a port number, got {value!r}") from None
    return _check_port(number, "FNRUN_PORT")


def _check_port(port: int, what: str) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise UsageError(f"{what} must be a port number 0-65535, got {port!r}")
    return port


def read_config(file: Path) -> dict[str, Any]:
    """The keys set in fnrun.yaml, validated, as typed values."""
    reader = Reader(file, decode(file, read_regular(file, MAX_CONFIG_BYTES)))
    root = reader.compose()
    if root is None:
        return {}
    # brokers, sources and sinks are declarations, read with the functions
    # (runtime.project.manifest).
    keys = ("functions", "store", "http", "defaults", "retention", "isolation", "logs",
            "brokers", "sources", "sinks")
    fields = reader.mapping(root, CONFIG_FILE, allowed=keys)
    out: dict[str, Any] = {}
    if "functions" in fields:
        out["functions"] = reader.string(fields["functions"], "functions")
    if "store" in fields:
        out["store"] = store_url(reader, fields["store"])
    if "http" in fields:
        out["http"] = http_settings(reader, fields["http"])
    if "defaults" in fields:
        out["defaults"] = defaults(reader, fields["defaults"])
    if "retention" in fields:
        out["retention"] = retention(reader, fields["retention"])
    if "isolation" in fields:
        out["isolation"] = isolation(reader, fields["isolation"])
    if "logs" in fields:
        out["logs"] = logs(reader, fields["logs"])
    return out


def store_url(reader: Reader, node: Node) -> str:
    """A store URL whose scheme has an adapter."""
    url = reader.string(node, "store")
    problem = store_url_problem(url)
    if problem:
        raise reader.error(node, problem)
    return url


def http_settings(reader: Reader, node: Node) -> HttpSettings:
    fields = reader.mapping(node, "http", allowed=("host", "port", "max_body", "allowed_hosts"))
    http = HttpSettings()
    if "host" in fields:
        http = replace(http, host=reader.string(fields["host"], "http.host"))
    if "port" in fields:
        port = reader.integer(fields["port"], "http.port", minimum=0)
        if port > 65535:
            raise reader.error(fields["port"], "http.port must be at most 65535")
        http = replace(http, port=port)
    if "max_body" in fields:
        http = replace(http, max_body=reader.size(fields["max_body"], "http.max_body"))
    if "allowed_hosts" in fields:
        http = replace(http, allowed_hosts=allowed_hosts(reader, fields["allowed_hosts"]))
    return http


_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?")


def allowed_hosts(reader: Reader, node: Node) -> tuple[str, ...]:
    """`http.allowed_hosts`: names the `/_/` routes answer as Host (SPEC 8), lower-cased.

    Each is a bare host name or IP address (an IPv6 one with or without
    brackets); a port, scheme, path or wildcard would never equal a Host
    name, so it is refused rather than silently never matching.
    """
    out = []
    for item in reader.sequence(node, "http.allowed_hosts"):
        name = reader.string(item, "http.allowed_hosts item").strip().lower()
        bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        try:
            out.append(str(ipaddress.ip_address(bare)))
            continue
        except ValueError:
            pass
        if len(name) > 253 or not _HOST_NAME.fullmatch(name):
            raise reader.error(item, f"http.allowed_hosts: {name!r:.80} is not a host name or "
                               "IP address (no port, scheme, path or wildcard)")
        out.append(name.rstrip("."))
    return tuple(out)


def defaults(reader: Reader, node: Node) -> Defaults:
    fields = reader.mapping(node, "defaults", allowed=("timeout", "concurrency", "retry"))
    out = Defaults()
    if "timeout" in fields:
        out = replace(out, timeout=timeout(reader, fields["timeout"], "defaults.timeout"))
    if "concurrency" in fields:
        out = replace(out, concurrency=concurrency(reader, fields["concurrency"], "defaults"))
    if "retry" in fields:
        out = replace(out, retry=retry_policy(reader, fields["retry"], out.retry, "defaults"))
    return out


def retention(reader: Reader, node: Node) -> Retention:
    fields = reader.mapping(node, "retention", allowed=("events", "history"))
    out = Retention()
    if "events" in fields:
        out = replace(out, events=reader.duration(fields["events"], "retention.events"))
    if "history" in fields:
        out = replace(out, history=reader.duration(fields["history"], "retention.history"))
    return out


MAX_LOG_LINES = 10_000
"""Most `logs.max_lines_per_run`: a run record holds 64 KiB of log text anyway."""


def logs(reader: Reader, node: Node) -> Logs:
    """`logs: {max_lines_per_run: N}`: how many log lines each run record keeps (SPEC 11)."""
    fields = reader.mapping(node, "logs", allowed=("max_lines_per_run",))
    out = Logs()
    if "max_lines_per_run" in fields:
        value = reader.integer(fields["max_lines_per_run"], "logs.max_lines_per_run", minimum=0)
        if value > MAX_LOG_LINES:
            raise reader.error(fields["max_lines_per_run"],
                               f"logs.max_lines_per_run must be at most {MAX_LOG_LINES}")
        out = replace(out, max_lines_per_run=value)
    return out


_USER_NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\$?")
"""A POSIX-portable user name, as useradd takes it (`shadow`'s default check)."""


def isolation(reader: Reader, node: Node) -> Isolation:
    """`isolation: {user: NAME}`: whom workers run as when the supervisor is root.

    Whether the user exists is checked where it matters, by a root `fnrun run`.
    """
    fields = reader.mapping(node, "isolation", allowed=("user",))
    out = Isolation()
    if "user" in fields:
        user = reader.string(fields["user"], "isolation.user")
        if not _USER_NAME.fullmatch(user):
            raise reader.error(fields["user"], f"isolation.user {user!r} is not a user name")
        out = replace(out, user=user)
    return out


def timeout(reader: Reader, node: Node, what: str) -> float:
    """A per-attempt timeout: a positive duration."""
    seconds = reader.duration(node, what)
    if seconds <= 0:
        raise reader.error(node, f"{what} must be positive")
    return seconds


def concurrency(reader: Reader, node: Node, owner: str) -> int:
    """Most invocations at once: 1..MAX_CONCURRENCY (each is a worker process)."""
    value = reader.integer(node, f"{owner}.concurrency", minimum=1)
    if value > MAX_CONCURRENCY:
        raise reader.error(node, f"{owner}.concurrency must be at most {MAX_CONCURRENCY}")
    return value


def retry_policy(reader: Reader, node: Node, base: RetryPolicy, owner: str) -> RetryPolicy:
    """`retry: {max_attempts, backoff, max_backoff}` over `base`, or `retry: false`."""
    what = f"{owner}.retry"
    if node.tag == "tag:yaml.org,2002:bool":
        if reader.boolean(node, what):
            raise reader.error(node, f"{what} must be a mapping or false")
        return replace(base, max_attempts=1)
    if node.tag != "tag:yaml.org,2002:map":
        raise reader.error(node, f"{what} must be a mapping or false")
    fields = reader.mapping(node, what, allowed=("max_attempts", "backoff", "max_backoff"))
    policy = base
    if "max_attempts" in fields:
        attempts = reader.integer(fields["max_attempts"], f"{what}.max_attempts", minimum=1)
        if attempts > MAX_ATTEMPTS:
            raise reader.error(
                fields["max_attempts"], f"{what}.max_attempts must be at most {MAX_ATTEMPTS}"
            )
        policy = replace(policy, max_attempts=attempts)
    if "backoff" in fields:
        policy = replace(policy, backoff=reader.duration(fields["backoff"], f"{what}.backoff"))
    if "max_backoff" in fields:
        cap = reader.duration(fields["max_backoff"], f"{what}.max_backoff")
        policy = replace(policy, max_backoff=cap)
    if policy.max_backoff < policy.backoff:
        raise reader.error(node, f"{what}: max_backoff must not be less than backoff")
    return policy
