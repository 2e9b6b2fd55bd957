"""Shared pieces of the receiver's tests: configs, signed messages, a running receiver."""

from __future__ import annotations

import datetime
import ipaddress
import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.central.config import AgentSettings, CentralConfig
from agent.central.server import Central
from agent.common.signing import Ed25519SigningKey, HmacSecret, SigningKey, sign_headers

BASE_TIME = 1_767_225_600.0  # 2026-01-01T00:00:00Z

AGENT_KEY = Ed25519SigningKey.from_text("whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
HMAC_AGENT_SECRET = HmacSecret.from_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def make_config(tmp_path: Path, **overrides: Any) -> CentralConfig:
    """A receiver config with agent ``dc1`` (Ed25519) and ``hmac-agent`` (HMAC)."""
    agents = {
        "dc1": AgentSettings("dc1", (AGENT_KEY.public_key(),)),
        "hmac-agent": AgentSettings("hmac-agent", (HMAC_AGENT_SECRET,)),
    }
    config = CentralConfig(
        listen=("127.0.0.1:0",), state_dir=tmp_path / "state",
        agents=MappingProxyType(agents), grace_s=10.0,
    )
    return replace(config, **overrides)


class Messages:
    """Builds protocol messages for one agent with increasing ``seq`` and fresh ids."""

    def __init__(self, agent: str = "dc1") -> None:
        self.agent = agent
        self.seq = 0
        self.count = 0

    def envelope(self, kind: str, data: dict[str, Any], *, seq: int | None = None,
                 timestamp: str = "2026-01-01T00:00:00.000Z") -> dict[str, Any]:
        self.count += 1
        self.seq = self.seq + 1 if seq is None else seq
        return {"type": kind, "id": f"msg_{uuid.uuid4().hex}", "seq": self.seq,
                "agent": self.agent, "timestamp": timestamp, "data": data}

    def heartbeat(self, checks: list[dict[str, Any]] | None = None, *,
                  interval_s: float = 30.0, **kwargs: Any) -> dict[str, Any]:
        return self.envelope("heartbeat", {
            "version": "0.1.0", "started_at": "2026-01-01T00:00:00.000Z",
            "interval_s": interval_s, "checks": checks or [], "runs": 0, "skipped": 0,
            "outbox": {"depth": 0, "bytes": 0},
            "dropped": {"results": 0, "heartbeats": 0, "state_changes": 0}, "rejected": 0,
        }, **kwargs)

    def state_change(self, check: str, previous: str, current: str, *,
                     at: str = "2026-01-01T00:00:01.000Z") -> dict[str, Any]:
        return self.envelope("state_change", {
            "check": check, "previous": previous, "current": current,
            "observation": {
                "check": check, "status": current, "reason": "refused" if current == "down"
                else "open", "latency_ms": None if current == "down" else 0.5, "dns_ms": None,
                "address": "127.0.0.1", "detail": None, "consecutive_failures": 0, "at": at,
            },
        })


def check_item(name: str, status: str, *, at: str = "2026-01-01T00:00:00.000Z",
               latency_ms: float | None = 0.4, **extra: Any) -> dict[str, Any]:
    """One entry of a heartbeat's ``checks``."""
    return {"name": name, "status": status, "reason": "open" if status == "up" else "refused",
            "latency_ms": latency_ms, "at": at, **extra}


def signed(message: dict[str, Any], key: SigningKey = AGENT_KEY, *,
           timestamp: float = BASE_TIME) -> tuple[dict[str, str], bytes]:
    """Headers and body of a signed ingest request."""
    body = json.dumps(message).encode()
    headers = sign_headers(message["id"], int(timestamp), body, [key])
    headers["content-type"] = "application/json"
    return headers, body


@asynccontextmanager
async def running_central(
    config: CentralConfig,
    *,
    wall_clock: Callable[[], float] = lambda: BASE_TIME,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncIterator[tuple[Central, httpx.AsyncClient]]:
    """A receiver served by Hypercorn on a loopback port, and a client pointed at it."""
    central = Central(config, wall_clock=wall_clock, transport=transport)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: central.serve(
            shutdown=stop, task_status=task_status))
        async with httpx.AsyncClient(base_url=binds[0], timeout=10) as client:
            yield central, client
        stop.set()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (also its own CA) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "heartwire test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path
