"""Send the receipt once the payment is captured (here: append it to out/receipts.jsonl)."""

from ledger import append


def receipt(event, ctx):
    payment = event.data
    text = f"Thank you! Order {payment['order']}: {payment['amount']} EUR charged."
    append("receipts", {"event": event.id, "to": payment["email"], "text": text})
    ctx.log.info("receipt for %s sent to %s", payment["order"], payment["email"])
    return {"sent": payment["email"]}
