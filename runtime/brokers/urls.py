"""Broker URLs: shown without their password, split into the parts clients take."""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit

from runtime.brokers.base import BrokerError


def redact(url: str) -> str:
    """`url` fit for a log line: a password becomes `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    netloc = f"{user}:***@{parts.netloc.rpartition('@')[2]}"
    return parts._replace(netloc=netloc).geturl()


def servers(url: str, default_port: int) -> list[str]:
    """The `host:port` list of a URL whose host part may name several (`kafka://a:9092,b:9092`)."""
    hosts = urlsplit(url).netloc.rpartition("@")[2]
    found = []
    for host in hosts.split(","):
        if not host:
            raise BrokerError(f"no host in {redact(url)}")
        found.append(host if ":" in host.rsplit("]", 1)[-1] else f"{host}:{default_port}")
    return found


def credentials(url: str) -> tuple[str | None, str | None]:
    """The URL's user name and password, percent-decoded."""
    parts: SplitResult = urlsplit(url)
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return user, password
