"""The icmp probe against a hostile echo responder in a network namespace.

A raw-socket responder (tests/support/icmp_responder.py) answers every echo request
with replies carrying the probe's identifier but not its token: random payloads, a
flood of 500 large replies per request, or another sequence number. None of them
counts as an answer, and the probe still ends within its timeout, small and clean.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import trio

from agent.checks import icmp
from agent.model import Observation, Outcome, Target
from tests.faults.hostile import ALLOWANCE_S, MAX_PEAK_ALLOCATED, open_fd_count
from tests.support.netns import routed_path, run_in_namespace, sysctl

REPO = Path(__file__).resolve().parents[2]
TIMEOUT_S = 0.5


def probe_against(mode: str) -> tuple[Observation, float, int, int]:
    """The probe's observation, time, peak allocation and leaked descriptors against ``mode``."""
    with routed_path() as net:
        sysctl(net.client, "net.ipv4.ping_group_range", "0 2147483647")
        sysctl(net.server, "net.ipv4.icmp_echo_ignore_all", "1")
        responder = subprocess.Popen(
            ["ip", "netns", "exec", net.server, sys.executable, "-m",
             "tests.support.icmp_responder", mode, "20"],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert responder.stdout is not None and responder.stdout.readline() == "ready\n"

            async def run() -> tuple[Observation, float, int, int]:
                target = Target(net.server_address, 0, options={"count": 3})
                fds = open_fd_count()
                tracemalloc.start()
                try:
                    started = trio.current_time()
                    observation = await icmp.probe(target, timeout=TIMEOUT_S)
                    elapsed = trio.current_time() - started
                    _, peak = tracemalloc.get_traced_memory()
                finally:
                    tracemalloc.stop()
                return observation, elapsed, peak, open_fd_count() - fds

            return run_in_namespace(net.client, run)
        finally:
            responder.kill()
            responder.wait(timeout=10)
            if responder.stdout is not None:
                responder.stdout.close()


def test_the_responders_own_correct_replies_are_answers() -> None:
    observation, _, _, _ = probe_against("echo")
    assert (observation.outcome, observation.reason) == (Outcome.OK, "answered"), observation


@pytest.mark.parametrize("mode", ["garbage", "flood", "wrong-sequence"])
def test_hostile_echo_replies_are_not_answers(mode: str) -> None:
    observation, elapsed, peak, leaked = probe_against(mode)
    assert (observation.outcome, observation.reason) == (Outcome.FAILED, "timeout"), observation
    assert observation.facts["icmp_received"] == 0
    assert "replies not to these requests ignored" in (observation.detail or "")
    assert elapsed < TIMEOUT_S + ALLOWANCE_S
    assert peak < MAX_PEAK_ALLOCATED
    assert leaked == 0
