"""The dashboard's two locks: who may read (a session cookie standing in for the
Bearer token) and who may write (only the dashboard's own page).

`Gate.admits` is what `runtime.http.door.Door` asks once the Bearer header is
missing or wrong: the page shell, its static files and the login are open
(they hold no data); a valid session cookie opens every read of `/_/` and
the dashboard's own writes. A cookie never opens other `/_/` writes (`POST
/_/events` keeps needing the Bearer token): SameSite=Strict does not stop
another port of the same host, which is the same site.

`Gate.forged` is checked by every dashboard write, token or not: the
request must say it comes from this very origin (`Origin` and, where the
browser sends it, `Sec-Fetch-Site`) and carry the CSRF token the page got
from `GET /_/ui/api/session`, which another origin's page cannot read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from starlette.types import Scope

from runtime.dashboard.session import SESSION_TTL, Sessions

OPEN_PREFIXES = ("/_/ui/static/", "/_/ui/login")
OPEN_PATHS = frozenset({"/_/ui", "/_/ui/"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
CSRF_HEADER = "x-fnrun-csrf"


def cookie_name(scope: Scope) -> str:
    """One cookie per port: cookies ignore ports, and two supervisors on one host
    (each with its own token) would otherwise log each other out."""
    server = scope.get("server") or ("", 0)
    return f"fnrun_ui_{server[1] or 0}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return None


class Gate:
    """Session cookies (when a token is set) and CSRF tokens of one supervisor."""

    def __init__(self, token: str | None, clock: Callable[[], float] = time.time) -> None:
        self.sessions = Sessions(token) if token else None
        self._token = (token or "").encode(errors="surrogateescape")
        self.clock = clock
        self._csrf_key = secrets.token_bytes(32)

    # -- reading ----------------------------------------------------------------

    def admits(self, scope: Scope) -> bool:
        """Whether a request without the Bearer token may pass the front door."""
        path = scope.get("path", "")
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return True
        if scope.get("method") not in SAFE_METHODS and not path.startswith("/_/ui/"):
            return False
        return self.session_of(scope) is not None

    def session_of(self, scope: Scope) -> str | None:
        """The request's valid session cookie value, if it has one."""
        if self.sessions is None:
            return None
        raw = _header(scope, b"cookie")
        if not raw:
            return None
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw)
        except CookieError:
            return None
        morsel = jar.get(cookie_name(scope))
        if morsel is None or not self.sessions.valid(morsel.value, self.clock()):
            return None
        return morsel.value

    def set_cookie(self, scope: Scope) -> str:
        """A `Set-Cookie` value opening a new session (a token must be set)."""
        assert self.sessions is not None
        value = self.sessions.cookie(self.clock())
        return (f"{cookie_name(scope)}={value}; Path=/_/; Max-Age={int(SESSION_TTL)}; "
                "HttpOnly; SameSite=Strict")

    # -- writing ----------------------------------------------------------------

    def csrf(self, scope: Scope) -> str:
        """The CSRF token of this request's session (of the process, when open)."""
        session = self.session_of(scope) or ""
        return hmac.new(self._csrf_key, session.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        """Whether `given` is FNRUN_TOKEN (constant-time; False when none is set)."""
        return bool(self._token) and hmac.compare_digest(
            given.encode(errors="surrogateescape"), self._token)

    def forged(self, scope: Scope, *, csrf: bool = True) -> str | None:
        """Why a write does not come from the dashboard's own page, or None if it does.

        Args:
            csrf: also require the CSRF token (all writes but the login itself).
        """
        site = _header(scope, b"sec-fetch-site")
        if site is not None and site != "same-origin":
            return f"cross-site request refused (Sec-Fetch-Site: {site})"
        origin, host = _header(scope, b"origin"), _header(scope, b"host")
        expected = f"{scope.get('scheme', 'http')}://{host}".lower()
        if origin is None or origin.lower() != expected:
            return "cross-origin request refused (the Origin header must be this server's)"
        if not csrf:
            return None
        given = (_header(scope, CSRF_HEADER.encode()) or "").encode(errors="surrogateescape")
        if not hmac.compare_digest(given, self.csrf(scope).encode()):
            return "missing or wrong CSRF token (reload the dashboard)"
        return None
