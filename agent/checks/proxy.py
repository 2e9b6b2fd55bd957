"""Reaching a TCP target through a proxy: SOCKS5 (RFC 1928) or HTTP ``CONNECT`` (RFC 9110).

Any TCP-based kind may set ``proxy = "socks5://bastion:1080"`` or
``proxy = "http://proxy:3128"`` to reach services only a jump host sees. The
agent connects to the proxy (DNS and happy eyeballs as for any target), asks it
for a tunnel to the check's ``host`` and ``port`` (a name is sent as it is, so
the proxy resolves it, as a jump host sees the private names), and the kind's
dialogue then runs through the tunnel. ``latency_ms`` is the whole proxied
connect: the connection to the proxy plus its tunnel to the target;
``address`` is the proxy's.

The handshake never reads past its own reply: what the target says first (an SSH
banner) stays in the socket for the dialogue. Every read is bounded.

Failures of the proxy itself have reasons of their own: ``proxy_refused`` (the
proxy's port is closed, or it does not allow this tunnel: SOCKS "not allowed by
ruleset", HTTP 403), ``proxy_auth`` (it wants credentials: SOCKS offers no
method without, HTTP 407), ``proxy_error`` (it cannot be reached, answers
something else, or fails otherwise, including an HTTP status 5xx, since an HTTP
proxy does not say why). A target that a SOCKS proxy reports refused,
unreachable or timed out keeps the reason the TCP kind gives it (``refused``,
``unreachable``, ``timeout``), with "via the proxy" in ``detail``.

Credentials in the URL are refused at config time: they would be a secret in a
setting that is shown.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio

from agent.common.tables import Table
from agent.model import Reason, Target

PROXY_REFUSED = "proxy_refused"
PROXY_AUTH = "proxy_auth"
PROXY_ERROR = "proxy_error"
DEFAULT_PORTS = {"socks5": 1080, "http": 3128}
# The most an HTTP proxy's CONNECT response (status line and headers) may take.
HTTP_HEADER_LIMIT = 8192
_STATUS_LINE = re.compile(rb"\AHTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?\r?\n")
_END_OF_HEADER = b"\r\n\r\n"

# RFC 1928 section 6: reply codes, and what each says about the target.
_SOCKS_REPLIES: dict[int, tuple[str, str]] = {
    0x01: (PROXY_ERROR, "general SOCKS server failure"),
    0x02: (PROXY_REFUSED, "connection not allowed by ruleset"),
    0x03: (Reason.UNREACHABLE, "network unreachable"),
    0x04: (Reason.UNREACHABLE, "host unreachable"),
    0x05: (Reason.REFUSED, "connection refused"),
    0x06: (Reason.TIMEOUT, "TTL expired"),
    0x07: (PROXY_ERROR, "command not supported"),
    0x08: (PROXY_ERROR, "address type not supported"),
}


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Where the proxy is and how to speak to it.

    Attributes:
        scheme: "socks5" or "http".
        host: the proxy's host name or address.
        port: the proxy's port.
    """

    scheme: str
    host: str
    port: int

    def url(self) -> str:
        """The proxy as written in the config (no credentials: they are refused)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


class ProxyFailure(Exception):  # an outcome carried out of the handshake, not an error
    """The proxy handshake ended with this reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def read_proxy(table: Table) -> str | None:
    """The ``proxy`` key of a TCP-based check, normalised, or None when it is not set.

    The URL itself is kept (``config show`` writes it back as it is); the probe
    reads it with :func:`parse_proxy_url`.
    """
    written = table.optional_string("proxy")
    if written is None:
        return None
    try:
        return parse_proxy_url(written).url()
    except ValueError as exc:
        raise table.error("proxy", str(exc)) from None


@functools.lru_cache(maxsize=1024)
def parse_proxy_url(written: str) -> ProxySettings:
    """``socks5://host[:port]`` or ``http://host[:port]`` as settings (parsed once per URL).

    Raises:
        ValueError: with the one-line reason.
    """
    try:
        parts = urlsplit(written)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a proxy URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f'must start with "socks5://" or "http://", got {written!r}')
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the proxy URL are not supported (they would be "
                         "shown wherever the setting is)")
    if not parts.hostname:
        raise ValueError(f"names no proxy host: {written!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"must be scheme://host:port only, got {written!r}")
    return ProxySettings(parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])


def proxy_target(settings: ProxySettings, target: Target) -> Target:
    """Where to connect first: the proxy, in the check's address family."""
    return Target(settings.host, settings.port, family=target.family)


async def _receive_exactly(stream: trio.SocketStream, count: int, what: str) -> bytes:
    received = b""
    while len(received) < count:
        chunk = await stream.receive_some(count - len(received))
        if not chunk:
            raise ProxyFailure(PROXY_ERROR, f"the proxy closed the connection before {what}")
        received += chunk
    return received


def _socks5_address(host: str, port: int) -> bytes:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("idna")
        if len(name) > 255:
            raise ProxyFailure(PROXY_ERROR, f"{host!r} is too long for SOCKS5") from None
        return b"\x03" + bytes([len(name)]) + name + struct.pack("!H", port)
    kind = b"\x01" if address.version == 4 else b"\x04"
    return kind + address.packed + struct.pack("!H", port)


