"""`fnrun new`: a working function in two files, picked up at once by `fnrun dev`.

It never overwrites a file (not even through a dangling link) and never
leaves the project worse than it found it: what would not validate is
refused before writing, or taken back after.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import yaml

from runtime import plugins
from runtime.errors import ManifestError, UsageError
from runtime.project.manifest import scan_project
from runtime.project.yamlnodes import Node, Reader
from runtime.specs import Settings

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
DEFAULT_EVENT = "demo.hello"
"""What `fnrun new NAME` handles when no trigger is given (and says so)."""

_CODE = '''"""{name}: {what}."""


def handler(event, ctx):
    ctx.log.info("{name} got %s %s", event.type, event.id)
    return {{"ok": True, "function": ctx.function, "data": {data}}}
'''


def _trigger_yaml(event: str | None, cron: str | None, webhook: str | None) -> tuple[str, str]:
    """(the YAML trigger line, a phrase for the docstring)."""
    if cron is not None:
        return f"      - schedule: {_quote(cron)}", f"runs on the schedule {cron}"
    if webhook is not None:
        if not webhook.startswith("/") or webhook.startswith("/_/"):
            raise UsageError(f"--webhook {webhook!r} must start with / and not with /_/")
        return (
            f"      - webhook: {{path: {_quote(webhook)}, methods: [POST], mode: sync}}",
            f"answers POST {webhook}",
        )
    # `--event ""` is a mistake, not the default
    pattern = DEFAULT_EVENT if event is None else event
    return f"      - event: {_quote(pattern)}", f"handles {pattern} events"


def _key(name: str) -> str:
    """`name` as a YAML key: quoted where YAML would read it as another type (`true`, `null`)."""
    return name if yaml.safe_load(name) == name else _quote(name)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def scaffold(
    settings: Settings, name: str, event: str | None, cron: str | None, webhook: str | None
) -> list[Path]:
    """Write NAME.py and NAME.yaml into the functions folder; refuse to overwrite."""
    if not NAME.match(name):
        raise UsageError(f"bad function name {name!r}: use [a-z][a-z0-9-]{{0,62}}")
    module = name.replace("-", "_")
    _check_module_name(name, module)
    functions = settings.functions
    code, decl = functions / f"{module}.py", functions / f"{module}.yaml"
    trigger, what = _trigger_yaml(event, cron, webhook)
    data = "event.data" if cron is None else "None"
    files = {
        code: _CODE.format(name=name, what=what, data=data),
        decl: f"functions:\n  {_key(name)}:\n    handler: {module}.py:handler\n"
              f"    triggers:\n{trigger}\n",
    }
    flag = "--cron" if cron is not None else "--webhook" if webhook is not None else "--event"
    _check_trigger(decl, files[decl], flag)
    before = scan_project(settings)
    existing = before.project.functions.get(name)
    if existing is not None:
        raise UsageError(f"function {name!r} already exists ({existing.where})")
    _make_folder(functions)
    written: list[Path] = []
    try:
        for path, text in files.items():
            _create(path, text)
            written.append(path)
        known = {str(e) for e in before.errors}
        broken = [e for e in scan_project(settings).errors if str(e) not in known]
        if broken:
            raise UsageError(f"not created: the project would not validate: {broken[0]}")
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _check_module_name(name: str, module: str) -> None:
    """Refuse NAME.py files that hide a module (handlers' folders go first on sys.path)."""
    if module in sys.stdlib_module_names or _installed(module):
        raise UsageError(
            f"function name {name!r} would create {module}.py, which hides the Python module "
            f"{module!r} from every handler; pick another name (like {name}-fn)"
        )


def _installed(module: str) -> bool:
    """Whether `module` imports from the installed path (not from the current folder,
    where `python -m` looks first, nor from a stray file there)."""
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if p and Path(p).resolve() != Path.cwd()]
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
    finally:
        sys.path[:] = saved


def _check_trigger(decl: Path, text: str, flag: str) -> None:
    """Parse the trigger as the loader will, so a bad --cron/--event/--webhook writes nothing."""
    reader = Reader(decl, text)
    item = _value(_value(_value(reader.compose(), "functions"), None), "triggers").value[0]
    key, value = item.value[0]
    try:
        plugins.load(plugins.TRIGGERS[key.value]).parse(reader, value)
    except ManifestError as exc:
        raise UsageError(f"{flag}: {exc.message}") from None


