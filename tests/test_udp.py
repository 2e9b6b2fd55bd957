"""The generic UDP probe against loopback UDP services."""

from __future__ import annotations

import json

import pytest
import trio

from agent.checks import udp
from agent.common.tables import Table
from agent.config import loader as config
from agent.errors import ConfigError
from agent.model import Observation, Outcome, Reason, Target
from tests.servers import free_port, target
from tests.support.udp_server import serve_udp


def pong(request: bytes) -> bytes:
    """ "PING" gets "PONG <what came>", anything else "ERR"."""
    return b"PONG " + request if request.startswith(b"PING") else b"ERR"


async def serve_pong(nursery: trio.Nursery) -> int:
    _, port = await nursery.start(serve_udp, pong)
    return int(port)


async def probe(port: int, timeout: float = 2, **settings: object) -> Observation:
    return await udp.probe(target(port, settings, udp.read_options), timeout=timeout)


async def test_a_matching_reply_is_answered(nursery: trio.Nursery) -> None:
    port = await serve_pong(nursery)
    observation = await probe(port, send="PING", expect="^PONG PING$")
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts == {"reply_bytes": 9}
    assert observation.latency_ms is not None and observation.latency_ms < 1000
    assert observation.address == "127.0.0.1"


async def test_any_reply_counts_without_expect(nursery: trio.Nursery) -> None:
    port = await serve_pong(nursery)
    observation = await probe(port, send_hex="00ff")
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered")


async def test_another_reply_is_no_match(nursery: trio.Nursery) -> None:
    port = await serve_pong(nursery)
    observation = await probe(port, send="HELLO", expect="^PONG")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "no_match")
    assert observation.detail == "the reply was 'ERR'"


async def test_a_closed_port_is_refused_through_icmp() -> None:
    observation = await probe(free_port(), send="PING")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_silence_is_a_timeout_documented_as_no_answer() -> None:
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        started = trio.current_time()
        observation = await probe(silent.getsockname()[1], timeout=0.3, send="PING")
        elapsed = trio.current_time() - started
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")
    assert observation.detail == ("no answer within 0.3s (UDP cannot tell a closed port from "
                                  "a filtered one when nothing answers)")
    assert 0.3 <= elapsed < 0.8


async def test_a_name_that_does_not_resolve_is_dns() -> None:
    table = Table({"send": "PING"}, "test.toml", "checks.t")
    target = Target("nonexistent.invalid", 9, options=udp.read_options(table))
    observation = await udp.probe(target, timeout=2)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.DNS)


def _parse(check: str) -> config.Config:
    table = {"host": "127.0.0.1", "port": 9, "kind": "udp", **json.loads(check)}
    return config.parse([("agent.toml", {"checks": {"c": table}})])


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("{}", "agent.toml: checks.c: set exactly one of send and send_hex"),
        ('{"send": "a", "send_hex": "00"}',
         "agent.toml: checks.c: set exactly one of send and send_hex"),
        ('{"send_hex": "0g"}', "agent.toml: checks.c.send_hex: not hexadecimal bytes: '0g'"),
        ('{"send": "a", "expect": "("}',
         "agent.toml: checks.c.expect: not a regular expression: "
         "missing ), unterminated subpattern at position 0"),
        ('{"send": "a", "read_limit": 0}',
         "agent.toml: checks.c.read_limit: must be between 1 and 65507, got 0"),
        ('{"send": "a", "expcet": "x"}',
         "agent.toml: checks.c.expcet: unknown key (did you mean 'expect'?)"),
    ],
)
def test_bad_options_are_one_line_errors(check: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _parse(check)
    assert str(error.value) == message


def test_a_udp_check_needs_its_port() -> None:
    table = {"host": "127.0.0.1", "kind": "udp", "send": "x"}
    with pytest.raises(ConfigError) as error:
        config.parse([("agent.toml", {"checks": {"c": table}})])
    assert str(error.value) == "agent.toml: checks.c.port: is required"
