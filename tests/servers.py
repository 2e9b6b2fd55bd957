"""Starting and stopping private instances of real servers for the probe tests.

Each server runs as our own child process, on a port of its own on 127.0.0.1 and
with its data in a temporary directory, so tests never touch a system service or
another test's server. ``stop`` ends only the process we started, by its id.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import trio

from agent.common.tables import Table
from agent.model import Observation, Target

# Servers on a shared two-core machine can take a while to come up.
READY_TIMEOUT_S = 60.0
# How long (in tenths of a second) a stopped server's port may stay taken.
PORT_RELEASE_ATTEMPTS = 50


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (held together while chosen, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def port_answers(port: int) -> bool:
    """Whether a TCP connect to 127.0.0.1:port succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# CI installs every server and sets this, so a missing one fails there; elsewhere
# (a developer's machine without PostgreSQL, say) the test is skipped with the reason.
REQUIRE_SERVERS = os.environ.get("HEARTWIRE_REQUIRE_SERVERS") == "1"


def require(*programs: str) -> None:
    """Skips, or under CI fails, when a server program is missing (.ci/run installs them)."""
    for program in programs:
        if shutil.which(program) is None and not Path(program).exists():
            message = f"{program} is not installed; .ci/run installs it"
            if REQUIRE_SERVERS:
                pytest.fail(message)
            pytest.skip(message)


def target(
    port: int,
    kind_options: Mapping[str, object] | None = None,
    read: Callable[[Table], Mapping[str, object]] | None = None,
) -> Target:
    """A Target on 127.0.0.1:port whose options went through the kind's reader."""
    options: Mapping[str, object] = {}
    if read is not None:
        table = Table(dict(kind_options or {}), "test.toml", "checks.t")
        options = read(table)
        table.finish()
    return Target("127.0.0.1", port, options=options)


def demote(path: Path, user: str) -> None:
    """Gives ``path`` (recursively) to ``user``: servers that refuse to run as root."""
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, d) for d in dirs),
                     *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


class Server:
    """A server process we started (in a session of its own), and its port.

    Attributes:
        process: the server's main process.
        port: the TCP port it listens on (127.0.0.1).
        log: where its output goes.
        stop_signal: the signal that shuts it down quickly.
    """

    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log
        self.stop_signal = signal.SIGTERM
        self._port_holder: socket.socket | None = None

    def stop(self) -> None:
        """Stops the server, then keeps its port closed until :meth:`close`.

        The main process gets ``stop_signal``; whatever it forked and left behind
        (sshd's per-connection children still holding the listening socket, say)
        is in its process group and is killed with it. Binding the port without
        listening then makes the "down" case deterministic: connects are refused,
        and no other program on the machine can take the port meanwhile.
        """
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        # A child the server forked may hold the listening socket for a moment
        # longer (sshd's per-connection children leave its process group).
        for _ in range(PORT_RELEASE_ATTEMPTS):
            if self._port_holder is not None:
                break
            holder = socket.socket()
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                holder.bind(("127.0.0.1", self.port))
                self._port_holder = holder
            except OSError:
                holder.close()
                time.sleep(0.1)

    def close(self) -> None:
        """Stops the server and releases its port."""
        self.stop()
        if self._port_holder is not None:
            self._port_holder.close()
            self._port_holder = None


def start(
    argv: Sequence[str],
    port: int,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    ready: Callable[[], bool] | None = None,
) -> Server:
    """Starts ``argv`` and waits until it accepts connections on ``port`` (or ``ready()``).

    Raises:
        RuntimeError: the server exited or did not listen in time (its log attached).
    """
    with log.open("ab") as sink:
        process = subprocess.Popen(
            list(argv), stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, user=user,
            # Stray files (an Erlang crash dump, say) land beside the log, never here.
            cwd=log.parent, start_new_session=True,
        )
    server = Server(process, port, log)
    give_up = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < give_up:
        if process.poll() is not None:
            break
        if ready() if ready is not None else port_answers(port):
            return server
        time.sleep(0.1)
    server.close()
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{argv[0]} did not listen on {port}:\n{tail}")


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    """Stops ``server`` and releases its port when the block ends, however it ends."""
    try:
        yield server
    finally:
        server.close()


async def serve_loopback(
    nursery: trio.Nursery, handler: Callable[[trio.SocketStream], Awaitable[None]]
) -> int:
    """Serves ``handler`` on an ephemeral 127.0.0.1 port until ``nursery`` is cancelled."""
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                      host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def serve_reply(nursery: trio.Nursery, reply: bytes) -> int:
    """A loopback server that sends ``reply`` to every client, then hangs up."""

    async def send_and_close(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(reply)
        await trio.aclose_forcefully(stream)

    return await serve_loopback(nursery, send_and_close)


# A client turned away while the probe briefly takes a slot tries again.
_RETRY_CLIENT = 'for attempt in $(seq 50); do "$@" && exit 0; sleep 0.2; done; exit 1'


@contextlib.contextmanager
def holding_connections(
    argv: Sequence[str], count: int, *, user: str | None = None
) -> Iterator[None]:
    """``count`` clients (``argv``) that each hold one session, to fill max_connections.

    They are killed (their process groups: each started one) when the block ends.
    """
    clients = [
        subprocess.Popen(["sh", "-c", _RETRY_CLIENT, "client", *argv],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=user,
                         start_new_session=True)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for client in clients:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(client.pid, signal.SIGKILL)
            client.wait(timeout=10)


async def probe_until(
    probe: Callable[[Target], Awaitable[Observation]], check: Target, reason: str
) -> Observation:
    """Probes until the observation has ``reason`` (clients take a moment to log in).

    Returns:
        The first observation with that reason, or the last one after 10 seconds.
    """
    observation = await probe(check)
    for _ in range(100):
        if observation.reason == reason:
            break
        await trio.sleep(0.1)
        observation = await probe(check)
    return observation


# Debian keeps the PostgreSQL server programs out of PATH, under their major version.
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@contextlib.contextmanager
def postgres_cluster() -> Iterator[Path]:
    """An initialised PostgreSQL data directory in a temporary directory, removed after.

    Owned by the postgres user (initdb refuses root); logins over TCP are trusted.
    """
    require(f"{PG_BIN[-1]}/postgres" if PG_BIN else "/usr/lib/postgresql/*/bin/postgres")
    base = Path(tempfile.mkdtemp(prefix="heartwire-pg-"))
    try:
        demote(base, "postgres")
        subprocess.run(
            [f"{PG_BIN[-1]}/initdb", "-D", str(base / "data"), "-A", "trust", "-U", "postgres",
             "--no-sync"],
            check=True, user="postgres", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def start_postgres(cluster: Path, *settings: str, port: int | None = None) -> Server:
    """Starts PostgreSQL on ``cluster`` (see :func:`postgres_cluster`) on 127.0.0.1."""
    port = free_port() if port is None else port
    argv = [f"{PG_BIN[-1]}/postgres", "-D", str(cluster / "data"), "-p", str(port),
            "-k", str(cluster), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            *settings]
    server = start(argv, port, cluster / "postgres.log", user="postgres")
    # SIGINT is PostgreSQL's "fast" shutdown: it does not wait for sessions to end.
    server.stop_signal = signal.SIGINT
    return server
