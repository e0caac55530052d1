"""The bad-input corpus (issue 17, Deliver 5): hostile and mistaken projects, each one line.

Every case is a project with exactly one mistake, run through the `fnrun
validate` command (its `main`, in this process: the same parser, commands
and error reporting as `python -m runtime validate`, which a subset also
runs as a real subprocess, and another subset through `fnrun run`). Each
must exit 1 with exactly one line on stderr, `FILE:LINE:COL: message` for
the file at fault (or `fnrun: message` naming it where no position
exists), no traceback, within 2 s of CPU, and no user code run: every project's
handler writes a marker file when imported, and the marker must not exist.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import anyio
import httpx
import pytest
from watchfiles import Change

from runtime.cli.main import main
from tests.e2e.harness import Project, wait_until

pytestmark = pytest.mark.timeout(30)

MARKER = "imported.marker"
HANDLER = '''
import os
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "imported.marker"), "w")

def main(event, ctx):
    return event.data
'''
GOOD = "functions:\n  f:\n    handler: h.py:main\n"
MAX_SECONDS = 2.0
"""Most CPU time one case may take (the slowest, a 300,000-term handler, ~1 s)."""
MAX_WALL_SECONDS = 10.0


@dataclass(frozen=True)
class Case:
    """One bad project: files to write (relative to the project), the file at
    fault, and a piece of the message a user must see."""

    files: dict[str, str | bytes]
    at: str
    says: str
    setup: Callable[[Path], None] | None = None
    positioned: bool = True
    """False: the mistake has no position, the line is `fnrun: ...` naming `at`."""


def fn(body: str, *, handler: str = "h.py:main", name: str = "f") -> str:
    """functions/f.yaml text: one function `name` with `body` lines under it."""
    lines = "".join(f"    {line}\n" for line in body.splitlines())
    return f"functions:\n  {name}:\n    handler: {handler}\n{lines}"


def yaml_case(text: str | bytes, says: str, at: str = "functions/f.yaml") -> Case:
    return Case({at: text}, at, says)


def function_case(body: str, says: str, **kw: str) -> Case:
    return Case({"functions/f.yaml": fn(body, **kw)}, "functions/f.yaml", says)


def trigger_case(trigger: str, says: str) -> Case:
    return function_case(f"triggers:\n  - {trigger}", says)


def config_case(text: str | bytes, says: str) -> Case:
    return Case({"fnrun.yaml": text, "functions/f.yaml": GOOD}, "fnrun.yaml", says)


def source_case(source: str | bytes, says: str, name: str = "s.py") -> Case:
    files: dict[str, str | bytes] = {
        "functions/f.yaml": GOOD.replace("h.py", name), f"functions/{name}": source,
    }
    return Case(files, f"functions/{name}", says)


def special(at: str, make: Callable[[Path], None], says: str) -> Case:
    """A project whose file `at` is made by `make` (a FIFO, a link, a socket)."""
    return Case({}, at, says, setup=lambda root: make(root / at))


def fifo(path: Path) -> None:
    os.mkfifo(path)


def link_loop_of_two(path: Path) -> None:
    path.symlink_to("m.link")  # not .yaml: the loop is one file's mistake
    path.with_name("m.link").symlink_to(path.name)


def link_to_fifo(path: Path) -> None:
    os.mkfifo(path.with_name("pipe"))
    path.symlink_to("pipe")


def link_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def unix_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))


def sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as file:
            file.truncate(size)

    return make


def nested(depth: int, open_: str, close: str) -> str:
    return "functions: " + open_ * depth + close * depth + "\n"


def block_nested(depth: int) -> str:
    return "functions:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) + \
        "  " * (depth + 1) + "v: 1\n"


BIG = "9" * 5000

YAML_SYNTAX = {
    "indent less": yaml_case(GOOD + "   timeout: 3s\n", "bad indentation"),
    "indent more": yaml_case(GOOD + "      timeout: 3s\n", "unexpected ':'"),
    "indent list": yaml_case(GOOD + "    triggers:\n      - event: a\n     - event: b\n",
                             "bad indentation"),
    "list then key": yaml_case("- a\nfunctions: {}\n", "a list and keys"),
    "tab": yaml_case("functions:\n\tf:\n    handler: h.py:main\n", "tab character"),
    "tab inside": yaml_case(GOOD + "\ttimeout: 3s\n", "tab character"),
    "unclosed flow list": yaml_case("functions: [a, b\n", "flow sequence"),
    "unclosed flow map": yaml_case("functions: {f: {handler: h.py:main}\n", "flow mapping"),
    "unclosed double quote": yaml_case(GOOD.replace("h.py:main", '"h.py:main'), "quoted"),
    "unclosed single quote": yaml_case(GOOD.replace("h.py:main", "'h.py:main"), "quoted"),
    "two documents": yaml_case(GOOD + "---\nfunctions: {}\n", "second YAML document"),
    "alias": yaml_case("x: &a 1\nfunctions:\n  f: *a\n", "aliases are not allowed"),
    "merge key": yaml_case("functions:\n  g: &b {handler: h.py:main}\n  f:\n    <<: *b\n",
                           "aliases are not allowed"),
    "duplicate key": yaml_case(GOOD + "    timeout: 1s\n    timeout: 2s\n", "duplicate key"),
    "duplicate top key": yaml_case(GOOD + "functions: {}\n", "duplicate key"),
    "complex key list": yaml_case("functions:\n  ? [a, b]\n  : 1\n", "plain string"),
    "complex key map": yaml_case("functions:\n  ? {a: 1}\n  : 1\n", "plain string"),
    "complex key deep": yaml_case(GOOD + "    env:\n      ? [x]\n      : 1\n", "plain string"),
    "bell character": yaml_case(GOOD.replace("main", "main\x07"), "U+0007"),
    "nul character": yaml_case(GOOD.replace("main", "main\x00"), "U+0000"),
    "escape character": yaml_case("\x1b[31m" + GOOD, "U+001B"),
    "noncharacter": yaml_case(GOOD.replace("main", "main\ufffe"), "U+FFFE"),
    "latin-1 byte": yaml_case(GOOD.encode().replace(b"main", b"m\xe9in"), "not UTF-8"),
    "latin-1 comment": yaml_case(b"# caf\xe9\n" + GOOD.encode(), "not UTF-8"),
    "utf-16": yaml_case(GOOD.encode("utf-16"), "not UTF-8"),
    "encoded surrogate": yaml_case(GOOD.encode() + b"# \xed\xa0\x80\n", "not UTF-8"),
    "truncated utf-8": yaml_case(GOOD.encode() + b"# \xe2\x82\n", "not UTF-8"),
    "deep flow lists": yaml_case(nested(50_000, "[", "]"), "nested more than 64"),
    "deep flow maps": yaml_case("functions:\n  f: " + "{a: " * 50_000 + "1" + "}" * 50_000,
                                "nested more than 64"),
    "deep block maps": yaml_case(block_nested(200), "nested more than 64"),
    "deep mixed": yaml_case(nested(10_000, "[{a: ", "}]"), "nested more than 64"),
    "yaml 2.0 directive": yaml_case("%YAML 2.0\n---\n" + GOOD, "YAML"),
    "bad directive": yaml_case("%TAG !x! tag:x,2000:\n%TAG !x! tag:y,2000:\n---\n" + GOOD,
                               "duplicate tag handle"),
    "stray bracket": yaml_case(GOOD + "]\n", "a ']' with no '['"),
    "undefined tag handle": yaml_case("functions: !x!y {}\n", "tag"),
    "long simple key": yaml_case("functions:\n  " + "k" * 2000 + "\n: 1\n", "':' with no key"),
    "unclosed block scalar indicator": yaml_case("functions: |x\n  a\n", "block scalar"),
    "huge file": yaml_case("#" * (1024 * 1024 + 1), "larger than 1048576 bytes"),
    "many values": yaml_case(GOOD + "    secrets: [" + ",".join(["A"] * 200_000) + "]\n",
                             "more than 10000 values"),
    "many keys": yaml_case(GOOD + "    env:\n" + "".join(f"      A{i}: x\n" for i in range(60_000)),
                           "more than 10000 values"),
    "empty key value": yaml_case("functions:\n  : 1\n", "':' with no key"),
}

YAML_SCHEMA = {
    "top level list": yaml_case("- functions\n", "must be a mapping"),
    "top level scalar": yaml_case("functions\n", "must be a mapping"),
    "top level unknown key": yaml_case("function:\n  f: {handler: h.py:main}\n",
                                       "did you mean 'functions'"),
    "functions a list": yaml_case("functions:\n  - f\n", "functions must be a mapping"),
    "functions a string": yaml_case("functions: f\n", "functions must be a mapping"),
    "function name int": yaml_case("functions:\n  1: {handler: h.py:main}\n", "keys must be"),
    "function name null": yaml_case("functions:\n  ~: {handler: h.py:main}\n", "keys must be"),
    "function name bool": yaml_case("functions:\n  yes: {handler: h.py:main}\n", "keys must be"),
    "function name upper": function_case("", "bad function name 'Fx'", name="Fx"),
    "function name underscore": function_case("", "bad function name", name="a_b"),
    "function name digit first": function_case("", "bad function name", name="9a"),
    "function name too long": function_case("", "bad function name", name="a" * 64),
    "function name unicode": function_case("", "bad function name", name="café"),
    "function not a mapping": yaml_case("functions:\n  f: h.py:main\n", "must be a mapping"),
    "function a list": yaml_case("functions:\n  f: [h.py:main]\n", "must be a mapping"),
    "missing handler": yaml_case("functions:\n  f:\n    timeout: 1s\n", "needs 'handler'"),
    "handle typo": yaml_case("functions:\n  f:\n    handle: h.py:main\n",
                             "did you mean 'handler'"),
    "triger typo": function_case("triger: []", "did you mean 'triggers'"),
    "timeot typo": function_case("timeot: 3s", "did you mean 'timeout'"),
    "concurency typo": function_case("concurency: 2", "did you mean 'concurrency'"),
    "unknown key far": function_case("colour: red", "unknown key 'colour'"),
    "huge unknown key": function_case("k" * 1000 + "x: 1", "unknown key"),
    "timeout words": function_case("timeout: soon", "bad duration"),
    "timeout negative": function_case("timeout: -1s", "bad duration"),
    "timeout zero": function_case("timeout: 0s", "must be positive"),
    "timeout list": function_case("timeout: [1]", "duration"),
    "timeout infinite": function_case("timeout: 1.0e+400", "finite"),
    "timeout inf": function_case("timeout: .inf", "finite"),
    "timeout nan": function_case("timeout: .nan", "timeout"),
    "timeout big int": function_case(f"timeout: {BIG}", "4,300 digits"),
    "timeout big hex": function_case("timeout: 0x" + "f" * 400, "too large"),
    "timeout bool": function_case("timeout: true", "duration"),
    "concurrency zero": function_case("concurrency: 0", "at least 1"),
    "concurrency too many": function_case("concurrency: 257", "at most 256"),
    "concurrency string": function_case("concurrency: many", "must be an integer"),
    "concurrency float": function_case("concurrency: 1.5", "must be an integer"),
    "concurrency bool": function_case("concurrency: true", "must be an integer"),
    "concurrency big": function_case(f"concurrency: {BIG}", "too long a number"),
    "concurrency big negative": function_case(f"concurrency: -{BIG}", "too long a number"),
    "concurrency big hex": function_case("concurrency: 0x" + "f" * 500, "too long a number"),
    "concurrency bad int tag": function_case('concurrency: !!int "x"', "cannot read"),
    "retry true": function_case("retry: true", "mapping or false"),
    "retry string": function_case("retry: often", "mapping or false"),
    "retry attempts zero": function_case("retry: {max_attempts: 0}", "at least 1"),
    "retry attempts many": function_case("retry: {max_attempts: 1001}", "at most 1000"),
    "retry attempts big": function_case(f"retry: {{max_attempts: {BIG}}}", "too long a number"),
    "retry typo": function_case("retry: {max_attempt: 3}", "did you mean 'max_attempts'"),
    "retry backoff bad": function_case("retry: {backoff: fast}", "bad duration"),
    "retry backoff order": function_case("retry: {backoff: 10s, max_backoff: 1s}",
                                         "max_backoff must not be less"),
    "retry backoff big": function_case(f"retry: {{backoff: {BIG}}}", "4,300 digits"),
    "memory small": function_case("memory_mb: 1", "at least 16"),
    "memory huge": function_case("memory_mb: 9999999999", "at most"),
    "memory string": function_case("memory_mb: lots", "must be an integer"),
    "env not mapping": function_case("env: [A]", "env must be a mapping"),
    "env bad name": function_case("env: {1A: x}", "not a variable name"),
    "env list value": function_case("env: {A: [1]}", "must be a string"),
    "env nul value": function_case('env: {A: "x\\0y"}', "NUL"),
    "secrets not list": function_case("secrets: A", "secrets must be a list"),
    "secrets bad name": function_case("secrets: [a-b]", "not a variable name"),
    "secrets not string": function_case("secrets: [[A]]", "must be a string"),
    "triggers not list": function_case("triggers: {event: a}", "triggers must be a list"),
    "trigger not mapping": function_case("triggers: [event]", "a trigger must be a mapping"),
    "trigger two keys": function_case("triggers: [{event: a, schedule: '* * * * *'}]",
                                      "one key"),
    "trigger kind typo": trigger_case("evnet: a.b", "did you mean 'event'"),
    "trigger kind unknown": trigger_case("cron: '* * * * *'", "unknown trigger kind 'cron'"),
    "trigger kind not string": trigger_case("[a]: b", "plain string"),
    "data python tag": trigger_case(
        "schedule: {cron: '* * * * *', data: !!python/object/apply:os.system [touch x]}",
        "constructor"),
    "data binary": trigger_case("schedule: {cron: '* * * * *', data: !!binary 'AAAA'}",
                               "plain JSON"),
    "data bad date": trigger_case("schedule: {cron: '* * * * *', data: 2001-13-45}",
                                  "month must be in 1..12"),
    "data big int": trigger_case(f"schedule: {{cron: '* * * * *', data: {BIG}}}",
                                 "4,300 digits"),
    "duplicate function across files": Case(  # f.yaml (GOOD) comes second
        {"functions/a.yaml": GOOD}, "functions/f.yaml", "duplicate function name 'f'"),
}

TRIGGERS = {
    "event empty": trigger_case("event: ''", "must not be empty"),
    "event bad segment": trigger_case("event: 'a b'", "bad event pattern"),
    "event empty segment": trigger_case("event: a..b", "empty segment"),
    "event not string": trigger_case("event: [a]", "must be a string"),
    "event from bad": trigger_case("event: {type: a, from: start}", "'from' must be"),
    "event typo key": trigger_case("event: {typ: a}", "did you mean 'type'"),
    "event too long": trigger_case("event: " + "a" * 300, "longer than"),
    "cron minute": trigger_case("schedule: '61 * * * *'", "minute 61 is out of range 0-59"),
    "cron hour": trigger_case("schedule: '0 24 * * *'", "hour 24 is out of range 0-23"),
    "cron day": trigger_case("schedule: '0 0 32 * *'", "day of month 32 is out of range"),
    "cron day zero": trigger_case("schedule: '0 0 0 * *'", "day of month 0 is out of range"),
    "cron month": trigger_case("schedule: '0 0 1 13 *'", "month 13 is out of range 1-12"),
    "cron weekday": trigger_case("schedule: '0 0 * * 8'", "day of week 8 is out of range"),
    "cron second": trigger_case("schedule: '0 0 * * * 60'", "second 60 is out of range"),
    "cron range end": trigger_case("schedule: '1-70 * * * *'", "minute 70 is out of range"),
    "cron list item": trigger_case("schedule: '1,2,99 * * * *'", "minute 99"),
    "cron step zero": trigger_case("schedule: '*/0 * * * *'", "step '0'"),
    "cron step word": trigger_case("schedule: '*/x * * * *'", "step 'x'"),
    "cron month name": trigger_case("schedule: '0 0 1 foo *'", "month 'foo' is not a name"),
    "cron weekday name": trigger_case("schedule: '0 0 * * fun'", "day of week 'fun'"),
    "cron three fields": trigger_case("schedule: '* * *'", "it has 3 fields"),
    "cron seven fields": trigger_case("schedule: '* * * * * * *'", "it has 7 fields"),
    "cron empty": trigger_case("schedule: ''", "it has 0 fields"),
    "cron shorthand typo": trigger_case("schedule: '@daly'", "did you mean '@daily'"),
    "cron reboot": trigger_case("schedule: '@reboot'", "bad cron expression"),
    "cron garbage": trigger_case("schedule: 'L * * * *'", "bad cron expression"),
    "cron huge number": trigger_case(f"schedule: '{BIG} * * * *'", "out of range"),
    "cron never": trigger_case("schedule: '0 0 30 2 *'", "never fires"),
    "cron not string": trigger_case("schedule: [1]", "cron string or a mapping"),
    "cron missing": trigger_case("schedule: {timezone: UTC}", "needs 'cron'"),
    "timezone typo": trigger_case("schedule: {cron: '* * * * *', timezone: Europe/Berln}",
                                  "did you mean 'Europe/Berlin'"),
    "timezone path": trigger_case("schedule: {cron: '* * * * *', timezone: ../../etc/passwd}",
                                  "unknown timezone"),
    "timezone long": trigger_case("schedule: {cron: '* * * * *', timezone: " + "x" * 500 + "}",
                                  "unknown timezone"),
    "catch_up bad": trigger_case("schedule: {cron: '* * * * *', catch_up: some}",
                                 "catch_up must be one of"),
    "schedule typo key": trigger_case("schedule: {cron: '* * * * *', timzone: UTC}",
                                      "did you mean 'timezone'"),
    "webhook no slash": trigger_case("webhook: hook", "webhook"),
    "webhook bad method": trigger_case("webhook: {path: /h, methods: [FETCH]}", "FETCH"),
    "webhook bad mode": trigger_case("webhook: {path: /h, mode: later}", "mode"),
    "webhook secret name": trigger_case("webhook: {path: /h, secret_env: 'my secret'}",
                                        "secret_env must name"),
    "webhook signature alone": trigger_case("webhook: {path: /h, signature: github}",
                                            "needs secret_env"),
    "webhook max_body": trigger_case("webhook: {path: /h, max_body: huge}", "bad size"),
    "webhook typo key": trigger_case("webhook: {path: /h, method: [GET]}",
                                     "did you mean 'methods'"),
    "webhook path missing": trigger_case("webhook: {mode: sync}", "needs 'path'"),
    "webhook same path twice": Case(
        {"functions/f.yaml": fn("triggers: [{webhook: /h}]"),
         "functions/g.yaml": fn("triggers: [{webhook: /h}]", name="g")},
        "functions/g.yaml", "already declared by function 'f'"),
}

HANDLERS = {
    "no colon": function_case("", "FILE:CALLABLE", handler="h.py"),
    "empty": function_case("", "FILE:CALLABLE", handler="''"),
    "not a string": function_case("", "handler must be a string", handler="[h.py]"),
    "bad callable": function_case("", "is not a Python name", handler="h.py:1x"),
    "not py": function_case("", "must be a .py file", handler="h.txt:main"),
    "parent": function_case("", "outside the functions folder", handler="../x.py:main"),
    "absolute": function_case("", "not an absolute path", handler="/etc/x.py:main"),
    "sneaky parent": function_case("", "outside", handler="a/../../x.py:main"),
    "missing file": function_case("", "'nope.py' does not exist", handler="nope.py:main"),
    "missing callable": function_case("", "no top-level 'other'", handler="h.py:other"),
    "nul in name": function_case("", "h", handler='"h\\0.py:main"'),
    "long name": function_case("", "File name too long", handler="a" * 5000 + ".py:main"),
    "surrogate name": function_case("", "handler file", handler='"\\udc80.py:main"'),
    "folder": Case({"functions/f.yaml": GOOD.replace("h.py", "d.py"),
                    "functions/d.py/x": ""}, "functions/f.yaml", "is a folder"),
    "syntax error": source_case("def main(event:\n    pass\n", "syntax error"),
    "null byte": source_case(b"def main(e, c):\n    return 1\x00\n", "null bytes"),
    "bad cookie": source_case(b"# -*- coding: nope -*-\ndef main(e, c): pass\n", "nope"),
    "latin-1 source": source_case(b"x = 'caf\xe9'\ndef main(e, c): pass\n", "utf-8"),
    "utf-16 source": source_case("def main(e, c): pass\n".encode("utf-16"), "s.py"),
    "300,000 terms": source_case("x = " + "+".join(["1"] * 300_000) + "\n"
                                 "def main(e, c): pass\n", "nested too deeply"),
    "deep parentheses": source_case("x = " + "(" * 300 + ")" * 300 + "\n"
                                    "def main(e, c): pass\n", "s.py"),
    "deep indentation": source_case("".join(" " * i + "if 1:\n" for i in range(120)) +
                                    " " * 120 + "pass\ndef main(e, c): pass\n", "indent"),
    "deep lists": source_case("x = " + "[" * 5000 + "]" * 5000 + "\ndef main(e, c): pass\n",
                              "s.py"),
    "tab mix": source_case("def main(e, c):\n    if 1:\n\tpass\n", "s.py"),
    "callable only inside a function": Case(
        {"functions/f.yaml": GOOD.replace("h.py", "s.py"),
         "functions/s.py": "def outer():\n    def main(e, c): pass\n"},
        "functions/f.yaml", "no top-level 'main'"),
    "callable under another name": Case(
        {"functions/f.yaml": GOOD.replace("h.py", "s.py"), "functions/s.py": "mian = 1\n"},
        "functions/f.yaml", "no top-level 'main'"),
}

# Hand-written rather than in the tables above: they need files that only exist
# on the filesystem (FIFOs, links, sockets, sparse files).
SPECIAL = {
    "yaml fifo": special("functions/x.yaml", fifo, "FIFO"),
    "yaml dev zero": special("functions/z.yaml", link_to("/dev/zero"), "character device"),
    "yaml dev null": special("functions/z.yaml", link_to("/dev/null"), "character device"),
    "yaml link loop": special("functions/l.yaml", link_to("l.yaml"),
                              "Too many levels of symbolic links"),
    "yaml two link loop": special("functions/l.yaml", link_loop_of_two, "Too many levels"),
    "yaml dangling link": special("functions/d.yaml", link_to("nowhere.yaml"),
                                  "No such file"),
    "yaml socket": special("functions/s.yaml", unix_socket, "socket"),
    "yaml link to fifo": special("functions/p.yaml", link_to_fifo, "FIFO"),
    "yaml sparse huge": special("functions/big.yaml", sparse(3 * 1024 * 1024), "larger than"),
    "yaml sparse enormous": special("functions/big.yml", sparse(1 << 40), "larger than"),
    "handler fifo": Case({"functions/f.yaml": GOOD.replace("h.py", "p.py")},
                         "functions/f.yaml", "FIFO",
                         setup=lambda root: os.mkfifo(root / "functions/p.py")),
    "handler link loop": Case({"functions/f.yaml": GOOD.replace("h.py", "l.py")},
                              "functions/f.yaml", "symbolic link loop",
                              setup=lambda root: (root / "functions/l.py").symlink_to("l.py")),
    "handler dev zero": Case({"functions/f.yaml": GOOD.replace("h.py", "z.py")},
                             "functions/f.yaml", "outside the functions folder",
                             setup=lambda root: (root / "functions/z.py").symlink_to("/dev/zero")),
    "handler link out": Case({"functions/f.yaml": GOOD.replace("h.py", "o.py"),
                              "other.py": "def main(e, c): pass\n"},
                             "functions/f.yaml", "links to outside",
                             setup=lambda root: (root / "functions/o.py").symlink_to(
                                 root / "other.py")),
    "handler dangling": Case({"functions/f.yaml": GOOD.replace("h.py", "g.py")},
                             "functions/f.yaml", "does not exist",
                             setup=lambda root: (root / "functions/g.py").symlink_to("gone.py")),
    "handler socket": Case({"functions/f.yaml": GOOD.replace("h.py", "s.py")},
                           "functions/f.yaml", "socket",
                           setup=lambda root: unix_socket(root / "functions/s.py")),
    "handler sparse huge": Case({"functions/f.yaml": GOOD.replace("h.py", "b.py")},
                                "functions/b.py", "larger than",
                                setup=lambda root: sparse(17 * 1024 * 1024)(
                                    root / "functions/b.py")),
    "config fifo": special("fnrun.yaml", fifo, "FIFO"),
    "config dev zero": special("fnrun.yaml", link_to("/dev/zero"), "character device"),
    "config link loop": special("fnrun.yaml", link_to("fnrun.yaml"), "Too many levels"),
    "config dangling": special("fnrun.yaml", link_to("elsewhere.yaml"), "No such file"),
    "config socket": special("fnrun.yaml", unix_socket, "socket"),
    "config folder": special("fnrun.yaml", lambda p: p.mkdir(), "is a folder"),
    "config sparse": special("fnrun.yaml", sparse(2 * 1024 * 1024), "larger than"),
    "functions folder loop": Case(
        {"fnrun.yaml": "functions: fl\n"}, "fl", "is a symbolic link loop",
        setup=lambda root: (root / "fl").symlink_to("fl"), positioned=False),
}

CONFIG = {
    "config typo": config_case("stor: sqlite:///x.db\n", "did you mean 'store'"),
    "config unknown": config_case("colour: red\n", "unknown key 'colour'"),
    "config list": config_case("- store\n", "must be a mapping"),
    "config scalar": config_case("store\n", "must be a mapping"),
    "config syntax": config_case("store: [a\n", "flow sequence"),
    "config indentation": config_case("http:\n  host: 127.0.0.1\n port: 1\n",
                                      "bad indentation"),
    "config tab": config_case("http:\n\thost: x\n", "tab character"),
    "config latin-1": config_case(b"# caf\xe9\n", "not UTF-8"),
    "config huge": config_case("#" * (1024 * 1024 + 1), "larger than"),
    "config deep": config_case(nested(50_000, "[", "]").replace("functions", "store"),
                               "nested more than 64"),
    "config complex key": config_case("? [a]\n: 1\n", "plain string"),
    "config alias": config_case("store: &a x\nfunctions: *a\n", "aliases"),
    "config store scheme": config_case("store: mysql://x/y\n", "unknown store URL"),
    "config store redis port": config_case("store: redis://h:99999/0\n", "bad port"),
    "config store redis params": config_case("store: redis://h:6379/0?x=1\n", "parameter"),
    "config store redis db": config_case("store: redis://h:6379/x\n", "bad Redis database"),
    "config store sqlite query": config_case("store: sqlite:///x.db?mode=rwc\n", "?"),
    "config store not string": config_case("store: [a]\n", "store must be a string"),
    "config functions not string": config_case("functions: [a]\n", "must be a string"),
    "config http list": config_case("http: [a]\n", "http must be a mapping"),
    "config http port big": config_case("http:\n  port: 70000\n", "at most 65535"),
    "config http port huge": config_case(f"http:\n  port: {BIG}\n", "too long a number"),
    "config http port word": config_case("http:\n  port: eighty\n", "must be an integer"),
    "config http host list": config_case("http:\n  host: [a]\n", "must be a string"),
    "config http max_body": config_case("http:\n  max_body: big\n", "bad size"),
    "config http typo": config_case("http:\n  hots: x\n", "did you mean 'host'"),
    "config defaults timeout": config_case("defaults:\n  timeout: never\n", "bad duration"),
    "config defaults concurrency": config_case("defaults:\n  concurrency: 0\n", "at least 1"),
    "config defaults retry": config_case("defaults:\n  retry: yes\n", "mapping or false"),
    "config defaults typo": config_case("defaults:\n  timout: 1s\n", "did you mean 'timeout'"),
    "config retention events": config_case("retention:\n  events: forever\n", "bad duration"),
    "config retention big": config_case(f"retention:\n  events: {BIG}\n", "4,300 digits"),
    "config retention typo": config_case("retention:\n  event: 1d\n", "did you mean 'events'"),
    "config two documents": config_case("store: a\n---\nstore: b\n", "second YAML document"),
    "config bell": config_case("store: x\x07\n", "U+0007"),
    "config many values": config_case("store: [" + ",".join(["a"] * 100_000) + "]\n",
                                      "more than 10000 values"),
}

RABBIT = 'brokers:\n  b: {url: "amqp://127.0.0.1:5672/"}\n'
KAFKA = 'brokers:\n  k: {url: "kafka://127.0.0.1:9092"}\n'


def broker_case(
    text: str, says: str, at: str = "fnrun.yaml", files: dict[str, str] | None = None
) -> Case:
    """A project declaring brokers, sources and sinks (SPEC 10) in fnrun.yaml (`text`)."""
    return Case({"fnrun.yaml": text, "functions/f.yaml": GOOD, **(files or {})}, at, says)


def source_case_of(fields: str, says: str, base: str = RABBIT) -> Case:
    return broker_case(f"{base}sources:\n  s: {{{fields}}}\n", says)


def sink_case(fields: str, says: str, base: str = RABBIT) -> Case:
    return broker_case(f"{base}sinks:\n  out: {{{fields}}}\n", says)


BROKERS: dict[str, Case] = {
    "unknown broker": source_case_of("broker: c, queue: q, type: a.b", "unknown broker 'c'"),
    "unknown scheme": broker_case('brokers:\n  b: {url: "amqpx://h/"}\n',
                                  "unknown broker URL scheme 'amqpx'"),
    "password in url": broker_case('brokers:\n  b: {url: "amqp://u:secret@h:5672/"}\n',
                                   "use url_env"),
    "bad broker said once": broker_case(
        'brokers:\n  b: {url: "amqp://u:pw@h/"}\nsources:\n  s: {broker: b, queue: q, type: a.b}\n'
        'sinks:\n  o: {broker: b, queue: q, events: a.b}\n', "must not hold a password"),
    "url and url_env": broker_case('brokers:\n  b: {url: "amqp://h/", url_env: X}\n',
                                   "either url or url_env"),
    "neither url": broker_case("brokers:\n  b: {}\n", "either url or url_env"),
    "url_env not a name": broker_case('brokers:\n  b: {url_env: "A-B"}\n',
                                      "is not a variable name"),
    "broker unknown key": broker_case('brokers:\n  b: {url: "amqp://h/", host: h}\n',
                                      "unknown key 'host'"),
    "broker bad name": broker_case('brokers:\n  Bad_B: {url: "amqp://h/"}\n',
                                   "bad broker name"),
    "queue and topic": source_case_of("broker: b, queue: q, topic: t, type: a.b",
                                      "'topic' does not fit broker 'b'"),
    "kafka field on amqp": source_case_of("broker: b, queue: q, group: g, type: a.b",
                                          "'group' does not fit"),
    "kafka source without topic": source_case_of("broker: k, type: a.b", "needs 'topic'",
                                                 base=KAFKA),
    "source without type": source_case_of("broker: b, queue: q", "needs 'type'"),
    "source type wildcard": source_case_of("broker: b, queue: q, type: 'a.*'",
                                           "has no wildcards"),
    "source prefetch zero": source_case_of("broker: b, queue: q, type: a.b, prefetch: 0",
                                           "prefetch must be at least 1"),
    "source prefetch big": source_case_of("broker: b, queue: q, type: a.b, prefetch: 20000",
                                          "prefetch must be 1 to 10000"),
    "source from middle": source_case_of("topic: t, broker: k, type: a.b, from: middle",
                                         "earliest or latest", base=KAFKA),
    "source ack_wait short": source_case_of(
        "broker: n, subject: s, type: a.b, ack_wait: 500ms", "ack_wait must be 1s to 1h",
        base='brokers:\n  n: {url: "nats://127.0.0.1:4222"}\n'),
    "ack_wait on amqp": source_case_of("broker: b, queue: q, type: a.b, ack_wait: 5s",
                                       "'ack_wait' does not fit"),
    "source empty queue": source_case_of("broker: b, queue: '', type: a.b",
                                         "1 to 255 characters"),
    "sink bad pattern": sink_case("broker: b, queue: q, events: 'a..b'", "empty segment"),
    "sink without events": sink_case("broker: b, queue: q", "needs 'events'"),
    "sink format": sink_case("broker: b, queue: q, events: a.b, format: xml",
                             "binary or structured"),
    "sink queue and exchange": sink_case("broker: b, queue: q, exchange: x, events: a.b",
                                         "a queue or an exchange"),
    "sink routing key without exchange": sink_case(
        "broker: b, queue: q, routing_key: r, events: a.b", "needs an exchange"),
    "sink placeholder": sink_case("broker: b, exchange: x, routing_key: '{tpye}', events: a.b",
                                  "unknown placeholder {tpye}"),
    "sink template on queue": sink_case("broker: b, queue: '{type}', events: a.b",
                                        "takes no {...} templates"),
    "sink qos": sink_case('broker: m, topic: t, events: a.b, qos: 2',
                          "qos must be 1", base='brokers:\n  m: {url: "mqtt://h"}\n'),
    "sink retry": sink_case("broker: b, queue: q, events: a.b, retry: {max_attempts: 0}",
                            "max_attempts must be at least 1"),
    "sink timeout": sink_case("broker: b, queue: q, events: a.b, timeout: 0s",
                              "must be positive"),
    "sink concurrency": sink_case("broker: b, queue: q, events: a.b, concurrency: 1000",
                                  "concurrency must be 1 to 256"),
    "redis sink field": sink_case("broker: r, stream: s, queue: q, events: a.b",
                                  "'queue' does not fit",
                                  base='brokers:\n  r: {url: "redis://h:6379/1"}\n'),
    "sink named as function": broker_case(f"{RABBIT}sinks:\n  f: {{broker: b, queue: q, "
                                          "events: a.b}\n", "is also a function's"),
    "source named as function": broker_case(f"{RABBIT}sources:\n  f: {{broker: b, queue: q, "
                                            "type: a.b}\n", "is also a function's"),
    "duplicate source across files": broker_case(
        f"{RABBIT}sources:\n  s: {{broker: b, queue: q, type: a.b}}\n",
        "duplicate source name 's'", at="functions/more.yaml",
        files={"functions/more.yaml": "sources:\n  s: {broker: b, queue: q2, type: a.c}\n"}),
    "duplicate broker across files": broker_case(
        RABBIT, "duplicate broker name 'b'", at="functions/more.yaml",
        files={"functions/more.yaml": 'brokers:\n  b: {url: "nats://h:4222"}\n'}),
    "duplicate sink across files": broker_case(
        f"{RABBIT}sinks:\n  o: {{broker: b, queue: q, events: a.b}}\n",
        "duplicate sink name 'o'", at="functions/more.yaml",
        files={"functions/more.yaml": "sinks:\n  o: {broker: b, queue: q, events: a.c}\n"}),
    "source in functions file": broker_case(
        RABBIT, "unknown broker 'nope'", at="functions/more.yaml",
        files={"functions/more.yaml": "sources:\n  s: {broker: nope, queue: q, type: a.b}\n"}),
    "sources not a mapping": broker_case(f"{RABBIT}sources: [a]\n", "sources must be a mapping"),
}


CORPUS: dict[str, Case] = {
    **{f"yaml syntax: {k}": v for k, v in YAML_SYNTAX.items()},
    **{f"yaml schema: {k}": v for k, v in YAML_SCHEMA.items()},
    **{f"trigger: {k}": v for k, v in TRIGGERS.items()},
    **{f"handler: {k}": v for k, v in HANDLERS.items()},
    **{f"special file: {k}": v for k, v in SPECIAL.items()},
    **{f"fnrun.yaml: {k}": v for k, v in CONFIG.items()},
    **{f"brokers: {k}": v for k, v in BROKERS.items()},
}


def build(root: Path, case: Case) -> Path:
    """The case's project under `root`: a marker-writing h.py plus the case's files."""
    (root / "functions").mkdir(parents=True)
    (root / "functions/h.py").write_text(HANDLER)
    files: dict[str, str | bytes] = {"functions/f.yaml": GOOD, **case.files}
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    if case.setup is not None:
        case.setup(root)
    return root


def check_report(root: Path, case: Case, code: int, stderr: str) -> str:
    """The one line of a failed validate: at the right file, no traceback, no user code."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert code == 1, (code, stderr)
    assert len(lines) == 1, lines
    [line] = lines
    file = re.escape(str(root / case.at))
    if case.positioned:
        assert re.match(rf"{file}:\d+:\d+: \S", line), line
    else:
        assert re.match(rf"fnrun: .*{file}", line), line
    assert case.says in line, (case.says, line)
    assert not (root / MARKER).exists(), "validate imported a handler"
    return line


