"""Loopback listeners, one per probe kind, for the booted-system packaging test.

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
from pathlib import Path

PORTS = {
    "tcp": 18001, "ssh": 18002, "smtp": 18003, "redis": 18004, "postgres": 18005,
    "mysql": 18006, "amqp": 18007, "mongodb": 18008, "kafka": 18009, "expect": 18010,
    "tls": 18011, "http": 18012,
}


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


KINDS = {port: kind for kind, port in PORTS.items()}
TLS_CONTEXT: ssl.SSLContext


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    global TLS_CONTEXT
    TLS_CONTEXT = _tls_context(Path(sys.argv[1]))
    servers = [Server(("127.0.0.1", port), Handler) for port in PORTS.values()]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("listening on", ", ".join(f"{kind} {port}" for kind, port in PORTS.items()), flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
