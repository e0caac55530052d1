"""The payment provider's webhook: turn a verified `payment.succeeded` into `order.paid`."""


def receive(event, ctx):
    payload = event.data
    if not isinstance(payload, dict) or payload.get("type") != "payment.succeeded":
        ctx.log.info("ignoring %r", payload.get("type") if isinstance(payload, dict) else payload)
        return {"ignored": True}
    payment = payload["data"]
    # The event id is derived from the provider's webhook-id, so a redelivered
    # webhook is the same event and `order.paid` keeps one id per payment.
    ctx.emit("order.paid", {"order": payment["order"], "amount": payment["amount"],
                            "currency": payment["currency"]},
             subject=payment["order"], id=f"order-paid-{payment['id']}")
    return {"order": payment["order"]}
