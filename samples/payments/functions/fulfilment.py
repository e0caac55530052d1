"""Two independent subscribers of `order.paid`: each gets its own delivery and retries."""

import json
import os
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "out"


def _append(name, record):
    OUT.mkdir(exist_ok=True)
    with open(OUT / name, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def send_receipt(event, ctx):
    order = event.data["order"]
    ctx.log.info("receipt for %s: %s %s", order, event.data["amount"], event.data["currency"])
    _append("receipts.jsonl", {"order": order, "event": event.id, "attempt": ctx.attempt})
    return {"receipt": order}


def ship(event, ctx):
    order = event.data["order"]
    ctx.log.info("shipping %s", order)
    _append("shipments.jsonl", {"order": order, "event": event.id, "pid": os.getpid()})
    return {"shipped": order}
