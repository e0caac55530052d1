"""The worker child: loads one handler, then runs invocations sent by its pool.

Run as `python -m runtime.worker.child proto=FD lifeline=FD file=PATH attr=NAME
function=NAME [memory_mb=N]` (the pool starts it with `-S` and a resolved
`sys.path`, see `runtime.pool.process`), or entered through `main` in a child
forked by the fork server's template (`runtime.worker.forkserver`), which imports
this module beforehand. Its first act is to fork: the process started
stays as the worker's guard (`runtime.worker.guard`: what the handler starts dies
with the worker), and the child, the runner, does the rest. The runner
speaks `runtime.worker.protocol` on the socket `proto`; stdout and stderr belong
to the handler; fault dumps go to the guard.

Startup budget is ~25 ms, so this module imports only builtins at the top;
asyncio, logging, datetime and traceback are imported the first time a
handler needs them.
"""

from __future__ import annotations

import faulthandler
import os
import sys

from runtime import event_names, results
from runtime.worker import guard, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from logging import Logger
    from typing import Any

CO_VARARGS = 0x04
CO_GENERATORS = 0x20 | 0x200
"""CO_GENERATOR | CO_ASYNC_GENERATOR."""
SIGKILL = 9
ENOMEM = 12
MappingProxyType = type(type.__dict__)
"""types.MappingProxyType, without importing `types` (~0.6 ms of a worker's first invocation)."""
MAX_ERROR = 1000
"""Longest error line sent (a message of megabytes would be logged whole)."""
MAX_TRACEBACK = 32 * 1024
"""Longest traceback sent; its head and tail are kept."""
MAX_LOG_BYTES = 64 * 1024
"""Most bytes of log text an invocation's record keeps (SPEC 11)."""
MAX_LOG_LINE = protocol.MAX_LOG_LINE
DEFAULT_LOG_LINES = 200
"""`logs.max_lines_per_run` when the pool does not say."""


class ReadOnly:
    """Base of the objects handed to handlers: attributes cannot be set."""

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")


class HttpRequest(ReadOnly):
    """`event.http`: the request behind a webhook event."""

    __slots__ = ("method", "path", "query", "headers")
    method: str
    path: str
    query: Any
    headers: Any

    def __init__(self, raw: dict[str, Any]) -> None:
        set_ = object.__setattr__
        set_(self, "method", raw["method"])
        set_(self, "path", raw["path"])
        set_(self, "query", MappingProxyType(dict(raw.get("query") or {})))
        set_(self, "headers", MappingProxyType(dict(raw.get("headers") or {})))

    def __repr__(self) -> str:
        return f"HttpRequest({self.method} {self.path})"


class HandlerEvent(ReadOnly):
    """The read-only, CloudEvents-shaped `event` a handler receives."""

    __slots__ = ("id", "type", "source", "subject", "data", "extensions", "http", "_time")
    id: str
    type: str
    source: str
    subject: str | None
    data: Any
    extensions: Any
    http: HttpRequest | None
    _time: str | datetime

    def __init__(self, raw: dict[str, Any]) -> None:
        set_ = object.__setattr__
        set_(self, "id", raw["id"])
        set_(self, "type", raw["type"])
        set_(self, "source", raw.get("source", "fnrun"))
        set_(self, "subject", raw.get("subject"))
        if "data_base64" in raw:
            import binascii

            set_(self, "data", binascii.a2b_base64(raw["data_base64"]))
        else:
            set_(self, "data", raw.get("data"))
        set_(self, "extensions", MappingProxyType(dict(raw.get("extensions") or {})))
        http = raw.get("http")
        set_(self, "http", HttpRequest(http) if http else None)
        set_(self, "_time", raw["time"])

    @property
    def time(self) -> datetime:
        """When the event happened (aware datetime; parsed on first use)."""
        value = self._time
        if isinstance(value, str):
            from datetime import datetime

            value = datetime.fromisoformat(value)
            object.__setattr__(self, "_time", value)
        return value

    def __repr__(self) -> str:
        return f"Event(id={self.id!r}, type={self.type!r})"


