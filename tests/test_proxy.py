"""TCP-based kinds through a real SOCKS5 proxy (microsocks) and HTTP proxy (tinyproxy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trustme

from agent.checks import PROBES
from agent.checks.proxy import ProxySettings, parse_proxy_url
from agent.common.tables import Table
from agent.config import loader as config
from agent.errors import ConfigError
from agent.model import Observation, Outcome, Reason, Target
from tests.conftest import issue
from tests.faults.hostile import (
    ALLOWANCE_S,
    HOSTILE_SERVERS,
    MAX_PEAK_ALLOCATED,
    run_probe_against,
)
from tests.netutil import open_port, refused_port
from tests.servers import Server, free_port, require, serve_reply, start
from tests.test_tls import serve_tls

StartProxy = Callable[..., Server]
BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"


@pytest.fixture
def start_microsocks(tmp_path: Path, stop_after: list[Server]) -> StartProxy:
    require("microsocks")

    def start_microsocks(*args: str) -> Server:
        port = free_port()
        server = start(["microsocks", "-i", "127.0.0.1", "-p", str(port), *args], port,
                       tmp_path / f"microsocks-{port}.log")
        stop_after.append(server)
        return server

    return start_microsocks


@pytest.fixture
def start_tinyproxy(tmp_path: Path, stop_after: list[Server]) -> StartProxy:
    require("tinyproxy")

    def start_tinyproxy(*lines: str) -> Server:
        port = free_port()
        conf = tmp_path / f"tinyproxy-{port}.conf"
        conf.write_text("\n".join([f"Port {port}", "Listen 127.0.0.1", "Allow 127.0.0.1",
                                   "Timeout 10", "MaxClients 20", "DisableViaHeader Yes",
                                   *lines, ""]))
        server = start(["tinyproxy", "-d", "-c", str(conf)], port,
                       tmp_path / f"tinyproxy-{port}.log")
        stop_after.append(server)
        return server

    return start_tinyproxy


def through(proxy: str, kind: str, port: int, **settings: object) -> Target:
    table = Table({"proxy": proxy, **settings}, "test.toml", "checks.t")
    options = PROBES[kind].read_options(table)
    table.finish()
    return Target("127.0.0.1", port, options=options)


async def probe(proxy: str, kind: str, port: int, timeout: float = 5,
                **settings: object) -> Observation:
    return await PROBES[kind].probe(through(proxy, kind, port, **settings), timeout=timeout)


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_tcp_through_the_proxy_measures_the_proxied_connect(
    scheme: str, start_microsocks: StartProxy, start_tinyproxy: StartProxy
) -> None:
    proxy = start_microsocks() if scheme == "socks5" else start_tinyproxy()
    url = f"{scheme}://127.0.0.1:{proxy.port}"
    with open_port() as port:
        observation = await probe(url, "tcp", port)
    assert (observation.outcome, observation.reason) == (Outcome.OK, Reason.OPEN), observation
    assert observation.facts == {"proxy": url}
    assert observation.address == "127.0.0.1"  # the proxy's
    assert observation.latency_ms is not None and 0 < observation.latency_ms < 5000


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_service_that_speaks_first_keeps_its_banner(
    scheme: str, start_microsocks: StartProxy, start_tinyproxy: StartProxy,
    nursery: trio.Nursery,
) -> None:
    """The proxy's reply and the target's first bytes may come together: none is lost."""
    proxy = start_microsocks() if scheme == "socks5" else start_tinyproxy()
    port = await serve_reply(nursery, BANNER)
    observation = await probe(f"{scheme}://127.0.0.1:{proxy.port}", "ssh", port)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["ssh_software"] == "OpenSSH_9.2p1"


async def test_redis_through_socks5(start_microsocks: StartProxy, tmp_path: Path,
                                    stop_after: list[Server]) -> None:
    require("redis-server")
    redis_port = free_port()
    stop_after.append(start(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                             "--save", "", "--dir", str(tmp_path)], redis_port,
                            tmp_path / "redis.log"))
    proxy = start_microsocks()
    observation = await probe(f"socks5://127.0.0.1:{proxy.port}", "redis", redis_port)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation


async def test_a_target_the_socks_proxy_finds_refused_is_refused(
    start_microsocks: StartProxy,
) -> None:
    proxy = start_microsocks()
    with refused_port() as port:
        observation = await probe(f"socks5://127.0.0.1:{proxy.port}", "tcp", port)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)
    assert observation.detail == f"127.0.0.1:{port} via the proxy: connection refused"


async def test_a_target_the_http_proxy_cannot_reach_is_a_proxy_error(
    start_tinyproxy: StartProxy,
) -> None:
    proxy = start_tinyproxy()
    with refused_port() as port:
        observation = await probe(f"http://127.0.0.1:{proxy.port}", "tcp", port)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "proxy_error")
    assert (observation.detail or "").startswith(f"the proxy answered CONNECT 127.0.0.1:{port} "
                                                 "with 5")


async def test_a_closed_proxy_port_is_proxy_refused() -> None:
    with refused_port() as proxy_port, open_port() as port:
        observation = await probe(f"socks5://127.0.0.1:{proxy_port}", "tcp", port)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "proxy_refused")
    assert observation.detail == f"proxy 127.0.0.1:{proxy_port}: Connection refused"


async def test_a_tunnel_the_http_proxy_does_not_allow_is_proxy_refused(
    start_tinyproxy: StartProxy,
) -> None:
    proxy = start_tinyproxy("ConnectPort 443")
    with open_port() as port:
        observation = await probe(f"http://127.0.0.1:{proxy.port}", "tcp", port)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "proxy_refused")


@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_proxy_that_wants_credentials_is_proxy_auth(
    scheme: str, start_microsocks: StartProxy, start_tinyproxy: StartProxy
) -> None:
    if scheme == "socks5":
        proxy = start_microsocks("-u", "agent", "-P", "secret")
    else:
        proxy = start_tinyproxy("BasicAuth agent secret")
    with open_port() as port:
        observation = await probe(f"{scheme}://127.0.0.1:{proxy.port}", "tcp", port)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "proxy_auth")


@pytest.mark.parametrize("server", sorted(HOSTILE_SERVERS))
@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_hostile_proxy_costs_a_bounded_time_and_memory(
    scheme: str, server: str, nursery: trio.Nursery
) -> None:
    with open_port() as port:
        run = await run_probe_against(
            PROBES["tcp"].probe, nursery, server, timeout=0.5,
            make_target=lambda host, proxy_port: Target(
                "127.0.0.1", port, options={"proxy": f"{scheme}://{host}:{proxy_port}"}),
        )
    assert run.observation.outcome is Outcome.FAILED, run.observation
    assert run.observation.reason in ("proxy_error", "timeout"), run.observation
    assert run.elapsed_s < 0.5 + ALLOWANCE_S
    assert run.peak_allocated < MAX_PEAK_ALLOCATED
    assert run.leaked_fds == 0


def _parse(check: str) -> config.Config:
    table = {"host": "127.0.0.1", "port": 22, **json.loads(check)}
    return config.parse([("agent.toml", {"checks": {"c": table}})])


def test_the_proxy_port_defaults_by_scheme() -> None:
    socks = _parse('{"kind": "ssh", "proxy": "socks5://bastion"}').checks[0]
    http = _parse('{"proxy": "http://proxy.internal"}').checks[0]
    assert socks.options["proxy"] == "socks5://bastion:1080"
    assert http.options["proxy"] == "http://proxy.internal:3128"
    assert parse_proxy_url("socks5://bastion:1080") == ProxySettings("socks5", "bastion", 1080)


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ('{"proxy": "socks4://bastion:1080"}',
         "agent.toml: checks.c.proxy: must start with \"socks5://\" or \"http://\", "
         "got 'socks4://bastion:1080'"),
        ('{"proxy": "socks5://agent:secret@bastion:1080"}',
         "agent.toml: checks.c.proxy: credentials in the proxy URL are not supported (they "
         "would be shown wherever the setting is)"),
        ('{"proxy": "http://proxy:3128/path"}',
         "agent.toml: checks.c.proxy: must be scheme://host:port only, got "
         "'http://proxy:3128/path'"),
        ('{"proxy": "http://proxy:99999"}',
         "agent.toml: checks.c.proxy: not a proxy URL: Port out of range 0-65535"),
        ('{"kind": "dns", "name": "x", "proxy": "socks5://bastion"}',
         "agent.toml: checks.c.proxy: unknown key"),
        ('{"kind": "udp", "send": "x", "proxy": "socks5://bastion"}',
         "agent.toml: checks.c.proxy: unknown key"),
        ('{"proxi": "socks5://bastion"}',
         "agent.toml: checks.c.proxi: unknown key (did you mean 'proxy'?)"),
    ],
)
def test_bad_proxy_settings_are_one_line_errors(check: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _parse(check)
    assert str(error.value) == message


async def test_tls_through_an_http_proxy_verifies_the_targets_certificate(
    start_tinyproxy: StartProxy, nursery: trio.Nursery, ca: trustme.CA, ca_file: Path
) -> None:
    """TLS runs end to end through the tunnel: the target's certificate, not the proxy's."""
    proxy = start_tinyproxy()
    port, _ = await serve_tls(nursery, issue(ca, days_valid=31, days_ago=1))
    observation = await probe(f"http://127.0.0.1:{proxy.port}", "tls", port,
                              ca_file=str(ca_file), server_name="localhost")
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["cert_days_left"] == pytest.approx(30, abs=0.1)
    assert observation.facts["proxy"] == f"http://127.0.0.1:{proxy.port}"
