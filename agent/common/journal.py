"""Log records to systemd's journal, with their structured fields.

The journal's native protocol: one datagram of ``KEY=value`` fields to
``/run/systemd/journal/socket``, so that log records keep their structured fields
(``CHECK=``, ``STATUS=``, ``REASON=``, ``LATENCY_MS=``).

Journal entries never block the caller: :class:`JournalHandler` queues them (bounded,
dropping and counting the excess) for one thread that sends them over one socket.

``systemd-python`` (Debian's ``python3-systemd``) is used when it is importable;
otherwise a small pure-Python sender speaks the same protocol. Outside the journal
(stderr not connected to it) :func:`journal_handler` gives None and logs go to stderr.
Used by :func:`agent.common.logs.configure`; sd_notify is in ``agent.service.systemd``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import math
import os
import queue
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.common.logs import EscapingFormatter, escape_control

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
# The identifier journalctl -t filters on and the unit's SyslogIdentifier= default.
SYSLOG_IDENTIFIER = "heartwire"

# An entry must reach journald or fail at once.
_SEND_TIMEOUT_S = 1.0
# Log records waiting for the journal (a burst of a mass outage fits; beyond it they
# are dropped and counted), how often at most a warning reports the drops, and how
# long the exit waits for the queue to empty.
JOURNAL_QUEUE_SIZE = 4096
DROP_WARNING_INTERVAL_S = 60.0
FLUSH_TIMEOUT_S = 0.25

JournalSender = Callable[[Mapping[str, str]], None]


def import_systemd_library(module: str) -> Any:
    """A systemd-python module (``daemon``, ``journal``), or None when not installed.

    Imported by name: the source tree's ``systemd/`` directory (unit files) would
    otherwise pass for the package as far as type checkers are concerned.
    """
    try:
        return importlib.import_module(f"systemd.{module}")
    except ImportError:
        return None


# -- journal -------------------------------------------------------------------

# logging levels to syslog priorities (journalctl -p).
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
# The ``extra`` fields agent.common.logs attaches to results, and the journal field for each.
STRUCTURED_FIELDS = {
    "check": "CHECK",
    "status": "STATUS",
    "reason": "REASON",
    "latency_ms": "LATENCY_MS",
}


def stderr_is_journal(
    environ: Mapping[str, str] = os.environ, stderr_fd: int | None = None
) -> bool:
    """Whether stderr is the journal stream systemd gave this process.

    ``$JOURNAL_STREAM`` is ``device:inode`` of that stream; it is inherited by
    children whose stderr may point elsewhere, so it is compared with stderr itself.
    """
    expected = environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        fd = sys.stderr.fileno() if stderr_fd is None else stderr_fd
        stat = os.fstat(fd)
    except (OSError, ValueError):
        return False
    return expected == f"{stat.st_dev}:{stat.st_ino}"


def encode_journal_fields(fields: Mapping[str, str]) -> bytes:
    """Encodes fields in the journal's native protocol.

    A value with a newline is sent as ``KEY\\n`` + 64-bit little-endian length +
    value + ``\\n``; others as ``KEY=value\\n``.
    """
    parts = []
    for key, value in fields.items():
        raw = value.encode("utf-8", "replace")
        if b"\n" in raw:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(raw)) + raw + b"\n")
        else:
            parts.append(key.encode() + b"=" + raw + b"\n")
    return b"".join(parts)


class JournalSocket:
    """The pure-Python journal sender: one datagram per entry (a memfd for a big one),
    over one socket kept for the life of the sender.

    Args:
        path: journald's native socket.
    """

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock: socket.socket | None = None

    def __call__(self, fields: Mapping[str, str]) -> None:
        """Sends one entry (blocking for at most about a second)."""
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.settimeout(_SEND_TIMEOUT_S)
        payload = encode_journal_fields(fields)
        try:
            self._sock.sendto(payload, str(self.path))
            return
        except OSError as exc:
            if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
        # Too big for a datagram: journald accepts the entry as a sealed memfd
        # passed with SCM_RIGHTS and an empty datagram.
        memfd = os.memfd_create("heartwire-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(memfd, payload)
            with contextlib.suppress(OSError):  # sealing is advisory for journald
                _seal(memfd)
            self._sock.sendmsg(
                [], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", memfd))],
                0, str(self.path))
        finally:
            os.close(memfd)

    def close(self) -> None:
        """Closes the socket (the next entry opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def send_journal_datagram(fields: Mapping[str, str], path: Path = JOURNAL_SOCKET) -> None:
    """Sends one entry over a socket of its own (see :class:`JournalSocket`)."""
    sender = JournalSocket(path)
    try:
        sender(fields)
    finally:
        sender.close()


def _seal(fd: int) -> None:
    import fcntl

    seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)


def _library_journal() -> JournalSender | None:
    """systemd-python's ``sendv``, or None when it is not installed."""
    journal = import_systemd_library("journal")
    if journal is None:
        return None

    def send(fields: Mapping[str, str]) -> None:
        journal.sendv(*(f"{key}={value}" for key, value in fields.items()))

    return send


