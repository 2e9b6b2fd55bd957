"""Every registered probe kind against the hostile servers, through the same harness.

Whatever the protocol, a probe must come back with an Observation within its
timeout, read a bounded amount whatever the server sends, and close its socket.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio

from agent.checks import PROBES
from agent.common.tables import Table
from agent.model import Observation, Target
from tests.faults.hostile import (
    ALLOWANCE_S,
    HOSTILE_SERVERS,
    MAX_PEAK_ALLOCATED,
    run_probe_against,
)

TIMEOUT_S = 0.5
# The few settings a kind requires (everything else keeps its default).
REQUIRED_SETTINGS: dict[str, dict[str, object]] = {
    "expect": {"expect": "^OK"},
    "dns": {"name": "www.test"},
    "udp": {"send": "ping"},
}


def _options(kind: str) -> Mapping[str, object]:
    table = Table(REQUIRED_SETTINGS.get(kind, {}), "hostile.toml", f"checks.{kind}")
    return PROBES[kind].read_options(table)


@pytest.mark.parametrize("server", sorted(HOSTILE_SERVERS))
# icmp has no port to aim at a hostile server (tests/test_icmp.py covers it).
@pytest.mark.parametrize("kind", sorted(kind for kind in PROBES if PROBES[kind].has_port))
async def test_every_kind_ends_in_time_small_and_clean(
    kind: str, server: str, nursery: trio.Nursery
) -> None:
    options = _options(kind)
    run = await run_probe_against(
        PROBES[kind].probe, nursery, server, timeout=TIMEOUT_S,
        make_target=lambda host, port: Target(host, port, options=options),
    )
    assert isinstance(run.observation, Observation)
    assert run.elapsed_s < TIMEOUT_S + ALLOWANCE_S
    assert run.peak_allocated < MAX_PEAK_ALLOCATED
    assert run.leaked_fds == 0
