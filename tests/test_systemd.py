"""sd_notify and journal transports, over real AF_UNIX datagram sockets."""

from __future__ import annotations

import array
import functools
import logging
import os
import secrets
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from agent.common import journal
from agent.common.logs import log_result
from agent.model import Observation, Outcome, Reason, Result, StateChange, Status
from agent.service import systemd


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    """A datagram socket bound to a path, like systemd's notify or journal socket."""
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield sock, path


def receive(sock: socket.socket) -> str:
    return sock.recv(65536).decode()


def parse_journal(payload: bytes) -> dict[str, str]:
    """Decodes the journal native protocol (both the KEY=value and the sized form)."""
    fields: dict[str, str] = {}
    rest = payload
    while rest:
        line_end = rest.index(b"\n")
        line = rest[:line_end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            rest = rest[line_end + 1 :]
        else:
            key = line
            (size,) = struct.unpack("<Q", rest[line_end + 1 : line_end + 9])
            value = rest[line_end + 9 : line_end + 9 + size]
            assert rest[line_end + 9 + size : line_end + 10 + size] == b"\n"
            rest = rest[line_end + 10 + size :]
        fields[key.decode()] = value.decode()
    return fields


def test_socket_address_forms() -> None:
    assert systemd.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.socket_address("@heartwire/notify") == b"\0heartwire/notify"
    with pytest.raises(ValueError, match="unsupported NOTIFY_SOCKET address 'vsock:2:1234'"):
        systemd.socket_address("vsock:2:1234")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4242"}, 0.1),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "4243"}, None),  # another process's
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    environ: dict[str, str], expected: float | None
) -> None:
    assert systemd.watchdog_interval(environ, pid=4242) == expected


def test_notifier_sends_each_message_as_one_datagram(
    receiver: tuple[socket.socket, Path],
) -> None:
    sock, path = receiver
    from_environ = systemd.Notifier.from_environ(
        {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "4000000"}, prefer_library=False
    )
    assert from_environ.enabled
    assert from_environ.watchdog_interval_s == 2.0
    from_environ.watchdog()
    assert receive(sock) == "WATCHDOG=1"

    notifier = systemd.Notifier(
        functools.partial(systemd.send_notification, str(path)), monotonic_usec=lambda: 123456789
    )
    notifier.ready("2 checks: 2 up")
    notifier.watchdog()
    notifier.reloading("reloading /etc/heartwire/agent.toml")
    notifier.status("2 checks:\n1 up, 1 down")
    notifier.stopping()

    assert [receive(sock) for _ in range(5)] == [
        "READY=1\nSTATUS=2 checks: 2 up",
        "WATCHDOG=1",
        "RELOADING=1\nMONOTONIC_USEC=123456789\nSTATUS=reloading /etc/heartwire/agent.toml",
        "STATUS=2 checks: 1 up, 1 down",  # a newline would have started a bogus assignment
        "STOPPING=1",
    ]


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"heartwire-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(5)
        notifier = systemd.Notifier.from_environ(
            {"NOTIFY_SOCKET": "@" + name}, prefer_library=False
        )
        notifier.ready()
        assert receive(sock) == "READY=1"


def test_notifier_without_notify_socket_does_nothing() -> None:
    notifier = systemd.Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    notifier.ready("ignored")  # must not raise


def test_a_vanished_manager_is_logged_once_and_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = systemd.Notifier.from_environ(
        {"NOTIFY_SOCKET": str(tmp_path / "gone")}, prefer_library=False
    )
    with caplog.at_level(logging.WARNING, logger="heartwire.systemd"):
        notifier.ready()
        notifier.watchdog()
    assert [record.getMessage() for record in caplog.records] == [
        "cannot notify the service manager: [Errno 2] No such file or directory"
    ]


def test_journal_encoding_uses_the_sized_form_for_multiline_values() -> None:
    encoded = journal.encode_journal_fields({"MESSAGE": "a\nb", "CHECK": "db"})
    assert encoded == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n" + b"CHECK=db\n"
    assert parse_journal(encoded) == {"MESSAGE": "a\nb", "CHECK": "db"}


def _down_result() -> tuple[Result, StateChange]:
    observation = Observation(Outcome.FAILED, Reason.REFUSED, detail="ECONNREFUSED")
    result = Result("db", Status.DOWN, observation, consecutive_failures=2, at=1_700_000_000.0)
    return result, StateChange("db", Status.UP, Status.DOWN, result)


def test_result_logs_reach_the_journal_with_structured_fields(
    receiver: tuple[socket.socket, Path],
) -> None:
    sock, path = receiver
    handler = journal.JournalHandler(lambda fields: journal.send_journal_datagram(fields, path))
    logger = logging.getLogger("heartwire.test-journal")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        result, change = _down_result()
        log_result(logger, result, change)
        opened = Result("db", Status.UP, Observation(Outcome.OK, Reason.OPEN, latency_ms=0.4321),
                        consecutive_failures=0, at=1_700_000_001.0)
        log_result(logger, opened, StateChange("db", Status.DOWN, Status.UP, opened))
    finally:
        logger.removeHandler(handler)

    down = parse_journal(sock.recv(65536))
    assert down["MESSAGE"] == "db: up -> down (refused: ECONNREFUSED)"
    assert down["PRIORITY"] == "4"
    assert down["SYSLOG_IDENTIFIER"] == "heartwire"
    assert (down["CHECK"], down["STATUS"], down["REASON"]) == ("db", "down", "refused")
    assert "LATENCY_MS" not in down  # no connection, no latency
    up = parse_journal(sock.recv(65536))
    assert (up["STATUS"], up["REASON"], up["LATENCY_MS"], up["PRIORITY"]) == (
        "up", "open", "0.432", "6")