def _emit_data(data: Any) -> Any:
    """`ctx.emit`'s data as it travels: bytes, or a JSON value.

    Raises:
        TypeError: it is neither.
    """
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    if isinstance(data, bytes):
        return data
    value, problem = results.json_value(data)
    if problem is not None:
        raise TypeError(f"ctx.emit: data is {problem}, which is neither JSON nor bytes")
    return value


class Context(ReadOnly):
    """`ctx`: the function's name, the attempt, its deadline, a logger and `emit`."""

    __slots__ = ("function", "attempt", "deadline", "invocation", "_emits", "_ids")
    function: str
    attempt: int
    deadline: float
    invocation: str
    _emits: list[dict[str, Any]]
    _ids: set[str] | None

    def __init__(self, function: str, attempt: int, deadline: float, invocation: str) -> None:
        set_ = object.__setattr__
        set_(self, "function", function)
        set_(self, "attempt", attempt)
        set_(self, "deadline", deadline)
        set_(self, "invocation", invocation)
        set_(self, "_emits", [])
        set_(self, "_ids", None)

    @property
    def log(self) -> Logger:
        """A logger whose lines go to stderr, which the pool tags and logs."""
        return _logger(self.function)

    def emit(
        self, type: str, data: Any = None, *, subject: str | None = None, id: str | None = None,
        key: str | None = None,
    ) -> None:
        """Queue an event, published only if this invocation succeeds.

        `key` becomes the event's `partitionkey` extension: the default key of
        functions with flow rules (SPEC 12).

        Raises:
            TypeError: `type` is not a non-empty str, `data` is neither JSON
                nor bytes, or `subject`/`id`/`key` are not str.
            ValueError: `type` is not dot-separated segments of letters,
                digits, '_' or '-'; `id` is empty, unprintable, or already
                used by an event this invocation emits.
        """
        if not isinstance(type, str) or not type:
            raise TypeError(f"ctx.emit: type must be a non-empty str, not {type!r:.60}")
        for name, value in (("subject", subject), ("id", id), ("key", key)):
            if value is not None and not isinstance(value, str):
                raise TypeError(f"ctx.emit: {name} must be a str, not {value!r:.60}")
        if not event_names.is_event_type(type):
            raise ValueError(f"ctx.emit: type {type!r:.60} is not {event_names.TYPE_RULE}")
        if id is not None:
            self._check_id(id)
        data = _emit_data(data)
        if id is not None:
            id = str.__str__(id)  # a plain str: marshal refuses subclasses
            ids = self._ids
            if ids is None:
                ids = set()
                object.__setattr__(self, "_ids", ids)
            ids.add(id)
        if subject is not None:
            subject = str.__str__(subject)
        emit = {"type": str.__str__(type), "data": data, "subject": subject, "id": id}
        if key is not None:
            emit["key"] = str.__str__(key)
        self._emits.append(emit)

    def _check_id(self, id: str) -> None:
        """Raise ValueError unless `id` is a usable event id no earlier emit used."""
        if not event_names.is_event_id(id):
            raise ValueError(f"ctx.emit: id {id!r:.60} is not {event_names.ID_RULE}")
        if self._ids is not None and id in self._ids:
            # The store keeps one event per id: the second would vanish without a word.
            raise ValueError(f"ctx.emit: id {id!r:.60} is already used by an event emitted here")

    def __repr__(self) -> str:
        return f"Context(function={self.function!r}, attempt={self.attempt})"


_loggers: dict[str, Logger] = {}


def _logger(function: str) -> Logger:
    logger = _loggers.get(function)
    if logger is None:
        import logging

        logger = logging.getLogger(f"fnrun.fn.{function}")
        # To the real stderr, not the marking one (`_StderrMarker`): a line has one level.
        handler = logging.StreamHandler(getattr(sys.stderr, "stream", sys.stderr))
        handler.setFormatter(_level_formatter(logging))
        logger.addHandler(handler)
        logger.addHandler(_capture_handler(logging))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        _loggers[function] = logger
    return logger


