"""The adapter table: stores and triggers named as "module:attr" strings.

The runtime reaches `triggers/` and the store adapters only through these
tables (as uvicorn's config names its loops and protocols), so importing the
runtime never imports a backend it does not use, and a new backend is one
file plus one line here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from runtime.errors import StoreError

if TYPE_CHECKING:
    from runtime.store.base import Store

STORES = {
    "sqlite": "runtime.store.sqlite:SqliteStore",
    "redis": "runtime.store.redis:RedisStore",
    "rediss": "runtime.store.redis:RedisStore",
}

TRIGGERS = {
    "event": "triggers.event",
    "schedule": "triggers.schedule",
    "webhook": "triggers.webhook",
}
"""Trigger kind -> module. Each module provides `parse` and `Trigger` (see runtime.ingress)."""


def load(ref: str) -> Any:
    """Import "package.module:attr" (or a bare module) and return it."""
    module_name, _, attr = ref.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attr) if attr else module


def store_for(url: str) -> Store:
    """An unopened store for `url`: sqlite:////abs/state.db or redis://host:6379/1.

    Relative SQLite paths are resolved by the settings loader before this.
    """
    scheme = urlsplit(url).scheme
    if scheme not in STORES:
        known = ", ".join(f"{s}://" for s in STORES)
        raise StoreError(f"unknown store URL {url!r} (known: {known})")
    cls = load(STORES[scheme])
    return cls(url)  # type: ignore[no-any-return]


def missing_file(url: str) -> Path | None:
    """The file the store at `url` keeps its data in (a store's `path`), if it has
    one and that does not exist yet; else None.

    Commands that only read look first: opening a SQLite store creates its file
    and folders, and `fnrun ls --store` with a typo in the path made both.
    """
    path = getattr(store_for(url), "path", None)
    return path if isinstance(path, Path) and not path.exists() else None
