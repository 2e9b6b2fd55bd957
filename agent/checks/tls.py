"""The TLS probe, and the TLS layer the other probes put under their dialogue.

A ``kind = "tls"`` check connects and completes a TLS handshake: SNI and hostname
verification against ``server_name`` (default: the check's host), the system's CA
store or ``ca_file``, and ``insecure = true`` to skip verification when all that
matters is that TLS answers and when the certificate expires. Facts: ``tls_version``,
``tls_cipher``, ``cert_not_after`` (ISO 8601, UTC) and ``cert_days_left``.

Other kinds reuse :func:`read_tls_settings` and :func:`start_tls`: ``tls = true``
wraps their dialogue in TLS from the first byte (Redis over TLS, SMTPS, AMQPS...)
and the SMTP probe upgrades with STARTTLS.

Reasons: ``tls_expired``, ``tls_not_yet_valid``, ``tls_hostname_mismatch``,
``tls_untrusted`` (a chain that does not lead to a trusted CA), ``tls_error`` (no
handshake at all, e.g. a plaintext service), and ``cert_expiring`` (degraded: fewer
days left than ``cert_expiry_warning``).
"""

from __future__ import annotations

import functools
import os
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trio

from agent.checks.exchange import ANSWERED, Exchange, ProbeFailure, run_exchange
from agent.common.tables import Table, format_duration
from agent.model import Observation, Outcome, Target

TLS_EXPIRED = "tls_expired"
TLS_NOT_YET_VALID = "tls_not_yet_valid"
TLS_HOSTNAME_MISMATCH = "tls_hostname_mismatch"
TLS_UNTRUSTED = "tls_untrusted"
TLS_ERROR = "tls_error"
CERT_EXPIRING = "cert_expiring"

# OpenSSL's X509_V_ERR_* codes that have a reason of their own.
_VERIFY_REASONS = {
    9: TLS_NOT_YET_VALID,  # CERT_NOT_YET_VALID
    10: TLS_EXPIRED,  # CERT_HAS_EXPIRED
    62: TLS_HOSTNAME_MISMATCH,  # HOSTNAME_MISMATCH
    64: TLS_HOSTNAME_MISMATCH,  # IP_ADDRESS_MISMATCH
}

# The keys every TLS-capable kind accepts, beside its own switch.
TLS_KEYS = ("server_name", "ca_file", "insecure", "cert_expiry_warning")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """How to speak TLS to a check's service.

    Attributes:
        server_name: the name sent as SNI and verified; None: the check's host.
        ca_file: PEM file of CAs to trust instead of the system store, or None.
        insecure: skip certificate verification (expiry is still reported).
        cert_expiry_warning_s: fewer seconds than this before expiry is degraded.
    """

    server_name: str | None = None
    ca_file: str | None = None
    insecure: bool = False
    cert_expiry_warning_s: float | None = None


def read_tls_settings(table: Table, *, enabled: bool) -> TlsSettings | None:
    """Reads the TLS keys of a check; settings given while TLS is off are an error.

    Args:
        table: the check's table.
        enabled: whether this check speaks TLS at all.

    Returns:
        The settings, or None when TLS is off.
    """
    if not enabled:
        table.mark_read(*TLS_KEYS)
        for key in TLS_KEYS:
            if table.has(key):
                raise table.error(key, "is a TLS setting, but this check does not use TLS")
        return None
    server_name = table.optional_string("server_name")
    ca_file = table.optional_string("ca_file")
    if ca_file is not None:
        if not Path(ca_file).is_file():
            raise table.error("ca_file", f"no such file: {ca_file}")
        try:
            ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise table.error("ca_file", f"not a PEM file of CA certificates: {exc}") from None
    insecure = table.boolean("insecure", False)
    if insecure and ca_file is not None:
        raise table.error("insecure", "insecure = true skips verification; ca_file has no use")
    warning_s = table.duration("cert_expiry_warning", None)
    return TlsSettings(server_name, ca_file, insecure, warning_s)


def read_options(table: Table) -> Mapping[str, object]:
    """Options of ``kind = "tls"``: the TLS keys, TLS always on."""
    return {"tls": read_tls_settings(table, enabled=True)}


def _context(settings: TlsSettings) -> ssl.SSLContext:
    """The shared context for ``settings``; a replaced ``ca_file`` is read again.

    Raises:
        ProbeFailure: the CA file cannot be read any more.
    """
    try:
        modified = os.stat(settings.ca_file).st_mtime_ns if settings.ca_file else None
        return _cached_context(settings.ca_file, modified, settings.insecure)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeFailure(Outcome.FAILED, TLS_ERROR,
                           f"cannot load ca_file {settings.ca_file}: {exc}") from None


@functools.lru_cache(maxsize=64)
def _cached_context(ca_file: str | None, modified: int | None, insecure: bool) -> ssl.SSLContext:
    # Loading a CA store costs milliseconds: one context per setting, shared.
    # ``modified`` only keys the cache, so that a replaced CA file is read again.
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def wall_clock() -> float:
    """Seconds since the epoch: certificates expire in wall-clock time."""
    return time.time()


