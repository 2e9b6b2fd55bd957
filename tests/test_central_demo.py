"""``make run``'s demo: a receiver and an agent on loopback, a check going down and up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_shows_a_check_going_down_and_up(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agent.central.demo", "--state-dir", str(tmp_path),
         "--port", "0", "--toggle-every", "3", "--duration", "9"],
        capture_output=True, text=True, timeout=90, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "heartwire central 0.1.0 listening on http://127.0.0.1:" in output
    assert "[demo] webhook received: ALERT: example-agent: check demo-service is down" in output
    assert "[demo] webhook received: RESOLVED after" in output
    assert "last heartbeat 20" in output  # a heartbeat arrived and is shown
    assert "rejected message" not in output
    # One check of each datagram kind, against the demo's own loopback services.
    for check in ("demo-dns up", "demo-udp up", "demo-ntp up"):
        assert check in output
    assert (tmp_path / "central" / "central.sqlite3").exists()
