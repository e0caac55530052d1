"""Signature checks against vectors computed here with hmac/hashlib/base64 directly."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from triggers.signatures import SignatureError, standard_key, verify_github, verify_standard

pytestmark = pytest.mark.timeout(10)

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER = "whsec_" + base64.b64encode(b"another key, rotated out").decode()
NOW = 1_700_000_000
BODY = b'{"order": 42, "amount": "9.99"}'


def sign(secret: str, msg_id: str, stamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signature: str, msg_id: str = "msg_1", stamp: int = NOW) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def test_standard_valid_signature_returns_the_webhook_id() -> None:
    assert verify_standard(SECRET, headers(sign(SECRET, "msg_1", NOW, BODY)), BODY, NOW) == "msg_1"


def test_standard_known_vector_from_the_spec() -> None:
    # The example of the Standard Webhooks reference implementations.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    hdrs = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    assert verify_standard(secret, hdrs, body, 1614265330 + 10) == "msg_p5jXN8AQM9LWM0D4loKWxJek"


def test_key_rotation_any_listed_signature_passes() -> None:
    both = f"{sign(OTHER, 'msg_1', NOW, BODY)} {sign(SECRET, 'msg_1', NOW, BODY)}"
    assert verify_standard(SECRET, headers(both), BODY, NOW) == "msg_1"
    assert verify_standard(OTHER, headers(both), BODY, NOW) == "msg_1"


@pytest.mark.parametrize(
    ("hdrs", "body", "now"),
    [
        pytest.param(headers(sign(OTHER, "msg_1", NOW, BODY)), BODY, NOW, id="wrong-key"),
        pytest.param(headers(sign(SECRET, "msg_1", NOW, BODY)), BODY + b" ", NOW,
                     id="body-changed"),
        pytest.param(headers(sign(SECRET, "msg_2", NOW, BODY)), BODY, NOW, id="id-changed"),
        pytest.param(headers(sign(SECRET, "msg_1", NOW, BODY)), BODY, NOW + 301, id="stale"),
        pytest.param(headers(sign(SECRET, "msg_1", NOW, BODY)), BODY, NOW - 301, id="future"),
        pytest.param(headers("v1,not-base64!!"), BODY, NOW, id="garbage"),
        pytest.param(headers(sign(SECRET, "msg_1", NOW, BODY).replace("v1", "v2")), BODY, NOW,
                     id="unknown-version"),
        pytest.param({"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}, BODY, NOW,
                     id="no-signature"),
        pytest.param({**headers(sign(SECRET, "msg_1", NOW, BODY)), "webhook-timestamp": "soon"},
                     BODY, NOW, id="bad-timestamp"),
    ],
)
def test_standard_rejects(hdrs: dict[str, str], body: bytes, now: int) -> None:
    with pytest.raises(SignatureError):
        verify_standard(SECRET, hdrs, body, now)


def test_standard_tolerance_is_five_minutes_both_ways() -> None:
    sig = sign(SECRET, "msg_1", NOW, BODY)
    assert verify_standard(SECRET, headers(sig), BODY, NOW + 300)
    assert verify_standard(SECRET, headers(sig), BODY, NOW - 300)


def test_malformed_secret_is_a_value_error_not_a_401() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        standard_key("whsec_***not base64***")


def test_github_signature() -> None:
    secret = "It's a Secret to Everybody"
    body = b"Hello, World!"
    # GitHub's documented example vector.
    expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert hmac.new(secret.encode(), body, hashlib.sha256).hexdigest() == expected
    verify_github(secret, {"x-hub-signature-256": f"sha256={expected}"}, body)


@pytest.mark.parametrize(
    "header",
    ["", "sha256=", "sha1=757107ea0eb2509fc211221cce984b8a37570b6d",
     "sha256=" + "0" * 64, "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"],
)
def test_github_rejects(header: str) -> None:
    with pytest.raises(SignatureError):
        verify_github("It's a Secret to Everybody", {"x-hub-signature-256": header},
                      b"Hello, World!")