class JournalHandler(logging.Handler):
    """A logging handler that writes journal entries with structured fields.

    Logging must never wait for the journal: a record is formatted where it is
    logged and put on a bounded queue; one thread sends what is queued, in order.
    When the queue is full (the journal does not keep up) the record is dropped and
    counted, and once the journal takes entries again a warning says how many were
    lost (at most every ``DROP_WARNING_INTERVAL_S``). Closing (``logging.shutdown``
    at exit) waits at most ``FLUSH_TIMEOUT_S`` for the queue to empty.

    Args:
        send: delivers one entry's fields (systemd-python's or a :class:`JournalSocket`).
        identifier: ``SYSLOG_IDENTIFIER=`` of every entry.
        queue_size: the most records waiting for the journal.
    """

    def __init__(self, send: JournalSender, *, identifier: str = SYSLOG_IDENTIFIER,
                 queue_size: int = JOURNAL_QUEUE_SIZE) -> None:
        super().__init__()
        self.setFormatter(EscapingFormatter())
        self._send = send
        self._identifier = identifier
        self._queue: queue.Queue[dict[str, str] | None] = queue.Queue(maxsize=queue_size)
        self._sender: threading.Thread | None = None
        # Records the full queue turned away, and how many of them a warning reported.
        self.dropped = 0
        self._count_lock = threading.Lock()
        self._dropped_reported = 0
        self._warned_at = -math.inf

    def journal_fields(self, record: logging.LogRecord) -> dict[str, str]:
        """The fields of the entry for one log record (control characters escaped)."""
        fields: dict[str, object] = {
            "MESSAGE": self.format(record),
            "PRIORITY": syslog_priority(record.levelno),
            "SYSLOG_IDENTIFIER": self._identifier,
            "LOGGER": record.name,
            "CODE_FILE": record.pathname,
            "CODE_LINE": record.lineno,
            "CODE_FUNC": record.funcName,
        }
        for attribute, field_name in STRUCTURED_FIELDS.items():
            value = getattr(record, attribute, None)
            fields[field_name] = None if value is None else escape_control(_field_text(value))
        return {key: _field_text(value) for key, value in fields.items() if value is not None}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = self.journal_fields(record)
        except Exception:
            self.handleError(record)
            return
        if self._sender is None:
            self._sender = threading.Thread(target=self._send_queued, name="heartwire-journal",
                                            daemon=True)
            self._sender.start()
        try:
            self._queue.put_nowait(fields)
        except queue.Full:
            with self._count_lock:
                self.dropped += 1

    def _send_queued(self) -> None:
        while (fields := self._queue.get()) is not None:
            try:
                self._send(fields)
            except Exception:  # the journal went away: there is nowhere to say so
                with self._count_lock:
                    self.dropped += 1
            self._warn_of_drops()
            self._queue.task_done()
        self._queue.task_done()
        close_sender = getattr(self._send, "close", None)  # a JournalSocket's socket
        if close_sender is not None:
            close_sender()

    def _warn_of_drops(self) -> None:
        dropped = self.dropped
        now = time.monotonic()
        if dropped == self._dropped_reported or now - self._warned_at < DROP_WARNING_INTERVAL_S:
            return
        self._warned_at = now
        lost = dropped - self._dropped_reported
        self._dropped_reported = dropped
        with contextlib.suppress(Exception):
            self._send({
                "MESSAGE": f"{lost} log records dropped: the journal did not take them fast "
                           f"enough ({dropped} since start)",
                "PRIORITY": str(syslog_priority(logging.WARNING)),
                "SYSLOG_IDENTIFIER": self._identifier,
                "LOGGER": "heartwire.systemd",
                "DROPPED": str(dropped),
            })

    def flush(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Waits (at most ``timeout_s``) until every queued record went to the journal."""
        deadline = time.monotonic() + timeout_s
        while self._sender is not None and self._queue.unfinished_tasks \
                and time.monotonic() < deadline:
            time.sleep(0.005)

    def close(self) -> None:
        """Sends what is queued (within ``FLUSH_TIMEOUT_S``) and stops the thread."""
        sender, self._sender = self._sender, None
        if sender is not None:
            deadline = time.monotonic() + FLUSH_TIMEOUT_S
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=FLUSH_TIMEOUT_S)
            # A journal that reads nothing must not hold up the exit: the thread is a
            # daemon thread, left behind after the deadline.
            sender.join(timeout=max(0.0, deadline - time.monotonic()))
        super().close()


def _field_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0 emerg … 7 debug) of a logging level."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return 7


def journal_handler(
    environ: Mapping[str, str] = os.environ,
    *,
    socket_path: Path = JOURNAL_SOCKET,
    prefer_library: bool = True,
) -> JournalHandler | None:
    """A journal handler when stderr goes to the journal, else None (log to stderr).

    Args:
        environ: the process environment (``JOURNAL_STREAM``).
        socket_path: journald's native socket (tests pass their own).
        prefer_library: use systemd-python when importable.
    """
    if not stderr_is_journal(environ) or not socket_path.exists():
        return None
    send = _library_journal() if prefer_library and socket_path == JOURNAL_SOCKET else None
    if send is None:
        send = JournalSocket(socket_path)
    return JournalHandler(send)
