"""SIGTERM ends ``heartwire run`` within the documented time, whatever hangs.

A real agent process is stopped while its central accepts connections and never
answers, and while its disk hangs: another process holds the outbox's write lock,
so every write the agent starts waits in SQLite. README: SIGTERM "stops it within a
second, and within 5 s even when the disk under `state_dir` or a destination hangs".
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from agent.outbound.spool import OUTBOX_FILE
from tests.faults.delivery_support import (
    RunningAgent,
    bodies,
    committed_messages,
    wait_for,
    write_agent_config,
)
from tests.netutil import open_port
from tests.receiver import running_receiver

# What the README promises, and what a normal stop takes.
STOP_WITHIN_S = 5.0


def _seconds_to_stop(agent: RunningAgent) -> float:
    started = time.monotonic()
    agent.proc.send_signal(signal.SIGTERM)
    try:
        agent.proc.wait(timeout=3 * STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        agent.proc.kill()
        agent.proc.wait(timeout=10)
        raise AssertionError(f"still running {3 * STOP_WITHIN_S:g}s after SIGTERM") from None
    return time.monotonic() - started


def _assert_stopped_cleanly(agent: RunningAgent, took_s: float) -> None:
    assert agent.proc.returncode == 0, agent.log()
    assert took_s < STOP_WITHIN_S, f"took {took_s:.1f}s"
    assert "Traceback" not in agent.log()


@contextlib.contextmanager
def _outbox_locked(state_dir: Path) -> Iterator[None]:
    """Another process's write transaction on the outbox: the agent's writes wait."""
    with contextlib.closing(sqlite3.connect(state_dir / OUTBOX_FILE, isolation_level=None,
                                            timeout=10)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")


def test_sigterm_ends_the_agent_in_time_while_its_central_never_answers(
    tmp_path: Path,
) -> None:
    with open_port() as target, open_port() as silent_central:
        config = write_agent_config(tmp_path, f"http://127.0.0.1:{silent_central}/in",
                                    target_port=target)
        # A long request timeout: a request is surely waiting when SIGTERM comes.
        config.write_text(config.read_text().replace('timeout = "1s"', 'timeout = "60s"'))
        agent = RunningAgent(config, tmp_path / "agent.log")
        try:
            wait_for(lambda: committed_messages(tmp_path / "state").last_seq >= 5,
                     what="messages waiting for the silent central")
            time.sleep(0.5)
            took_s = _seconds_to_stop(agent)
        finally:
            agent.stop()
    _assert_stopped_cleanly(agent, took_s)


def test_sigterm_ends_the_agent_in_time_while_its_disk_hangs(tmp_path: Path) -> None:
    with open_port() as target, running_receiver() as receiver:
        config = write_agent_config(tmp_path, receiver.url + "/in", target_port=target)
        agent = RunningAgent(config, tmp_path / "agent.log")
        try:
            wait_for(lambda: any(body["type"] == "heartbeat"
                                 for body in bodies(receiver.snapshot())),
                     what="a first heartbeat")
            with _outbox_locked(tmp_path / "state"):
                time.sleep(2.5)  # checks go on; writes and deliveries wait on the lock
                assert agent.proc.poll() is None, agent.log()
                took_s = _seconds_to_stop(agent)
        finally:
            agent.stop()
    _assert_stopped_cleanly(agent, took_s)