def validate_here(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, float, float]:
    """`fnrun validate --project ROOT` through the CLI's main:
    (exit code, stderr, CPU seconds, wall seconds)."""
    started, cpu = time.monotonic(), time.process_time()
    with pytest.raises(SystemExit) as exited:
        main(["validate", "--project", str(root)])
    cpu, wall = time.process_time() - cpu, time.monotonic() - started
    code = exited.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err, cpu, wall


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 150, len(CORPUS)


def test_the_base_project_is_valid_and_its_marker_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The controls: without a case's mistake the project validates (so each error
    is the case's), and importing its handler does write the marker (so the
    corpus's "no user code ran" check can fail)."""
    root = build(tmp_path / "p", Case({}, "functions/f.yaml", ""))
    with pytest.raises(SystemExit) as exited:
        main(["validate", "--project", str(root)])
    out = capsys.readouterr()
    assert (exited.value.code, out.err) == (0, "")
    assert out.out.startswith("ok: 1 function")
    assert not (root / MARKER).exists()
    subprocess.run([sys.executable, str(root / "functions/h.py")], check=True, timeout=30)
    assert (root / MARKER).exists()


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_bad_project_is_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CORPUS[name]
    root = build(tmp_path / "p", case)
    code, stderr, cpu, wall = validate_here(root, capsys)
    check_report(root, case, code, stderr)
    # The work bound is CPU time: on this shared 2-core machine the wall clock
    # also counts other people's tests. Wall time still catches a wait (a FIFO
    # whose open blocks uses no CPU), with room for that load.
    assert cpu < MAX_SECONDS, f"{name}: {cpu:.2f}s of CPU"
    assert wall < MAX_WALL_SECONDS, f"{name}: {wall:.2f}s"


