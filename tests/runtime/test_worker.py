"""The worker child and its protocol: encoding tables, and a child driven by hand."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import OrderedDict
from collections.abc import Iterator
from enum import IntEnum, StrEnum
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from runtime import results
from runtime.events import Event
from runtime.results import decode_result, encode_result
from runtime.worker import protocol
from runtime.worker.protocol import ProtocolError

HANDLERS = Path(__file__).parent / "handlers"

pytestmark = pytest.mark.timeout(30)


class Colour(StrEnum):
    RED = "red"


class Size(IntEnum):
    BIG = 3


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (None, {"json": None}),
        ({"a": [1, 2.5, True]}, {"json": {"a": [1, 2.5, True]}}),
        ([1, (2, 3)], {"json": [1, (2, 3)]}),
        (7, {"json": 7}),
        ("hi", {"text": "hi"}),
        (b"\x00\xff", {"bytes": "AP8="}),
        ((204, None), {"status": 204, "body": {"json": None}, "headers": {}}),
        (OrderedDict(a=Size.BIG), {"json": {"a": 3}}),
        ({Colour.RED: [Colour.RED]}, {"json": {"red": ["red"]}}),
        (Colour.RED, {"text": "red"}),
        ((HTTPStatus.OK, "x"), {"status": 200, "body": {"text": "x"}, "headers": {}}),
        (10**4000, {"json": 10**4000}),
        (
            (200, "ok", {"x-a": "1"}),
            {"status": 200, "body": {"text": "ok"}, "headers": {"x-a": "1"}},
        ),
    ],
)
def test_encode_result_table(value: Any, encoded: dict[str, Any]) -> None:
    assert encode_result(value) == encoded
    # Only exact types: marshal, which carries the result, refuses subclasses.
    frame = protocol.pack({"kind": "done", "result": encoded})
    assert protocol.unpack(frame[protocol.HEADER :])["result"] == encoded


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1, 2}, f"handler returned set, which is not {results.RESULT_SHAPES}"),
        (object(), "handler returned object, which is not JSON"),
        ({"a": {"b": [0, {3}]}}, "returned dict with set at ['a']['b'][1], which is not JSON"),
        ({1: "x"}, "handler returned dict with int key 1, which is not JSON"),
        ((1, 2, 3, 4), "it has 4 items"),
        (("200", "x"), "status '200' is not an int from 100 to 599"),
        ((True, "x"), "status True is not an int"),
        ((200, "x", {"a": 1}), "headers must be a dict of str to str"),
        ((200, "x", {"x-a": "v\r\nset-cookie: s=1"}), "header x-a has a line break or NUL"),
        ((200, "x", {"x-a": "v\n"}), "header x-a has a line break or NUL"),
        ((200, "x", {"x a": "v"}), "header name 'x a' is not an HTTP token"),
        ((200, "x", {"": "v"}), "header name '' is not an HTTP token"),
        ((200, (1, 2)), "the body is itself a tuple"),
        ((200, {2}), "handler returned a response body of set, which is not"),
        (float("nan"), "handler returned float nan, which is not JSON"),
        ({"a": [float("inf")]}, "handler returned dict with float inf at ['a'][0], which is not"),
        (10**4200, "handler returned int of 4,200 digits or more, which is not JSON"),
        ((200, [float("nan")]), "response body of list with float nan at [0], which is not"),
    ],
)
def test_encode_result_refuses_with_one_line(value: Any, message: str) -> None:
    with pytest.raises(TypeError) as caught:
        encode_result(value)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "value", [None, {"a": 1}, "text", b"\x01\x02", (201, b"x", {"h": "v"}), (404, {"e": 1})]
)
def test_decode_result_inverts_encode(value: Any) -> None:
    status, kind, body, headers = decode_result(encode_result(value))
    if isinstance(value, tuple):
        expected_status, expected_body = value[0], value[1]
        expected_headers = value[2] if len(value) == 3 else {}
    else:
        expected_status, expected_body, expected_headers = None, value, {}
    assert (status, body, headers) == (expected_status, expected_body, expected_headers)
    assert kind == {bytes: "bytes", str: "text"}.get(type(expected_body), "json")


def test_not_json_names_a_bounded_path() -> None:
    value: Any = 1j
    for _ in range(50):
        value = {"key": [value]}
    with pytest.raises(TypeError) as caught:
        encode_result(value)
    message = str(caught.value)
    assert message.startswith("handler returned dict with complex at ['key'][0]['key'][0]")
    assert len(message) < results.MAX_PATH + 100 and "..." in message


def test_frames_round_trip_and_reject_garbage() -> None:
    message = {"kind": "done", "ok": True, "result": {"bytes": "AA=="}, "emits": []}
    frame = protocol.pack(message)
    assert protocol.frame_size(frame[: protocol.HEADER]) == len(frame) - protocol.HEADER
    assert protocol.unpack(frame[protocol.HEADER :]) == message
    with pytest.raises(ProtocolError):
        protocol.unpack(b"\x00garbage")
    with pytest.raises(ProtocolError):
        protocol.unpack(protocol.pack({"no": "kind"})[protocol.HEADER :])
    with pytest.raises(ProtocolError):
        protocol.frame_size((protocol.MAX_FRAME + 1).to_bytes(protocol.HEADER, "big"))
    with pytest.raises(ProtocolError):
        protocol.pack({"kind": "done", "result": {1, object()}})


class Child:
    """A worker started with `python -m runtime.worker.child`, driven over its socket."""

    def __init__(self, attr: str, file: Path = HANDLERS / "actions.py") -> None:
        ours, theirs = socket.socketpair()
        self.lifeline_r, self.lifeline_w = os.pipe()
        argv = [
            sys.executable, "-m", "runtime.worker.child", f"proto={theirs.fileno()}",
            f"lifeline={self.lifeline_r}", f"file={file}", f"attr={attr}", "function=fn",
        ]
        self.process = subprocess.Popen(
            argv, pass_fds=(theirs.fileno(), self.lifeline_r), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        )
        theirs.close()
        os.close(self.lifeline_r)
        self.sock = ours

    def receive(self) -> dict[str, Any] | None:
        return protocol.read_frame(self.sock.fileno())

    def send(self, *events: Event, timeout: float = 30, lines: int = 200) -> None:
        protocol.write_frame(self.sock.fileno(), {
            "kind": "invoke", "function": "fn", "timeout": timeout, "lines": lines,
            "items": [
                {"event": event.to_dict(), "attempt": n, "invocation": f"inv-{n}"}
                for n, event in enumerate(events, 1)
            ],
        })

    def invoke(self, event: Event) -> dict[str, Any] | None:
        self.send(event)
        return self.receive()

    def close(self) -> None:
        self.sock.close()
        try:
            os.close(self.lifeline_w)
        except OSError:
            pass
        self.process.kill()
        self.process.wait()


@pytest.fixture
def child() -> Iterator[Child]:
    worker = Child("handle")
    yield worker
    worker.close()


def test_child_answers_ready_then_done(child: Child) -> None:
    assert child.receive() == {"kind": "ready"}
    done = child.invoke(Event(type="a.b", data=b"\x01\x02"))
    assert done is not None and done["kind"] == "done" and done["ok"] is True
    # Bytes data arrives as bytes; event and ctx refuse every change.
    assert done["result"] == {"json": {"refused": 4, "data": "0102", "type": "a.b"}}


def test_child_answers_each_item_of_a_batch_as_it_ends(child: Child) -> None:
    assert child.receive() == {"kind": "ready"}
    events = [Event(type="t", data={"do": "describe", "n": n}) for n in range(3)]
    started = time.time()
    child.send(*events, timeout=7)
    dones = [child.receive() for _ in events]
    got = [d["result"]["json"] for d in dones if d is not None and d["ok"]]
    assert [g["id"] for g in got] == [e.id for e in events]  # in order, one done each
    assert [g["attempt"] for g in got] == [1, 2, 3]
    # Each item's deadline is its own start plus the timeout, not the batch's.
    assert all(started + 7 <= g["deadline"] <= time.time() + 7 for g in got)
    assert got[0]["deadline"] <= got[1]["deadline"] <= got[2]["deadline"]


def test_each_item_brings_back_the_lines_it_wrote(child: Child) -> None:
    assert child.receive() == {"kind": "ready"}
    before = time.time()
    child.send(Event(type="t", data={"do": "chatty", "order": 7, "fail": True}),
               Event(type="t", data={"do": "pid"}))
    done, quiet = child.receive(), child.receive()
    assert done is not None and done["ok"] is False and "kaboom" in done["error"]
    logs = done["logs"]
    assert [line[1:3] for line in logs] == [
        ("log", "info"), ("stdout", ""), ("stderr", ""), ("log", "warning"), ("stdout", "")]
    assert [line[3].splitlines()[0] for line in logs] == [
        "charging 7", "printed ✓", "to stderr", "no card", "unfinished"]
    assert "KeyError: 'card'" in logs[3][3]  # the record's traceback comes with it
    assert all(before <= line[0] <= time.time() for line in logs)
    # An item that writes nothing brings back nothing (and costs nothing).
    assert quiet is not None and quiet["ok"] is True and "logs" not in quiet


@pytest.mark.parametrize(
    ("data", "lines", "kept", "marker"),
    [
        ({"lines": 10}, 6, 6, "... 9 more lines cut (logs.max_lines_per_run=6)"),
        ({"lines": 3}, 0, 0, "... 8 more lines cut (logs.max_lines_per_run=0)"),
        ({"big": 9}, 200, 11, "... 3 more lines cut (64 KiB of log text per run)"),
    ],
)
def test_lines_past_the_bounds_are_cut_with_a_marker(
    child: Child, data: dict[str, Any], lines: int, kept: int, marker: str
) -> None:
    assert child.receive() == {"kind": "ready"}
    child.send(Event(type="t", data={"do": "chatty", **data}), lines=lines)
    done = child.receive()
    assert done is not None and done["ok"] is True
    *logs, last = done["logs"]
    assert len(logs) == kept and last[1:] == ("log", "warning", marker)
    assert sum(len(line[3].encode()) for line in logs) <= 64 * 1024


@pytest.mark.parametrize(
    ("action", "error"), [("raise_memory", "MemoryError"), ("exit", "SystemExit")]
)
def test_a_fatal_item_ends_the_batch(child: Child, action: str, error: str) -> None:
    assert child.receive() == {"kind": "ready"}
    child.send(Event(type="t", data={"do": action}), Event(type="t", data={"do": "pid"}))
    done = child.receive()
    assert done is not None and done["fatal"] is True and error in done["error"]
    child.sock.shutdown(socket.SHUT_WR)
    assert child.receive() is None  # the second item never ran
    assert child.process.wait(10) == 0


def test_child_exits_cleanly_when_the_socket_closes(child: Child) -> None:
    assert child.receive() == {"kind": "ready"}
    child.sock.shutdown(socket.SHUT_RDWR)
    assert child.process.wait(10) == 0


def test_child_kills_its_group_when_the_lifeline_closes(child: Child, tmp_path: Path) -> None:
    assert child.receive() == {"kind": "ready"}
    pidfile = tmp_path / "pid"
    event = Event(type="t", data={"do": "write_pid_and_wait", "pidfile": str(pidfile)})
    child.send(event)
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline, "handler never started"
        time.sleep(0.01)
    os.close(child.lifeline_w)  # what the supervisor's death does
    assert child.process.wait(5) == -9


def test_load_error_is_reported_then_the_child_exits(tmp_path: Path) -> None:
    handler = tmp_path / "broken.py"
    handler.write_text("import does_not_exist_anywhere\n")
    worker = Child("handle", handler)
    try:
        message = worker.receive()
        assert message is not None and message["kind"] == "load_error"
        assert message["error"] == "ModuleNotFoundError: No module named 'does_not_exist_anywhere'"
        assert "broken.py" in message["traceback"]
        assert "<frozen" not in message["traceback"]  # the import system's frames are noise
        assert worker.process.wait(10) == 0
    finally:
        worker.close()
