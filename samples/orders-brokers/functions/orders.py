"""Price an order that came in from RabbitMQ; the result goes out to Kafka through the sink.

The event's data is the message's JSON body; its id is the AMQP message-id the
producer set, so a message redelivered after a crash is stored (and priced) once.
Emitted events are committed with the handler's success: a failed attempt
exports nothing, and its retry emits the result once.
"""

from decimal import Decimal

PRICES = {"tea": Decimal("4.50"), "cake": Decimal("3.20"), "scone": Decimal("2.80")}


def price(event, ctx):
    order = event.data
    unknown = [line["sku"] for line in order["lines"] if line["sku"] not in PRICES]
    if unknown:
        ctx.emit("fulfilment.rejected", {"order": order["id"], "unknown": unknown})
        return {"rejected": order["id"]}
    total = sum(PRICES[line["sku"]] * line["qty"] for line in order["lines"])
    ctx.emit("fulfilment.priced", {"order": order["id"], "total": str(total), "currency": "EUR"})
    ctx.log.info("priced %s: %s EUR", order["id"], total)
    return {"priced": order["id"], "total": str(total)}
