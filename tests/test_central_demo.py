"""``make run``'s demo: a receiver and an agent on loopback, a check going down and up,
a maintenance window and a parent holding alerts."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import tomllib
from itertools import pairwise
from pathlib import Path

from agent.central.demo import MAX_LINE_CHARS

DEMO_CHECKS = {"demo-service", "demo-database", "demo-gateway", "demo-app", "demo-dns",
               "demo-udp", "demo-ntp", "demo-ping"}
# The checks the demo takes down on purpose.
TAKEN_DOWN = {"demo-service", "demo-gateway", "demo-app", "demo-database",
              "edge-agent/demo-database"}
_CHANGE = re.compile(r"^\[demo\] (\S+): (?:(\S+) -> )?(\S+)$")


def run_demo(state: Path, *args: str) -> list[tuple[float, str]]:
    """Runs the demo on any port; returns its output lines, each with when it came."""
    with subprocess.Popen(
        [sys.executable, "-m", "agent.central.demo", "--state-dir", str(state),
         "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as process:
        watchdog = threading.Timer(120, process.kill)
        watchdog.start()
        try:
            assert process.stdout is not None
            lines = [(time.monotonic(), line.rstrip("\n")) for line in process.stdout]
            returncode = process.wait(timeout=30)
        finally:
            watchdog.cancel()
    assert returncode == 0, "\n".join(line for _, line in lines)
    return lines


def test_the_demo_shows_a_check_going_down_and_up(tmp_path: Path) -> None:
    stale = tmp_path / "central" / "left-by-an-earlier-run"
    stale.parent.mkdir()
    stale.write_text("old history")
    (tmp_path / "agent.key").write_text("an earlier run's key")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("not the demo's")

    timed = run_demo(tmp_path, "--toggle-every", "3", "--maintenance-for", "8",
                     "--duration", "50")
    lines = [line for _, line in timed]
    output = "\n".join(lines)

    assert "heartwire central 0.1.0 listening on http://127.0.0.1:" in output
    # A clean state, said in one line; only the demo's own files went.
    assert "[demo] starting from a clean state in " in output
    assert not stale.exists()
    assert unrelated.read_text() == "not the demo's"
    assert "[demo] first heartbeat from example-agent" in lines
    assert "[demo] webhook: ALERT: example-agent: check demo-service is down" in output
    assert "[demo] webhook: RESOLVED after" in output
    assert "rejected message" not in output
    # The window holds the alert of the check that goes down under it: it goes out
    # when the window ends, seconds after the outage, not with it.
    opened = lines.index("[demo] maintenance window started for demo-service")
    down = lines.index("[demo] demo-service: up -> down", opened)
    alert = next(i for i in range(opened, len(lines)) if "webhook: ALERT" in lines[i])
    assert "[demo] maintenance window ended for demo-service" in lines[opened:]
    assert timed[alert][0] - timed[down][0] >= 2.0, lines[opened:alert + 1]
    assert "flapping" not in output
    # The gateway and the app behind it stop together: the gateway's alert waits for
    # the app (dependency_wait) and names it; the app shows held, and alerts only once
    # its gateway is back.
    stopped = lines.index("[demo] demo-gateway and demo-app (depends_on demo-gateway) "
                          "stopped listening")
    after = lines[stopped:]
    gateway_alert = next(i for i, line in enumerate(after)
                         if line.startswith("[demo] webhook: ALERT: example-agent: check "
                                            "demo-gateway is down"))
    assert after[gateway_alert].endswith("; holds the alerts of example-agent/demo-app"), after
    held = after.index("[demo] demo-app: up -> down (parent example-agent/demo-gateway is "
                       "down: its alert waits)")
    gateway_back = next(i for i, line in enumerate(after)
                        if line.startswith("[demo] webhook: RESOLVED after ")
                        and "check demo-gateway is down" in line)
    app_alert = next(i for i, line in enumerate(after)
                     if line.startswith("[demo] webhook: ALERT: example-agent: check demo-app "
                                        "is down"))
    assert gateway_alert < gateway_back and held < gateway_back < app_alert, after
    assert after.index("[demo] demo-app is listening") > app_alert
    # Two agents check demo-database (service demo-db): the edge agent alone seeing it
    # down is shown, not alerted; both seeing it down is one alert for the service.
    assert "[demo] first heartbeat from edge-agent" in lines
    cut = lines.index("[demo] edge-agent's path to demo-database is cut (demo-db: "
                      "example-agent still sees it)")
    both = lines.index("[demo] demo-database stopped listening: both agents see demo-db down")
    assert "[demo] edge-agent/demo-database: up -> down (demo-db up from 1 of 2 agents)" in \
        lines[cut:both]
    assert "[demo] service demo-db: up -> degraded (1 of 2 agents see it down)" in lines[cut:both]
    assert not [line for line in lines[cut:both] if "webhook:" in line]
    alerts = [line for line in lines[both:] if "webhook:" in line and "demo-db" in line]
    assert len(alerts) == 2, alerts
    assert alerts[0].startswith("[demo] webhook: ALERT: service demo-db down: seen down by 2 of "
                                "2 agents: edge-agent/demo-database, example-agent/demo")
    assert alerts[1].startswith("[demo] webhook: RESOLVED after ")
    assert "check demo-database is down" not in output
    # Only checks of services the demo provides; only the toggled one goes down.
    agent = tomllib.loads((tmp_path / "agent" / "agent.toml").read_text())
    assert set(agent["checks"]) <= DEMO_CHECKS
    assert DEMO_CHECKS - {"demo-ping"} <= set(agent["checks"])
    assert agent["checks"]["demo-app"]["depends_on"] == ["demo-gateway"]
    for check in DEMO_CHECKS - TAKEN_DOWN - {"demo-ping"}:
        assert f"[demo] {check}: up" in lines
    for line in lines:
        if (change := _CHANGE.match(line)) and change.group(3) != "up":
            assert change.group(1) in TAKEN_DOWN, line
    # One short line per event, never the same twice in a row.
    assert all(len(line) <= MAX_LINE_CHARS for line in lines), max(lines, key=len)
    assert all(a != b for a, b in pairwise(lines))
    assert (tmp_path / "central" / "central.sqlite3").exists()


def test_the_demo_keeps_an_earlier_state_when_asked(tmp_path: Path) -> None:
    earlier = tmp_path / "central" / "left-by-an-earlier-run"
    earlier.parent.mkdir()
    earlier.write_text("old history")

    timed = run_demo(tmp_path, "--keep-state", "--duration", "1")

    assert "[demo] keeping the state of earlier runs in " in timed[0][1]
    assert earlier.read_text() == "old history"


def test_the_demo_removes_nothing_from_a_folder_it_did_not_make(tmp_path: Path) -> None:
    foreign = tmp_path / "agent" / "precious"
    foreign.parent.mkdir()
    foreign.write_text("not the demo's")

    with subprocess.Popen(
        [sys.executable, "-m", "agent.central.demo", "--state-dir", str(tmp_path),
         "--port", "0", "--duration", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    ) as process:
        output, _ = process.communicate(timeout=60)

    assert process.returncode == 1
    assert "[demo] not the demo's state (no agent.key), use another --state-dir" in output
    assert foreign.read_text() == "not the demo's"
