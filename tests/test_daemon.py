"""The daemon as a real process: state-change logs, reload and clean stop."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.netutil import open_port, refused_port
from tests.procutil import AgentProcess


def config_text(checks: dict[str, int], state_dir: Path) -> str:
    text = (
        f'[agent]\nid = "daemon-test"\nstate_dir = "{state_dir}"\n'
        '[defaults]\ninterval = "1s"\ntimeout = "500ms"\nfailures_before_down = 1\n'
    )
    for name, port in checks.items():
        text += f'[checks.{name}]\nhost = "127.0.0.1"\nport = {port}\n'
    return text


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    with open_port() as up, refused_port() as down:
        yield up, down


def test_run_logs_state_changes_reloads_and_stops_cleanly(
    tmp_path: Path, ports: tuple[int, int]
) -> None:
    up, down = ports
    path = tmp_path / "agent.toml"
    path.write_text(config_text({"db": up, "cache": down}, tmp_path / "state"))
    agent = AgentProcess("run", "--config", str(path))
    try:
        agent.wait_for_line(r"running as agent 'daemon-test' with 2 checks")
        agent.wait_for_line(r"db: unknown -> up \(open, [\d.]+ ms via 127\.0\.0\.1\)")
        agent.wait_for_line(
            rf"WARNING +cache: unknown -> down \(refused: 127\.0\.0\.1:{down}: Connection refused\)"
        )

        # An invalid config is refused and the running one keeps going.
        path.write_text(config_text({"db": up}, tmp_path / "state") + "bogus = 1\n")
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for_line(
            rf"reload failed, keeping the running config: {path}: checks.db.bogus: unknown key"
        )
        assert agent.proc.poll() is None

        # A valid one adds a check and drops another.
        path.write_text(config_text({"db": up, "db2": up}, tmp_path / "state"))
        agent.proc.send_signal(signal.SIGHUP)
        agent.wait_for_line(r"reloaded .*: 2 checks")
        agent.wait_for_line(r"db2: unknown -> up")

        agent.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        code = agent.proc.wait(timeout=10)
        stopped_after_s = time.monotonic() - sent
        agent.wait_for_line(r"received SIGTERM, stopping")
        agent.wait_for_line(r"INFO +stopped$")
    finally:
        agent.stop()
    assert code == 0
    assert stopped_after_s < 1.0, f"took {stopped_after_s:.2f}s to stop"
    # The unchanged check kept its state across the reload: it never went unknown again.
    assert sum("db: unknown -> up" in line for line in agent.lines) == 1


def test_sigint_stops_too(tmp_path: Path, ports: tuple[int, int]) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(config_text({"db": ports[0]}, tmp_path / "state"))
    agent = AgentProcess("run", "--config", str(path))
    try:
        agent.wait_for_line(r"db: unknown -> up")
        agent.proc.send_signal(signal.SIGINT)
        assert agent.proc.wait(timeout=10) == 0
        agent.wait_for_line(r"received SIGINT, stopping")
    finally:
        agent.stop()


def test_run_with_a_bad_config_exits_3_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[checks.x]\nhost = ""\nport = 1\n')
    agent = AgentProcess("run", "--config", str(path))
    try:
        assert agent.proc.wait(timeout=30) == 3
        assert agent.proc.stderr is not None
        assert agent.proc.stderr.read() == f"heartwire: {path}: checks.x.host: must not be empty\n"
    finally:
        agent.stop()
