"""``heartwire run`` killed with SIGKILL while its central is down, then restarted.

Everything the agent had committed to its outbox before the kill reaches the
central after the restart, in order, with the sequence numbers continuing.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent.common.signing import Ed25519SigningKey
from tests.receiver import free_port, running_receiver

REPO = Path(__file__).resolve().parent.parent


def _stored(outbox: Path) -> list[tuple[int, str, str]]:
    if not outbox.exists():
        return []
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as db:
        try:
            return list(db.execute("SELECT seq, id, type FROM messages ORDER BY seq"))
        except sqlite3.OperationalError:
            return []  # the schema is not there yet


def _wait(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@contextmanager
def _agent(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)


def test_kill_9_then_restart_delivers_everything_committed(tmp_path: Path) -> None:
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen()
    central_port = free_port()
    key = Ed25519SigningKey.generate()
    (tmp_path / "agent.key").write_text(key.to_text())
    (tmp_path / "agent.key").chmod(0o600)
    config = tmp_path / "agent.toml"
    config.write_text(f"""
[agent]
id = "crash-agent"
state_dir = "{tmp_path / 'state'}"

[central]
heartbeat_interval = "1s"

[checks.target]
host = "127.0.0.1"
port = {target.getsockname()[1]}
interval = "1s"
timeout = "500ms"
failures_before_down = 1

[destinations.main]
kind = "native"
url = "http://127.0.0.1:{central_port}/in"
signing_key_file = "{tmp_path / 'agent.key'}"
""")
    outbox = tmp_path / "state" / "outbox.sqlite3"

    def state_changes() -> int:
        return sum(1 for _, _, kind in _stored(outbox) if kind == "state_change")

    with _agent(config) as first:
        _wait(lambda: state_changes() >= 1)  # unknown -> up
        target.close()
        _wait(lambda: state_changes() >= 2)  # up -> down
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    committed = _stored(outbox)
    assert [kind for _, _, kind in committed].count("state_change") >= 2

    with running_receiver(port=central_port) as receiver, _agent(config):
        def all_arrived() -> bool:
            ids = {json.loads(r.body)["id"] for r in receiver.snapshot()}
            return {msg_id for _, msg_id, kind in committed if kind != "heartbeat"} <= ids
        _wait(all_arrived)
        _wait(lambda: any(json.loads(r.body)["seq"] > committed[-1][0]
                          for r in receiver.snapshot()))
    bodies = [json.loads(r.body) for r in receiver.snapshot()]
    changes = [b for b in bodies if b["type"] == "state_change"]
    assert [(c["data"]["previous"], c["data"]["current"]) for c in changes[:2]] == [
        ("unknown", "up"), ("up", "down")]
    seqs = [b["seq"] for b in bodies]
    assert seqs == sorted(seqs)  # in order, and the restart continued the numbering
    assert len(set(seqs)) == len(seqs)