def _capture_handler(logging: Any) -> Any:
    """A handler keeping each `ctx.log` record (its traceback too) for the running
    invocation's record (`_Capture`); `logging` is imported lazily."""

    class CaptureHandler(logging.Handler):  # type: ignore[misc]
        def emit(self, record: Any) -> None:
            try:
                text = self.format(record)
            except Exception:  # noqa: BLE001 - a bad %-format must not fail the attempt
                text = str(record.msg)
            _capture.add("log", record.levelname.lower(), text)

    return CaptureHandler()


def _level_formatter(logging: Any) -> Any:
    """A formatter marking each line of a `ctx.log` record (a traceback's too) with
    its level for the drain (`protocol.LEVEL_MARK`); `logging` is imported lazily."""

    class LevelFormatter(logging.Formatter):  # type: ignore[misc]
        def format(self, record: Any) -> str:
            mark = f"{_LEVEL_MARK}{record.levelname} "
            return "\n".join(mark + line for line in super().format(record).split("\n"))

    return LevelFormatter()


class _Capture:
    """The log lines of the invocation running now, bounded, for its `done` message.

    `ctx.log` records and the lines written to `sys.stdout` and `sys.stderr`
    land here as well as in the output the pool's drain logs. At most
    `limit` lines (`logs.max_lines_per_run`) and `MAX_LOG_BYTES` of text are
    kept; the rest is counted, and a last warning line says how many were
    cut. Costs nothing for an invocation that writes nothing.
    """

    __slots__ = ("lines", "size", "cut", "limit", "by_bytes", "dirty", "tees")

    def __init__(self) -> None:
        self.lines: list[tuple[float, str, str, str]] = []
        self.size = 0
        self.cut = 0
        self.limit = DEFAULT_LOG_LINES
        self.by_bytes = False
        self.dirty = False
        """Whether anything was written since the last `finish`: one read when nothing was."""
        self.tees: list[_Tee] = []

    def add(self, stream: str, level: str, text: str) -> None:
        self.dirty = True
        if len(self.lines) >= self.limit or self.size >= MAX_LOG_BYTES:
            self.cut += 1
            return
        if len(text) > MAX_LOG_LINE:
            text = text[:MAX_LOG_LINE] + "..."
        text = _encodable(text)
        size = len(text) if text.isascii() else len(text.encode())
        if self.size + size > MAX_LOG_BYTES:
            self.by_bytes = True
            self.cut += 1
            self.size = MAX_LOG_BYTES
            return
        from time import time

        self.size += size
        self.lines.append((time(), stream, level, text))

    def finish(self) -> list[tuple[float, str, str, str]] | None:
        """The lines since the last `finish` (an unfinished one too), with the cut
        marker; None if there were none. Call it only if `dirty`."""
        for tee in self.tees:
            tee.end()
        self.dirty = False
        if not self.lines and not self.cut:
            return None
        lines, cut = self.lines, self.cut
        if cut:
            from time import time

            bound = (f"{MAX_LOG_BYTES // 1024} KiB of log text per run" if self.by_bytes
                     else f"logs.max_lines_per_run={self.limit}")
            lines.append((time(), "log", "warning", f"... {cut} more lines cut ({bound})"))
        self.lines, self.size, self.cut, self.by_bytes = [], 0, 0, False
        return lines


_capture = _Capture()


