"""Project settings: fnrun.yaml < FNRUN_* environment < explicit flags."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.errors import ManifestError, UsageError
from runtime.project.settings_loader import load_settings, resolve_store_url
from runtime.specs import Defaults, HttpSettings, Retention, RetryPolicy
from runtime.store.sqlite_schema import path_of

pytestmark = pytest.mark.timeout(10)


def config(root: Path, text: str) -> Path:
    (root / "fnrun.yaml").write_text(text)
    return root


def test_defaults_without_a_config_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    assert settings.project == tmp_path.resolve()
    assert settings.functions == tmp_path / "functions"
    assert settings.store == f"sqlite:///{tmp_path}/.fnrun/state.db"
    assert settings.store.startswith("sqlite:////")
    assert settings.http == HttpSettings("127.0.0.1", 8080, 1024 * 1024)
    assert settings.defaults == Defaults()
    assert settings.retention == Retention()
    assert settings.config_file is None


def test_every_key_of_the_file_is_read(tmp_path: Path) -> None:
    config(tmp_path, """
functions: src/fns
store: sqlite:///var/db.sqlite
http: {host: 0.0.0.0, port: 9000, max_body: 64KiB}
defaults:
  timeout: 5m
  concurrency: 8
  retry: {max_attempts: 10, backoff: 250ms, max_backoff: 1h}
retention: {events: 1d, history: 12h}
""")
    settings = load_settings(tmp_path, environ={})
    assert settings.functions == tmp_path / "src/fns"
    assert settings.store == f"sqlite:///{tmp_path}/var/db.sqlite"
    assert settings.http == HttpSettings("0.0.0.0", 9000, 64 * 1024)
    assert settings.defaults == Defaults(300.0, 8, RetryPolicy(10, 0.25, 3600.0))
    assert settings.retention == Retention(86400.0, 43200.0)
    assert settings.config_file == tmp_path / "fnrun.yaml"


def test_retry_false_in_defaults_means_one_attempt(tmp_path: Path) -> None:
    config(tmp_path, "defaults: {retry: false}\n")
    assert load_settings(tmp_path, environ={}).defaults.retry.max_attempts == 1


def test_empty_config_file_gives_defaults(tmp_path: Path) -> None:
    config(tmp_path, "# nothing yet\n")
    settings = load_settings(tmp_path, environ={})
    assert (settings.defaults, settings.http) == (Defaults(), HttpSettings())


def test_precedence_file_then_environment_then_arguments(tmp_path: Path) -> None:
    config(tmp_path, "functions: a\nstore: redis://127.0.0.1:6379/5\n"
                     "http: {host: 10.0.0.1, port: 1111}\n")
    env = {"FNRUN_FUNCTIONS": "b", "FNRUN_STORE": "sqlite:///env.db",
           "FNRUN_HOST": "10.0.0.2", "FNRUN_PORT": "2222"}

    from_file = load_settings(tmp_path, environ={})
    assert (from_file.functions.name, from_file.store) == ("a", "redis://127.0.0.1:6379/5")
    assert (from_file.http.host, from_file.http.port) == ("10.0.0.1", 1111)

    from_env = load_settings(tmp_path, environ=env)
    assert (from_env.functions.name, from_env.store) == ("b", f"sqlite:///{tmp_path}/env.db")
    assert (from_env.http.host, from_env.http.port) == ("10.0.0.2", 2222)

    from_args = load_settings(
        tmp_path, functions="c", store="sqlite:////abs/x.db", host="127.0.0.9", port=3333,
        environ=env,
    )
    assert (from_args.functions.name, from_args.store) == ("c", "sqlite:////abs/x.db")
    assert (from_args.http.host, from_args.http.port) == ("127.0.0.9", 3333)


def test_empty_environment_variables_do_not_override(tmp_path: Path) -> None:
    config(tmp_path, "http: {port: 1111}\n")
    settings = load_settings(tmp_path, environ={"FNRUN_PORT": "", "FNRUN_STORE": ""})
    assert settings.http.port == 1111
    assert settings.store.endswith("/.fnrun/state.db")


@pytest.mark.parametrize("url, expected", [
    ("sqlite:///.fnrun/state.db", "sqlite:///{root}/.fnrun/state.db"),
    ("sqlite:///db/../x.db", "sqlite:///{root}/x.db"),
    ("sqlite:////srv/fnrun/state.db", "sqlite:////srv/fnrun/state.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"),
    ("sqlite:///a%3Fb%23c%25d.db", "sqlite:///{root}/a%3Fb%23c%25d.db"),
])
def test_store_url_resolution(tmp_path: Path, url: str, expected: str) -> None:
    assert resolve_store_url(url, tmp_path) == expected.format(root=tmp_path)


@pytest.mark.parametrize("name", ["what?y#z", "100%", "a%3Fb", "sp ace", "ünï"])
def test_the_default_store_is_in_the_project_whatever_its_name(tmp_path: Path, name: str) -> None:
    """A `?` or `#` in the project's path cut the URL there: the store left the project."""
    root = tmp_path / name
    root.mkdir()
    settings = load_settings(root, environ={})
    assert path_of(settings.store) == root / ".fnrun" / "state.db"


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:////srv/a%3Fb%23c.db", "/srv/a?b#c.db"),
    ("sqlite:////srv/100%25.db", "/srv/100%.db"),
    ("sqlite:////srv/ü.db", "/srv/ü.db"),
])
def test_an_explicit_sqlite_path_is_percent_decoded(url: str, path: str) -> None:
    assert path_of(url) == Path(path)


