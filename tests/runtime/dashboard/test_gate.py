"""The dashboard's locks, from tables: login codes and session cookies (one-time,
expiring, signed by the token), and the cross-site checks every write passes."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from runtime.cli.banner import render_banner
from runtime.dashboard.gate import Gate, cookie_name
from runtime.dashboard.session import CODE_TTL, SESSION_TTL, Sessions, login_path
from runtime.http.door import Door
from runtime.specs import HttpSettings, Settings

TOKEN = "s3cret-token-value"
NOW = 1_800_000_000.0


def scope(path: str = "/_/ui/api/events", method: str = "POST", port: int = 8000,
          **headers: str) -> dict[str, Any]:
    raw = [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return {"type": "http", "path": path, "method": method, "scheme": "http",
            "server": ("127.0.0.1", port), "headers": raw, "query_string": b""}


def test_a_login_code_works_once_and_never_equals_the_token() -> None:
    sessions = Sessions(TOKEN)
    code = sessions.code(NOW)
    assert TOKEN not in code
    assert sessions.redeem(code, NOW + 1)
    assert not sessions.redeem(code, NOW + 2)  # one-time


@pytest.mark.parametrize("case", ["expired", "other token", "tampered expiry", "garbage", "empty"])
def test_a_bad_login_code_is_refused(case: str) -> None:
    sessions = Sessions(TOKEN)
    code = sessions.code(NOW)
    nonce, expires, signature = code.split(".")
    bad, at = {
        "expired": (code, NOW + CODE_TTL + 1),
        "other token": (Sessions("another-token").code(NOW), NOW),
        "tampered expiry": (f"{nonce}.{int(expires) + 9999}.{signature}", NOW),
        "garbage": ("a.b.c.d", NOW),
        "empty": ("", NOW),
    }[case]
    assert not sessions.redeem(bad, at)


def test_a_session_cookie_is_signed_and_expires() -> None:
    sessions = Sessions(TOKEN)
    value = sessions.cookie(NOW)
    assert sessions.valid(value, NOW + SESSION_TTL - 1)
    assert not sessions.valid(value, NOW + SESSION_TTL + 1)
    assert not Sessions("another-token").valid(value, NOW)
    expires, _, signature = value.partition(".")
    assert not sessions.valid(f"{int(expires) + 60}.{signature}", NOW)


def test_the_login_path_is_a_one_time_link_only_with_a_token() -> None:
    assert login_path(None, NOW) == "/_/ui"
    link = login_path(TOKEN, NOW)
    assert link.startswith("/_/ui/login?code=")
    assert Sessions(TOKEN).redeem(link.partition("=")[2], NOW)


def cookie_for(gate: Gate, port: int = 8000) -> str:
    set_cookie = gate.set_cookie(scope(port=port))
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    return set_cookie.partition(";")[0]


@pytest.mark.parametrize(("path", "method", "with_cookie", "admitted"), [
    ("/_/ui", "GET", False, True),                       # the shell holds no data
    ("/_/ui/static/app.js", "GET", False, True),
    ("/_/ui/login", "GET", False, True),
    ("/_/ui/api/runs", "GET", False, False),
    ("/_/functions", "GET", False, False),
    ("/_/functions", "GET", True, True),                 # a cookie opens reads
    ("/_/ui/api/events", "POST", True, True),            # ... and the dashboard's writes
    ("/_/events", "POST", True, False),                  # ... never the API's own writes
    ("/_/ui/api/events", "POST", False, False),
])
def test_what_a_session_cookie_opens(path: str, method: str, with_cookie: bool,
                                     admitted: bool) -> None:
    gate = Gate(TOKEN, clock=lambda: NOW)
    headers = {"cookie": cookie_for(gate)} if with_cookie else {}
    assert gate.admits(scope(path, method, **headers)) is admitted


def test_a_cookie_is_per_port_and_needs_a_token() -> None:
    gate = Gate(TOKEN, clock=lambda: NOW)
    assert cookie_name(scope(port=8000)) != cookie_name(scope(port=8001))
    assert not gate.admits(scope("/_/functions", "GET", port=8001, cookie=cookie_for(gate)))
    assert not Gate(None).admits(scope("/_/functions", "GET", cookie="fnrun_ui_8000=1.2"))


def test_the_front_door_lets_a_session_in_but_keeps_the_host_check() -> None:
    gate = Gate(TOKEN, clock=lambda: NOW)
    door = Door(None, "127.0.0.1", (), TOKEN, gate.admits)  # type: ignore[arg-type]
    cookie = cookie_for(gate)
    assert door._refusal(scope("/_/functions", "GET", host="127.0.0.1:8000", cookie=cookie)) is None
    refused = door._refusal(scope("/_/functions", "GET", host="evil.example", cookie=cookie))
    assert refused is not None and refused.status_code == 421
    refused = door._refusal(scope("/_/functions", "GET", host="127.0.0.1:8000"))
    assert refused is not None and refused.status_code == 401


def own(gate: Gate, **extra: str) -> dict[str, Any]:
    headers = {"host": "127.0.0.1:8000", "origin": "http://127.0.0.1:8000",
               "sec_fetch_site": "same-origin", **extra}
    headers["x_fnrun_csrf"] = extra.get("x_fnrun_csrf", gate.csrf(scope(**headers)))
    return scope(**headers)


@pytest.mark.parametrize(("change", "why"), [
    ({}, None),
    ({"sec_fetch_site": "same-site"}, "Sec-Fetch-Site"),       # another port of this host
    ({"sec_fetch_site": "cross-site"}, "Sec-Fetch-Site"),
    ({"origin": "http://127.0.0.1:9999"}, "Origin"),
    ({"origin": "null"}, "Origin"),
    ({"x_fnrun_csrf": "0" * 64}, "CSRF"),
    ({"x_fnrun_csrf": ""}, "CSRF"),
])
def test_a_write_must_come_from_the_dashboard_page(change: dict[str, str], why: str | None) -> None:
    for gate in (Gate(None), Gate(TOKEN, clock=lambda: NOW)):
        refusal = gate.forged(own(gate, **change))
        assert (refusal is None) if why is None else (why in (refusal or ""))


def test_a_write_without_origin_is_refused() -> None:
    gate = Gate(None)
    headers = scope(host="127.0.0.1:8000", x_fnrun_csrf=gate.csrf(scope()))
    assert "Origin" in (gate.forged(headers) or "")


def test_the_csrf_token_belongs_to_the_session() -> None:
    gate = Gate(TOKEN, clock=lambda: NOW)
    first = scope(cookie=cookie_for(gate))
    second = scope(cookie=f"{cookie_name(first)}={Sessions(TOKEN).cookie(NOW + 5)}")
    assert gate.csrf(first) != gate.csrf(second)
    assert gate.csrf(first) != Gate(TOKEN, clock=lambda: NOW).csrf(first)  # per process


def test_the_dev_banner_names_the_dashboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    settings = Settings(project=tmp_path, functions=tmp_path / "functions")
    served = HttpSettings(host="127.0.0.1", port=8123)
    monkeypatch.delenv("FNRUN_TOKEN", raising=False)
    assert "\n  ui     http://127.0.0.1:8123/_/ui\n" in render_banner([], settings, served=served)
    monkeypatch.setenv("FNRUN_TOKEN", TOKEN)
    text = render_banner([], settings, served=served)
    found = re.search(r"\n  ui     http://127\.0\.0\.1:8123/_/ui/login\?code=(\S+)  "
                      r"\(one-time login link, 10 min\)\n", text)
    assert found is not None and TOKEN not in text
    assert Sessions(TOKEN).redeem(found[1], time.time())
