"""Shared fixtures for the whole suite: keep this small."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import NoReturn

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`pytest.mark.anyio`) run on asyncio, the backend fnrun ships on."""
    return "asyncio"


def _service_missing(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: required services must be present)")
    pytest.skip(reason)


@pytest.fixture
def service_missing() -> Callable[[str], NoReturn]:
    """Call with a reason to skip a test whose service (Redis, ...) is absent; fails under CI."""
    return _service_missing
