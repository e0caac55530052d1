"""Loading function declarations: every mistake at its exact FILE:LINE:COL."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from runtime import plugins
from runtime.errors import ManifestErrors, Where
from runtime.project.manifest import (
    conflicts,
    function_fingerprint,
    load_project,
    scan_project,
    top_level_names,
)
from runtime.project.settings_loader import load_settings
from runtime.specs import FunctionSpec, Project, TriggerSpec
from triggers.event import EventSpec

pytestmark = pytest.mark.timeout(20)

HANDLER = "def main(event, ctx):\n    return event.data\n"


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def project(tmp_path: Path, files: dict[str, str]) -> Path:
    """A project folder whose functions/ holds `files` (plus a valid h.py)."""
    write(tmp_path, "functions/h.py", HANDLER)
    for rel, text in files.items():
        write(tmp_path / "functions", rel, text)
    return tmp_path


def errors_of(root: Path) -> list[tuple[str, int, int, str]]:
    """(file relative to functions/, line, column, message) of every error."""
    settings = load_settings(root)
    with pytest.raises(ManifestErrors) as caught:
        load_project(settings)
    out = []
    for error in caught.value.errors:
        assert error.where is not None, str(error)
        rel = error.where.file.relative_to(settings.functions)
        out.append((str(rel), error.where.line, error.where.column, error.message))
    return out


def one_error(root: Path) -> tuple[str, int, int, str]:
    found = errors_of(root)
    assert len(found) == 1, found
    return found[0]


# Each case: the body under `functions:` in f.yaml, then where the error is and
# a piece of its message. Line 1 is `functions:`, so the function is on line 2.
BAD_FUNCTIONS = {
    "unknown key": ("f:\n  handler: h.py:main\n  timeot: 3s\n", 4, 5, "unknown key 'timeot'"),
    "bad name": ("Bad_Name:\n  handler: h.py:main\n", 2, 3, "bad function name 'Bad_Name'"),
    "name too long": ("a" + "b" * 63 + ":\n  handler: h.py:main\n", 2, 3, "bad function name"),
    "not a mapping": ("f: h.py:main\n", 2, 6, "function 'f' must be a mapping"),
    "missing handler": ("f:\n  timeout: 1s\n", 3, 5, "needs 'handler'"),
    "handler wrong type": ("f:\n  handler: [h.py]\n", 3, 14, "handler must be a string"),
    "handler no callable": ("f:\n  handler: h.py\n", 3, 14, "handler must be FILE:CALLABLE"),
    "handler bad callable": ("f:\n  handler: h.py:1x\n", 3, 14, "is not a Python name"),
    "handler not .py": ("f:\n  handler: h.txt:main\n", 3, 14, "must be a .py file"),
    "handler parent": ("f:\n  handler: ../outside.py:main\n", 3, 14, "is outside the functions"),
    "handler absolute": ("f:\n  handler: /etc/x.py:main\n", 3, 14, "not an absolute path"),
    "handler sneaky parent": ("f:\n  handler: sub/../../o.py:main\n", 3, 14, "is outside"),
    "handler missing file": ("f:\n  handler: nope.py:main\n", 3, 14, "'nope.py' does not exist"),
    "handler missing callable": ("f:\n  handler: h.py:other\n", 3, 14, "no top-level 'other'"),
    "timeout wrong": ("f:\n  handler: h.py:main\n  timeout: 10q\n", 4, 14, "bad duration '10q'"),
    "timeout zero": ("f:\n  handler: h.py:main\n  timeout: 0\n", 4, 14, "must be positive"),
    "timeout list": ("f:\n  handler: h.py:main\n  timeout: [1]\n", 4, 14, "must be a duration"),
    "concurrency text": ("f:\n  handler: h.py:main\n  concurrency: two\n", 4, 18, "integer"),
    "concurrency zero": ("f:\n  handler: h.py:main\n  concurrency: 0\n", 4, 18, "at least 1"),
    "concurrency huge": ("f:\n  handler: h.py:main\n  concurrency: 9999\n", 4, 18, "at most 256"),
    "retry number": ("f:\n  handler: h.py:main\n  retry: 3\n", 4, 12, "mapping or false"),
    "retry true": ("f:\n  handler: h.py:main\n  retry: true\n", 4, 12, "mapping or false"),
    "retry unknown key": (
        "f:\n  handler: h.py:main\n  retry: {tries: 3}\n", 4, 13, "unknown key 'tries'"
    ),
    "retry attempts zero": (
        "f:\n  handler: h.py:main\n  retry: {max_attempts: 0}\n", 4, 27, "at least 1"
    ),
    "retry bad backoff": (
        "f:\n  handler: h.py:main\n  retry: {backoff: soon}\n", 4, 22, "bad duration"
    ),
    "memory too small": ("f:\n  handler: h.py:main\n  memory_mb: 8\n", 4, 16, "at least 16"),
    "memory text": ("f:\n  handler: h.py:main\n  memory_mb: lots\n", 4, 16, "integer"),
    "env not mapping": ("f:\n  handler: h.py:main\n  env: [A]\n", 4, 10, "env must be a mapping"),
    "env nested": ("f:\n  handler: h.py:main\n  env: {A: [1]}\n", 4, 14, "env.A must be a str"),
    "env bad name": ("f:\n  handler: h.py:main\n  env: {1A: x}\n", 4, 11, "not a variable name"),
    "secrets not list": ("f:\n  handler: h.py:main\n  secrets: KEY\n", 4, 14, "must be a list"),
    "secrets bad name": (
        "f:\n  handler: h.py:main\n  secrets: [OK, no-dash]\n", 4, 19, "not a variable name"
    ),
    "triggers not list": (
        "f:\n  handler: h.py:main\n  triggers: {event: a}\n", 4, 15, "triggers must be a list"
    ),
    "trigger two keys": (
        "f:\n  handler: h.py:main\n  triggers:\n    - {event: a, schedule: '@daily'}\n",
        5, 9, "one key",
    ),
    "trigger unknown kind": (
        "f:\n  handler: h.py:main\n  triggers:\n    - queue: a\n", 5, 9,
        "unknown trigger kind 'queue' (known: event, schedule, webhook)",
    ),
    "event bad pattern": (
        "f:\n  handler: h.py:main\n  triggers:\n    - event: order..x\n", 5, 16, "empty segment"
    ),
    "event partial wildcard": (
        "f:\n  handler: h.py:main\n  triggers:\n    - event: ord*er\n", 5, 16, "segment 'ord*er'"
    ),
    "event bad from": (
        "f:\n  handler: h.py:main\n  triggers:\n    - event: {type: a, from: later}\n",
        5, 32, "'from' must be now or beginning",
    ),
    "event unknown key": (
        "f:\n  handler: h.py:main\n  triggers:\n    - event: {typ: a}\n", 5, 17, "unknown key 'typ'"
    ),
    "event missing type": (
        "f:\n  handler: h.py:main\n  triggers:\n    - event: {from: now}\n", 5, 16, "needs 'type'"
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FUNCTIONS))
def test_bad_function_is_reported_at_its_position(tmp_path: Path, case: str) -> None:
    body, line, column, message = BAD_FUNCTIONS[case]
    write(tmp_path, "outside.py", HANDLER)  # exists, but outside functions/
    text = "functions:\n" + textwrap.indent(body, "  ")
    root = project(tmp_path, {"f.yaml": text})
    found = one_error(root)
    assert found[:3] == ("f.yaml", line, column), found
    assert message in found[3]


BAD_FILES = {
    "yaml syntax": ("functions:\n  f: {handler: h.py:main\n", 3, 1, "expected ','"),
    "duplicate key": (
        "functions:\n  f:\n    handler: h.py:main\n    handler: h.py:main\n", 4, 5,
        "duplicate key 'handler'",
    ),
    "duplicate function key": (
        "functions:\n  f:\n    handler: h.py:main\n  f:\n    handler: h.py:main\n", 4, 3,
        "duplicate key 'f'",
    ),
    "alias": (
        "base: &b {handler: h.py:main}\nfunctions:\n  f: *b\n", 3, 6, "aliases are not allowed"
    ),
    "top level unknown": ("function:\n  f: {handler: h.py:main}\n", 1, 1, "unknown key 'function'"),
    "top level list": ("- functions\n", 1, 1, "must be a mapping"),
    "functions list": ("functions:\n  - f\n", 2, 3, "functions must be a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_reported_at_its_position(tmp_path: Path, case: str) -> None:
    text, line, column, message = BAD_FILES[case]
    write(tmp_path, "functions/f.yaml", text)
    found = one_error(project(tmp_path, {}))
    assert found[:3] == ("f.yaml", line, column), found
    assert message in found[3]


def test_handler_symlink_leaving_the_folder_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "secret/evil.py", HANDLER)
    root = project(tmp_path, {"f.yaml": "functions:\n  f:\n    handler: link.py:main\n"})
    (root / "functions/link.py").symlink_to(tmp_path / "secret/evil.py")
    assert one_error(root)[:3] == ("f.yaml", 3, 14)
    assert "links to outside the functions folder" in one_error(root)[3]


def test_handler_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    root = project(tmp_path, {"sub/f.yaml": "functions:\n  f:\n    handler: alias.py:main\n"})
    (root / "functions/sub/alias.py").symlink_to(root / "functions/h.py")
    spec = load_project(load_settings(root)).functions["f"]
    assert spec.handler_file == (root / "functions/h.py").resolve()


def test_syntax_error_in_handler_is_reported_in_the_python_file(tmp_path: Path) -> None:
    root = project(tmp_path, {"f.yaml": "functions:\n  f:\n    handler: bad.py:main\n"})
    write(root, "functions/bad.py", "import os\n\ndef main(event:\n    pass\n")
    found = one_error(root)
    assert found[:3] == ("bad.py", 3, 9), found
    assert found[3].startswith("syntax error: ")


def test_files_that_are_not_text_or_too_big_are_reported(tmp_path: Path) -> None:
    root = project(tmp_path, {"f.yaml": "functions:\n  f:\n    handler: nul.py:main\n"})
    (root / "functions/nul.py").write_bytes(b"def main(e):\n    return '\x00'\x00\n")
    (root / "functions/latin.yml").write_bytes(b"# caf\xe9\n")
    (root / "functions/huge.yaml").write_text("#" * (1024 * 1024 + 1))
    found = errors_of(root)
    assert [f[:3] for f in found] == [
        ("huge.yaml", 1, 1), ("latin.yml", 1, 6), ("nul.py", 1, 1),  # 6: the bad byte
    ]
    assert "larger than" in found[0][3]
    assert "not UTF-8 text" in found[1][3]
    assert "null bytes" in found[2][3]


def test_duplicate_function_name_reports_the_second_and_points_at_the_first(
    tmp_path: Path,
) -> None:
    root = project(tmp_path, {
        "a.yaml": "functions:\n  same:\n    handler: h.py:main\n",
        "z/b.yaml": "# another file\nfunctions:\n  other:\n    handler: ../h.py:main\n"
                    "  same:\n    handler: ../h.py:main\n",
    })
    found = one_error(root)
    assert found[:3] == ("z/b.yaml", 5, 3)
    first = root / "functions/a.yaml"
    assert found[3] == f"duplicate function name 'same' (first declared at {first}:2:3)"


def test_duplicate_webhook_route_is_reported_at_the_second(tmp_path: Path) -> None:
    root = project(tmp_path, {"f.yaml": """
        functions:
          one:
            handler: h.py:main
            triggers:
              - webhook: {path: /hooks/a, methods: [POST, PUT]}
          two:
            handler: h.py:main
            triggers:
              - webhook: {path: /hooks/b}
              - webhook: {path: /hooks/a, methods: [GET, PUT]}
    """})
    found = one_error(root)
    assert found[:3] == ("f.yaml", 10, 18), found
    assert "PUT /hooks/a is already declared by function 'one'" in found[3]


@dataclass(frozen=True)
class _Keyed(TriggerSpec):
    kind: ClassVar[str] = "keyed"
    keys: frozenset[str] = frozenset()

    def conflict_keys(self) -> frozenset[str]:
        return self.keys


def test_conflicts_are_found_through_any_trigger_with_conflict_keys(tmp_path: Path) -> None:
    def spec(name: str, line: int, *keys: str) -> FunctionSpec:
        where = Where(tmp_path / "x.yaml", line, 3)
        trigger = _Keyed(where=Where(where.file, line + 1, 9), keys=frozenset(keys))
        return FunctionSpec(name, where, tmp_path / "h.py", "main", triggers=(trigger,))

    found = conflicts([spec("c", 30, "q"), spec("a", 10, "p", "q"), spec("b", 20, "r")])
    assert [str(e) for e in found] == [
        f"{tmp_path}/x.yaml:31:9: keyed q is already declared by function 'a' at"
        f" {tmp_path}/x.yaml:11:9"
    ]


def test_all_errors_of_all_files_are_reported_sorted(tmp_path: Path) -> None:
    root = project(tmp_path, {
        "b.yaml": "functions:\n  x:\n    handler: h.py:nope\n    timeout: 5q\n",
        "a.yaml": "functions:\n  y:\n    handler: h.py:main\n    concurrency: 0\n"
                  "    triggers:\n      - event: 'a.*b'\n      - webhook: 3\n"
                  "  Z:\n    handler: h.py:main\n",
        "c.yml": "functions: {w: {handler: h.py:main}, w: {}}\n",
    })
    found = [(f, line, col) for f, line, col, _ in errors_of(root)]
    assert found == [
        ("a.yaml", 4, 18), ("a.yaml", 6, 16), ("a.yaml", 7, 18), ("a.yaml", 8, 3),
        ("b.yaml", 3, 14), ("b.yaml", 4, 14),
        ("c.yml", 1, 38),
    ]


def test_valid_functions_load_even_when_others_are_broken(tmp_path: Path) -> None:
    root = project(tmp_path, {
        "a.yaml": "functions:\n  good:\n    handler: h.py:main\n  bad:\n    handler: h.py:x\n",
    })
    scan = scan_project(load_settings(root))
    assert list(scan.project.functions) == ["good"]
    assert [e.where.line for e in scan.errors if e.where] == [5]


def test_good_project_loads_with_defaults_and_overrides(tmp_path: Path) -> None:
    write(tmp_path, "fnrun.yaml", """
        defaults: {timeout: 5s, concurrency: 3, retry: {max_attempts: 7, backoff: 2s}}
    """)
    root = project(tmp_path, {
        "orders/orders.yaml": """
            functions:
              plain:
                handler: orders.py:charge
              tuned:
                handler: orders.py:Charger
                triggers:
                  - event: order.created
                  - event: {type: "order.**", from: beginning}
                timeout: 500ms
                concurrency: 4
                retry: {backoff: 1s}
                memory_mb: 256
                env: {LOG_LEVEL: debug, N: 3}
                secrets: [STRIPE_KEY]
              once:
                handler: ../h.py:main
                retry: false
        """,
        "orders/orders.py": "from json import loads as charge\n\nclass Charger:\n    pass\n",
        "empty.yaml": "",
        "nothing.yml": "{}\n",
        "none.yaml": "functions:\n",
        ".hidden/broken.yaml": "functions: [oops\n",
        "__pycache__/x.yaml": "nonsense: 1\n",
    })
    functions = load_project(load_settings(root)).functions
    assert sorted(functions) == ["once", "plain", "tuned"]
    plain, tuned, once = functions["plain"], functions["tuned"], functions["once"]
    orders = root / "functions/orders"
    assert (plain.handler_file, plain.handler_attr) == (orders / "orders.py", "charge")
    assert (plain.timeout, plain.concurrency, plain.retry.max_attempts) == (5.0, 3, 7)
    assert (plain.retry.backoff, plain.memory_mb, plain.triggers) == (2.0, None, ())
    assert (tuned.timeout, tuned.concurrency, tuned.memory_mb) == (0.5, 4, 256)
    assert (tuned.retry.max_attempts, tuned.retry.backoff) == (7, 1.0)
    assert dict(tuned.env) == {"LOG_LEVEL": "debug", "N": "3"}
    assert tuned.secrets == ("STRIPE_KEY",)
    assert [(t.pattern, t.start) for t in tuned.triggers if isinstance(t, EventSpec)] == [
        ("order.created", "now"), ("order.**", "beginning"),
    ]
    assert tuned.triggers[0].where == Where(orders / "orders.yaml", 7, 16)
    assert once.retry.max_attempts == 1
    assert once.handler_file == root / "functions/h.py"


def test_missing_functions_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestErrors) as caught:
        load_project(load_settings(tmp_path))
    assert str(caught.value) == f"functions folder {tmp_path / 'functions'} does not exist"


def test_top_level_names_follow_python_binding_rules(tmp_path: Path) -> None:
    source = write(tmp_path, "m.py", """
        import os.path
        import json as j
        from x import (a, b as c)
        d: int = 1
        e = f = 2
        g, (h, i) = 1, (2, 3)
        def k(): pass
        async def l(): pass
        class M: pass
        try:
            from fast import n
        except ImportError:
            def n(): pass
        if True:
            o = 1
        def p():
            hidden = 1
    """)
    assert top_level_names(source) == set("acdefghiklnop") | {"os", "j", "M"}
    star = write(tmp_path, "s.py", "from helpers import *\n")
    assert top_level_names(star) is None


def test_fingerprint_tracks_spec_and_code_but_not_positions(tmp_path: Path) -> None:
    root = project(tmp_path, {
        "f.yaml": "functions:\n  f:\n    handler: h.py:main\n",
        "lib.py": "X = 1\n",
        "deeper/other.py": "Y = 1\n",
    })

    def fingerprint() -> str:
        return function_fingerprint(load_project(load_settings(root)).functions["f"])

    first = fingerprint()
    assert fingerprint() == first
    write(root, "functions/f.yaml", "functions:\n  e:\n    handler: h.py:main\n"
                                    "  f:\n    handler: h.py:main\n")
    assert fingerprint() == first, "moving the declaration is not a change"
    write(root, "functions/deeper/other.py", "Y = 2\n")
    assert fingerprint() == first, "code outside the handler's folder is not watched"
    write(root, "functions/lib.py", "X = 2\n")
    assert fingerprint() == first, "a module the handler does not import is not its code"
    write(root, "functions/h.py", "import lib\n" + HANDLER)
    second = fingerprint()
    assert second != first
    write(root, "functions/lib.py", "X = 3\n")
    third = fingerprint()
    assert third != second, "a module the handler imports is its code"
    write(root, "functions/f.yaml", "functions:\n  f:\n    handler: h.py:main\n    timeout: 9s\n")
    assert fingerprint() != third


def test_project_is_a_plain_value(tmp_path: Path) -> None:
    root = project(tmp_path, {"f.yaml": "functions:\n  f: {handler: h.py:main}\n"})
    settings = load_settings(root)
    loaded = load_project(settings)
    assert isinstance(loaded, Project) and loaded.settings is settings


def test_project_folder_as_functions_folder_skips_fnrun_yaml(tmp_path: Path) -> None:
    write(tmp_path, "fnrun.yaml", "functions: .\nstore: sqlite:///state.db\n")
    write(tmp_path, "h.py", HANDLER)
    write(tmp_path, "f.yaml", "functions:\n  f:\n    handler: h.py:main\n")
    write(tmp_path, ".fnrun/junk.yaml", "not: valid\n")
    loaded = load_project(load_settings(tmp_path))
    assert list(loaded.functions) == ["f"]


def test_trigger_kind_whose_module_cannot_load_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(plugins.TRIGGERS, "queue", "triggers.no_such_module")
    root = project(tmp_path, {
        "f.yaml": "functions:\n  f:\n    handler: h.py:main\n    triggers:\n      - queue: x\n",
    })
    found = one_error(root)
    assert found[:3] == ("f.yaml", 5, 9)
    assert "trigger kind 'queue' is not available: No module named 'triggers.no_such_module'" \
        in found[3]
