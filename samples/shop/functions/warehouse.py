"""Reserve stock for a new order, then announce it."""

from ledger import append


def reserve(event, ctx):
    order = event.data
    # Dedupe on the event id: at-least-once delivery may run this twice.
    append("reservations", {"event": event.id, "order": order["order"], "items": order["items"]})
    ctx.emit("stock.reserved", {"order": order["order"]}, subject=order["order"])
    return {"reserved": sum(order["items"].values())}
