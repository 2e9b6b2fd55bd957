"""The DNS probe against a private dnsmasq, and against a dnspython server for SERVFAIL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.checks import dns_query
from agent.cli import main as cli
from agent.config import loader as config
from agent.errors import ConfigError
from agent.model import Observation, Outcome, Reason
from tests.servers import Server, free_port, require, running, start, target
from tests.support.dns_server import SERVFAIL, Zone, serve_dns

# Five TXT strings of 200 bytes: more than the 512 bytes of a plain UDP answer.
BIG_TXT = [letter * 200 for letter in "abcde"]


@pytest.fixture(scope="module")
def dnsmasq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """dnsmasq answering for ``test`` only, from its command line (no files read)."""
    require("dnsmasq")
    port = free_port()
    log = tmp_path_factory.mktemp("dnsmasq") / "dnsmasq.log"
    argv = [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--conf-file=/dev/null",
        f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
        "--no-hosts", "--pid-file=", "--user=nobody", "--group=nogroup", "--local=/test/",
        "--host-record=www.test,10.0.0.1,fd00::1", "--host-record=db.test,10.0.0.2",
        "--cname=alias.test,www.test", "--mx-host=test,mail.test,10",
        "--srv-host=_ldap._tcp.test,ldap.test,389,0,5",
        "--txt-record=spf.test,v=spf1 -all", "--local-ttl=60",
        *(f"--txt-record=big.test,{text}" for text in BIG_TXT),
    ]
    with running(start(argv, port, log)) as server:
        yield server


async def ask(port: int, timeout: float = 5, **settings: object) -> Observation:
    return await dns_query.probe(target(port, settings, dns_query.read_options), timeout=timeout)


async def test_an_a_record_is_answered_with_its_facts(dnsmasq: Server) -> None:
    observation = await ask(dnsmasq.port, name="www.test")
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["rcode"] == "NOERROR"
    assert observation.facts["answers"] == "10.0.0.1"
    assert observation.facts["ttl"] == 60
    assert observation.facts["transport"] == "udp"
    assert observation.latency_ms is not None and observation.latency_ms < 1000
    assert observation.latency_ms == observation.facts["response_ms"]
    assert observation.address == "127.0.0.1"


@pytest.mark.parametrize(
    ("settings", "answers"),
    [
        ({"name": "www.test", "type": "AAAA", "expect": ["fd00:0::1"]}, "fd00::1"),
        ({"name": "alias.test", "type": "CNAME", "expect": ["WWW.test."]}, "www.test."),
        ({"name": "test", "type": "MX", "expect": ["10 mail.test"]}, "10 mail.test."),
        ({"name": "_ldap._tcp.test", "type": "SRV", "expect": ["0 5 389 ldap.test"]},
         "0 5 389 ldap.test."),
        ({"name": "spf.test", "type": "TXT", "expect": ["v=spf1 -all"]}, "v=spf1 -all"),
        ({"name": "10.0.0.1", "type": "PTR", "expect": ["www.test"]}, "www.test."),
        ({"name": "alias.test", "expect": ["10.0.0.1"]}, "10.0.0.1"),
    ],
)
async def test_record_types_and_expected_values(
    dnsmasq: Server, settings: dict[str, object], answers: str
) -> None:
    observation = await ask(dnsmasq.port, **settings)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["answers"] == answers


async def test_a_missing_expected_value_is_answer_mismatch(dnsmasq: Server) -> None:
    observation = await ask(dnsmasq.port, name="www.test", expect=["10.0.0.1", "10.0.0.9"])
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "answer_mismatch")
    assert observation.detail == "www.test. A: expected 10.0.0.9, got 10.0.0.1"


@pytest.mark.parametrize(
    ("settings", "reason", "rcode"),
    [
        ({"name": "nothing.test"}, "nxdomain", "NXDOMAIN"),
        ({"name": "db.test", "type": "AAAA"}, "no_answer", "NOERROR"),
        ({"name": "elsewhere.example"}, "refused", "REFUSED"),
    ],
)
async def test_failures_in_the_servers_own_terms(
    dnsmasq: Server, settings: dict[str, object], reason: str, rcode: str
) -> None:
    observation = await ask(dnsmasq.port, **settings)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, reason), observation
    assert observation.facts["rcode"] == rcode


async def test_a_truncated_answer_is_asked_again_over_tcp(dnsmasq: Server) -> None:
    observation = await ask(dnsmasq.port, name="big.test", type="TXT", expect=BIG_TXT)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["transport"] == "tcp"
    assert observation.facts["truncated_over_udp"] is True
    assert observation.facts["answer_count"] == 5


async def test_transport_tcp_asks_over_tcp_only(dnsmasq: Server) -> None:
    observation = await ask(dnsmasq.port, name="www.test", transport="tcp")
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert observation.facts["transport"] == "tcp"
    assert "truncated_over_udp" not in observation.facts


async def test_servfail(nursery: trio.Nursery) -> None:
    zone = Zone({"broken.test": SERVFAIL})
    _, port = await nursery.start(serve_dns, zone)
    observation = await ask(port, name="broken.test")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "servfail")
    assert observation.detail == "broken.test. A: the server answered SERVFAIL"


async def test_a_stopped_server_is_refused_by_port_unreachable(dnsmasq: Server) -> None:
    port = free_port()  # nothing listens on its UDP side either
    observation = await ask(port, name="www.test")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, Reason.REFUSED)
    assert observation.detail == "127.0.0.1: Connection refused"


async def test_a_silent_server_is_a_timeout_within_the_deadline() -> None:
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as silent:
        await silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        started = trio.current_time()
        observation = await ask(port, timeout=0.3, name="www.test")
        elapsed = trio.current_time() - started
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")
    assert 0.3 <= elapsed < 0.8
    assert "no answer within 0.3s" in (observation.detail or "")


def _parse(check: str) -> config.Config:
    table = {"host": "127.0.0.1", "kind": "dns", **json.loads(check)}
    return config.parse([("agent.toml", {"checks": {"c": table}})])


def test_the_port_defaults_to_53() -> None:
    loaded = _parse('{"name": "www.test"}')
    assert loaded.checks[0].port == 53


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ("{}", "agent.toml: checks.c.name: is required"),
        ('{"name": "x", "type": "AXFR"}',
         'agent.toml: checks.c.type: must be one of "A", "AAAA", "CNAME", "MX", "TXT", '
         "\"SRV\", \"NS\", \"SOA\", \"PTR\", got 'AXFR'"),
        ('{"name": "x", "expect": ["www"]}',
         "agent.toml: checks.c.expect[0]: an A answer is an IP address, got 'www'"),
        ('{"name": "x", "type": "AAAA", "expect": ["10.0.0.1"]}',
         "agent.toml: checks.c.expect[0]: an AAAA answer is an IPv6 address, got '10.0.0.1'"),
        ('{"name": "a..b"}', "agent.toml: checks.c.name: not a DNS name: "
         "A DNS label is empty."),
        ('{"name": "x", "transport": "doh"}',
         "agent.toml: checks.c.transport: must be one of \"udp\", \"tcp\", got 'doh'"),
        ('{"name": "x", "tpye": "A"}',
         "agent.toml: checks.c.tpye: unknown key (did you mean 'type'?)"),
    ],
)
def test_bad_options_are_one_line_errors(check: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _parse(check)
    assert str(error.value) == message


def test_a_config_file_with_a_dns_check_loads(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[checks.resolver]\nkind = "dns"\nhost = "127.0.0.1"\n'
                    'name = "www.test"\ntype = "A"\nexpect = ["10.0.0.1"]\n')
    check = config.load(path).checks[0]
    assert (check.kind, check.port) == ("dns", 53)


def test_checks_add_takes_the_default_port_and_a_missing_one_is_named(tmp_path: Path) -> None:
    main = tmp_path / "agent.toml"
    main.write_text('[agent]\nid = "x"\n')
    added = cli.main(["checks", "add", "resolver", "--config", str(main), "--host", "127.0.0.1",
                      "--kind", "dns", "--set", "name=www.test"])
    assert added == 0
    assert [(c.name, c.port) for c in config.load(main).checks] == [("resolver", 53)]
    missing = cli.main(["checks", "add", "web", "--config", str(main), "--host", "127.0.0.1"])
    assert missing == cli.EXIT_UNKNOWN
