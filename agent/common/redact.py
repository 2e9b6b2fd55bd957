"""Destination URLs and texts made safe to print.

Many destination URLs carry their credential in the URL itself: whoever reads it
can ping the monitor (or silence it). Everything the agent prints about a
destination (``send-test``, log lines, ``config show``) goes through here.

:func:`redact_url` knows where each kind keeps its secret:

========================  ===================================================
every kind                ``user:PASSWORD@``, query parameters named like a
                          secret (``?token=``, ``api_key``, ``sig``, ...)
``healthchecks``          UUIDs and ping keys (``<base>/<ping-key>/<slug>``)
``uptime-kuma``           the push token (``/api/push/<token>``)
``gatus``                 the endpoint key (``/api/v1/endpoints/<key>/...``)
``betterstack``           the heartbeat token (``/api/v1/heartbeat/<token>``)
========================  ===================================================

:func:`redact_text` replaces secrets the caller knows (a ping key, push tokens)
wherever they appear in a text: an error message or a response body may echo the
request path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

REDACTED: Final = "<redacted>"
# Shorter strings are not replaced inside texts: "ok" or "db" would garble every
# line, and a secret that short protects nothing anyway.
MIN_SECRET_CHARS: Final = 4

_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
# Healthchecks ping keys: 22 characters of URL-safe base64.
_PING_KEY: Final = re.compile(r"^[A-Za-z0-9_-]{22}$")
# The words of a query parameter's name that make its value a secret, for every
# printout (send-test, log lines, config show: agent/config/view.py uses this too).
_SECRET_QUERY_WORDS: Final = frozenset({
    "token", "tokens", "secret", "secrets", "password", "passwords", "passwd", "pass",
    "passphrase", "pwd", "key", "apikey", "auth", "authorization", "credential",
    "credentials", "signature", "sig", "session", "access", "code", "cookie",
})
# Per kind: the path segment after one of these is the secret.
_SECRET_AFTER: Final = {
    "uptime-kuma": "push",
    "gatus": "endpoints",
    "betterstack": "heartbeat",
}


def is_secret_query_name(name: str) -> bool:
    """Whether a query parameter called ``name`` holds a secret (``token``, ``sig``,
    ``apiKey``, ``X-Amz-Signature``, ...)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return any(word in _SECRET_QUERY_WORDS for word in re.split(r"[^a-z0-9]+", spaced))


def _secret_segments(segments: list[str], kind: str) -> set[int]:
    """The indexes of the path segments that are secrets for ``kind``."""
    if kind == "healthchecks":
        return {i for i, s in enumerate(segments) if _UUID.match(s) or _PING_KEY.match(s)}
    marker = _SECRET_AFTER.get(kind)
    if marker is None:
        return set()
    for index, segment in enumerate(segments[:-1]):
        if segment == marker and segments[index + 1]:
            return {index + 1}
    # Better Stack URLs are opaque: without the usual shape, hide the whole path.
    if kind == "betterstack":
        return {i for i, s in enumerate(segments) if s}
    return set()


def _url_secrets(parts: SplitResult, kind: str) -> list[str]:
    found = [parts.password] if parts.password else []
    segments = parts.path.split("/")
    found += [segments[i] for i in sorted(_secret_segments(segments, kind))]
    for pair in parts.query.split("&") if parts.query else ():
        name, _, value = pair.partition("=")
        if value and is_secret_query_name(name):
            found.append(value)
    return found


def secrets_in_url(url: str, kind: str | None = None) -> list[str]:
    """The secret parts of ``url`` (see :func:`redact_url`), e.g. to redact a response
    body that echoes them.

    Args:
        url: a destination URL.
        kind: its destination kind, or None for the rules every kind shares.
    """
    try:
        return _url_secrets(urlsplit(url), kind or "")
    except ValueError:
        return []


def redact_url(url: str, kind: str | None = None, *, secrets: Iterable[str] = ()) -> str:
    """``url`` with every secret it holds replaced by ``<redacted>``.

    Args:
        url: a destination URL or a request URL built from one (never raises, even
            for text that is no URL).
        kind: the destination kind (``native``, ``healthchecks``, ``uptime-kuma``,
            ``gatus``, ``betterstack``), for the secrets it keeps in the path; None
            (e.g. a proxy URL) applies the rules every kind shares.
        secrets: secrets known to the caller, replaced wherever they appear.

    Returns:
        The URL, safe to print.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if parts.password:
        userinfo, _, host = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:{REDACTED}@{host}"
    segments = parts.path.split("/")
    for index in _secret_segments(segments, kind or ""):
        segments[index] = REDACTED
    query = "&".join(
        f"{name}={REDACTED}" if equals and value and is_secret_query_name(name) else pair
        for pair in parts.query.split("&")
        for name, equals, value in [pair.partition("=")]) if parts.query else ""
    return redact_text(urlunsplit((parts.scheme, netloc, "/".join(segments), query,
                                   parts.fragment)), secrets)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (at least 4 characters) replaced, longest first.

    Args:
        text: an error message, a response body, a log line.
        secrets: the strings that must not be printed.
    """
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len,
                         reverse=True):
        text = text.replace(secret, REDACTED)
    return text