def _value(mapping: Node | None, key: str | None) -> Node:
    """The value under `key` (or the only value) of a mapping node we just wrote."""
    assert mapping is not None
    value: Node = next(v for k, v in mapping.value if key is None or k.value == key)
    return value


def _make_folder(functions: Path) -> None:
    # A functions path that is a file was refused with the settings (settings_loader).
    try:
        functions.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create functions folder {functions}: "
                         f"{exc.strerror or exc}") from None


def _create(path: Path, text: str) -> None:
    """Create `path` with `text`; never replace a file or follow a link to one."""
    try:
        out = path.open("x", encoding="utf-8")  # O_EXCL: fails on any existing name
    except FileExistsError:
        what = "a link" if path.is_symlink() else "a file"
        raise UsageError(f"{path} already exists ({what}); not overwritten") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with out:
            out.write(text)
    except OSError as exc:
        path.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None


# -- fnrun init ------------------------------------------------------------------

_STARTER: dict[str, str] = {
    "fnrun.yaml": """\
# fnrun project settings; every key is optional and these are the defaults.
functions: functions
store: sqlite:///.fnrun/state.db
http: {host: 127.0.0.1, port: 8080, max_body: 1MiB}
defaults: {timeout: 60s, concurrency: 1, retry: {max_attempts: 3}}
retention: {events: 7d, history: 7d}
""",
    "functions/greet.yaml": """\
functions:
  greet:
    handler: greet.py:greet
    triggers:
      - event: greet.requested
""",
    "functions/greet.py": '''\
"""An event function: `fnrun emit greet.requested --data '{"name": "Ada"}'`."""


def greet(event, ctx):
    name = event.data.get("name", "world") if isinstance(event.data, dict) else "world"
    ctx.log.info("hello, %s! (attempt %d)", name, ctx.attempt)
    return {"greeting": f"hello, {name}!"}
''',
    "functions/hello_http.yaml": """\
functions:
  hello-http:
    handler: hello_http.py:hello
    triggers:
      # Sync: the return value is the HTTP response.
      - webhook: {path: /hello, methods: [GET, POST], mode: sync}
""",
    "functions/hello_http.py": '''\
"""A webhook: `curl 'localhost:8080/hello?name=Ada'`, or
`fnrun invoke hello-http --query name=Ada` without a server."""


def hello(event, ctx):
    body = event.data if isinstance(event.data, dict) else {}
    name = body.get("name") or event.http.query.get("name") or "world"
    return {"greeting": f"hello, {name}!", "method": event.http.method}
''',
    "functions/tick.yaml": """\
functions:
  tick:
    handler: tick.py:tick
    triggers:
      - schedule: "*/5 * * * *"
""",
    "functions/tick.py": '''\
"""A schedule: runs every 5 minutes; each tick's event id is derived from its time,
so a tick never fires twice."""


def tick(event, ctx):
    ctx.log.info("tick at %s", event.time.isoformat())
''',
}
_IGNORED = ".fnrun/"


def init_project(folder: Path) -> list[Path]:
    """Write a starter project into `folder`: fnrun.yaml, a function per trigger kind,
    and `.fnrun/` (the store) in .gitignore. Refuses a folder that already holds a
    project; an existing .gitignore gets the line added, not replaced."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder")
    taken = [name for name in ("fnrun.yaml", "functions") if (folder / name).exists()]
    if taken:
        raise UsageError(f"{folder} already has {' and '.join(taken)}; not overwritten "
                         "(fnrun new NAME adds a function to it)")
    written: list[Path] = []
    try:
        for relative, text in _STARTER.items():
            path = folder / relative
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
            _create(path, text)
            written.append(path)
        ignore = _ignore(folder / ".gitignore")
        if ignore is not None:
            written.append(ignore)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def _ignore(gitignore: Path) -> Path | None:
    """Add `.fnrun/` to `gitignore` (creating it); the path if it was written."""
    try:
        before = gitignore.read_text(encoding="utf-8") if gitignore.exists() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {gitignore}: {exc}") from None
    if before is None:
        _create(gitignore, f"{_IGNORED}\n__pycache__/\n")
        return gitignore
    if _IGNORED in before.splitlines() or ".fnrun" in before.splitlines():
        return None
    with gitignore.open("a", encoding="utf-8") as out:
        out.write(("" if before.endswith("\n") or not before else "\n") + f"{_IGNORED}\n")
    return None
