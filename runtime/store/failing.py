"""One log line when a background loop starts failing, one when it recovers.

Background loops of the stores (the Redis heartbeat, the wake-up listener)
retry forever on their own. Swallowing each error hid a node that other
nodes took for dead; logging each retry would flood the log while Redis
restarts. So: a warning at the first failure, naming what it costs, and an
info line with the count once the loop works again.
"""

from __future__ import annotations

import logging

log = logging.getLogger("fnrun.store")


class FailureLog:
    """The failing/recovered state of one background loop, logged at its edges."""

    __slots__ = ("what", "cost", "failures")

    def __init__(self, what: str, cost: str) -> None:
        self.what = what
        """What fails, as a subject: "the Redis heartbeat"."""
        self.cost = cost
        """What the failure means for the user, said once with the first failure."""
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        """Record one failure; only the first of a run is logged."""
        if not self.failures:
            log.warning("%s fails (%s), retrying until it works: %s",
                        self.what, self.cost, str(exc) or type(exc).__name__)
        self.failures += 1

    def worked(self) -> None:
        """Record a success; the first after failures is logged."""
        if self.failures:
            log.info("%s works again (after %d failed attempts)", self.what, self.failures)
            self.failures = 0
