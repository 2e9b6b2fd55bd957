"""``heartwire run`` restarted with a backlog: what arrives and what is counted agree.

A first agent checks for a few seconds while its central is down, so its outbox
holds results, state changes and one undelivered heartbeat. A second agent then
starts with the central up: it delivers the backlog while its first heartbeat
supersedes the old one, which the delivery loop may already be sending. Every gap
in the seqs the receiver saw must be reported as dropped exactly once: a heartbeat
that arrived is never also counted as dropped.
"""

from __future__ import annotations

import time
from pathlib import Path

from agent.outbound.messages import HEARTBEAT
from tests.faults.delivery_support import (
    RunningAgent,
    assert_exactly_once_in_order,
    bodies,
    committed_messages,
    first_seen,
    wait_for,
    write_agent_config,
)
from tests.netutil import open_port
from tests.receiver import free_port, running_receiver


def test_a_restart_with_a_backlog_reports_exactly_the_heartbeats_it_dropped(
    tmp_path: Path,
) -> None:
    port = free_port()
    state = tmp_path / "state"
    with open_port() as target:
        config = write_agent_config(tmp_path, f"http://127.0.0.1:{port}/in",
                                    target_port=target, checks=5)
        log = tmp_path / "agent.log"
        first = RunningAgent(config, log)
        try:
            wait_for(lambda: HEARTBEAT in committed_messages(state).messages.values(),
                     what="a heartbeat in the outbox")
            time.sleep(2)  # results batches and superseded heartbeats pile up
        finally:
            assert first.stop() == 0, first.log()
        backlog = committed_messages(state)
        assert HEARTBEAT in backlog.messages.values()
        with running_receiver(["slow:0.02"] * 100_000, port=port) as receiver:
            second = RunningAgent(config, log)
            try:
                wait_for(lambda: any(body["type"] == HEARTBEAT and body["seq"] > backlog.last_seq
                                     for body in bodies(receiver.snapshot())),
                         what="a heartbeat of the second agent")
                wait_for(lambda: committed_messages(state).messages == {}
                         or max(committed_messages(state).messages) > backlog.last_seq + 40,
                         what="the backlog delivered")
                time.sleep(1.5)  # a few more heartbeats, each reporting what it saw dropped
                delivered = committed_messages(state)
            finally:
                assert second.stop() == 0, second.log()
            received = bodies(receiver.snapshot())
    known = {**backlog.messages, **delivered.messages}
    for body in first_seen(received):
        known[body["seq"]] = body["type"]
    through = max(body["seq"] for body in received if body["type"] == HEARTBEAT)
    assert_exactly_once_in_order(received, through=through, known_types=known)
    assert "Traceback" not in (tmp_path / "agent.log").read_text()
