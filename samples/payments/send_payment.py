"""Send one signed `payment.succeeded` webhook to the running sample (standard library only).

    python send_payment.py [ORDER] [--url http://127.0.0.1:8080/hooks/payments]
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.request
import uuid

order = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") else "order-1001"
url = sys.argv[sys.argv.index("--url") + 1] if "--url" in sys.argv else (
    "http://127.0.0.1:8080/hooks/payments")
secret = os.environ["PAYMENTS_WEBHOOK_SECRET"]
body = json.dumps({"type": "payment.succeeded", "data": {
    "id": f"pay_{uuid.uuid4().hex[:12]}", "order": order, "amount": "42.00", "currency": "EUR"}}).encode()
msg_id, stamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
key = base64.b64decode(secret.removeprefix("whsec_"))
sig = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest())
request = urllib.request.Request(url, data=body, method="POST", headers={
    "content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": stamp,
    "webhook-signature": "v1," + sig.decode()})
with urllib.request.urlopen(request, timeout=10) as response:
    print(response.status, response.read().decode())
