"""POST /checkout (async webhook): validate an order and publish `order.created`."""

import uuid


def problem(order):
    """Why `order` cannot be accepted, or None."""
    if not isinstance(order, dict):
        return 'send a JSON object: {"items": {...}, "card": "...", "email": "..."}'
    items = order.get("items")
    if not isinstance(items, dict) or not items:
        return "items must be a non-empty object of sku: quantity"
    if not all(isinstance(q, int) and 0 < q <= 100 for q in items.values()):
        return "each quantity must be an integer from 1 to 100"
    if not isinstance(order.get("card"), str) or not isinstance(order.get("email"), str):
        return "card and email must be strings"
    return None


def checkout(event, ctx):
    order = event.data
    reason = problem(order)
    if reason is not None:
        # A bad request will not get better by retrying: record it and finish.
        ctx.log.warning("rejected request %s: %s", event.id, reason)
        return {"rejected": reason}
    order_id = order.get("id") or f"ord-{uuid.uuid4().hex[:8]}"
    # Emitted only if this invocation succeeds, atomically with it.
    ctx.emit("order.created", {
        "order": order_id, "items": order["items"], "card": order["card"],
        "email": order["email"],
    }, subject=order_id)
    ctx.log.info("order %s accepted", order_id)
    return {"order": order_id, "status": "accepted"}
