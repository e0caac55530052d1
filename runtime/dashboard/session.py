"""Who may use the dashboard when `FNRUN_TOKEN` is set: a browser cannot send a
Bearer header when it navigates, so it presents a cookie instead.

`fnrun dev` prints a one-time login link (`/_/ui/login?code=...`). The code is
signed with a key derived from the token (so it never equals the token and any
process holding the token can mint one), expires within `CODE_TTL`, and is
taken once. Exchanged, it becomes an HttpOnly, SameSite=Strict session cookie,
itself signed and expiring. Every comparison is constant-time.

Pure: standard library only, the clock passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

CODE_TTL = 600.0
"""Seconds a login link is good for."""
SESSION_TTL = 12 * 3600.0
"""Seconds a dashboard session lasts before a new login."""
MAX_TAKEN = 10_000
"""Codes remembered as used (until they expire); past it, new codes are refused."""


def _key(token: str) -> bytes:
    return hmac.new(token.encode(errors="surrogateescape"), b"fnrun dashboard", "sha256").digest()


def _sign(key: bytes, *parts: str) -> str:
    return hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Login codes and session cookies of one token."""

    def __init__(self, token: str) -> None:
        self._key = _key(token)
        self._taken: dict[str, float] = {}
        """Nonce -> expiry of each code already exchanged."""

    def code(self, now: float) -> str:
        """A fresh one-time login code."""
        nonce, expires = secrets.token_urlsafe(12), str(int(now + CODE_TTL))
        return f"{nonce}.{expires}.{_sign(self._key, 'code', nonce, expires)}"

    def redeem(self, code: str, now: float) -> bool:
        """Whether `code` is genuine, unexpired and not used before; marks it used."""
        nonce, _, rest = code.partition(".")
        expires, _, signature = rest.partition(".")
        genuine = hmac.compare_digest(signature.encode(errors="surrogateescape"),
                                      _sign(self._key, "code", nonce, expires).encode())
        if not (genuine and expires.isdigit() and now < int(expires)):
            return False
        self._taken = {n: t for n, t in self._taken.items() if t > now}
        if nonce in self._taken or len(self._taken) >= MAX_TAKEN:
            return False
        self._taken[nonce] = float(expires)
        return True

    def cookie(self, now: float) -> str:
        """A session cookie's value, good for `SESSION_TTL`."""
        expires = str(int(now + SESSION_TTL))
        return f"{expires}.{_sign(self._key, 'session', expires)}"

    def valid(self, value: str, now: float) -> bool:
        """Whether a session cookie's value is genuine and unexpired."""
        expires, _, signature = value.partition(".")
        genuine = hmac.compare_digest(signature.encode(errors="surrogateescape"),
                                      _sign(self._key, "session", expires).encode())
        return genuine and expires.isdigit() and now < int(expires)


def login_path(token: str | None, now: float) -> str:
    """Where a person opens the dashboard: a one-time login link once a token is set."""
    if not token:
        return "/_/ui"
    return f"/_/ui/login?code={Sessions(token).code(now)}"
