"""The real daemon, run as systemd would run it: a subprocess with $NOTIFY_SOCKET.

A datagram socket stands in for the service manager; the tests send SIGHUP and
SIGTERM like ``systemctl reload`` and ``systemctl stop`` do and read what the
daemon notified. Real processes and sockets, so the real clock with short timeouts.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

# systemd's variables must come from the test alone, even when pytest runs under systemd.
_SYSTEMD_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                      "INVOCATION_ID", "LISTEN_FDS", "LISTEN_PID", "HEARTWIRE_CONFIG")
_WAIT_S = 15.0


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections: the check target."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def _config(port: int, extra_check: str = "") -> str:
    return (
        '[agent]\nid = "test-agent"\n\n'
        f'[checks.db]\nhost = "127.0.0.1"\nport = {port}\ninterval = "1s"\ntimeout = "500ms"\n'
        + extra_check
    )


class Manager:
    """The service manager's side: the notify socket and what arrived on it."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.messages: list[str] = []

    async def wait_for(self, prefix: str) -> str:
        """The next message starting with ``prefix`` (others are kept, not matched)."""
        with trio.fail_after(_WAIT_S):
            while True:
                message = (await self.sock.recv(65536)).decode()
                self.messages.append(message)
                if message.startswith(prefix):
                    return message

    def lifecycle(self) -> list[str]:
        """The first line of each message that is not a periodic ping or status."""
        firsts = [message.split("\n", 1)[0] for message in self.messages]
        return [first for first in firsts if first.split("=")[0] not in ("WATCHDOG", "STATUS")]


@asynccontextmanager
async def running_daemon(
    config: Path, notify_address: str, bind_address: str | bytes, stderr: Path
) -> AsyncIterator[tuple[trio.Process, Manager]]:
    """Starts ``python -m agent run`` with systemd's environment; kills it if left running."""
    environ = {key: value for key, value in os.environ.items() if key not in _SYSTEMD_VARIABLES}
    environ.update(NOTIFY_SOCKET=notify_address, WATCHDOG_USEC="400000")
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock, stderr.open("wb") as stderr_file:
        await sock.bind(bind_address)
        async with trio.open_nursery() as nursery:
            run = functools.partial(
                trio.run_process,
                # Its own state directory: the default, /var/lib/heartwire, is this
                # machine's, and a second daemon there (another test run) would refuse
                # to start for the pid file.
                [sys.executable, "-m", "agent", "run", "--config", str(config),
                 "--state-dir", str(config.parent / "state")],
                env=environ, stderr=stderr_file, check=False,
            )
            process: trio.Process = await nursery.start(run)
            try:
                yield process, Manager(sock)
            finally:
                if process.returncode is None:
                    process.kill()


async def test_ready_status_watchdog_reload_and_stop(tmp_path: Path, listener: int) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(_config(listener))
    address = str(tmp_path / "notify")
    async with running_daemon(config, address, address, tmp_path / "stderr") as (process, manager):
        assert await manager.wait_for("READY=1") == "READY=1\nSTATUS=1 check: 1 unknown"
        await manager.wait_for("WATCHDOG=1")
        assert await manager.wait_for("STATUS=1 check: 1 up") == "STATUS=1 check: 1 up"

        # A second check appears; the unchanged one keeps its status through the reload.
        config.write_text(_config(listener, '[checks.cache]\nhost = "127.0.0.1"\nport = 1\n'))
        process.send_signal(signal.SIGHUP)
        reloading = await manager.wait_for("RELOADING=1")
        assert await manager.wait_for("READY=1") == "READY=1\nSTATUS=2 checks: 1 up, 1 unknown"
        await manager.wait_for("WATCHDOG=1")

        process.send_signal(signal.SIGTERM)
        assert await manager.wait_for("STOPPING=1") == "STOPPING=1\nSTATUS=stopping"
        with trio.fail_after(_WAIT_S):
            assert await process.wait() == 0

    lines = reloading.split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=") and int(lines[1].split("=")[1]) > 0
    assert lines[2] == f"STATUS=reloading {config}"
    assert manager.lifecycle() == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]
    # WATCHDOG=1 only between READY and STOPPING.
    firsts = [message.split("\n", 1)[0] for message in manager.messages]
    watchdog_at = [index for index, first in enumerate(firsts) if first == "WATCHDOG=1"]
    assert firsts.index("READY=1") < min(watchdog_at)
    assert max(watchdog_at) < firsts.index("STOPPING=1")


async def test_with_no_checks_the_status_says_what_to_do(tmp_path: Path) -> None:
    # The packaged agent.toml has no checks: the agent idles and says how to add some.
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nid = "test-agent"\n')
    address = str(tmp_path / "notify")
    async with running_daemon(config, address, address, tmp_path / "stderr") as (process, manager):
        assert await manager.wait_for("READY=1") == (
            f"READY=1\nSTATUS=idle, no checks: add them to {config} or with "
            "'heartwire checks add', then 'systemctl reload heartwire'"
        )
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(_WAIT_S):
            assert await process.wait() == 0


async def test_notify_socket_in_the_abstract_namespace(tmp_path: Path, listener: int) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(_config(listener))
    name = f"heartwire-test-{secrets.token_hex(8)}"
    async with running_daemon(
        config, "@" + name, b"\0" + name.encode(), tmp_path / "stderr"
    ) as (process, manager):
        await manager.wait_for("READY=1")
        process.send_signal(signal.SIGTERM)
        await manager.wait_for("STOPPING=1")
        with trio.fail_after(_WAIT_S):
            assert await process.wait() == 0


async def test_an_invalid_reload_keeps_the_running_config(tmp_path: Path, listener: int) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(_config(listener))
    address = str(tmp_path / "notify")
    stderr = tmp_path / "stderr"
    async with running_daemon(config, address, address, stderr) as (process, manager):
        await manager.wait_for("READY=1")
        await manager.wait_for("STATUS=1 check: 1 up")

        config.write_text(_config(70000))
        process.send_signal(signal.SIGHUP)
        await manager.wait_for("RELOADING=1")
        assert await manager.wait_for("READY=1") == "READY=1\nSTATUS=1 check: 1 up"
        # The old check still runs: the watchdog keeps being petted.
        await manager.wait_for("WATCHDOG=1")
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(_WAIT_S):
            assert await process.wait() == 0

    with trio.fail_after(_WAIT_S):
        validate = await trio.run_process(
            [sys.executable, "-m", "agent", "validate", "--config", str(config)],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert validate.returncode == 3
    one_line_error = validate.stderr.decode().strip().removeprefix("heartwire: ")
    assert one_line_error == f"{config}: checks.db.port: must be between 1 and 65535, got 70000"
    log = stderr.read_text()
    assert f"reload failed, keeping the running config: {one_line_error}\n" in log