def test_absolute_functions_folder_is_kept(tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    settings = load_settings(tmp_path / ".", functions=str(other), environ={})
    assert settings.functions == other


@pytest.mark.parametrize("value", ["http", "-1", "70000", "80.5"])
def test_bad_fnrun_port_is_one_line(tmp_path: Path, value: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_settings(tmp_path, environ={"FNRUN_PORT": value})
    assert "FNRUN_PORT" in str(caught.value) and "\n" not in str(caught.value)


def test_bad_port_argument_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="port must be a port number"):
        load_settings(tmp_path, port=99999, environ={})


def test_missing_project_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_settings(tmp_path / "nope", environ={})
    assert str(caught.value) == f"project folder {tmp_path / 'nope'} does not exist"
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="is not a folder"):
        load_settings(tmp_path / "file", environ={})


BAD_CONFIGS = {
    "unknown top key": ("function: x\n", 1, 1, "unknown key 'function' in fnrun.yaml"),
    "not a mapping": ("- a\n", 1, 1, "fnrun.yaml must be a mapping"),
    "functions not string": ("functions: [a]\n", 1, 12, "functions must be a string"),
    "unknown store": ("store: postgres://x/y\n", 1, 8, "unknown store URL 'postgres://x/y'"),
    "redis db not a number": ("store: redis://h:6379/x\n", 1, 8, "bad Redis database 'x'"),
    "redis port": ("store: 'redis://h:port/0'\n", 1, 8, "bad port in store URL"),
    "sqlite memory": ("store: 'sqlite:///:memory:'\n", 1, 8, "bad SQLite store URL"),
    "sqlite query": ("store: 'sqlite:///x.db?mode=ro'\n", 1, 8, "has '?mode=ro' after its path"),
    "sqlite fragment": ("store: 'sqlite:///a#b.db'\n", 1, 8, "write ? in a path as %3F, # as"),
    "sqlite NUL": ("store: 'sqlite:///a%00.db'\n", 1, 8, "holds a NUL character"),
    "redis parameter": ("store: 'redis://h:6379/8?foo=bar'\n", 1, 8, "unknown parameter foo"),
    "redis port 0": ("store: 'redis://h:0/8'\n", 1, 8, "bad port 0 in store URL"),
    "http unknown key": ("http: {hots: x}\n", 1, 8, "unknown key 'hots' in http"),
    "http port text": ("http: {port: eighty}\n", 1, 14, "http.port must be an integer"),
    "http port big": ("http:\n  port: 65536\n", 2, 9, "http.port must be at most 65535"),
    "http max_body": ("http: {max_body: 1 lot}\n", 1, 18, "bad size '1 lot'"),
    "defaults unknown": ("defaults: {memory: 1}\n", 1, 12, "unknown key 'memory' in defaults"),
    "defaults timeout": ("defaults: {timeout: forever}\n", 1, 21, "bad duration 'forever'"),
    "defaults concurrency": ("defaults: {concurrency: 0}\n", 1, 25, "at least 1"),
    "defaults retry": ("defaults: {retry: yes}\n", 1, 19, "mapping or false"),
    "retry cap below": (
        "defaults:\n  retry: {backoff: 10s, max_backoff: 1s}\n", 2, 10, "max_backoff must not"
    ),
    "retention": ("retention: {events: -1d}\n", 1, 21, "bad duration"),
    "retention key": ("retention: {logs: 1d}\n", 1, 13, "unknown key 'logs' in retention"),
    "duplicate key": ("store: a\nstore: b\n", 2, 1, "duplicate key 'store'"),
    "syntax": ("http: {port: 1\n", 2, 1, "expected ','"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_reported_at_its_position(tmp_path: Path, case: str) -> None:
    text, line, column, message = BAD_CONFIGS[case]
    config(tmp_path, text)
    with pytest.raises(ManifestError) as caught:
        load_settings(tmp_path, environ={})
    error = caught.value
    assert error.where is not None
    assert (error.where.file, error.where.line, error.where.column) == (
        tmp_path / "fnrun.yaml", line, column,
    ), str(error)
    assert message in error.message


def test_config_that_is_not_text_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "fnrun.yaml").write_bytes(b"store: \xff\xfe\n")
    with pytest.raises(ManifestError) as caught:
        load_settings(tmp_path, environ={})
    assert str(caught.value).startswith(f"{tmp_path}/fnrun.yaml:1:8: not UTF-8 text")  # the byte


def test_a_functions_folder_the_system_refuses_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "fnrun.yaml").write_text("functions: " + "a" * 5000 + "\n")
    with pytest.raises(ManifestError) as caught:
        load_settings(tmp_path, environ={})
    assert caught.value.where is None
    assert str(caught.value).startswith(f"functions folder {tmp_path}/aaa")
    assert str(caught.value).endswith(": File name too long")
    (tmp_path / "fnrun.yaml").write_text("functions: loop\n")
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(ManifestError, match="loop is a symbolic link loop$"):
        load_settings(tmp_path, environ={})