def fnrun(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "FNRUN_TOKEN": ""})


SUBSET = [
    "yaml syntax: complex key list", "yaml syntax: deep flow lists", "yaml syntax: indent less",
    "yaml schema: timeout big int", "yaml schema: concurrency big", "trigger: cron minute",
    "handler: 300,000 terms", "special file: yaml fifo", "special file: yaml dev zero",
    "special file: handler link loop", "special file: yaml link loop",
    "special file: config fifo", "fnrun.yaml: config deep", "brokers: password in url",
]


@pytest.mark.parametrize("name", SUBSET)
def test_the_real_command_says_the_same(name: str, tmp_path: Path) -> None:
    """`python -m runtime validate` and `run` print the line the in-process run did."""
    case = CORPUS[name]
    root = build(tmp_path / "p", case)
    validated = fnrun("validate", "--project", str(root))
    line = check_report(root, case, validated.returncode, validated.stderr)
    started = fnrun("run", "--project", str(root), "--port", "0")
    assert started.returncode == 1, started.stderr
    assert "Traceback" not in started.stderr, started.stderr
    assert line in started.stderr.splitlines(), started.stderr
    assert not (root / MARKER).exists()


# -- a running supervisor meets the same files ----------------------------------------


def reload_error(project: Project) -> str:
    """/_/health's reload_error ("" for none); answering in 2 s is part of the check."""
    response = httpx.get(project.url("/_/health"), timeout=2)
    assert response.status_code == 200
    return str(response.json()["reload_error"] or "")


