"""Which protocol path serves: the fast one only on a uvicorn it was checked against.

`runtime.http.fast_protocol` reads uvicorn's private internals; a uvicorn
series it was not read against must fail here, loudly, before it ships.
"""

from __future__ import annotations

import logging
import re
import sys
import tomllib
from pathlib import Path

import pytest
import uvicorn

from runtime.errors import UsageError
from runtime.http import server
from runtime.http.plain_protocol import PlainProtocol

pytestmark = pytest.mark.timeout(10)

ROOT = Path(__file__).resolve().parents[2]


def test_uvicorn_is_a_series_the_fast_path_was_checked_against() -> None:
    series = server.uvicorn_series()
    assert series in server.CHECKED_UVICORN, (
        f"uvicorn {uvicorn.__version__} is installed, "
        "but runtime/http/fast_protocol.py was checked "
        f"against {sorted(server.CHECKED_UVICORN)} only: read uvicorn's httptools_impl.py "
        "(HttpToolsProtocol.on_response_complete, RequestResponseCycle.transport) and "
        "h11_impl.py for changes, then add the series to CHECKED_UVICORN and pyproject.toml"
    )
    from runtime.http.fast_protocol import FastProtocol

    assert server.protocol_class() is FastProtocol


def test_the_pin_in_pyproject_allows_exactly_the_checked_series() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.startswith("uvicorn")]
    match = re.fullmatch(r"uvicorn\[standard\]>=(\d+\.\d+),<(\d+)\.(\d+)", pin)
    assert match, pin
    low, major, minor = match.group(1), int(match.group(2)), int(match.group(3))
    allowed = {f"{major}.{m}" for m in range(int(low.split(".")[1]), minor)}
    assert low.split(".")[0] == str(major) and allowed == set(server.CHECKED_UVICORN)


def test_an_unknown_uvicorn_series_takes_the_plain_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(server, "uvicorn_series", lambda: "0.99")
    with caplog.at_level(logging.WARNING, "fnrun.http"):
        assert server.protocol_class() is PlainProtocol
    assert "not a version the fast path was checked against" in caplog.text
    with pytest.raises(UsageError, match="cannot serve on the fast HTTP path: uvicorn"):
        server.protocol_class("fast")


def test_without_httptools_auto_takes_the_plain_path(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("runtime.http.fast_protocol", "uvicorn.protocols.http.httptools_impl"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "httptools", None)  # import httptools -> ImportError
    with caplog.at_level(logging.WARNING, "fnrun.http"):
        assert server.protocol_class("auto") is PlainProtocol
    assert "httptools is not installed" in caplog.text
    with pytest.raises(UsageError, match="httptools is not installed"):
        server.protocol_class("fast")
    assert server.protocol_class("plain") is PlainProtocol
