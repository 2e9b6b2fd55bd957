"""Loopback listeners, one per probe kind, for the booted-system packaging test.

TCP kinds have a TCP listener each; ``udp``, ``dns`` and ``ntp`` a UDP one (an echo,
a DNS server that answers one name, an NTP server); ``icmp`` needs none (the
kernel answers echo requests to 127.0.0.1).

Each port answers the way the service of that kind does when it is healthy (the
first bytes of its handshake, from the protocol's specification), so that every
probe runs its whole dialogue inside heartwire.service's sandbox: connect, send,
receive, parse, and for ``tls`` a real handshake. Run with the system python3 in
the test container: ``python3 listeners.py DIR`` (DIR receives the TLS key and
certificate). Stops on SIGTERM.
"""

from __future__ import annotations

import datetime
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
from pathlib import Path

PORTS = {
    "tcp": 18001, "ssh": 18002, "smtp": 18003, "redis": 18004, "postgres": 18005,
    "mysql": 18006, "amqp": 18007, "mongodb": 18008, "kafka": 18009, "expect": 18010,
    "tls": 18011, "http": 18012,
}
UDP_PORTS = {"udp": 18013, "dns": 18014, "ntp": 18015}
# The one name the DNS listener knows, and its address.
DNS_NAME = "probe.heartwire.test"
DNS_ADDRESS = "127.0.0.1"
# Seconds from the NTP era 0 epoch (1900) to the Unix epoch (1970).
NTP_TO_UNIX_S = 2_208_988_800


def _cstring(text: str) -> bytes:
    return text.encode() + b"\0"


def _bson(elements: bytes) -> bytes:
    return struct.pack("<i", len(elements) + 5) + elements + b"\0"


def _mysql_greeting() -> bytes:
    # Protocol::HandshakeV10 (MySQL client/server protocol).
    payload = (b"\x0a" + _cstring("10.11.6-MariaDB") + struct.pack("<I", 7) + b"abcdefgh\0"
               + struct.pack("<H", 0xF7FF) + b"\x21" + struct.pack("<H", 2)
               + struct.pack("<H", 0x81FF) + b"\x15" + b"\0" * 10 + b"ijklmnopqrst\0"
               + _cstring("mysql_native_password"))
    return struct.pack("<I", len(payload))[:3] + b"\0" + payload


def _amqp_connection_start() -> bytes:
    # AMQP 0-9-1 Connection.Start (class 10, method 10) on channel 0.
    payload = (struct.pack("!HHBB", 10, 10, 0, 9) + struct.pack("!I", 0)
               + struct.pack("!I", 5) + b"PLAIN" + struct.pack("!I", 5) + b"en_US")
    return struct.pack("!BHI", 1, 0, len(payload)) + payload + b"\xce"


def _mongodb_hello(request: bytes) -> bytes:
    request_id = struct.unpack("<i", request[4:8])[0]
    document = _bson(b"\x08" + _cstring("isWritablePrimary") + b"\x01"
                     + b"\x10" + _cstring("maxWireVersion") + struct.pack("<i", 17)
                     + b"\x01" + _cstring("ok") + struct.pack("<d", 1.0))
    body = struct.pack("<i", 0) + b"\0" + document
    return struct.pack("<iiii", 16 + len(body), 1, request_id, 2013) + body


def _kafka_api_versions(request: bytes) -> bytes:
    correlation_id = request[8:12]
    body = struct.pack("!hi", 0, 2) + struct.pack("!hhh", 0, 0, 9) + struct.pack("!hhh", 18, 0, 3)
    return struct.pack("!i", 4 + len(body)) + correlation_id + body


