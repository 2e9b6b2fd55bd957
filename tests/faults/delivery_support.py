"""What the delivery fault scenarios share: a real agent process, its outbox, the verdict.

* :func:`slow_scenario`: skips a long scenario unless ``make faults`` asked for it
  (``--run-slow``, or ``HEARTWIRE_RUN_SLOW=1``).
* :func:`write_agent_config`: a fast-schedule agent (checks every second, results
  batched every 200 ms, a heartbeat every second) reporting to a loopback URL.
* :class:`RunningAgent`: ``heartwire run`` as a real process, its log in a file
  (a pipe nobody reads would fill and stall it).
* :func:`committed_messages` reads the outbox as another process sees it.
* :func:`assert_exactly_once_in_order`: the end-of-scenario verdict.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.common.signing import Ed25519SigningKey
from agent.outbound.messages import HEARTBEAT
from agent.outbound.spool import OUTBOX_FILE
from tests.receiver import Recorded

REPO = Path(__file__).resolve().parents[2]
SLOW_ENV_VAR = "HEARTWIRE_RUN_SLOW"


def slow_scenario(request: pytest.FixtureRequest) -> None:
    """Skips the calling test unless the slow fault scenarios were asked for."""
    if not (request.config.getoption("--run-slow", default=False)
            or os.environ.get(SLOW_ENV_VAR) == "1"):
        pytest.skip("slow scenario: run with `make faults`")


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    """Polls ``condition`` (real processes, real clock) until true; fails after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.02)


def write_agent_config(directory: Path, central_url: str, *, target_port: int,
                       checks: int = 5, max_backoff: str = "1s") -> Path:
    """An agent config in ``directory`` (key file, state dir) with a fast schedule."""
    key = directory / "agent.key"
    key.write_text(Ed25519SigningKey.generate().to_text())
    key.chmod(0o600)
    check_tables = "".join(f"""
[checks.c{n}]
host = "127.0.0.1"
port = {target_port}
interval = "1s"
timeout = "500ms"
""" for n in range(checks))
    config = directory / "agent.toml"
    config.write_text(f"""
[agent]
id = "fault-agent"
state_dir = "{directory / 'state'}"

[central]
heartbeat_interval = "1s"
results_batch_interval = "200ms"
max_backoff = "{max_backoff}"
{check_tables}
[destinations.main]
kind = "native"
url = "{central_url}"
signing_key_file = "{key}"
send = "all"
timeout = "1s"
connect_timeout = "500ms"
""")
    return config


class RunningAgent:
    """``python -m agent run --config CONFIG``, logging to ``log_file``."""

    def __init__(self, config: Path, log_file: Path) -> None:
        self.log_file = log_file
        with log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(config)],
                cwd=REPO, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def kill9(self) -> None:
        """SIGKILL, and reap it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM (SIGKILL if it will not go); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)

    def log(self) -> str:
        """Everything it logged so far."""
        return self.log_file.read_text(errors="replace")


@dataclass(frozen=True)
class Committed:
    """What another process sees committed in the outbox at one moment."""

    last_seq: int
    messages: dict[int, str]  # seq -> type, of the undelivered ones


def committed_messages(state_dir: Path) -> Committed:
    """The outbox's committed rows and last sequence number, read-only."""
    path = state_dir / OUTBOX_FILE
    if not path.exists():
        return Committed(0, {})
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        with db:
            rows = db.execute("SELECT seq, type FROM messages").fetchall()
            last = db.execute("SELECT value FROM counters WHERE name = 'last_seq'").fetchone()
    except sqlite3.OperationalError:
        return Committed(0, {})  # the schema is not there yet
    finally:
        db.close()
    return Committed(int(last[0]) if last else 0, dict(rows))


def integrity(state_dir: Path) -> str:
    """Opens the outbox as the agent would (recovering its WAL) and checks it."""
    db = sqlite3.connect(state_dir / OUTBOX_FILE, timeout=5)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def bodies(requests: Iterable[Recorded]) -> list[dict[str, Any]]:
    """The JSON envelopes, in the order they arrived."""
    return [json.loads(request.body) for request in requests]


def first_seen(received: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Deduplicated by message id, keeping the first arrival."""
    seen: dict[str, dict[str, Any]] = {}
    for body in received:
        seen.setdefault(body["id"], body)
    return list(seen.values())


def reported_drops(received: list[dict[str, Any]]) -> int:
    """Every drop and rejection the delivered heartbeats report, summed."""
    total = 0
    for body in first_seen(received):
        if body["type"] == HEARTBEAT:
            data = body["data"]
            total += sum(data["dropped"].values()) + data["rejected"]
    return total


def assert_exactly_once_in_order(received: list[dict[str, Any]], *, through: int,
                                 known_types: dict[int, str], exact_counts: bool = True) -> None:
    """The verdict: each message once after dedup, in order, every gap accounted for.

    Args:
        received: the envelopes the receiver got, duplicates included.
        through: every message committed up to this seq must have been delivered.
        known_types: seq -> type of every message ever seen committed.
        exact_counts: the heartbeats report exactly the gaps. After a kill -9 a
            heartbeat may have arrived without its cursor moving; superseded after
            the restart, its counts are carried forward and reported again: then
            the reports may exceed the gaps, never fall short of them. So may they
            when a full disk refused messages (those never got a seq).
    """
    unique = first_seen(received)
    seqs = [body["seq"] for body in unique]
    assert seqs == sorted(seqs), "first arrivals out of order"
    assert len({body["seq"] for body in unique}) == len(seqs), "one seq under two ids"
    assert seqs and seqs[-1] >= through, f"messages up to seq {through} did not all arrive"
    missing = sorted(set(range(1, through + 1)) - set(seqs))
    # Only superseded heartbeats may be missing: never results or state changes.
    lost = [seq for seq in missing if known_types.get(seq, HEARTBEAT) != HEARTBEAT]
    assert not lost, f"committed messages never delivered: {lost}"
    # ... and each gap below the last delivered heartbeat is counted in a delivered
    # heartbeat (nothing silently dropped).
    last_beat = max((body["seq"] for body in unique if body["type"] == HEARTBEAT), default=0)
    gaps = sum(1 for seq in set(range(1, last_beat)) - set(seqs))
    reported = reported_drops(received)
    if exact_counts:
        assert reported == gaps, f"{gaps} gaps in seq, {reported} reported as dropped"
    else:
        assert reported >= gaps, f"{gaps} gaps in seq, only {reported} reported as dropped"
