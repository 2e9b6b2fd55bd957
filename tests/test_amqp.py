"""The AMQP probe against a private RabbitMQ node (its own epmd, ports and data)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.checks import amqp
from agent.model import Outcome, Reason
from tests.servers import Server, free_ports, require, serve_loopback, start, target

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


@pytest.fixture(scope="module")
def rabbitmq() -> Iterator[Server]:
    """A RabbitMQ node that shares nothing with a system one: own epmd, ports, data."""
    require("epmd", RABBITMQ_SERVER)
    base = Path(tempfile.mkdtemp(prefix="heartwire-rabbitmq-"))
    epmd_port, amqp_port, dist_port = free_ports(3)
    # Our own epmd (not the machine's on 4369), run in the foreground so we can stop it.
    epmd = start(["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"], epmd_port,
                 base / "epmd.log")
    env = {
        "PATH": "/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": str(base),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"heartwire{amqp_port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(amqp_port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
        "RABBITMQ_LOGS": "-",
    }
    try:
        # About 4 s on two cores (pytest --durations shows it as this fixture's setup).
        broker = start([RABBITMQ_SERVER], amqp_port, base / "rabbitmq.log", env=env)
        try:
            yield broker
        finally:
            broker.close()
    finally:
        epmd.close()
        shutil.rmtree(base, ignore_errors=True)


async def test_connection_start_from_rabbitmq(rabbitmq: Server) -> None:
    observation = await amqp.probe(target(rabbitmq.port, {}, amqp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["amqp_version"] == "0-9"
    assert observation.facts["amqp_product"] == "RabbitMQ"
    assert "PLAIN" in str(observation.facts["amqp_mechanisms"])
    assert str(observation.facts["amqp_server_version"])[0].isdigit()


async def test_stopped_broker_is_refused(rabbitmq: Server) -> None:
    rabbitmq.stop()
    observation = await amqp.probe(target(rabbitmq.port, {}, amqp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_broker_of_another_version_is_a_protocol_mismatch(nursery: trio.Nursery) -> None:
    # What an AMQP 1.0-only broker does with a 0-9-1 header (AMQP 1.0 section 2.2):
    # it answers with the header it supports, then closes.
    async def amqp10(stream: trio.SocketStream) -> None:
        await stream.receive_some(8)
        await stream.send_all(b"AMQP\x00\x01\x00\x00")
        await stream.aclose()

    port = await serve_loopback(nursery, amqp10)
    observation = await amqp.probe(target(port, {}, amqp.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "protocol_mismatch")
    assert observation.detail == "the broker wants protocol 0.1.0.0"
