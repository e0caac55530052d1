"""How one batch run's outcome becomes one outcome per delivery (runtime.flow.batch.split)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.events import Event, Outcome
from runtime.flow.batch import split
from runtime.store.base import Delivery

EVENTS = [Event(type="t", id=f"e{i}", data=i) for i in range(4)]
BATCH = [Delivery(str(i), "f", event, 1) for i, event in enumerate(EVENTS)]
EMIT = Event(type="out", id="x")


def ok(result: Any) -> Outcome:
    return Outcome("ok", 1.0, 0.5, result={"json": result}, emits=(EMIT,), invocation="inv")


@pytest.mark.parametrize(("outcome", "statuses"), [
    (ok(None), ["ok", "ok", "ok", "ok"]),
    (ok({"failed": []}), ["ok", "ok", "ok", "ok"]),
    (ok({"failed": ["e1", "e3", "unknown"]}), ["ok", "error", "ok", "error"]),
    (ok({"failed": ["e0"]}), ["error", "ok", "ok", "ok"]),
    (ok({"failed": "e1"}), ["error"] * 4),
    (ok({"other": 1}), ["ok"] * 4),
    (Outcome("error", 1.0, 0.5, error="boom", invocation="inv"), ["error"] * 4),
    (Outcome("timeout", 1.0, 0.5, error="slow", invocation="inv"), ["timeout"] * 4),
])
def test_split(outcome: Outcome, statuses: list[str]) -> None:
    out = split(outcome, BATCH)
    assert [o.status for o in out] == statuses
    assert len({o.invocation for o in out}) == 4, "each delivery's run record is its own"
    emitted = [o.emits for o in out if o.emits]
    assert emitted == ([(EMIT,)] if "ok" in statuses else []), "emits go with one success"