@pytest.mark.timeout(90)
def test_special_files_never_stall_a_reloading_supervisor(project: Project) -> None:
    """A FIFO named x.yaml once froze the event loop (/_/health stopped answering)
    and a link to /dev/zero was read without bound; both are now a reload error."""
    project.add("echo", "functions:\n  echo:\n    handler: echo.py:main\n"
                "    triggers: [{event: echo.*}]\n",
                "def main(event, ctx):\n    record(event, ctx)\n")
    proc = project.start("--reload")
    specials = {
        "x.yaml": (os.mkfifo, "is a FIFO (named pipe), not a regular file"),
        "z.yaml": (lambda p: p.symlink_to("/dev/zero"), "is a character device"),
    }
    for name, (make, says) in specials.items():
        path = project.functions / name
        make(path)
        wait_until(lambda n=name: nudged(project) and n in reload_error(project), timeout=20)
        error = reload_error(project)
        assert f"{path}:1:1: {says}" in error, error
        path.unlink()
        wait_until(lambda: nudged(project) and reload_error(project) == "", timeout=20)
    [event_id] = project.publish([{"type": "echo.one"}])
    wait_until(lambda: project.handled("echo")[event_id] == 1, timeout=20)
    assert proc.poll() is None


def nudged(project: Project) -> bool:
    """Touch a declaration, so a change made before the watch began is seen too."""
    (project.functions / "echo.yaml").touch()
    return True