def test_an_entry_too_big_for_a_datagram_goes_as_a_memfd(
    receiver: tuple[socket.socket, Path],
) -> None:
    sock, path = receiver
    message = "x" * (4 * 1024 * 1024)  # beyond any default datagram size
    journal.send_journal_datagram({"MESSAGE": message, "CHECK": "db"}, path)

    fds = array.array("i")
    payload, ancillary, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(fds.itemsize))
    assert payload == b""
    level, kind, data = ancillary[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fds.frombytes(data[: fds.itemsize])
    with os.fdopen(fds[0], "rb") as memfd:
        memfd.seek(0)
        assert parse_journal(memfd.read()) == {"MESSAGE": message, "CHECK": "db"}


def test_journal_is_used_only_when_stderr_is_the_journal_stream(tmp_path: Path) -> None:
    journal_socket = tmp_path / "journal"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock, (tmp_path / "err").open(
        "w"
    ) as stderr_stand_in:
        sock.bind(str(journal_socket))
        sock.settimeout(5)
        stat = os.fstat(stderr_stand_in.fileno())
        stream = f"{stat.st_dev}:{stat.st_ino}"

        assert journal.stderr_is_journal({"JOURNAL_STREAM": stream}, stderr_stand_in.fileno())
        assert not journal.stderr_is_journal({"JOURNAL_STREAM": "1:2"}, stderr_stand_in.fileno())
        assert not journal.stderr_is_journal({}, stderr_stand_in.fileno())

        # stderr of this test process is not that file, so no journal handler.
        assert journal.journal_handler({"JOURNAL_STREAM": stream},
                                       socket_path=journal_socket) is None
        real_stderr = os.fstat(2)
        handler = journal.journal_handler(
            {"JOURNAL_STREAM": f"{real_stderr.st_dev}:{real_stderr.st_ino}"},
            socket_path=journal_socket,
        )
        assert handler is not None
        handler.emit(logging.makeLogRecord({"msg": "hello", "levelno": logging.ERROR}))
        fields = parse_journal(sock.recv(65536))
        assert (fields["MESSAGE"], fields["PRIORITY"]) == ("hello", "3")


def _full_datagram_socket(path: Path) -> socket.socket:
    """A bound datagram socket that never reads, its receive queue filled to the brim."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as filler:
        filler.setblocking(False)
        for _ in range(100_000):  # bounded; the queue holds a few hundred datagrams
            try:
                filler.sendto(b"MESSAGE=filler\n", str(path))
            except BlockingIOError:
                break
        else:
            raise AssertionError("the socket never filled up")
    return sock


async def test_a_journal_that_does_not_read_never_delays_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    real_stderr = os.fstat(2)
    with _full_datagram_socket(path) as journal_socket:
        handler = journal.journal_handler(
            {"JOURNAL_STREAM": f"{real_stderr.st_dev}:{real_stderr.st_ino}"},
            socket_path=path, prefer_library=False)
        assert handler is not None
        logger = logging.getLogger("heartwire.test-journal-full")
        logger.addHandler(handler)
        logger.propagate = False
        try:
            longest_gap_s = 0.0

            async def watch_checkpoints() -> None:
                nonlocal longest_gap_s
                last = time.monotonic()
                while True:
                    await trio.lowlevel.checkpoint()
                    now = time.monotonic()
                    longest_gap_s = max(longest_gap_s, now - last)
                    last = now

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_checkpoints)
                await trio.sleep(0.01)
                longest_call_s = 0.0
                for n in range(5000):  # a mass outage's burst, beyond the queue's size
                    started = time.monotonic()
                    logger.warning("db%d: up -> down", n)
                    longest_call_s = max(longest_call_s, time.monotonic() - started)
                    if longest_call_s > 0.5:
                        break  # blocked: no need to wait for the rest
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
            # A blocking send waits up to a second per record; a queued one, microseconds
            # (the bounds leave room for a machine busy with other work).
            assert longest_call_s < 0.5, f"one log call took {longest_call_s:.2f}s"
            assert longest_gap_s < 0.5, f"the event loop stalled {longest_gap_s:.2f}s"
            assert handler.dropped >= 5000 - 4096 - 10  # bounded: the excess is counted

            # Once the journal reads again, what was queued arrives, then the warning.
            journal_socket.settimeout(5)
            deadline = time.monotonic() + 20
            warning: dict[str, str] = {}
            while not warning and time.monotonic() < deadline:
                payload = journal_socket.recv(65536)
                if payload.startswith(b"MESSAGE=filler"):
                    continue
                fields = parse_journal(payload)
                if "DROPPED" in fields:
                    warning = fields
            assert int(warning["DROPPED"]) == handler.dropped
            assert "log records dropped" in warning["MESSAGE"]
        finally:
            logger.removeHandler(handler)
            handler.close()
