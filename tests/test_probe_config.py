"""Protocol kinds through the config loader and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.checks import PROBES
from agent.cli import main as cli
from agent.config import loader as config
from agent.errors import ConfigError
from tests.servers import Server, free_port, running, start

EXAMPLE = Path(__file__).resolve().parent.parent / "agent.example.toml"


def test_example_config_validates_and_shows_the_protocol_kinds() -> None:
    loaded = config.load(EXAMPLE)
    kinds = {check.kind for check in loaded.checks}
    assert {"postgres", "redis", "amqp", "smtp", "tls", "ssh", "mysql"} <= kinds
    assert set(kinds) <= set(PROBES)


def _parse(check: str) -> config.Config:
    table = {"host": "127.0.0.1", "port": 1, **json.loads(check)}
    return config.parse([("agent.toml", {"checks": {"c": table}})])


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ('{"kind": "redis", "starttls": true}', "agent.toml: checks.c.starttls: unknown key"),
        ('{"kind": "tcp", "ca_file": "/x"}', "agent.toml: checks.c.ca_file: unknown key"),
        ('{"kind": "redis", "insecure": true}',
         "agent.toml: checks.c.insecure: is a TLS setting, but this check does not use TLS"),
        ('{"kind": "expect"}', "agent.toml: checks.c.expect: is required"),
        ('{"kind": "postgres", "startup": "yes"}',
         "agent.toml: checks.c.startup: expected true or false, got a string 'yes'"),
        ('{"kind": "http", "path": "health"}',
         "agent.toml: checks.c.path: must be an ASCII path starting with '/', got 'health'"),
        ('{"kind": "smtp", "ehlo_name": "my host"}',
         "agent.toml: checks.c.ehlo_name: must be a host name or address literal, "
         "got 'my host'"),
    ],
)
def test_bad_kind_options_name_the_key(check: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _parse(check)
    assert str(error.value) == message


def test_kind_options_reach_the_target() -> None:
    loaded = _parse('{"kind": "tls", "port": 443, "cert_expiry_warning": "14d"}')
    settings = loaded.checks[0].target().options["tls"]
    assert getattr(settings, "cert_expiry_warning_s", None) == 14 * 86400


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--requirepass", "secret", "--dir", str(tmp_path)]
    with running(start(argv, port, tmp_path / "redis.log")) as server:
        yield server


async def test_cli_check_reports_protocol_reason_and_facts(
    redis_server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[checks.cache]\nkind = "redis"\nhost = "127.0.0.1"\nport = {redis_server.port}\n'
        f'[checks.ssh]\nkind = "ssh"\nhost = "127.0.0.1"\nport = {redis_server.port}\n'
        'timeout = "1s"\n'
    )
    code = await trio.to_thread.run_sync(cli.main, ["check", "--json", "--config", str(path)])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert code == 2  # ssh against Redis is down
    assert (rows["cache"]["status"], rows["cache"]["reason"]) == ("up", "auth_required")
    assert rows["cache"]["kind"] == "redis"
    assert rows["ssh"]["status"] == "down"
    assert rows["ssh"]["reason"] in ("timeout", "bad_banner")
