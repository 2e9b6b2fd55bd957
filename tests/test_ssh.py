"""The SSH probe against a private OpenSSH server (sshd -f with its own config)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.checks import ssh
from agent.model import Outcome, Reason
from tests.servers import (
    Server,
    free_port,
    require,
    running,
    serve_loopback,
    serve_reply,
    start,
    target,
)

SSHD = "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Server]:
    require(SSHD, "ssh-keygen")
    # sshd insists on its privilege separation directory; the package makes it at boot.
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    key = tmp_path / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile none\n"
        "UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
    )
    argv = [SSHD, "-D", "-e", "-f", str(config)]
    with running(start(argv, port, tmp_path / "sshd.log")) as server:
        yield server


async def test_reads_the_identification_string(sshd: Server) -> None:
    observation = await ssh.probe(target(sshd.port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["ssh_protocol"] == "2.0"
    assert str(observation.facts["ssh_software"]).startswith("OpenSSH_")
    assert observation.latency_ms is not None and observation.address == "127.0.0.1"


async def test_stopped_server_is_refused(sshd: Server) -> None:
    sshd.stop()
    observation = await ssh.probe(target(sshd.port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_other_service_is_a_bad_banner(nursery: trio.Nursery) -> None:
    port = await serve_reply(nursery, b"220 mail.example.com ESMTP\r\n")
    observation = await ssh.probe(target(port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "bad_banner")
    assert "220 mail.example.com ESMTP" in (observation.detail or "")


async def test_endless_line_is_cut_at_the_read_limit(nursery: trio.Nursery) -> None:
    async def flood(stream: trio.SocketStream) -> None:
        # The probe hangs up once it has read its limit: sending then fails, as it should.
        with contextlib.suppress(trio.BrokenResourceError):
            for _ in range(100):
                await stream.send_all(b"x" * 1000)

    port = await serve_loopback(nursery, flood)
    observation = await ssh.probe(target(port), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "unexpected_reply")
    assert "longer than 1024 bytes" in (observation.detail or "")