class Tunnel:
    """One CONNECT through a proxy, on an open stream to it.

    Attributes:
        asked_target: the request for the target is out, so from now on waiting
            is waiting for the target (a proxy answers once it connected there).
    """

    def __init__(self, stream: trio.SocketStream, settings: ProxySettings, target: Target) -> None:
        self.stream = stream
        self.settings = settings
        self.target = target
        self.asked_target = False

    @property
    def authority(self) -> str:
        """``host:port`` of the target, IPv6 in brackets."""
        host = self.target.host
        return f"[{host}]:{self.target.port}" if ":" in host else f"{host}:{self.target.port}"

    async def open(self) -> None:
        """Asks the proxy for the tunnel; the caller bounds the time.

        Raises:
            ProxyFailure: the proxy refused, wanted credentials, or failed, or it
                reported the target refused or unreachable.
        """
        try:
            if self.settings.scheme == "socks5":
                await self._socks5()
            else:
                await self._http_connect()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            message = cause.strerror if isinstance(cause, OSError) else None
            raise ProxyFailure(
                PROXY_ERROR, f"the proxy failed: {message or 'connection lost'}"
            ) from None

    async def _socks5(self) -> None:
        stream = self.stream
        # One method offered: "no authentication".
        await stream.send_all(b"\x05\x01\x00")
        version, method = await _receive_exactly(stream, 2, "its method selection")
        if version != 5:
            raise ProxyFailure(PROXY_ERROR, f"not a SOCKS5 proxy (version byte {version})")
        if method == 0xFF:
            raise ProxyFailure(PROXY_AUTH,
                               "the SOCKS5 proxy accepts no method without credentials")
        if method != 0x00:
            raise ProxyFailure(PROXY_ERROR, f"the SOCKS5 proxy chose method {method}, "
                               "which was not offered")
        await stream.send_all(b"\x05\x01\x00" + _socks5_address(self.target.host,
                                                                self.target.port))
        self.asked_target = True
        version, reply, _, address_type = await _receive_exactly(stream, 4,
                                                                 "its reply to CONNECT")
        if version != 5:
            raise ProxyFailure(PROXY_ERROR, f"not a SOCKS5 reply (version byte {version})")
        if reply != 0x00:
            reason, words = _SOCKS_REPLIES.get(reply, (PROXY_ERROR, f"reply code {reply}"))
            if reason in (PROXY_ERROR, PROXY_REFUSED):
                raise ProxyFailure(reason, f"the SOCKS5 proxy answered CONNECT "
                                   f"{self.authority}: {words}")
            raise ProxyFailure(reason, f"{self.authority} via the proxy: {words}")
        # The bound address: read exactly its length, so nothing of the target's is taken.
        if address_type == 0x01:
            length = 4
        elif address_type == 0x04:
            length = 16
        elif address_type == 0x03:
            length = (await _receive_exactly(stream, 1, "its bound address"))[0]
        else:
            raise ProxyFailure(PROXY_ERROR,
                               f"the SOCKS5 reply has address type {address_type}")
        await _receive_exactly(stream, length + 2, "its bound address")

    async def _http_connect(self) -> None:
        authority = self.authority
        await self.stream.send_all(
            f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("idna")
        )
        self.asked_target = True
        header = await self._receive_header()
        status_line = _STATUS_LINE.match(header)
        if status_line is None:
            raise ProxyFailure(PROXY_ERROR, "the proxy's answer is not HTTP: "
                               f"{header[:80].decode('latin-1')!r}")
        status = int(status_line.group(1))
        words = (status_line.group(2) or b"").decode("latin-1").strip()
        text = f"{status} {words}".strip()
        if 200 <= status < 300:
            return
        if status == 407:
            raise ProxyFailure(PROXY_AUTH, f"the proxy wants credentials ({text})")
        if status == 403:
            raise ProxyFailure(PROXY_REFUSED,
                               f"the proxy refused the tunnel to {authority} ({text})")
        raise ProxyFailure(PROXY_ERROR, f"the proxy answered CONNECT {authority} with {text}")

    async def _receive_header(self) -> bytes:
        """The CONNECT response's status line and headers, and not one byte after them.

        The tunnel's first bytes may arrive in the same segment; peeking finds where
        the header ends, and only that much is taken from the socket.
        """
        header = b""
        while True:
            room = HTTP_HEADER_LIMIT - len(header)
            if room <= 0:
                raise ProxyFailure(PROXY_ERROR, "the proxy's answer is longer than "
                                   f"{HTTP_HEADER_LIMIT} bytes")
            peeked = await self.stream.socket.recv(room, socket.MSG_PEEK)
            if not peeked:
                raise ProxyFailure(PROXY_ERROR,
                                   "the proxy closed the connection before its answer")
            # The end may straddle what was taken before and what is peeked now.
            carried = header[-3:]
            end = (carried + peeked).find(_END_OF_HEADER)
            take = len(peeked) if end < 0 else end + len(_END_OF_HEADER) - len(carried)
            header += await _receive_exactly(self.stream, take, "its answer")
            if end >= 0:
                return header
