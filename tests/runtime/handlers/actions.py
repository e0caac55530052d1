"""Worker test handlers: `handle` does what `event.data["do"]` says.

One callable serves every pool test, so a test picks behaviour per event and
a single warm worker can be observed across several invocations.
"""

from __future__ import annotations

import asyncio
import enum
import http
import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import helper  # a sibling module: the worker puts the handler's folder on sys.path

MiB = 1024 * 1024


def _write(path: str, text: str) -> None:
    tmp = Path(path + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # atomic, so the test never reads half a file


def handle(event: Any, ctx: Any) -> Any:
    data = event.data if isinstance(event.data, dict) else {}
    action = data.get("do", "mutate" if isinstance(event.data, bytes) else "describe")
    return ACTIONS[action](event, ctx, data)


def describe(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    http = event.http
    return {
        "id": event.id, "type": event.type, "source": event.source,
        "subject": event.subject, "data": data, "time": event.time.isoformat(),
        "tz": event.time.utcoffset() is not None, "extensions": dict(event.extensions),
        "http": None if http is None else [http.method, http.path, dict(http.query),
                                           dict(http.headers)],
        "function": ctx.function, "attempt": ctx.attempt, "deadline": ctx.deadline,
        "pid": os.getpid(), "helper": helper.NAME,
    }


def emit(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    ctx.emit("order.charged", {"order": 7})
    ctx.emit("blob.saved", b"\x00\xff", subject="s1", id="fixed-id")
    if data.get("fail"):
        raise ValueError("card declined")
    return "emitted"


def bad_emit(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    errors = []
    for args in (("", None), (5, None), ("x", {1, 2}), ("x", {"k": object()})):
        try:
            ctx.emit(*args)
        except TypeError as exc:
            errors.append(str(exc))
    return errors


def emit_checks(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    """Emits a store could not route or keep: each refused, and the invocation goes on."""
    refused = []
    bad = [
        ("has space", {}), ("a..b", {}), ("order.*", {}), (".a", {}), ("x" * 256, {}),
        ("a.b", {"id": ""}), ("a.b", {"id": "x\ud800"}), ("a.b", {"id": "line\nbreak"}),
        ("a.b", {"id": "kept"}),  # the second use of an id: the store would drop it silently
    ]
    ctx.emit("a.b", 1, id="kept")
    for type_, kwargs in bad:
        try:
            ctx.emit(type_, 2, **kwargs)
        except ValueError as exc:
            refused.append(str(exc))
    try:
        ctx.emit("a.b", {1}, id="fixed-later")
    except TypeError:
        ctx.emit("a.b", [1], id="fixed-later")  # a refused emit does not use up its id
    ctx.emit("Order_v2.created-now", None)
    return refused


def write_pid_and_exit(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    _write(data["pidfile"], str(os.getpid()))
    os._exit(3)


def write_pid_and_wait(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    _write(data["pidfile"], str(os.getpid()))
    time.sleep(data.get("seconds", 60))
    return "woke"


def spawn_grandchild(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _write(data["pidfile"], f"{os.getpid()} {child.pid}")
    time.sleep(60)


def allocate(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    block = bytearray(data["mb"] * MiB)
    return len(block)


def threads(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    """Allocate a MiB in each of `count` threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    barrier = threading.Barrier(data["count"])

    def work(_: int) -> int:
        barrier.wait(10)
        return len(bytearray(MiB))

    with ThreadPoolExecutor(data["count"]) as pool:
        return sum(pool.map(work, range(data["count"])))


def environment(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    return dict(os.environ)


def noisy(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    for i in range(20_000):
        print(f"line {i}")
    sys.stdout.flush()
    os.write(1, bytes(range(256)) * 64 + b"\n")  # binary garbage straight to the fd
    os.write(2, b"\xff\xfe\x00 not utf-8\n")
    os.write(1, b"x" * 50_000 + b"\n")  # one line far over the log bound
    ctx.log.info("done printing")
    return "survived"


def chatty(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    """Write to every stream a run record keeps: ctx.log, print, stderr, an unfinished line."""
    ctx.log.info("charging %s", data.get("order"))
    print("printed ✓")
    print("to stderr", file=sys.stderr)
    for i in range(data.get("lines", 0)):
        print(f"line {i}")
    for _ in range(data.get("big", 0)):
        print("x" * 8000)
    try:
        raise KeyError("card")
    except KeyError:
        ctx.log.warning("no card", exc_info=True)
    sys.stdout.write("unfinished")
    if data.get("fail"):
        raise RuntimeError("kaboom")
    return "chatted"


def fork_and_return(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    """os.fork() with no os._exit in the child: both processes return from the handler."""
    child = os.fork() == 0
    return {"child": child, "pid": os.getpid()}


class Unflushable:
    def write(self, text: str) -> int:
        raise RuntimeError("no writes here")

    def flush(self) -> None:
        raise RuntimeError("no flushing here")


def break_streams(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    sys.stdout = None  # type: ignore[assignment]
    sys.stderr = Unflushable()  # type: ignore[assignment]
    return os.getpid()


def say(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    """Print this invocation's id through print, straight to fd 1, and unfinished if asked."""
    print(f"said {ctx.invocation}")
    os.write(1, f"raw {ctx.invocation}\n".encode())
    if data.get("partial"):
        sys.stdout.write(f"unfinished {ctx.invocation}")
        sys.stdout.flush()
    return ctx.invocation


def overlap(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    start = time.time()
    time.sleep(data["seconds"])
    _write(os.path.join(data["dir"], f"{event.id}"), f"{start} {time.time()}")
    return os.getpid()


def mutate(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    refused = []
    attempts = [
        lambda: setattr(event, "type", "x"), lambda: setattr(ctx, "attempt", 9),
        lambda: event.extensions.__setitem__("a", 1), lambda: delattr(event, "id"),
    ]
    for attempt in attempts:
        try:
            attempt()
        except (AttributeError, TypeError):
            refused.append(True)
    return {"refused": len(refused), "data": event.data.hex(), "type": event.type}


def pid(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    return os.getpid()


def bad_return(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    return {1, 2}


def nested_bad_return(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    return {"items": [1, 2, object()]}


def response(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    return (201, b"made", {"x-made": "yes"})


def raise_error(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise KeyError("missing-thing")


def raise_memory(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise MemoryError("pretend the heap ran out")


class Stop(BaseException):
    """Neither an Exception nor one of Python's own: a handler's BaseException."""


class BrokenMessage(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message today")


def exit_(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    sys.exit(data.get("code"))


def interrupt(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise KeyboardInterrupt


def raise_base(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise Stop("stop everything")


def raise_broken(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise BrokenMessage()


def raise_huge(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise ValueError("m" * (5 * MiB))


def raise_surrogate(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    raise ValueError("bad \ud800 thing")


def record(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    """Append this item's start to a log, sleep if asked, then crash or exit if asked."""
    with open(data["log"], "a") as log:
        log.write(f"{data['n']} {os.getpid()} {time.time()} {ctx.deadline}\n")
    time.sleep(data.get("seconds", 0))
    if data.get("crash"):
        os._exit(4)
    return data["n"]


class Colour(enum.StrEnum):
    RED = "red"


class Size(enum.IntEnum):
    BIG = 3


RETURNS = {
    "nan": lambda: {"x": float("nan")},
    "inf": lambda: [1.0, float("-inf")],
    "big_int": lambda: {"n": [10**5000]},
    "deep": lambda: _nested(5000),
    "subclasses": lambda: {Colour.RED: [Size.BIG, Colour.RED, OrderedDict(a=1.5)]},
    "status_enum": lambda: (http.HTTPStatus.CREATED, Colour.RED, {"x-colour": Colour.RED}),
}


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


def returns(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    return RETURNS[data["value"]]()


def emit_not_json(event: Any, ctx: Any, data: dict[str, Any]) -> Any:
    errors = []
    for value in (float("nan"), {"n": 10**5000}):
        try:
            ctx.emit("x.y", value)
        except TypeError as exc:
            errors.append(str(exc))
    ctx.emit("plain.enum", {Colour.RED: Size.BIG}, subject=Colour.RED)
    return errors


ACTIONS = {
    "describe": describe, "emit": emit, "bad_emit": bad_emit,
    "write_pid_and_exit": write_pid_and_exit, "write_pid_and_wait": write_pid_and_wait,
    "spawn_grandchild": spawn_grandchild, "allocate": allocate, "environment": environment,
    "noisy": noisy, "mutate": mutate, "overlap": overlap, "pid": pid, "bad_return": bad_return,
    "nested_bad_return": nested_bad_return, "response": response, "raise": raise_error,
    "raise_memory": raise_memory, "record": record, "returns": returns,
    "emit_not_json": emit_not_json, "exit": exit_, "interrupt": interrupt,
    "raise_base": raise_base, "raise_broken": raise_broken, "raise_huge": raise_huge,
    "raise_surrogate": raise_surrogate, "emit_checks": emit_checks,
    "threads": threads, "say": say, "fork_and_return": fork_and_return,
    "break_streams": break_streams, "chatty": chatty,
}


async def handle_async(event: Any, ctx: Any) -> Any:
    await asyncio.sleep(0.01)
    ctx.emit("async.done", {"id": event.id})
    return {"async": True, "attempt": ctx.attempt, "loop": id(asyncio.get_running_loop())}


async def exit_async(event: Any, ctx: Any) -> Any:
    await asyncio.sleep(0)
    sys.exit(2)


def one_arg(event: Any) -> Any:
    return f"only {event.type}"


def with_defaults(event: Any, ctx: Any = None, extra: str = "x", *, key: int = 1) -> Any:
    return [ctx is not None, extra, key]
