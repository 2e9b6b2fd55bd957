"""Standard Webhooks signing, checked against independent implementations.

``v1`` is verified by the spec's reference Python library (``standardwebhooks``),
``v1a`` by the ``cryptography`` Ed25519 primitives used directly, and the worked
example in docs/protocol.md is recomputed here.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import standardwebhooks
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.common import signing
from agent.errors import HeartwireError, SignatureError, SigningKeyError

PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
NOW = 1_767_225_600
BODY = b'{"type":"heartbeat","seq":1}'
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _pairs(header: str) -> dict[str, bytes]:
    return {scheme: base64.b64decode(sig) for scheme, sig in
            (pair.split(",", 1) for pair in header.split())}


def _independent_ed25519_check(public_text: str, headers: dict[str, str], body: bytes) -> None:
    raw = base64.b64decode(public_text.removeprefix("whpk_"))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    Ed25519PublicKey.from_public_bytes(raw).verify(_pairs(headers["webhook-signature"])["v1a"],
                                                   content)


def test_the_protocol_doc_vector_is_exact() -> None:
    text = PROTOCOL_DOC.read_text()
    fields = dict(re.findall(r"^([a-z -]+(?: \(v1a?\))?):\s+(\S.*)$", text, re.MULTILINE))
    key = signing.Ed25519SigningKey.from_text(fields["signing key (v1a)"])
    secret = signing.HmacSecret.from_text(fields["shared secret (v1)"])
    assert key.public_key().to_text() == fields["public key (v1a)"]
    assert key.to_text() == fields["signing key (v1a)"]
    # The doc says the seed is the bytes 01..20 (hex).
    assert base64.b64decode(fields["signing key (v1a)"][5:]) == bytes(range(1, 33))
    body = fields["body"].encode()
    headers = signing.sign_headers(
        fields["webhook-id"], int(fields["webhook-timestamp"]), body, [key, secret]
    )
    assert headers["webhook-signature"] == fields["webhook-signature"]
    _independent_ed25519_check(fields["public key (v1a)"], headers, body)
    when = datetime.fromtimestamp(int(fields["webhook-timestamp"]), UTC)
    expected_v1 = standardwebhooks.Webhook(fields["shared secret (v1)"]).sign(
        fields["webhook-id"], when, fields["body"])
    assert fields["webhook-signature"].split()[1] == expected_v1


def test_v1_signatures_verify_with_the_reference_library() -> None:
    secret = signing.HmacSecret.from_text(SECRET)
    headers = signing.sign_headers("msg_abc", int(datetime.now(UTC).timestamp()), BODY, [secret])
    assert headers["webhook-signature"].startswith("v1,")
    # The reference library checks the timestamp against the OS clock itself.
    assert standardwebhooks.Webhook(SECRET).verify(BODY, headers) == {
        "type": "heartbeat", "seq": 1}


def test_reference_library_accepts_mixed_v1a_and_v1_headers() -> None:
    """During a rotation to Ed25519 a v1-only receiver must keep working."""
    ed = signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers(
        "msg_abc", int(datetime.now(UTC).timestamp()), BODY,
        [ed, signing.HmacSecret.from_text(SECRET)])
    assert headers["webhook-signature"].split()[0].startswith("v1a,")
    standardwebhooks.Webhook(SECRET).verify(BODY, headers)


def test_reference_library_rejects_a_tampered_v1_body() -> None:
    headers = signing.sign_headers(
        "msg_abc", int(datetime.now(UTC).timestamp()), BODY, [signing.HmacSecret.from_text(SECRET)])
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(BODY + b" ", headers)


def test_v1a_signature_verifies_with_cryptography_directly() -> None:
    key = signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers("msg_1", NOW, BODY, [key])
    _independent_ed25519_check(key.public_key().to_text(), headers, BODY)


def test_key_text_round_trips_and_public_key_is_32_raw_bytes() -> None:
    key = signing.Ed25519SigningKey.generate()
    assert signing.Ed25519SigningKey.from_text(key.to_text()).to_text() == key.to_text()
    public = key.public_key().to_text()
    assert public.startswith("whpk_") and len(base64.b64decode(public[5:])) == 32
    assert signing.read_verify_key(public).to_text() == public  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("whsk_AAAA", "must be 32 bytes, got 3"),
        ("whsk_not base64!", "not valid base64"),
        ("whsec_AAAA", "at least 24 bytes, got 3"),
        ("ssh-ed25519 AAAA", "starts with 'whsk_' (Ed25519) or 'whsec_' (HMAC)"),
    ],
)
def test_malformed_signing_keys_are_refused_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(SigningKeyError, match=re.escape(message)):
        signing.read_signing_key(text)


def test_verify_accepts_any_trusted_key_among_several_signatures() -> None:
    old, new = signing.Ed25519SigningKey.generate(), signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers("msg_1", NOW, BODY, [new, old])
    assert len(headers["webhook-signature"].split()) == 2
    verified = signing.verify(headers, BODY, [old.public_key()], now=NOW)
    assert verified == signing.VerifiedMessage("msg_1", NOW, old.public_key())
    assert signing.verify(headers, BODY, [new.public_key()], now=NOW).key == new.public_key()


def test_verify_accepts_v1_with_the_shared_secret() -> None:
    secret = signing.HmacSecret.from_text(SECRET)
    headers = signing.sign_headers("msg_1", NOW, BODY, [secret])
    assert signing.verify(headers, BODY, [secret], now=NOW).msg_id == "msg_1"


def test_verify_is_case_insensitive_on_plain_dict_headers() -> None:
    key = signing.Ed25519SigningKey.generate()
    headers = {k.title(): v for k, v in signing.sign_headers("msg_1", NOW, BODY, [key]).items()}
    assert signing.verify(headers, BODY, [key.public_key()], now=NOW).timestamp == NOW


@pytest.mark.parametrize(
    ("offset_s", "ok"), [(-300, True), (300, True), (-301, False), (301, False)]
)
def test_verify_timestamp_tolerance_is_five_minutes_either_way(offset_s: int, ok: bool) -> None:
    key = signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers("msg_1", NOW + offset_s, BODY, [key])
    if ok:
        signing.verify(headers, BODY, [key.public_key()], now=NOW)
    else:
        with pytest.raises(SignatureError, match=r"too (old|new)"):
            signing.verify(headers, BODY, [key.public_key()], now=NOW)


def test_verify_tolerance_is_configurable() -> None:
    key = signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers("msg_1", NOW - 20, BODY, [key])
    with pytest.raises(SignatureError, match="too old"):
        signing.verify(headers, BODY, [key.public_key()], now=NOW, tolerance_s=10)


def _mutations() -> list[tuple[str, dict[str, str], bytes, str]]:
    key = signing.Ed25519SigningKey.generate()
    good = signing.sign_headers("msg_1", NOW, BODY, [key])
    return [
        ("tampered body", good, BODY + b"x", "no signature matches"),
        ("other id", {**good, "webhook-id": "msg_2"}, BODY, "no signature matches"),
        ("missing signature", {k: v for k, v in good.items() if k != "webhook-signature"},
         BODY, "missing webhook-signature"),
        ("bad timestamp", {**good, "webhook-timestamp": "12.5"}, BODY, "not an integer"),
        ("garbled pair only", {**good, "webhook-signature": "v1a,@@@"}, BODY,
         "no signature matches"),
        ("scheme swapped", {**good, "webhook-signature":
                            good["webhook-signature"].replace("v1a,", "v1,")}, BODY,
         "no signature matches"),
    ]


@pytest.mark.parametrize(("case", "headers", "body", "message"), _mutations(),
                         ids=[case[0] for case in _mutations()])
def test_verify_rejects_with_an_untrusted_key(
    case: str, headers: dict[str, str], body: bytes, message: str
) -> None:
    # An unrelated trusted key: a header problem is reported before any key is tried.
    keys: list[signing.VerifyKey] = [signing.Ed25519SigningKey.generate().public_key()]
    with pytest.raises(SignatureError, match=message):
        signing.verify(headers, body, keys, now=NOW)
    assert issubclass(SignatureError, HeartwireError)


def test_verify_rejects_mutations_even_with_the_right_key() -> None:
    key = signing.Ed25519SigningKey.generate()
    good = signing.sign_headers("msg_1", NOW, BODY, [key])
    signing.verify(good, BODY, [key.public_key()], now=NOW)
    for headers, body in [
        (good, BODY + b" "),
        ({**good, "webhook-id": "msg_2"}, BODY),
        ({**good, "webhook-timestamp": str(NOW + 1)}, BODY),
        ({**good, "webhook-signature": good["webhook-signature"].replace("v1a,", "v1,")}, BODY),
    ]:
        with pytest.raises(SignatureError, match="no signature matches"):
            signing.verify(headers, body, [key.public_key()], now=NOW)


@pytest.mark.parametrize("size", [0, 1, 63, 65, 200])
def test_a_v1a_signature_of_the_wrong_length_is_no_match_not_an_error(size: int) -> None:
    # A hostile sender controls the signature's length: it must fail to match like
    # any forgery, and leave a valid signature beside it to verify.
    key = signing.Ed25519SigningKey.generate()
    good = signing.sign_headers("msg_1", NOW, BODY, [key])
    wrong = "v1a," + base64.b64encode(bytes(size)).decode()
    with pytest.raises(SignatureError, match="no signature matches"):
        signing.verify({**good, "webhook-signature": wrong}, BODY, [key.public_key()], now=NOW)
    both = {**good, "webhook-signature": f"{wrong} {good['webhook-signature']}"}
    assert signing.verify(both, BODY, [key.public_key()], now=NOW).key == key.public_key()


def test_a_public_key_that_is_not_a_curve_point_verifies_nothing() -> None:
    # 32 bytes that decode as a key but are no valid point (or a low-order one):
    # verifying with them is a non-match, never an exception.
    key = signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers("msg_1", NOW, BODY, [key])
    for raw in (bytes(32), b"\xff" * 32, bytes([1]) + bytes(31)):
        with pytest.raises(SignatureError, match="no signature matches"):
            signing.verify(headers, BODY, [signing.Ed25519VerifyKey(raw)], now=NOW)


def test_a_shared_secret_does_not_verify_an_ed25519_signature() -> None:
    key = signing.Ed25519SigningKey.generate()
    headers = signing.sign_headers("msg_1", NOW, BODY, [key])
    with pytest.raises(SignatureError):
        signing.verify(headers, BODY, [signing.HmacSecret.from_text(SECRET)], now=NOW)


def test_sign_headers_refuses_ids_with_dots() -> None:
    with pytest.raises(ValueError, match=r"no '\.'"):
        signing.sign_headers("msg.1", NOW, BODY, [signing.Ed25519SigningKey.generate()])


async def test_webhook_auth_signs_the_body_actually_sent_and_keeps_the_id() -> None:
    key = signing.Ed25519SigningKey.generate()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    auth = signing.WebhookAuth([key], wall_clock=lambda: NOW + 0.9)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler), auth=auth) as client:
        await client.post("http://central.test/v1/ingest", json={"a": 1},
                          headers={"webhook-id": "msg_fixed"})
        await client.post("http://central.test/v1/ingest", content=b"raw")
    first, second = seen
    assert first.headers["webhook-id"] == "msg_fixed"
    assert first.headers["webhook-timestamp"] == str(NOW)
    signing.verify(first.headers, first.content, [key.public_key()], now=NOW)
    _independent_ed25519_check(key.public_key().to_text(), dict(first.headers), first.content)
    assert re.fullmatch(r"msg_[0-9a-f]{32}", second.headers["webhook-id"])
    signing.verify(second.headers, b"raw", [key.public_key()], now=NOW)