class Handler(socketserver.BaseRequestHandler):
    """Answers as the service of the kind its port stands for."""

    def handle(self) -> None:
        kind = KINDS[self.server.server_address[1]]
        sock: socket.socket = self.request
        sock.settimeout(5)
        try:
            self._answer(kind, sock)
        except (OSError, ssl.SSLError):
            pass

    def _answer(self, kind: str, sock: socket.socket) -> None:
        if kind == "ssh":
            sock.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
        elif kind == "smtp":
            sock.sendall(b"220 ci.localdomain ESMTP\r\n")
            for line in sock.makefile("rb"):
                if line.upper().startswith(b"EHLO"):
                    sock.sendall(b"250-ci.localdomain\r\n250 8BITMIME\r\n")
                elif line.upper().startswith(b"QUIT"):
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    return
        elif kind in ("redis", "expect"):
            sock.recv(1024)
            sock.sendall(b"+PONG\r\n")
        elif kind == "postgres":
            sock.recv(8)  # SSLRequest
            sock.sendall(b"N")
            sock.recv(1024)  # StartupMessage
            sock.sendall(b"R" + struct.pack("!ii", 12, 5) + b"salt")  # MD5 password wanted
        elif kind == "mysql":
            sock.sendall(_mysql_greeting())
        elif kind == "amqp":
            sock.recv(8)
            sock.sendall(_amqp_connection_start())
        elif kind == "mongodb":
            sock.sendall(_mongodb_hello(sock.recv(4096)))
        elif kind == "kafka":
            sock.sendall(_kafka_api_versions(sock.recv(4096)))
        elif kind == "tls":
            with TLS_CONTEXT.wrap_socket(sock, server_side=True) as tls_sock:
                tls_sock.recv(1)
        elif kind == "http":
            sock.recv(4096)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def _tls_context(directory: Path) -> ssl.SSLContext:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def _dns_answer(query: bytes) -> bytes:
    """The answer to an A query for DNS_NAME (RFC 1035 4.1), NXDOMAIN for any other."""
    (query_id,) = struct.unpack("!H", query[:2])
    question_end = 12
    labels = []
    while query[question_end]:
        length = query[question_end]
        labels.append(query[question_end + 1:question_end + 1 + length].decode("ascii"))
        question_end += 1 + length
    question = query[12:question_end + 5]  # the name, its 0 byte, QTYPE and QCLASS
    qtype = struct.unpack("!H", query[question_end + 1:question_end + 3])[0]
    if ".".join(labels).lower() != DNS_NAME or qtype != 1:
        return struct.pack("!HHHHHH", query_id, 0x8183, 1, 0, 0, 0) + question
    answer = (struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4)
              + socket.inet_aton(DNS_ADDRESS))
    return struct.pack("!HHHHHH", query_id, 0x8580, 1, 1, 0, 0) + question + answer


def _ntp_answer(request: bytes) -> bytes:
    """A stratum 2 server's reply (RFC 5905): the client's transmit time as origin."""
    now = int((time.time() + NTP_TO_UNIX_S) * 2**32)
    origin = request[40:48]
    first = (0 << 6) | (4 << 3) | 4  # no leap warning, version 4, mode 4 (server)
    return (struct.pack("!BBbbII4s", first, 2, 6, -20, 0, 0, socket.inet_aton("127.0.0.1"))
            + struct.pack("!Q", now) + origin + struct.pack("!QQ", now, now))


class DatagramHandler(socketserver.BaseRequestHandler):
    """Answers a datagram as the UDP service of its port does."""

    def handle(self) -> None:
        data, sock = self.request
        kind = UDP_KINDS[self.server.server_address[1]]
        try:
            if kind == "udp":
                reply = data  # an echo
            elif kind == "dns":
                reply = _dns_answer(data)
            else:
                reply = _ntp_answer(data)
            sock.sendto(reply, self.client_address)
        except (OSError, IndexError, struct.error, UnicodeDecodeError):
            pass


KINDS = {port: kind for kind, port in PORTS.items()}
UDP_KINDS = {port: kind for kind, port in UDP_PORTS.items()}
TLS_CONTEXT: ssl.SSLContext


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    global TLS_CONTEXT
    TLS_CONTEXT = _tls_context(Path(sys.argv[1]))
    servers: list[socketserver.BaseServer] = [
        Server(("127.0.0.1", port), Handler) for port in PORTS.values()]
    servers += [socketserver.ThreadingUDPServer(("127.0.0.1", port), DatagramHandler)
                for port in UDP_PORTS.values()]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("listening on", ", ".join(f"{kind} {port}" for kind, port in PORTS.items()),
          "and (UDP)", ", ".join(f"{kind} {port}" for kind, port in UDP_PORTS.items()),
          flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