class _Tee:
    """`sys.stdout` or `sys.stderr` of a worker: writes through to the pool's drain,
    and keeps each whole line for the running invocation (`_Capture`)."""

    def __init__(self, stream: Any, name: str) -> None:
        self.stream = stream
        self.name = name
        self._partial = ""
        # The stream's own flush, found without `__getattr__` (which first fails the
        # normal lookup, building an AttributeError and its message) and called
        # without a Python frame: `_flush` calls it after every invocation.
        self.flush: Callable[[], None] = stream.flush
        _capture.tees.append(self)

    def write(self, text: str) -> int:
        if text:
            self._through(text)
            if "\n" in text:
                *lines, rest = (self._partial + text).split("\n")
                for line in lines:
                    _capture.add(self.name, "", line)
                self._partial = rest
            else:
                self._partial += text
                _capture.dirty = True
            if len(self._partial) > MAX_LOG_LINE:
                self.end()
        return len(text)

    def _through(self, text: str) -> None:
        self.stream.write(text)

    def end(self) -> None:
        """The invocation ended: an unfinished line is its last one."""
        if self._partial:
            _capture.add(self.name, "", self._partial)
            self._partial = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _StderrMarker(_Tee):
    """`sys.stderr` of a worker: each line it writes is marked WARNING for the drain,
    so stderr stands out from stdout, which shares the pipe (`protocol.LEVEL_MARK`)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream, "stderr")
        self._at_start = True

    def _through(self, text: str) -> None:
        lines = text.split("\n")
        head = f"{_STDERR}{lines[0]}" if self._at_start and lines[0] else lines[0]
        rest = [f"{_STDERR}{line}" if line else line for line in lines[1:]]
        self.stream.write("\n".join([head, *rest]))
        self._at_start = text.endswith("\n")


_LEVEL_MARK = protocol.LEVEL_MARK.decode("ascii")
_STDERR = f"{_LEVEL_MARK}WARNING "


def _watch_lifeline(fd: int) -> None:
    """Kill our whole process group once the supervisor is gone (its end closes)."""
    try:
        while os.read(fd, 64):
            pass
    except OSError:
        pass
    os.killpg(os.getpgid(0), SIGKILL)


def _start_lifeline(fd: int) -> None:
    import _thread

    # A small stack: the default 8 MiB would count against memory_mb (RLIMIT_DATA).
    _thread.stack_size(256 * 1024)
    _thread.start_new_thread(_watch_lifeline, (fd,))


def _limit_memory(megabytes: int) -> None:
    """Bound the memory the worker can write to: heap, mmaps, thread stacks.

    RLIMIT_DATA, not RLIMIT_AS: glibc reserves 64 MiB of address space for
    each thread's malloc arena (the lifeline thread's included) without
    using it, so under RLIMIT_AS a worker took ~78 MiB before loading
    anything; `memory_mb: 64` could not load at all, and each thread a
    handler started cost it another 64 MiB. Reserved but unwritable
    address space does not count towards RLIMIT_DATA (Linux >= 4.7).
    """
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def _load(path: str, attr: str) -> tuple[Callable[..., Any], bool]:
    """Import the handler file by path and find the callable; (handler, takes_ctx)."""
    # importlib.util re-exports these from the import system's own modules, which
    # are loaded at interpreter start; importing importlib.util itself pulls in
    # contextlib, collections and functools: ~9 ms of the ~25 ms start budget.
    from _frozen_importlib import module_from_spec
    from _frozen_importlib_external import spec_from_file_location

    folder, filename = os.path.split(os.path.abspath(path))
    # The handler's folder goes first so its helper modules import by name.
    sys.path.insert(0, folder)
    stem = filename.rpartition(".")[0] or filename
    name = stem if stem.isidentifier() and stem not in sys.modules else "fnrun_handler"
    spec = spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python file")
    module = module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    handler = getattr(module, attr, None)
    if handler is None:
        raise AttributeError(f"{path} has no attribute {attr!r}")
    if not callable(handler):
        raise TypeError(f"{path}:{attr} is a {type(handler).__name__}, not a callable")
    code = getattr(handler, "__code__", None)
    if code is not None and code.co_flags & CO_GENERATORS:
        # Else each invocation fails with "handler returned generator", after its side effects.
        raise TypeError(
            f"{path}:{attr} is a generator function: a handler returns its result, not yields it"
        )
    return handler, _takes_ctx(handler)


def _takes_ctx(handler: Callable[..., Any]) -> bool:
    """Whether to call handler(event, ctx) rather than handler(event).

    Raises:
        TypeError: neither call fits: no positional parameter, or more than
            two, or a keyword-only one, without a default.
    """
    code = getattr(handler, "__code__", None)
    if code is not None:
        bound = 1 if getattr(handler, "__self__", None) is not None else 0
        positional: int = code.co_argcount - bound
        required = positional - len(getattr(handler, "__defaults__", None) or ())
        keywords = code.co_kwonlyargcount - len(getattr(handler, "__kwdefaults__", None) or {})
        varargs = bool(code.co_flags & CO_VARARGS)
    else:
        import inspect

        params = inspect.signature(handler).parameters.values()
        ordered = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        positional = len(ordered)
        required = sum(p.default is p.empty for p in ordered)
        keywords = sum(p.kind is p.KEYWORD_ONLY and p.default is p.empty for p in params)
        varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    if required > 2 or keywords:
        # Else each invocation would fail with the call's TypeError, and burn its retries.
        raise TypeError(
            f"handler must accept (event) or (event, ctx), but it requires {required}"
            f" positional and {keywords} keyword-only arguments"
        )
    if varargs:
        return True
    if positional < 1:
        raise TypeError("handler must accept (event) or (event, ctx)")
    return positional >= 2


class Runner:
    """Calls the handler, sync or async; async ones share one event loop per worker."""

    def __init__(self, handler: Callable[..., Any], takes_ctx: bool) -> None:
        self.handler = handler
        self.takes_ctx = takes_ctx
        self.loop: Any = None

    def call(self, event: HandlerEvent, ctx: Context) -> Any:
        result = self.handler(event, ctx) if self.takes_ctx else self.handler(event)
        if hasattr(result, "__await__"):
            if self.loop is None:
                import asyncio

                self.loop = asyncio.new_event_loop()
            result = self.loop.run_until_complete(result)
        return result


def _describe(exc: BaseException) -> tuple[str, str]:
    """("ExcType: message", traceback text without this module's or the import system's frames).

    Both are bounded and encodable as UTF-8, whatever the exception: its
    `__str__` may raise, or return megabytes or lone surrogates, and a store
    that cannot write the error would leave the delivery running.
    """
    import traceback

    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == __file__
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - the handler's __str__ is broken, not the attempt
        message = "<str() of the exception failed>"
    name = type(exc).__name__
    line = f"{name}: {message.splitlines()[0]}" if message.strip() else name
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:  # noqa: BLE001 - e.g. an exception group whose members misbehave
        text = line + "\n"
    if len(line) > MAX_ERROR:
        line = line[:MAX_ERROR] + "..."
    if len(text) > MAX_TRACEBACK:
        half = MAX_TRACEBACK // 2
        cut = len(text) - 2 * half
        text = f"{text[:half]}\n... ({cut} characters cut) ...\n{text[-half:]}"
    return _encodable(line), _encodable(text)


def _encodable(text: str) -> str:
    """`text` with lone surrogates escaped, so that it encodes as UTF-8."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _invoke(
    runner: Runner, ctx: Context, raw_event: dict[str, Any] | list[dict[str, Any]]
) -> dict[str, Any]:
    """Run one invocation and build its `done` message."""
    try:
        # A list is a batch (SPEC 12, `batch:`): the handler gets a list of events.
        event: Any = ([HandlerEvent(raw) for raw in raw_event] if isinstance(raw_event, list)
                      else HandlerEvent(raw_event))
        value = runner.call(event, ctx)
    except BaseException as exc:  # noqa: BLE001 - whatever the handler raises is its result
        error, text = _describe(exc)
        # After a MemoryError the heap is in doubt; SystemExit, KeyboardInterrupt
        # and other BaseExceptions asked this process to stop. Either way the
        # worker is not reused, and the attempt fails like any other.
        fatal = isinstance(exc, MemoryError) or not isinstance(exc, Exception)
        return {"kind": "done", "ok": False, "error": error, "traceback": text, "fatal": fatal}
    try:
        result = results.encode_result(value)
    except TypeError as exc:
        return {"kind": "done", "ok": False, "error": _encodable(str(exc)), "traceback": None}
    except Exception as exc:  # noqa: BLE001 - e.g. the items() of a returned dict subclass
        error, text = _describe(exc)
        return {"kind": "done", "ok": False, "error": error, "traceback": text}
    return {"kind": "done", "ok": True, "result": result, "emits": ctx._emits}


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - the handler broke its own stream: nowhere to say so
            pass


