"""The TCP probe against hostile servers: each run ends in time, small and clean."""

from __future__ import annotations

import pytest
import trio

from agent.checks import tcp
from agent.model import Observation, Reason
from tests.faults.hostile import (
    ALLOWANCE_S,
    HOSTILE_SERVERS,
    MAX_PEAK_ALLOCATED,
    run_probe_against,
)

TIMEOUT_S = 1.0


@pytest.mark.parametrize("kind", sorted(HOSTILE_SERVERS))
async def test_tcp_probe_ends_in_time_with_bounded_memory(
    kind: str, nursery: trio.Nursery
) -> None:
    run = await run_probe_against(tcp.probe, nursery, kind, timeout=TIMEOUT_S)
    assert isinstance(run.observation, Observation)
    # A connect probe completes the handshake and hangs up: every one of these
    # servers accepted, so every one is "open", whatever it does afterwards.
    assert run.observation.reason == Reason.OPEN
    assert run.elapsed_s < TIMEOUT_S + ALLOWANCE_S
    assert run.peak_allocated < MAX_PEAK_ALLOCATED
    assert run.leaked_fds == 0
