"""The ICMP probe inside network namespaces the tests create.

Each test sets ``net.ipv4.ping_group_range`` in its own namespace (a new one
starts with "1 0": nobody may open the socket), so what the machine itself allows
does not matter; the probe runs in a thread that entered the namespace.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.checks import icmp
from agent.cli import main as cli
from agent.config import loader as config
from agent.errors import ConfigError
from agent.model import Observation, Outcome, Reason, Status
from agent.schedule.tracker import CheckTracker
from tests.netutil import needs_ipv6
from tests.support.netns import (
    call_in_namespace,
    network_namespace,
    routed_path,
    run_in_namespace,
    sysctl,
)

ALL_GROUPS = "0 2147483647"


def icmp_check(host: str, **settings: object) -> config.CheckConfig:
    table = {"host": host, "kind": "icmp", "timeout": "1s", **settings}
    return config.parse([("agent.toml", {"checks": {"ping": table}})]).checks[0]


def load(namespace: str, host: str, **settings: object) -> config.CheckConfig:
    """The check as the agent loads it inside ``namespace`` (where the socket is allowed)."""

    async def parse() -> config.CheckConfig:
        return icmp_check(host, **settings)

    return run_in_namespace(namespace, parse)


def ping(namespace: str, host: str, **settings: object) -> Observation:
    async def run() -> Observation:
        check = icmp_check(host, **settings)
        return await icmp.probe(check.target(), timeout=check.timeout_s)

    return run_in_namespace(namespace, run)


def test_loopback_answers_every_request_with_round_trip_facts() -> None:
    with network_namespace("icmp") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", ALL_GROUPS)
        observation = ping(namespace, "127.0.0.1", count=4)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    facts = observation.facts
    assert (facts["icmp_sent"], facts["icmp_received"], facts["icmp_loss_percent"]) == (4, 4, 0.0)
    rtt_min, rtt_avg, rtt_max = (facts[f"icmp_rtt_{k}_ms"] for k in ("min", "avg", "max"))
    assert isinstance(rtt_min, float) and isinstance(rtt_max, float)
    assert rtt_min <= rtt_avg <= rtt_max < 100
    assert observation.latency_ms == rtt_avg
    assert observation.address == "127.0.0.1"


def test_the_average_round_trip_is_what_degraded_after_judges() -> None:
    with network_namespace("icmp") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", ALL_GROUPS)
        observation = ping(namespace, "127.0.0.1", count=3)
        check = load(namespace, "127.0.0.1", count=3)
    assert observation.latency_ms == observation.facts["icmp_rtt_avg_ms"]
    # A loopback round trip takes microseconds: more than 1 µs, less than 900 ms.
    slow = dataclasses.replace(check, degraded_after_s=0.000001)
    fast = dataclasses.replace(check, degraded_after_s=0.9)
    assert CheckTracker(slow).observe(observation, at=0.0)[0].status is Status.DEGRADED
    assert CheckTracker(fast).observe(observation, at=0.0)[0].status is Status.UP


def test_a_host_behind_a_cut_link_is_unreachable_from_the_router() -> None:
    with routed_path() as path:
        sysctl(path.client, "net.ipv4.ping_group_range", ALL_GROUPS)
        before = ping(path.client, path.server_address)
        path.cut_behind_router()
        after = ping(path.client, path.server_address)
    assert (before.outcome, before.reason) == (Outcome.OK, "answered"), before
    assert (after.outcome, after.reason) == (Outcome.FAILED, Reason.UNREACHABLE), after
    assert after.detail == f"{path.router_address}: Network is unreachable"
    assert after.facts["icmp_received"] == 0


def test_a_silent_host_is_a_timeout_with_every_request_lost() -> None:
    with routed_path() as path:
        sysctl(path.client, "net.ipv4.ping_group_range", ALL_GROUPS)
        # The server drops echo requests: nothing comes back, not even an error.
        sysctl(path.server, "net.ipv4.icmp_echo_ignore_all", "1")
        observation = ping(path.client, path.server_address, count=3, timeout="500ms")
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout")
    assert observation.detail == "no echo reply to 3 requests within 0.5s"
    assert observation.facts["icmp_loss_percent"] == 100.0


def test_config_names_the_sysctl_where_the_socket_is_not_allowed() -> None:
    async def load() -> None:
        icmp_check("127.0.0.1")

    with network_namespace("icmp-denied") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", "1 0")
        with pytest.raises(ConfigError) as error:
            run_in_namespace(namespace, load)
    assert str(error.value) == (
        "agent.toml: checks.ping.kind: icmp checks need unprivileged ICMP sockets, and "
        "net.ipv4.ping_group_range (1 0) does not include this process's group 0: set it to "
        '"0 2147483647" (systemd\'s default) or a range with the agent\'s group'
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": 7}, "agent.toml: checks.ping.port: icmp checks have no port"),
        ({"count": 0}, "agent.toml: checks.ping.count: must be between 1 and 20, got 0"),
        ({"cuont": 2}, "agent.toml: checks.ping.cuont: unknown key (did you mean 'count'?)"),
    ],
)
def test_bad_options_are_one_line_errors(settings: dict[str, object], message: str) -> None:
    async def load() -> None:
        icmp_check("127.0.0.1", **settings)

    with network_namespace("icmp-config") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", ALL_GROUPS)
        with pytest.raises(ConfigError) as error:
            run_in_namespace(namespace, load)
    assert str(error.value) == message


def test_an_icmp_check_has_no_port() -> None:
    async def load() -> int:
        return icmp_check("127.0.0.1").port

    with network_namespace("icmp-port") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", ALL_GROUPS)
        assert run_in_namespace(namespace, load) == 0


@needs_ipv6
def test_icmpv6_echo_to_the_ipv6_loopback() -> None:
    with network_namespace("icmp6") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", ALL_GROUPS)  # it covers ICMPv6 too
        observation = ping(namespace, "::1", count=2)
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation
    assert (observation.address, observation.facts["icmp_received"]) == ("::1", 2)


def test_heartwire_check_shows_an_icmp_target_without_a_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[checks.gateway]\nkind = "icmp"\nhost = "127.0.0.1"\ntimeout = "1s"\n')
    with network_namespace("icmp-cli") as namespace:
        sysctl(namespace, "net.ipv4.ping_group_range", ALL_GROUPS)
        code = call_in_namespace(namespace, lambda: cli.main(["check", "--config", str(path)]))
    out = capsys.readouterr().out
    assert code == 0, out
    assert "127.0.0.1 " in out and "127.0.0.1:0" not in out