def test_an_unset_secret_env_warns_at_validate_and_at_start(project: Project) -> None:
    """validate passes (the variable may be set where fnrun runs) but says so;
    at start the supervisor says it too."""
    project.add("hook", "functions:\n  hook:\n    handler: hook.py:main\n"
                "    triggers: [{webhook: {path: /hook, secret_env: FNRUN_TEST_UNSET}}]\n",
                "def main(event, ctx):\n    return 1\n")
    env = {k: v for k, v in os.environ.items() if k != "FNRUN_TEST_UNSET"}
    validated = subprocess.run(
        [sys.executable, "-m", "runtime", "validate", "--project", str(project.root)],
        capture_output=True, text=True, timeout=30, env=env,
    )
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.startswith("ok: 1 function")
    [warning] = validated.stderr.splitlines()
    assert warning.startswith(f"{project.functions / 'hook.yaml'}:4:26: warning: webhook /hook:")
    assert "secret_env FNRUN_TEST_UNSET is not set here" in warning
    given = subprocess.run(
        [sys.executable, "-m", "runtime", "validate", "--project", str(project.root)],
        capture_output=True, text=True, timeout=30, env={**env, "FNRUN_TEST_UNSET": "s3cret"},
    )
    assert (given.returncode, given.stderr) == (0, "")
    assert "FNRUN_TEST_UNSET" not in os.environ
    proc = project.start()
    wait_until(lambda: "FNRUN_TEST_UNSET is not set" in project.output(), timeout=10)
    assert proc.poll() is None


