"""`http.allowed_hosts` in fnrun.yaml: read as the Door compares them, bad ones at their place."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import ManifestError
from runtime.http.door import Door, host_name
from runtime.project.settings_loader import load_settings

pytestmark = pytest.mark.timeout(10)


def settings_of(root: Path, text: str) -> tuple[str, ...]:
    (root / "fnrun.yaml").write_text(text)
    return load_settings(root, environ={}).http.allowed_hosts


def test_names_and_addresses_are_read_in_normal_form(tmp_path: Path) -> None:
    hosts = settings_of(tmp_path, "http:\n  allowed_hosts: [Fnrun.Internal, 'box.lan.', "
                        "10.0.0.5, '[FD00::1]', '::2']\n")
    assert hosts == ("fnrun.internal", "box.lan", "10.0.0.5", "fd00::1", "::2")
    assert settings_of(tmp_path, "http: {port: 1}\n") == ()


BAD = {
    "with a port": ("[fnrun.internal:8080]", 2, 19, "'fnrun.internal:8080' is not a host name"),
    "with a scheme": ("['http://fnrun.internal']", 2, 19, "'http://fnrun.internal' is not"),
    "a wildcard": ("['*.example.com']", 2, 19, "'*.example.com' is not a host name"),
    "a path": ("[a.example/x]", 2, 19, "'a.example/x' is not a host name"),
    "empty": ("['']", 2, 19, "'' is not a host name"),
    "not a list": ("fnrun.internal", 2, 18, "http.allowed_hosts must be a list"),
    "not a string": ("[8080]", 2, 19, "http.allowed_hosts item must be a string"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_entry_is_one_error_at_its_place(tmp_path: Path, case: str) -> None:
    value, line, column, message = BAD[case]
    with pytest.raises(ManifestError) as caught:
        settings_of(tmp_path, f"http:\n  allowed_hosts: {value}\n")
    error = caught.value
    assert error.where is not None and (error.where.line, error.where.column) == (line, column)
    assert message in error.message and "\n" not in str(error)


HOSTS = {
    "127.0.0.1:8080": "127.0.0.1", "[::1]:80": "::1", "[::1]": "::1", "::1": "::1",
    "Box.LAN.:9": "box.lan", "[0:0::1]": "::1", "[::1": None, "[::1]x": None, "": None,
    ":80": None,
}


@pytest.mark.parametrize("header", sorted(HOSTS))
def test_host_names_in_normal_form(header: str) -> None:
    assert host_name(header) == HOSTS[header]


def test_the_door_takes_loopback_the_address_served_and_the_listed_names() -> None:
    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("not called here")

    door = Door(app, "192.168.1.9", ("box.lan", "fd00::1"), token=None)
    for header in ("localhost", "127.0.0.9:1", "[::1]", "192.168.1.9:8080", "BOX.lan",
                   "[fd00::1]:80"):
        assert door.host_allowed(header), header
    for header in ("evil.example", "box.lan.evil.example", "192.168.1.10", "[fd00::2]",
                   "localhost.evil.example", "127.0.0.1.nip.io"):
        assert not door.host_allowed(header), header
