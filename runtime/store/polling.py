"""The idle poll: the longest an idle dispatcher waits for work without a wake-up.

Stores wake dispatchers when work arrives, so the poll is only a safety net
(300 s for the supervisor, 1 s under Redis's wake-up stream). A net that
short hides a lost wake-up as a pause of up to its length. The stress tests
for lost wake-ups (tests/e2e/test_wakeups.py) raise it to an hour with the
environment variable below, so that any lost wake-up shows as a stall.
Internal: for tests, not a user setting.
"""

from __future__ import annotations

import logging
import math
import os

IDLE_POLL_ENV = "FNRUN_IDLE_POLL"
"""Seconds; overrides every idle poll of the process (internal, for tests)."""

log = logging.getLogger("fnrun.store")


def idle_poll(default: float) -> float:
    """`default`, unless `FNRUN_IDLE_POLL` holds a positive number of seconds."""
    text = os.environ.get(IDLE_POLL_ENV)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        log.warning("%s=%r is not a positive number of seconds; using %gs",
                    IDLE_POLL_ENV, text, default)
        return default
    return value