@pytest.mark.anyio
async def test_the_reload_scan_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan that waits (a slow or hung filesystem: the one thing not driven for
    real here) must leave the event loop serving. The scan below returns only
    once a task on the loop has run; on the loop itself it would never return."""
    from runtime.errors import ManifestError
    from runtime.project import reloader
    from runtime.project.manifest import FileScan
    from runtime.project.registry import Diff
    from runtime.project.reload_plan import ReloadPlan, Serving
    from runtime.project.settings_loader import load_settings
    from runtime.specs import Project

    (tmp_path / "functions").mkdir()
    settings = load_settings(tmp_path)
    loop_ran = threading.Event()

    def waiting_scan(_: object) -> FileScan:
        assert loop_ran.wait(10), "the event loop was blocked while the scan ran"
        return FileScan(Project(settings, {}), [ManifestError(None, "scanned in a thread")])

    monkeypatch.setattr(reloader, "scan_files", waiting_scan)
    applied: list[ReloadPlan] = []

    async def apply(plan: ReloadPlan) -> Diff:
        applied.append(plan)
        return Diff()

    nothing = Serving(project=None, fingerprints={}, failures={}, broken=False)
    target = SimpleNamespace(serving=lambda: nothing, draining=False, apply=apply)
    reload = reloader.Reloader(target, settings, changes=_no_changes())  # type: ignore[arg-type]

    async def on_the_loop() -> None:
        await anyio.sleep(0.05)
        loop_ran.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(on_the_loop)
        result = await reload.reload()
    assert result.errors == ("scanned in a thread",)
    assert [plan.errors for plan in applied] == [("scanned in a thread",)]
    assert applied[0].project is None  # skipped: nothing but the errors changes


async def _no_changes() -> AsyncIterator[set[tuple[Change, str]]]:
    return
    yield  # an async generator that yields nothing