async def start_tls(exchange: Exchange, settings: TlsSettings) -> None:
    """Puts TLS on the exchange's stream and records the handshake's facts.

    Raises:
        ProbeFailure: the handshake failed, or the certificate has expired.
    """
    server_name = settings.server_name or exchange.target.host
    context = _context(settings)
    # An IP address is verified against the certificate but never sent as SNI.
    tls_stream = trio.SSLStream(exchange.stream, context, server_hostname=server_name)
    exchange.replace_stream(tls_stream)
    exchange.waiting_for = "the TLS handshake"
    try:
        await tls_stream.do_handshake()
    except trio.BrokenResourceError as exc:
        raise _handshake_failure(exc.__cause__) from None
    facts = _session_facts(tls_stream)
    exchange.facts.update(facts)
    days_left = facts.get("cert_days_left")
    if not isinstance(days_left, float):
        return
    if days_left < 0:
        raise ProbeFailure(Outcome.FAILED, TLS_EXPIRED,
                           f"the certificate expired on {facts['cert_not_after']}")
    warning_s = settings.cert_expiry_warning_s
    if warning_s is not None and days_left * 86400.0 < warning_s:
        exchange.warning = ProbeFailure(
            Outcome.DEGRADED,
            CERT_EXPIRING,
            f"the certificate expires on {facts['cert_not_after']}, "
            f"within the {format_duration(warning_s)} warning",
        )


def _handshake_failure(cause: BaseException | None) -> ProbeFailure:
    if isinstance(cause, ssl.SSLCertVerificationError):
        reason = _VERIFY_REASONS.get(cause.verify_code, TLS_UNTRUSTED)
        return ProbeFailure(Outcome.FAILED, reason, f"certificate: {cause.verify_message}")
    if isinstance(cause, ssl.SSLError):
        return ProbeFailure(Outcome.FAILED, TLS_ERROR, f"TLS handshake: {cause.reason or cause}")
    message = str(cause) if cause else "the service closed the connection"
    return ProbeFailure(Outcome.FAILED, TLS_ERROR, f"TLS handshake: {message}")


def _session_facts(tls_stream: trio.SSLStream[trio.abc.Stream]) -> dict[str, str | float]:
    facts: dict[str, str | float] = {}
    version = tls_stream.version()
    if version:
        facts["tls_version"] = version
    cipher = tls_stream.cipher()
    if cipher:
        facts["tls_cipher"] = cipher[0]
    der = tls_stream.getpeercert(binary_form=True)
    not_after = certificate_not_after(der) if der else None
    if not_after is not None:
        facts["cert_not_after"] = not_after.isoformat().replace("+00:00", "Z")
        facts["cert_days_left"] = round((not_after.timestamp() - wall_clock()) / 86400.0, 2)
    return facts


def _der_item(data: bytes, offset: int) -> tuple[int, int, int]:
    """The tag, content start and content end of the DER item at ``offset``."""
    tag = data[offset]
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    return tag, start, start + length


def certificate_not_after(der: bytes) -> datetime | None:
    """The end of a DER certificate's validity, or None if it cannot be read.

    The standard library only decodes certificates it verified; this reads the one
    date we need from any certificate, verified or not (RFC 5280 section 4.1).
    """
    try:
        _, cert_start, _ = _der_item(der, 0)  # Certificate ::= SEQUENCE
        _, position, _ = _der_item(der, cert_start)  # tbsCertificate ::= SEQUENCE
        if der[position] == 0xA0:  # [0] version, present from v2 on
            position = _der_item(der, position)[2]
        for _ in range(3):  # serialNumber, signature, issuer
            position = _der_item(der, position)[2]
        _, validity_start, _ = _der_item(der, position)
        not_before_end = _der_item(der, validity_start)[2]
        tag, start, end = _der_item(der, not_before_end)
        text = der[start:end].decode("ascii")
        if tag == 0x17:  # UTCTime: YYMMDDHHMMSSZ, years 1950-2049
            year = int(text[:2])
            text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
        elif tag != 0x18:  # GeneralizedTime: YYYYMMDDHHMMSSZ
            return None
        return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
    except (IndexError, ValueError, UnicodeDecodeError):
        return None


async def tls_layer(exchange: Exchange) -> None:
    """Implicit TLS for a kind whose options hold ``tls`` settings (a ``before`` hook)."""
    settings = exchange.target.options.get("tls")
    if isinstance(settings, TlsSettings):
        await start_tls(exchange, settings)


async def _handshake_only(exchange: Exchange) -> Observation:
    return Observation(Outcome.OK, ANSWERED)


async def probe(target: Target, *, timeout: float) -> Observation:
    """Connects and completes a TLS handshake within ``timeout`` seconds."""
    return await run_exchange(target, timeout, _handshake_only, before=tls_layer)
