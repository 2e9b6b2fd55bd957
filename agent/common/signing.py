"""Standard Webhooks signatures: signing outbound requests and verifying them.

The signed content is ``{webhook-id}.{webhook-timestamp}.{body}`` (the raw body
bytes), exactly as the Standard Webhooks specification says. Two schemes:

* ``v1a``, the default: pure Ed25519. Keys are written ``whsk_<base64>`` (the raw
  32-byte seed) and ``whpk_<base64>`` (the raw 32-byte public key). The spec leaves
  that byte layout open; ``docs/protocol.md`` documents ours with a test vector.
* ``v1``: HMAC-SHA256 with a shared ``whsec_<base64>`` secret, for receivers whose
  off-the-shelf library only does that.

Several keys may sign at once (key rotation): the ``webhook-signature`` header then
holds one ``scheme,signature`` pair per key, separated by spaces, and a receiver
accepts the message when any pair verifies with any key it trusts.

:class:`WebhookAuth` (agent/common/webhook_auth.py, still importable from here) adds
the headers as an ``httpx.Auth`` whose flow does no I/O, so every destination shares
it; :func:`verify` is the receiving side, shared with the reference receiver.

Ed25519 is libsodium's, through PyNaCl (PyCA's binding to it), rather than
``cryptography``'s: the keys are raw 32-byte seeds and public keys, which both read
directly, and importing ``cryptography`` maps its whole Rust extension (measured:
about 7 MiB more peak RSS for the agent than PyNaCl's 1 MiB) for this one scheme.
PyNaCl and ``httpx`` are imported when first needed (an Ed25519 key read, a client
signing), not with this module: the config loader imports it for every config, and
an agent without destinations, or ``heartwire check``, needs neither.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent.errors import SignatureError, SigningKeyError

if TYPE_CHECKING:
    from nacl.signing import SigningKey as NaclSigningKey

    # Served by __getattr__ at run time; named here for the type checker.
    from agent.common.webhook_auth import WebhookAuth as WebhookAuth

ID_HEADER: Final = "webhook-id"
TIMESTAMP_HEADER: Final = "webhook-timestamp"
SIGNATURE_HEADER: Final = "webhook-signature"

SECRET_KEY_PREFIX: Final = "whsk_"  # Ed25519 private key (seed), v1a
PUBLIC_KEY_PREFIX: Final = "whpk_"  # Ed25519 public key, v1a
SHARED_SECRET_PREFIX: Final = "whsec_"  # HMAC-SHA256 secret, v1

ED25519_SCHEME: Final = "v1a"
HMAC_SCHEME: Final = "v1"

DEFAULT_TOLERANCE_S: Final = 300.0
# Seconds since the epoch fit in 11 digits until the year 5138; a longer header is
# refused before any arithmetic on it (int() of 5,000 digits raises, slowly).
MAX_TIMESTAMP_DIGITS: Final = 12
# The spec asks for at least 24 random bytes; a shorter secret is refused rather
# than silently used.
MIN_SHARED_SECRET_BYTES: Final = 24
_ED25519_KEY_BYTES: Final = 32
_ED25519_SIGNATURE_BYTES: Final = 64


def _decode_key(text: str, prefix: str, what: str, *, size: int | None = None) -> bytes:
    """The bytes of ``<prefix><base64>``, checked for the prefix and (if given) the size.

    Raises:
        SigningKeyError: naming what was expected.
    """
    text = text.strip()
    if not text.startswith(prefix):
        raise SigningKeyError(f"{what} starts with {prefix!r}")
    try:
        raw = base64.b64decode(text[len(prefix):], validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(f"{what} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise SigningKeyError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw


def signed_content(msg_id: str, timestamp: int, body: bytes) -> bytes:
    """The bytes every scheme signs: ``id.timestamp.body``."""
    return f"{msg_id}.{timestamp}.".encode() + body


@dataclass(frozen=True, slots=True)
class Ed25519SigningKey:
    """An Ed25519 private key (``whsk_``) that signs with scheme ``v1a``."""

    private_key: NaclSigningKey

    scheme = ED25519_SCHEME

    @classmethod
    def generate(cls) -> Ed25519SigningKey:
        """A new random key."""
        from nacl.signing import SigningKey as NaclSigningKey

        return cls(NaclSigningKey.generate())

    @classmethod
    def from_text(cls, text: str) -> Ed25519SigningKey:
        """Reads ``whsk_<base64 of the 32-byte seed>``.

        Raises:
            SigningKeyError: the text is not such a key.
        """
        seed = _decode_key(text, SECRET_KEY_PREFIX, "an Ed25519 signing key",
                           size=_ED25519_KEY_BYTES)
        from nacl.signing import SigningKey as NaclSigningKey

        return cls(NaclSigningKey(seed))

    def to_text(self) -> str:
        """``whsk_<base64 seed>``: the private key file's content."""
        return SECRET_KEY_PREFIX + base64.b64encode(bytes(self.private_key)).decode()

    def public_key(self) -> Ed25519VerifyKey:
        """The matching public key, to give to the receiver."""
        return Ed25519VerifyKey(bytes(self.private_key.verify_key))

    def sign(self, content: bytes) -> str:
        """``v1a,<base64 signature>`` of ``content``."""
        signature = self.private_key.sign(content).signature
        return f"{self.scheme},{base64.b64encode(signature).decode()}"


