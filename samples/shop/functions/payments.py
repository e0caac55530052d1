"""Charge the card of a new order. Cards ending in 0000 are declined: those fail every
attempt and end up as dead letters (`fnrun dead-letters list`)."""

from ledger import append


class CardDeclined(Exception):
    """The (pretend) payment provider said no."""


def charge(event, ctx):
    order = event.data
    if order["card"].endswith("0000"):
        ctx.log.warning("card for %s declined (attempt %d)", order["order"], ctx.attempt)
        raise CardDeclined(f"card ending {order['card'][-4:]} declined for {order['order']}")
    amount = 5 * sum(order["items"].values())
    append("payments", {"event": event.id, "order": order["order"], "amount": amount})
    ctx.emit("payment.captured", {"order": order["order"], "amount": amount,
                                  "email": order["email"]}, subject=order["order"])
    return {"charged": amount}
