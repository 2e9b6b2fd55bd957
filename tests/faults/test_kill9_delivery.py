"""``heartwire run`` killed with SIGKILL at random points, again and again, while it delivers.

A real agent process (twenty checks every second, results batched every 200 ms, a
heartbeat every second) delivers to the recording loopback receiver, which
answers each request after a short delay so that requests are often in flight
when the kill comes. Before each kill the test reads what the outbox has
committed; after it, the file must open and pass ``PRAGMA integrity_check``.
After the last round one more agent drains the outbox, and every message ever
seen committed must have reached the receiver: once after deduplication, in
order, the only gaps superseded heartbeats that a delivered heartbeat counts.

``make test`` runs three rounds; ``make faults`` the twenty the issue asks for.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from agent.outbound.messages import HEARTBEAT
from tests.faults.delivery_support import (
    RunningAgent,
    assert_exactly_once_in_order,
    bodies,
    committed_messages,
    integrity,
    slow_scenario,
    wait_for,
    write_agent_config,
)
from tests.netutil import open_port
from tests.receiver import running_receiver

# Each answer takes this long, so a kill often lands between send and cursor move.
ANSWER_DELAY_S = 0.05


def _kill_again_and_again(tmp_path: Path, rounds: int, seed: int) -> None:
    print(f"kill points drawn with seed {seed}")  # shown when the test fails
    rng = random.Random(seed)
    known: dict[int, str] = {}
    through = 0
    with open_port() as target, running_receiver(
            [f"slow:{ANSWER_DELAY_S}"] * 100_000) as receiver:
        config = write_agent_config(tmp_path, receiver.url + "/in", target_port=target,
                                    checks=20, max_backoff="500ms")
        state = tmp_path / "state"
        log = tmp_path / "agent.log"
        for round_number in range(rounds):
            agent = RunningAgent(config, log)
            try:
                if round_number == 0:  # the file exists before the first kill
                    wait_for(lambda: committed_messages(state).last_seq > 0, what="a commit")
                time.sleep(rng.uniform(0.05, 1.5))  # start-up, checking, delivering
                seen = committed_messages(state)
            finally:
                agent.kill9()
            known.update(seen.messages)
            through = max(through, seen.last_seq)
            assert integrity(state) == "ok", f"round {round_number} (seed {seed})"
        agent = RunningAgent(config, log)
        try:
            wait_for(lambda: any(b["seq"] > through and b["type"] == HEARTBEAT
                                 for b in bodies(receiver.snapshot())),
                     timeout_s=30, what="the final drain")
        finally:
            agent.stop()
        received = bodies(receiver.snapshot())
    assert integrity(state) == "ok"
    assert through > rounds  # it did commit and deliver between the kills
    assert "Traceback" not in agent.log(), agent.log()[-3000:]
    assert_exactly_once_in_order(received, through=through, known_types=known,
                                 exact_counts=False)


def test_kill_9_three_times_loses_nothing_committed(tmp_path: Path) -> None:
    _kill_again_and_again(tmp_path, rounds=3, seed=random.randrange(2**32))


@pytest.mark.slow
def test_kill_9_twenty_times_in_a_row_loses_nothing_committed(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    slow_scenario(request)
    _kill_again_and_again(tmp_path, rounds=20, seed=random.randrange(2**32))
