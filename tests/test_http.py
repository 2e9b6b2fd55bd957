"""The HTTP probe against a real HTTP server (Python's http.server, as a process)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks import http
from agent.common.tables import Table
from agent.errors import ConfigError
from agent.model import Outcome, Reason
from tests.servers import Server, free_port, running, start, target


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Server]:
    root = tmp_path / "www"
    root.mkdir()
    (root / "health").write_text('{"cluster_name":"search","status":"green"}\n')
    port = free_port()
    argv = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
            str(root), str(port)]
    with running(start(argv, port, tmp_path / "http.log")) as server:
        yield server


async def test_status_and_body(web: Server) -> None:
    options = {"path": "/health", "expect_body": '"status":"green"'}
    observation = await http.probe(target(web.port, options, http.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["http_status"] == 200
    assert "SimpleHTTP" in str(observation.facts["http_server"])


async def test_body_without_the_substring(web: Server) -> None:
    options = {"path": "/health", "expect_body": '"status":"red"'}
    observation = await http.probe(target(web.port, options, http.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "body_mismatch")


async def test_unexpected_status(web: Server) -> None:
    observation = await http.probe(target(web.port, {"path": "/missing"}, http.read_options),
                                   timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "http_status")
    assert observation.detail == "HTTP/1.0 404 File not found, expected 2xx or 3xx"
    options = {"path": "/missing", "expect_status": 404, "method": "HEAD"}
    observation = await http.probe(target(web.port, options, http.read_options), timeout=5)
    assert observation.outcome is Outcome.OK


async def test_stopped_server_is_refused(web: Server) -> None:
    web.stop()
    observation = await http.probe(target(web.port, {}, http.read_options), timeout=5)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)


def test_head_with_a_body_check_is_an_error() -> None:
    table = Table({"method": "HEAD", "expect_body": "ok"}, "test.toml", "checks.t")
    with pytest.raises(ConfigError) as error:
        http.read_options(table)
    assert str(error.value) == "test.toml: checks.t.expect_body: a HEAD response has no body"
