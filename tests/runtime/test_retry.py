"""Retry maths, from a table: (policy, failed attempt, jitter draw) -> delay or dead letter."""

from __future__ import annotations

import pytest

from runtime.delivery.retry import next_delay
from runtime.specs import RetryPolicy

pytestmark = pytest.mark.timeout(10)

DEFAULT = RetryPolicy()  # 3 attempts, 1 s backoff, 5 min cap
ONE_SHOT = RetryPolicy(max_attempts=1)  # retry: false
CAPPED = RetryPolicy(max_attempts=20, backoff=1.0, max_backoff=5.0)
MANY = RetryPolicy(max_attempts=5000, backoff=0.5, max_backoff=300.0)
NO_WAIT = RetryPolicy(max_attempts=4, backoff=0.0)


@pytest.mark.parametrize(
    ("policy", "attempt", "rand", "expected"),
    [
        # first retry: nominal 1 s, equal jitter -> [0.5, 1.0)
        (DEFAULT, 1, 0.0, 0.5),
        (DEFAULT, 1, 0.5, 0.75),
        (DEFAULT, 1, 0.999, 0.9995),
        # doubles per attempt
        (DEFAULT, 2, 0.0, 1.0),
        (DEFAULT, 2, 0.5, 1.5),
        # max_attempts counts the first try: attempt 3 of 3 failing is final
        (DEFAULT, 3, 0.5, None),
        (DEFAULT, 4, 0.5, None),
        (ONE_SHOT, 1, 0.0, None),
        # the cap applies before the jitter
        (CAPPED, 3, 0.0, 2.0),
        (CAPPED, 4, 0.0, 2.5),
        (CAPPED, 19, 0.5, 3.75),
        (CAPPED, 20, 0.5, None),
        # huge attempt numbers must not overflow the exponent
        (MANY, 1100, 0.0, 150.0),
        (MANY, 4999, 0.5, 225.0),
        (MANY, 5000, 0.5, None),
        # zero backoff retries at once
        (NO_WAIT, 1, 0.7, 0.0),
        (NO_WAIT, 3, 0.7, 0.0),
        (NO_WAIT, 4, 0.7, None),
    ],
)
def test_next_delay(policy: RetryPolicy, attempt: int, rand: float, expected: float | None) -> None:
    delay = next_delay(policy, attempt, rand)
    if expected is None:
        assert delay is None
    else:
        assert delay == pytest.approx(expected)


@pytest.mark.parametrize("attempt", [1, 2, 5, 9])
def test_random_jitter_stays_between_half_and_full_nominal(attempt: int) -> None:
    nominal = min(CAPPED.max_backoff, CAPPED.backoff * 2.0 ** (attempt - 1))
    delays = [next_delay(CAPPED, attempt) for _ in range(200)]
    assert all(d is not None and nominal / 2 <= d < nominal for d in delays)
    assert len(set(delays)) > 1  # really random: a burst of retries spreads out