@dataclass(frozen=True, slots=True)
class Ed25519VerifyKey:
    """An Ed25519 public key (``whpk_``) that verifies ``v1a`` signatures.

    Held as its 32 raw bytes, so two keys compare equal by value.
    """

    raw: bytes

    scheme = ED25519_SCHEME

    @classmethod
    def from_text(cls, text: str) -> Ed25519VerifyKey:
        """Reads ``whpk_<base64 of the 32-byte public key>``.

        Raises:
            SigningKeyError: the text is not such a key.
        """
        return cls(_decode_key(text, PUBLIC_KEY_PREFIX, "an Ed25519 public key",
                               size=_ED25519_KEY_BYTES))

    def to_text(self) -> str:
        """``whpk_<base64 public key>``."""
        return PUBLIC_KEY_PREFIX + base64.b64encode(self.raw).decode()

    def matches(self, signature: bytes, content: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``content``."""
        # The sender chooses the length: PyNaCl raises ValueError for one that is
        # not 64 bytes, where a forgery must simply not match.
        if len(signature) != _ED25519_SIGNATURE_BYTES or len(self.raw) != _ED25519_KEY_BYTES:
            return False
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey as NaclVerifyKey

        try:
            NaclVerifyKey(self.raw).verify(content, signature)
        except BadSignatureError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class HmacSecret:
    """A shared ``whsec_`` secret: signs and verifies scheme ``v1`` (HMAC-SHA256)."""

    secret: bytes

    scheme = HMAC_SCHEME

    @classmethod
    def from_text(cls, text: str) -> HmacSecret:
        """Reads ``whsec_<base64 secret>`` (at least 24 bytes once decoded).

        Raises:
            SigningKeyError: the text is not such a secret.
        """
        secret = _decode_key(text, SHARED_SECRET_PREFIX, "a shared secret")
        if len(secret) < MIN_SHARED_SECRET_BYTES:
            raise SigningKeyError(
                f"the shared secret must be at least {MIN_SHARED_SECRET_BYTES} bytes, "
                f"got {len(secret)}"
            )
        return cls(secret)

    def to_text(self) -> str:
        """``whsec_<base64 secret>``."""
        return SHARED_SECRET_PREFIX + base64.b64encode(self.secret).decode()

    def _digest(self, content: bytes) -> bytes:
        return hmac.new(self.secret, content, hashlib.sha256).digest()

    def sign(self, content: bytes) -> str:
        """``v1,<base64 HMAC-SHA256>`` of ``content``."""
        return f"{self.scheme},{base64.b64encode(self._digest(content)).decode()}"

    def matches(self, signature: bytes, content: bytes) -> bool:
        """Whether ``signature`` is this secret's HMAC of ``content`` (constant time)."""
        return hmac.compare_digest(self._digest(content), signature)


SigningKey = Ed25519SigningKey | HmacSecret
VerifyKey = Ed25519VerifyKey | HmacSecret


def read_signing_key(text: str) -> SigningKey:
    """A signing key from its text form, by prefix: ``whsk_`` or ``whsec_``.

    Raises:
        SigningKeyError: neither prefix, or a malformed key.
    """
    if text.strip().startswith(SHARED_SECRET_PREFIX):
        return HmacSecret.from_text(text)
    if text.strip().startswith(SECRET_KEY_PREFIX):
        return Ed25519SigningKey.from_text(text)
    raise SigningKeyError(
        f"a signing key starts with {SECRET_KEY_PREFIX!r} (Ed25519) "
        f"or {SHARED_SECRET_PREFIX!r} (HMAC)"
    )


def read_verify_key(text: str) -> VerifyKey:
    """A verification key from its text form, by prefix: ``whpk_`` or ``whsec_``.

    Raises:
        SigningKeyError: neither prefix, or a malformed key.
    """
    if text.strip().startswith(SHARED_SECRET_PREFIX):
        return HmacSecret.from_text(text)
    if text.strip().startswith(PUBLIC_KEY_PREFIX):
        return Ed25519VerifyKey.from_text(text)
    raise SigningKeyError(
        f"a verification key starts with {PUBLIC_KEY_PREFIX!r} (Ed25519) "
        f"or {SHARED_SECRET_PREFIX!r} (HMAC)"
    )


def new_message_id() -> str:
    """A fresh ``msg_<32 hex digits>`` id (no dots: the signed content is dot-separated)."""
    return f"msg_{uuid.uuid4().hex}"


def sign_headers(
    msg_id: str, timestamp: int, body: bytes, keys: Sequence[SigningKey]
) -> dict[str, str]:
    """The three Standard Webhooks headers for one message, signed by every key.

    Raises:
        ValueError: no keys, or an id containing a dot (it would make the signed
            content ambiguous).
    """
    if not keys:
        raise ValueError("at least one signing key is needed")
    if not msg_id or "." in msg_id:
        raise ValueError(f"a message id must be non-empty and contain no '.', got {msg_id!r}")
    content = signed_content(msg_id, timestamp, body)
    return {
        ID_HEADER: msg_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(key.sign(content) for key in keys),
    }


def __getattr__(name: str) -> Any:
    # WebhookAuth subclasses httpx.Auth: it lives apart so that importing this module
    # does not import httpx; the name stays importable from here.
    if name == "WebhookAuth":
        from agent.common.webhook_auth import WebhookAuth

        return WebhookAuth
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True, slots=True)
class VerifiedMessage:
    """What :func:`verify` established about a message.

    Attributes:
        msg_id: the ``webhook-id`` (use it as the deduplication key).
        timestamp: the ``webhook-timestamp``, seconds since the epoch.
        key: the trusted key whose signature matched.
    """

    msg_id: str
    timestamp: int
    key: VerifyKey


