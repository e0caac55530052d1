"""Starter schedule function: a heartbeat every 5 minutes.

`fnrun ls` shows when it fires next; `fnrun history --function heartbeat`
shows each beat. `event.time` is the scheduled tick, so `lag_ms` is how late
this run started; `pastdue` is true for a beat caught up after downtime.
"""

import time


def beat(event, ctx):
    lag_ms = round((time.time() - event.time.timestamp()) * 1000, 1)
    pastdue = bool(event.extensions.get("pastdue"))
    ctx.log.info(
        "heartbeat for %s at %s (lag %.1f ms%s)",
        (event.data or {}).get("service", "?"), event.time.isoformat(), lag_ms,
        ", past due" if pastdue else "",
    )
    return {"tick": event.time.isoformat(), "lag_ms": lag_ms, "pastdue": pastdue}
