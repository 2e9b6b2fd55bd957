"""The Redis probe against private redis-server instances, and the expect probe on them."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.checks import expect, redis
from agent.common.tables import Table
from agent.errors import ConfigError
from agent.model import Outcome, Reason
from tests.servers import Server, free_port, require, start, target

StartRedis = Callable[..., Server]


@pytest.fixture
def start_redis(tmp_path: Path, stop_after: list[Server]) -> StartRedis:
    require("redis-server")

    def start_redis(*settings: str) -> Server:
        port = free_port()
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(tmp_path), *settings]
        server = start(argv, port, tmp_path / f"redis-{port}.log")
        stop_after.append(server)
        return server

    return start_redis


def redis_command(port: int, *words: str, wait_reply: bool = True) -> bytes:
    """Sends one command as RESP (a test-side client); returns the first reply bytes."""
    payload = f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word)}\r\n{word}\r\n".encode() for word in words
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        return sock.recv(512) if wait_reply else b""


async def test_ping_pong(start_redis: StartRedis) -> None:
    server = start_redis()
    observation = await redis.probe(target(server.port, {}, redis.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.address == "127.0.0.1"


async def test_stopped_server_is_refused(start_redis: StartRedis) -> None:
    server = start_redis()
    server.stop()
    observation = await redis.probe(target(server.port, {}, redis.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


async def test_password_protected_server_is_up_with_auth_required(
    start_redis: StartRedis,
) -> None:
    server = start_redis("--requirepass", "s3cret")
    observation = await redis.probe(target(server.port, {}, redis.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "auth_required")
    assert "NOAUTH" in (observation.detail or "")


async def test_server_blocked_by_a_script_is_degraded_busy(start_redis: StartRedis) -> None:
    server = start_redis("--busy-reply-threshold", "10")
    # A script that never ends blocks the server (its client waits for no reply).
    blocker = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        blocker.sendall(b'*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n')
        observation = await redis.probe(target(server.port, {}, redis.read_options), timeout=5)
        assert (observation.outcome, observation.reason) == (Outcome.DEGRADED, "busy")
        assert "BUSY" in (observation.detail or "")
    finally:
        assert redis_command(server.port, "SCRIPT", "KILL").startswith(b"+OK")
        blocker.close()


async def test_expect_probe_speaks_redis_inline(start_redis: StartRedis) -> None:
    server = start_redis()
    options = {"send": "PING\r\n", "expect": r"^\+PONG"}
    observation = await expect.probe(target(server.port, options, expect.read_options),
                                     timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    options = {"send": "PING\r\n", "expect": r"^\+READY"}
    observation = await expect.probe(target(server.port, options, expect.read_options),
                                     timeout=1)
    # Redis keeps the connection open: the probe waits for its pattern until the deadline.
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")


async def test_expect_probe_judges_what_it_read_when_the_limit_is_reached(
    start_redis: StartRedis,
) -> None:
    server = start_redis()
    options = {"send": "PING\r\n", "expect": "^OK", "read_limit": 4}
    observation = await expect.probe(target(server.port, options, expect.read_options),
                                     timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "no_match")
    assert observation.detail == "a reply matching expect was '+PON'"


def test_expect_rejects_a_bad_regex() -> None:
    with pytest.raises(ConfigError) as error:
        expect.read_options(Table({"expect": "(unclosed"}, "test.toml", "checks.t"))
    assert str(error.value).startswith(
        "test.toml: checks.t.expect: not a regular expression: missing ), unterminated"
    )
