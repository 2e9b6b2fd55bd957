"""End to end: a real agent process pushes signed messages to a real receiver process.

Both run as ``python -m agent`` on loopback; the receiver alerts a recording
webhook (a real HTTP server in this process). The agent checks a TCP listener the
test opens and closes, so a check goes down and up; then the agent is stopped
(the dead man's switch must fire within interval + grace + a small bound) and
started again (the alert must resolve).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from agent.central.demo import Service
from agent.common.signing import Ed25519SigningKey
from tests.receiver import Receiver, running_receiver

HEARTBEAT_INTERVAL_S = 2.0
GRACE_S = 2.0
# Sweep granularity (1 s) + delivery + scheduling noise on a busy 2-core machine.
BOUND_S = 3.0


class Process:
    """``python -m agent ARGS``, its stderr collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout_s: float = 20.0) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := regex.search(line):
                    return match
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.join(timeout=5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextmanager
def running(*args: str) -> Iterator[Process]:
    process = Process(*args)
    try:
        yield process
    finally:
        process.stop()


def wait_until(condition: Callable[[], Any], what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def events(hook: Receiver) -> list[tuple[str, str]]:
    return [(body["type"], body["incident"]["kind"])
            for body in (json.loads(request.body) for request in hook.snapshot())]


def arrived(hook: Receiver, event: str, kind: str) -> int:
    return events(hook).count((event, kind))


def write_configs(tmp_path: Path, hook_url: str, service_port: int) -> tuple[Path, Path, str]:
    key = Ed25519SigningKey.generate()
    key_file = tmp_path / "agent.key"
    key_file.write_text(key.to_text() + "\n")
    key_file.chmod(0o600)
    central = tmp_path / "central.toml"
    central.write_text(
        f'[storage]\nstate_dir = "{tmp_path / "central-state"}"\n'
        f'[alerts]\ngrace = "{GRACE_S}s"\nretry_initial = "1s"\n'
        f'[agents.e2e-agent]\nkeys = ["{key.public_key().to_text()}"]\n'
        f'[channels.hook]\nkind = "webhook"\nurl = "{hook_url}"\n'
    )
    agent = tmp_path / "agent.toml"
    agent.write_text(
        f'[agent]\nid = "e2e-agent"\nstate_dir = "{tmp_path / "agent-state"}"\n'
        f'[checks.service]\nhost = "127.0.0.1"\nport = {service_port}\ninterval = "1s"\n'
        'timeout = "500ms"\nfailures_before_down = 1\ngroup = "E2E"\n'
        f'[central]\nheartbeat_interval = "{HEARTBEAT_INTERVAL_S}s"\n'
        '[destinations.central]\nkind = "native"\nurl = "{url}"\n'
        f'signing_key_file = "{key_file}"\n'
    )
    return central, agent, agent.read_text()


def test_agent_to_receiver_check_down_up_then_dead_mans_switch_and_resolve(
    tmp_path: Path,
) -> None:
    service = Service()
    service.open()
    service_port = service.port
    with running_receiver() as hook:
        central_toml, agent_toml, agent_text = write_configs(tmp_path, f"{hook.url}/hook",
                                                             service_port)
        with running("central", "--config", str(central_toml), "--listen", "127.0.0.1:0") \
                as central:
            base = central.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
            agent_toml.write_text(agent_text.replace("{url}", f"{base}/v1/ingest"))
            api = httpx.Client(base_url=base, timeout=5)

            def agent_state() -> str:
                agents = api.get("/api/v1/agents").json()["agents"]
                return next(a["state"] for a in agents if a["id"] == "e2e-agent")

            def check_status() -> str | None:
                checks = api.get("/api/v1/checks").json()["checks"]
                return checks[0]["status"] if checks else None

            agent = Process("run", "--config", str(agent_toml))
            try:
                wait_until(lambda: agent_state() == "alive", "the first heartbeat", 20)
                wait_until(lambda: check_status() == "up", "the check up", 20)

                # The service goes away: the check goes down, one alert; back: resolved.
                service.close()
                wait_until(lambda: arrived(hook, "incident.trigger", "check_down"),
                           "the check_down alert", 20)
                service.open()
                wait_until(lambda: arrived(hook, "incident.resolve", "check_down"),
                           "the check_down resolve", 20)
                assert check_status() == "up"
                # The heartbeat told the receiver how to show the check.
                (check,) = api.get("/api/v1/checks").json()["checks"]
                assert check["group"] == "E2E" and check["host"] == "127.0.0.1"

                # The agent stops: silence is noticed within interval + grace + bound.
                agent.stop()
                stopped_at = time.monotonic()
                wait_until(lambda: arrived(hook, "incident.trigger", "agent_silent"),
                           "the dead man's switch alert",
                           HEARTBEAT_INTERVAL_S + GRACE_S + BOUND_S)
                silent_after = time.monotonic() - stopped_at
                assert check_status() == "unknown"
                assert agent_state() == "silent"
            finally:
                agent.stop()

            # It comes back (same state dir, so its seq continues): resolved.
            with running("run", "--config", str(agent_toml)):
                wait_until(lambda: arrived(hook, "incident.resolve", "agent_silent"),
                           "the dead man's switch resolve", 20)
                assert agent_state() == "alive"
                # Taken while the agent runs: once it stops, a receiver that takes
                # a while to stop (Hypercorn 0.13 waits out a keep-alive timer)
                # rightly alerts on its silence again.
                alerts = events(hook)
            agents = api.get("/api/v1/agents").json()["agents"]
            api.close()
        service.close()

    assert silent_after <= HEARTBEAT_INTERVAL_S + GRACE_S + BOUND_S
    assert alerts == [
        ("incident.trigger", "check_down"), ("incident.resolve", "check_down"),
        ("incident.trigger", "agent_silent"), ("incident.resolve", "agent_silent"),
    ]
    # Every webhook delivery is signed and carries the incident.
    assert all(request.headers.get("webhook-id", "").startswith("msg_")
               for request in hook.snapshot())
    assert agents[0]["seq_gaps"] == 0
    assert not [line for line in central.lines if "rejected message" in line]


def maintenance(agent_toml: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``heartwire maintenance ARGS`` with the agent's config, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "agent", "maintenance", *args, "--config",
                           str(agent_toml)], capture_output=True, text=True, timeout=30,
                          check=False)


def test_heartwire_maintenance_on_the_agents_host_holds_the_alert_until_it_ends(
    tmp_path: Path,
) -> None:
    service = Service()
    service.open()
    with running_receiver() as hook:
        central_toml, agent_toml, agent_text = write_configs(tmp_path, f"{hook.url}/hook",
                                                             service.port)
        with running("central", "--config", str(central_toml), "--listen", "127.0.0.1:0") \
                as central:
            base = central.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
            agent_toml.write_text(agent_text.replace("{url}", f"{base}/v1/ingest"))
            api = httpx.Client(base_url=base, timeout=5)

            def windows() -> list[dict[str, Any]]:
                return list(api.get("/api/v1/maintenance").json()["maintenance"])

            def check_status() -> str | None:
                checks = api.get("/api/v1/checks").json()["checks"]
                return checks[0]["status"] if checks else None

            with running("run", "--config", str(agent_toml)):
                wait_until(lambda: check_status() == "up", "the check up", 20)
                started = maintenance(agent_toml, "start", "--for", "20m", "--check", "service",
                                      "--reason", "minor  upgrade")
                assert started.returncode == 0, started.stderr
                assert "maintenance of service for 20m is queued" in started.stdout
                (window,) = wait_until(windows, "the window at the receiver", 15)
                assert (window["agent"], window["checks"], window["reason"]) == (
                    "e2e-agent", ["service"], "minor upgrade")

                service.close()  # the planned work: down, recorded, not alerted
                wait_until(lambda: check_status() == "down", "the check down", 20)
                time.sleep(2.0)
                assert events(hook) == []

                ended = maintenance(agent_toml, "end")
                assert ended.returncode == 0, ended.stderr
                wait_until(lambda: not windows(), "the window ended", 15)
                # Still down when the window ends: it alerts now.
                wait_until(lambda: arrived(hook, "incident.trigger", "check_down"),
                           "the held alert", 10)
                agents = api.get("/api/v1/agents").json()["agents"]
            api.close()
        service.close()
    assert agents[0]["seq_gaps"] == 0  # the command's messages take the agent's seq
    assert not [line for line in central.lines if "rejected message" in line]


def test_heartwire_maintenance_refuses_what_the_receiver_would(tmp_path: Path) -> None:
    _, agent_toml, agent_text = write_configs(tmp_path, "http://127.0.0.1:9/hook", 9)
    agent_toml.write_text(agent_text.replace("{url}", "http://127.0.0.1:9/v1/ingest"))

    for args, words in [
        (("start", "--for", "8d"), "--for must be more than 0 and at most 7d"),
        (("start", "--for", "soon"), "--for:"),
        (("start", "--for", "1h", "--check", "nothing"), "--check nothing: no such check"),
        (("start", "--for", "1h", "--reason", "x" * 201), "--reason is 201 characters"),
    ]:
        refused = maintenance(agent_toml, *args)
        assert refused.returncode == 3, args
        assert words in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert not (tmp_path / "agent-state" / "outbox.sqlite3").exists() or \
        "maintenance" not in (tmp_path / "agent-state" / "outbox.sqlite3").read_bytes().decode(
            "latin-1")