@pytest.mark.parametrize("make", ["fifo", "device", "loop"])
def test_a_config_that_is_not_a_regular_file_is_refused_unopened(tmp_path: Path, make: str) -> None:
    config = tmp_path / "fnrun.yaml"
    if make == "fifo":
        os.mkfifo(config)  # opening it for reading would wait for a writer forever
    else:
        config.symlink_to("/dev/zero" if make == "device" else "fnrun.yaml")
    with pytest.raises(ManifestError) as caught:
        load_settings(tmp_path, environ={})
    says = {"fifo": "is a FIFO (named pipe), not a regular file",
            "device": "is a character device, not a regular file",
            "loop": "cannot read: Too many levels of symbolic links"}[make]
    assert str(caught.value) == f"{config}:1:1: {says}"


def test_a_project_folder_the_system_refuses_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="File name too long"):
        load_settings(tmp_path / ("a" * 5000), environ={})


def test_logs_max_lines_per_run_reaches_every_function(tmp_path: Path) -> None:
    from runtime.project.manifest import load_project

    (tmp_path / "functions").mkdir()
    (tmp_path / "functions" / "a.py").write_text("def run(event):\n    return 1\n")
    (tmp_path / "functions" / "functions.yaml").write_text(
        "functions:\n  a: {handler: a.py:run}\n")
    assert load_settings(tmp_path, environ={}).logs.max_lines_per_run == 200
    config(tmp_path, "logs: {max_lines_per_run: 20}\n")
    settings = load_settings(tmp_path, environ={})
    assert settings.logs.max_lines_per_run == 20
    assert load_project(settings).functions["a"].log_lines == 20
    for text, words in (
        ("logs: {max_lines_per_run: -1}\n", "1:27: logs.max_lines_per_run must be at least 0"),
        ("logs: {max_lines_per_run: 10001}\n", "1:27: logs.max_lines_per_run must be at most"),
        ("logs: {max_lines_per_run: many}\n", "1:27: logs.max_lines_per_run must be an integer"),
        ("logs: {lines: 3}\n", "1:8: unknown key 'lines' in logs"),
    ):
        config(tmp_path, text)
        with pytest.raises(ManifestError) as caught:
            load_settings(tmp_path, environ={})
        assert words in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
