"""Webhook signature checks, pure: (secret, headers, raw body, now) -> ok or why not.

Both schemes are verified over the raw request bytes, before anything is
parsed, and compare digests in constant time (`hmac.compare_digest`).

- Standard Webhooks (https://www.standardwebhooks.com/, "standard"): the
  secret is `whsec_` + base64 key bytes; the signed content is
  `{webhook-id}.{webhook-timestamp}.{body}`; `webhook-signature` holds one or
  more space-separated `v1,<base64 HMAC-SHA256>` entries, any of which may
  match (key rotation); the timestamp must be within 5 minutes of now, in
  either direction (replay protection).
- GitHub ("github"): `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of body>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

TOLERANCE = 5 * 60.0
"""Seconds a Standard Webhooks timestamp may differ from now."""

_PREFIX = "whsec_"


class SignatureError(Exception):
    """A request's signature is missing, malformed, wrong or stale (answer 401)."""


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_` + base64, prefix optional).

    Raises:
        ValueError: the secret is not valid base64 (a configuration mistake).
    """
    encoded = secret[len(_PREFIX):] if secret.startswith(_PREFIX) else secret
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("secret is not whsec_ followed by base64") from None


def verify_standard(
    secret: str, headers: Mapping[str, str], body: bytes, now: float
) -> str:
    """Check a Standard Webhooks request; return its `webhook-id`.

    Args:
        headers: request headers with lower-case names.

    Raises:
        SignatureError: missing headers, stale timestamp or no matching signature.
        ValueError: the secret itself is malformed.
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not msg_id or not stamp or not signatures:
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not an integer") from None
    if abs(now - sent) > TOLERANCE:
        raise SignatureError("webhook-timestamp is outside the 5 minute tolerance")
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except binascii.Error:
            continue
        if hmac.compare_digest(expected, given):
            return msg_id
    raise SignatureError("no webhook-signature entry matches")


def verify_github(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Check GitHub's `X-Hub-Signature-256` over the raw body.

    Raises:
        SignatureError: missing, malformed or wrong signature.
    """
    header = headers.get("x-hub-signature-256", "")
    scheme, _, given = header.partition("=")
    if scheme != "sha256" or not given:
        raise SignatureError("missing or malformed X-Hub-Signature-256")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.strip().lower().encode()):
        raise SignatureError("X-Hub-Signature-256 does not match")
