"""The front door of fnrun's `/_/` API (SPEC section 8): who may ask at all.

Every `/_/` request passes three checks, in this order, before any route
sees it, so a route added later cannot escape them:

1. Host: the `Host` header must name the address served, a loopback name
   (`localhost`, `127.0.0.1`, `[::1]`, any port), or one listed in
   `http.allowed_hosts`; else 421. A web page whose DNS name is rebound to
   127.0.0.1 sends its own name as Host, so it reaches nothing.
2. No token in the URL: a `token` or `access_token` query parameter, or any
   query value equal to `FNRUN_TOKEN`, is a 400 (URLs end up in logs and
   browser history; tokens go in the Authorization header).
3. Bearer token: once `FNRUN_TOKEN` is set, every route but `/_/health`
   needs `Authorization: Bearer $FNRUN_TOKEN`, on loopback too; else 401,
   unless `admits` lets it in: the dashboard's session cookie (a browser
   cannot send the header when it navigates; runtime/dashboard/gate.py).

Webhook routes never pass through here: they carry their own signatures.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/_/health"})
"""Answered without the bearer token (still Host-checked): probes have no secret."""
TOKEN_PARAMS = frozenset({"token", "access_token"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def host_name(header: str) -> str | None:
    """The normal form of a `Host` header's name, without its port: lower case, no
    trailing dot, an IP address as `ipaddress` writes it (`[::1]:80` -> `::1`).
    None when it names no host (empty, or a malformed bracket)."""
    value = header.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
    elif value.count(":") > 1:
        name = value  # a bare IPv6 address: not valid in Host, but unambiguous
    else:
        name = value.partition(":")[0].rstrip(".")
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name or None


def is_loopback_name(name: str) -> bool:
    """True for localhost and any 127.0.0.0/8 or ::1 literal."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Door:
    """ASGI middleware for the `/_/` API applying the checks in the module docstring."""

    def __init__(
        self, app: ASGIApp, served: str, allowed_hosts: Iterable[str], token: str | None,
        admits: Callable[[Scope], bool] | None = None,
    ) -> None:
        self.app = app
        self.admits = admits
        names = (host_name(f"[{h}]" if ":" in h else h) for h in (served, *allowed_hosts))
        self.hosts = frozenset(name for name in names if name is not None)
        self.token = token or None
        self._expected = f"Bearer {token}".encode(errors="surrogateescape") if token else b""

    def host_allowed(self, header: str) -> bool:
        """Whether a request with this `Host` header may reach the API."""
        name = host_name(header)
        return name is not None and (name in self.hosts or is_loopback_name(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            # Closing before accepting refuses the handshake (uvicorn answers 403).
            await send({"type": "websocket.close", "code": 1008, "reason": ""})
        else:
            await refusal(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        raw = scope.get("headers") or ()
        hosts = [value for name, value in raw if name == b"host"]
        # Exactly one Host (RFC 9112 3.2): of two, a proxy and we might each read another.
        if len(hosts) != 1 or not self.host_allowed(hosts[0].decode("latin-1")):
            return JSONResponse({"error": "misdirected request: this Host is not served here "
                                 "(add it to http.allowed_hosts in fnrun.yaml)"}, 421)
        if self._token_in_query(scope.get("query_string", b"")):
            return JSONResponse({"error": "tokens go in the Authorization header "
                                 "(Bearer), never in the URL"}, 400)
        if self.token is None or scope.get("path") in OPEN_PATHS:
            return None
        given = next((value for name, value in raw if name == b"authorization"), b"")
        if hmac.compare_digest(given, self._expected):
            return None
        if self.admits is not None and self.admits(scope):
            return None
        return JSONResponse({"error": "missing or wrong bearer token"}, 401,
                            {"www-authenticate": "Bearer"})

    def _token_in_query(self, raw: bytes) -> bool:
        if not raw:
            return False
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            if name.lower() in TOKEN_PARAMS:
                return True
            if self.token is not None and hmac.compare_digest(
                value.encode(errors="surrogateescape"), self.token.encode(errors="surrogateescape")
            ):
                return True
        return False
