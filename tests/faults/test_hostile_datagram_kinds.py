"""Every datagram kind against the hostile UDP servers, and DNS over TCP against the TCP ones.

Whatever a UDP service sends back (garbage, a flood of 64 KB datagrams, its own
question, replies to someone else, nothing), a probe returns in time, reads a
bounded amount and closes its socket.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio

from agent.checks import PROBES
from agent.common.tables import Table
from agent.model import Outcome, Target
from tests.faults.hostile import ALLOWANCE_S, HOSTILE_SERVERS, MAX_PEAK_ALLOCATED, run_probe_against
from tests.faults.hostile_udp import HOSTILE_UDP_SERVERS, run_datagram_probe_against

TIMEOUT_S = 0.5
DATAGRAM_KINDS = sorted(kind for kind, entry in PROBES.items() if entry.transport == "udp")
SETTINGS: dict[str, dict[str, object]] = {
    "dns": {"name": "www.test"},
    "udp": {"send": "ping", "expect": "^pong"},
}
# What each kind makes of each server (silence is always a timeout).
EXPECTED_REASONS: dict[tuple[str, str], str] = {
    ("dns", "garbage"): "unexpected_reply",
    ("dns", "flood"): "unexpected_reply",
    ("dns", "echo"): "unexpected_reply",
    ("dns", "stray"): "unexpected_reply",
    ("udp", "garbage"): "no_match",
    ("udp", "flood"): "no_match",
    ("udp", "echo"): "no_match",
    ("udp", "stray"): "no_match",
    ("ntp", "garbage"): "unexpected_reply",
    ("ntp", "flood"): "unexpected_reply",
    ("ntp", "echo"): "unexpected_reply",
    ("ntp", "stray"): "unexpected_reply",
}


def _options(kind: str, **extra: object) -> Mapping[str, object]:
    table = Table({**SETTINGS.get(kind, {}), **extra}, "hostile.toml", f"checks.{kind}")
    return PROBES[kind].read_options(table)


def test_the_datagram_kinds_are_all_here() -> None:
    assert "dns" in DATAGRAM_KINDS


@pytest.mark.parametrize("server", sorted(HOSTILE_UDP_SERVERS))
@pytest.mark.parametrize("kind", DATAGRAM_KINDS)
async def test_every_datagram_kind_ends_in_time_small_and_clean(
    kind: str, server: str, nursery: trio.Nursery
) -> None:
    options = _options(kind)
    # Once unmeasured, so that what the first parse imports (dnspython's record
    # types) does not count as memory the hostile server made the probe take.
    await run_datagram_probe_against(
        PROBES[kind].probe, nursery, "echo", timeout=TIMEOUT_S,
        make_target=lambda host, port: Target(host, port, options=options),
    )
    run = await run_datagram_probe_against(
        PROBES[kind].probe, nursery, server, timeout=TIMEOUT_S,
        make_target=lambda host, port: Target(host, port, options=options),
    )
    assert run.observation.outcome is Outcome.FAILED, run.observation
    assert run.observation.reason == EXPECTED_REASONS.get((kind, server), "timeout")
    assert run.elapsed_s < TIMEOUT_S + ALLOWANCE_S
    assert run.peak_allocated < MAX_PEAK_ALLOCATED
    assert run.leaked_fds == 0


@pytest.mark.parametrize("server", sorted(HOSTILE_SERVERS))
async def test_dns_over_tcp_against_the_hostile_tcp_servers(
    server: str, nursery: trio.Nursery
) -> None:
    options = _options("dns", transport="tcp")
    run = await run_probe_against(
        PROBES["dns"].probe, nursery, server, timeout=TIMEOUT_S,
        make_target=lambda host, port: Target(host, port, options=options),
    )
    assert run.observation.outcome is Outcome.FAILED, run.observation
    assert run.elapsed_s < TIMEOUT_S + ALLOWANCE_S
    assert run.peak_allocated < MAX_PEAK_ALLOCATED
    assert run.leaked_fds == 0
