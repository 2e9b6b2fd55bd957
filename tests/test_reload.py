"""``--reload``: the daemon's pid file, SIGHUP to a real daemon, systemctl as a fallback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.config import loader as config
from agent.errors import AlreadyRunning, ReloadError
from agent.service.pidfile import hold_pid_file, pid_file_path, running_daemon_pid
from agent.service.reload import Reloader
from tests.config_dirs import heartwire_command, run_heartwire, write_main
from tests.netutil import open_port


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {condition}")
        time.sleep(0.05)


def test_pid_file_is_held_while_running_and_removed_after(tmp_path: Path) -> None:
    path = tmp_path / "state" / "heartwire.pid"
    with hold_pid_file(path):
        assert path.read_text() == f"{os.getpid()}\n"
        assert running_daemon_pid(path) == os.getpid()
        with pytest.raises(AlreadyRunning, match=rf"\(pid {os.getpid()}\) is running"):
            with hold_pid_file(path):
                pass
        assert running_daemon_pid(path) == os.getpid()  # the failed attempt changed nothing
    assert not path.exists()
    assert running_daemon_pid(path) is None


def test_a_stale_pid_file_is_never_signalled(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        stale = tmp_path / "heartwire.pid"
        stale.write_text(f"{bystander.pid}\n")  # left by a killed daemon, pid reused
        assert running_daemon_pid(stale) is None
        reloader = Reloader(pid_files=[stale], systemd_run_dir=tmp_path / "no-systemd")
        with pytest.raises(ReloadError, match="no running heartwire daemon found"):
            reloader.reload()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(timeout=30)


def test_pid_file_goes_to_the_systemd_runtime_directory_when_there_is_one() -> None:
    state = Path("/var/lib/heartwire")
    assert pid_file_path(state, {}) == state / "heartwire.pid"
    assert pid_file_path(state, {"RUNTIME_DIRECTORY": "/run/heartwire:/run/x"}) == Path(
        "/run/heartwire/heartwire.pid"
    )


def fake_systemctl(tmp_path: Path, *, active: bool) -> tuple[Path, Path]:
    calls = tmp_path / "systemctl.calls"
    script = tmp_path / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        f'if [ "$1" = is-active ]; then exit {0 if active else 3}; fi\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script, calls


def test_without_a_pid_file_an_active_systemd_service_is_reloaded(tmp_path: Path) -> None:
    script, calls = fake_systemctl(tmp_path, active=True)
    reloader = Reloader(pid_files=[tmp_path / "none.pid"], systemctl=[str(script)],
                        systemd_run_dir=tmp_path)
    assert reloader.reload() == "reloaded heartwire.service with systemctl"
    assert calls.read_text() == "is-active --quiet heartwire\nreload heartwire\n"


def test_an_inactive_service_or_no_systemd_is_an_error(tmp_path: Path) -> None:
    script, calls = fake_systemctl(tmp_path, active=False)
    reloader = Reloader(pid_files=[tmp_path / "none.pid"], systemctl=[str(script)],
                        systemd_run_dir=tmp_path)
    with pytest.raises(ReloadError, match=r"no active heartwire\.service"):
        reloader.reload()
    assert calls.read_text() == "is-active --quiet heartwire\n"
    calls.unlink()
    without_systemd = Reloader(pid_files=[tmp_path / "none.pid"], systemctl=[str(script)],
                               systemd_run_dir=tmp_path / "absent")
    with pytest.raises(ReloadError):
        without_systemd.reload()
    assert not calls.exists()


class RunningDaemon:
    """A real ``heartwire run`` subprocess whose log is read from a file."""

    def __init__(self, main: Path, log: Path, environ: dict[str, str]) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                heartwire_command("run", "--config", str(main)), stderr=sink, env=environ
            )

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(params=["state_dir", "runtime_directory", "state_dir_env"])
def environ(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "runtime_directory":
        return {**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")}
    plain = {key: value for key, value in os.environ.items()
             if key not in ("RUNTIME_DIRECTORY", config.STATE_DIR_ENV_VAR)}
    if request.param == "state_dir_env":
        # The daemon and the editing command both take the override from here.
        return {**plain, config.STATE_DIR_ENV_VAR: str(tmp_path / "elsewhere")}
    return plain


@pytest.fixture
def daemon(tmp_path: Path, environ: dict[str, str]) -> Iterator[tuple[RunningDaemon, Path]]:
    with open_port() as port:
        main = write_main(tmp_path, port=port)
        running = RunningDaemon(main, tmp_path / "daemon.log", environ)
        try:
            state_dir = config.state_dir_override(None, environ) or tmp_path / "state"
            pid_file = pid_file_path(state_dir, environ)
            wait_until(lambda: running_daemon_pid(pid_file) == running.process.pid)
            wait_until(lambda: "with 1 check from" in running.text())
            yield running, main
        finally:
            assert running.stop() == 0, running.text()
            assert not pid_file.exists()


def edit(environ: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(heartwire_command(*arguments), capture_output=True, text=True,
                          timeout=60, check=False, env=environ)


def test_edits_with_reload_reach_the_running_daemon(
    daemon: tuple[RunningDaemon, Path], environ: dict[str, str]
) -> None:
    running, main = daemon
    pid = running.process.pid
    added = edit(environ, "checks", "add", "web", "--host", "127.0.0.1", "--port", "80",
                 "--reload", "--config", str(main))
    assert added.returncode == 0, added.stderr
    assert f"sent SIGHUP to the daemon (pid {pid} from " in added.stdout
    wait_until(lambda: f"reloaded {main}: 2 checks" in running.text())

    # An invalid edit writes nothing and signals nobody.
    rejected = edit(environ, "checks", "set", "web", "port=0", "--reload", "--config", str(main))
    assert (rejected.returncode, rejected.stdout) == (3, "")

    removed = edit(environ, "checks", "remove", "web", "--reload", "--config", str(main))
    assert removed.returncode == 0, removed.stderr
    wait_until(lambda: f"reloaded {main}: 1 check\n" in running.text())
    assert running.text().count("reloaded ") == 2


def test_a_second_daemon_on_the_same_state_directory_refuses_to_start(
    daemon: tuple[RunningDaemon, Path], environ: dict[str, str]
) -> None:
    running, main = daemon
    second = edit(environ, "run", "--config", str(main))
    assert second.returncode == 3
    assert f"another heartwire daemon (pid {running.process.pid}) is running" in second.stderr


def test_reload_without_a_daemon_says_the_change_was_written(tmp_path: Path) -> None:
    main = write_main(tmp_path, port=1)
    result = run_heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80",
                           "--reload", "--config", str(main))
    dropin = tmp_path / "conf.d" / "50-check-web.toml"
    assert result.returncode == 3
    assert result.stdout == f"added check 'web': {dropin}\n"
    assert result.stderr.startswith(
        f"heartwire: {dropin} was changed, but the daemon was not reloaded: "
        "no running heartwire daemon found"
    )
    assert dropin.exists()