def _send(fd: int, message: dict[str, Any]) -> None:
    try:
        protocol.write_frame(fd, message)
    except protocol.ProtocolError as exc:
        failed = {"kind": "done", "ok": False, "error": f"result not sent: {exc}"}
        protocol.write_frame(fd, failed)


def _mark(invocation: str) -> None:
    """Tell the output drain that what follows is `invocation`'s (`protocol.OUTPUT_MARK`)."""
    try:
        os.write(1, protocol.OUTPUT_MARK + invocation.encode() + b"\n")
    except OSError:
        pass  # the handler closed its stdout: nothing of it is left to tag


def serve(fd: int, runner: Runner) -> None:
    """Answer `invoke` batches until the pool closes the socket."""
    from time import time

    pid = os.getpid()
    while True:
        message = protocol.read_frame(fd)
        if message is None:
            return
        function, timeout = message["function"], message["timeout"]
        _capture.limit = message.get("lines", DEFAULT_LOG_LINES)
        for item in message["items"]:
            _mark(item["invocation"])  # after the previous item's _flush: its output is before
            if _capture.dirty:
                _capture.finish()  # what was written between invocations is no one's
            # Each item's deadline starts with the item: the pool times items, not batches.
            ctx = Context(function, item["attempt"], time() + timeout, item["invocation"])
            done = _invoke(runner, ctx, item["event"])
            _flush()
            if _capture.dirty and (logs := _capture.finish()) is not None:
                done["logs"] = logs
            if os.getpid() != pid:
                # A child the handler forked (os.fork) and let return: it must not
                # answer for the item, nor read the next one off the worker's socket.
                os._exit(0)
            _send(fd, done)
            if done.get("fatal"):
                break  # the pool retires this worker; the rest of the batch never started