def _header(headers: Mapping[str, str], name: str) -> str:
    # httpx.Headers and most server frameworks are case-insensitive already; a
    # plain dict may not be.
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if key.lower() == name:
                value = candidate
                break
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


class StaleTimestampError(SignatureError):
    """The message's ``webhook-timestamp`` is too far from the verifier's clock."""


def check_timestamp(timestamp_text: str, *, now: float, tolerance_s: float) -> int:
    """The ``webhook-timestamp`` header as seconds, when within ``tolerance_s`` of ``now``.

    This is the one tolerance rule: :func:`verify` applies it, and a receiver that
    answers a stale message differently from a forged one asks it first.

    Raises:
        StaleTimestampError: the timestamp is too old, too new or absurdly long.
        SignatureError: it is not a decimal integer.
    """
    if not timestamp_text.isascii() or not timestamp_text.isdigit():
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer: {timestamp_text!r}")
    if len(timestamp_text) > MAX_TIMESTAMP_DIGITS:
        raise StaleTimestampError(f"message timestamp {timestamp_text[:MAX_TIMESTAMP_DIGITS]}… "
                                  f"is too new (now {int(now)})")
    timestamp = int(timestamp_text)
    if timestamp < now - tolerance_s:
        raise StaleTimestampError(f"message timestamp {timestamp} is too old (now {int(now)})")
    if timestamp > now + tolerance_s:
        raise StaleTimestampError(f"message timestamp {timestamp} is too new (now {int(now)})")
    return timestamp


def verify(
    headers: Mapping[str, str],
    body: bytes,
    keys: Iterable[VerifyKey],
    *,
    now: float | None = None,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> VerifiedMessage:
    """Checks a message's Standard Webhooks signature against trusted keys.

    Args:
        headers: the request headers (any mapping; names matched case-insensitively).
        body: the raw request body, exactly as received (never re-serialized JSON).
        keys: the keys to trust (``whpk_`` public keys and/or ``whsec_`` secrets).
        now: the current time in seconds since the epoch (default: the OS clock).
        tolerance_s: how far the timestamp may be from ``now``, either way.

    Returns:
        The id, timestamp and the key that matched.

    Raises:
        SignatureError: a header is missing or malformed, the timestamp is outside
            the tolerance, or no signature matches any trusted key.
    """
    msg_id = _header(headers, ID_HEADER)
    timestamp_text = _header(headers, TIMESTAMP_HEADER)
    signatures = _header(headers, SIGNATURE_HEADER)
    current = time.time() if now is None else now
    timestamp = check_timestamp(timestamp_text, now=current, tolerance_s=tolerance_s)

    # Sign over the header text as sent, not a re-formatted number.
    content = f"{msg_id}.{timestamp_text}.".encode() + body
    trusted = list(keys)
    for pair in signatures.split():
        scheme, _, encoded = pair.partition(",")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue  # one garbled entry must not hide a valid one beside it
        for key in trusted:
            if key.scheme == scheme and key.matches(signature, content):
                return VerifiedMessage(msg_id, timestamp, key)
    raise SignatureError("no signature matches a trusted key")
