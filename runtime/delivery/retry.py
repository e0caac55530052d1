"""Retry maths: (policy, attempt just failed) -> delay before the next, or dead letter."""

from __future__ import annotations

import random

from runtime.specs import RetryPolicy


def next_delay(policy: RetryPolicy, attempt: int, rand: float | None = None) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None when it is time to dead-letter.

    Exponential (`backoff * 2**(attempt-1)`, capped at `max_backoff`) with
    "equal jitter": half the delay is fixed, half is random, so retries of a
    burst spread out but never fire sooner than half the nominal delay.

    Args:
        attempt: the attempt that just failed, 1-based.
        rand: a number in [0, 1) for the jitter; random when omitted.
    """
    if attempt >= policy.max_attempts:
        return None
    # Cap the exponent: 2.0 ** 1024 raises OverflowError, and any delay past
    # 2**62 backoffs is clipped by max_backoff anyway.
    nominal = min(policy.max_backoff, policy.backoff * 2.0 ** min(attempt - 1, 62))
    jitter = random.random() if rand is None else rand
    return nominal / 2 + nominal / 2 * jitter