def _parse(argv: list[str]) -> dict[str, str]:
    options = dict(arg.partition("=")[::2] for arg in argv)
    missing = {"proto", "lifeline", "file", "attr", "function"} - options.keys()
    if missing:
        raise SystemExit(f"runtime.worker.child: missing {', '.join(sorted(missing))}")
    return options


def _report_load_error(fd: int, exc: BaseException, memory_mb: int) -> None:
    try:
        error, text = _describe(exc)
    except BaseException:  # noqa: BLE001 - e.g. no memory left to import traceback
        error, text = type(exc).__name__, ""
    if memory_mb and (isinstance(exc, MemoryError) or getattr(exc, "errno", None) == ENOMEM):
        error = f"{error} (memory_mb {memory_mb} is too small to load the handler)"
    _flush()
    protocol.write_frame(fd, {"kind": "load_error", "error": error, "traceback": text})


def main(argv: list[str]) -> None:
    """Start: guard and runner, fault dumps, lifeline, memory limit, load, `ready`, then serve."""
    options = _parse(argv)
    fd = int(options["proto"])
    fault = guard.split(fd, int(options["lifeline"]))  # from here on, in the runner
    faulthandler.enable(fault, all_threads=True)
    _start_lifeline(int(options["lifeline"]))
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stdout = _Tee(sys.stdout, "stdout")
    sys.stderr = _StderrMarker(sys.stderr)
    try:
        if int(options.get("memory_mb") or 0):
            _limit_memory(int(options["memory_mb"]))
        runner = Runner(*_load(options["file"], options["attr"]))
    except BaseException as exc:  # noqa: BLE001 - anything the import raises, even SystemExit
        _report_load_error(fd, exc, int(options.get("memory_mb") or 0))
        return
    _flush()  # what the import printed is tagged "-", not with the first invocation
    protocol.write_frame(fd, {"kind": "ready"})
    serve(fd, runner)


if __name__ == "__main__":
    main(sys.argv[1:])
