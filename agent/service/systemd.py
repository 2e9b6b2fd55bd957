"""Talking to systemd's service manager: readiness and watchdog notifications.

``sd_notify`` (``READY=1``, ``STATUS=…``, ``RELOADING=1``, ``STOPPING=1``,
``WATCHDOG=1``): one datagram to the ``AF_UNIX`` socket named by ``$NOTIFY_SOCKET``
(a leading ``@`` means the abstract namespace). ``systemd-python`` (Debian's
``python3-systemd``) is used when it is importable; otherwise a small pure-Python
sender speaks the same protocol. The sender is a plain callable, so tests and callers
can hand in their own. The journal (log records) is :mod:`agent.common.journal`.

Outside systemd (no ``$NOTIFY_SOCKET``) every function here is a no-op.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

from agent.common.journal import import_systemd_library

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"

# A notification must reach the manager or fail at once, never block the event loop.
_SEND_TIMEOUT_S = 1.0

NotifySender = Callable[[str], None]


# -- sd_notify -----------------------------------------------------------------


def socket_address(value: str) -> str | bytes:
    """Turns ``$NOTIFY_SOCKET`` into a ``connect()`` address.

    ``@name`` is an abstract socket (a leading NUL byte in the kernel's terms).

    Raises:
        ValueError: for an address that is neither a path nor abstract (``vsock:``).
    """
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported {NOTIFY_SOCKET_ENV} address {value!r}")


def send_notification(address: str | bytes, message: str) -> None:
    """Sends one message to the notify socket (the pure-Python sd_notify)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(_SEND_TIMEOUT_S)
        sock.connect(address)
        sock.sendall(message.encode())


def _library_notify() -> NotifySender | None:
    """systemd-python's ``notify``, or None when it is not installed."""
    daemon = import_systemd_library("daemon")
    if daemon is None:
        return None

    def notify(message: str) -> None:
        # The library reads $NOTIFY_SOCKET itself and reports failure as False.
        if not daemon.notify(message):
            raise OSError(f"sd_notify({message.split(chr(10))[0]!r}) failed")

    return notify


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1`` wants in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify messages to the service manager, or does nothing without one.

    Args:
        send: delivers one newline-separated message; None disables notification.
        watchdog_interval_s: how often to send ``WATCHDOG=1`` (half of
            ``$WATCHDOG_USEC``), or None when the watchdog is off.
        monotonic_usec: the clock behind ``MONOTONIC_USEC=``.
    """

    def __init__(
        self,
        send: NotifySender | None = None,
        *,
        watchdog_interval_s: float | None = None,
        monotonic_usec: Callable[[], int] = monotonic_usec,
    ) -> None:
        self._send = send
        self.watchdog_interval_s = watchdog_interval_s
        self._monotonic_usec = monotonic_usec
        self._failed_once = False

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] = os.environ, *, prefer_library: bool = True
    ) -> Notifier:
        """The notifier systemd's environment asks for.

        Args:
            environ: the process environment (``NOTIFY_SOCKET``, ``WATCHDOG_USEC``,
                ``WATCHDOG_PID``).
            prefer_library: use systemd-python when importable (it reads the real
                process environment, so callers passing another ``environ`` say False).
        """
        address_text = environ.get(NOTIFY_SOCKET_ENV, "")
        if not address_text:
            return cls(None)
        send: NotifySender | None = _library_notify() if prefer_library else None
        if send is None:
            send = functools.partial(send_notification, socket_address(address_text))
        return cls(send, watchdog_interval_s=watchdog_interval(environ))

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self._send is not None

    def notify(self, *assignments: str) -> None:
        """Sends ``KEY=value`` assignments in one message.

        A manager that went away must not take the daemon with it: the first failure
        is logged, later ones are silent.
        """
        if self._send is None:
            return
        try:
            self._send("\n".join(assignments))
        except OSError as exc:
            if not self._failed_once:
                self._failed_once = True
                logging.getLogger("heartwire.systemd").warning(
                    "cannot notify the service manager: %s", exc
                )

    def ready(self, status: str | None = None) -> None:
        """``READY=1``: startup or a reload is complete."""
        self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> None:
        """``RELOADING=1`` with the ``MONOTONIC_USEC=`` that ``Type=notify-reload`` needs."""
        self.notify("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}", *_status(status))

    def stopping(self, status: str | None = None) -> None:
        """``STOPPING=1``: shutdown has begun."""
        self.notify("STOPPING=1", *_status(status))

    def status(self, status: str) -> None:
        """``STATUS=``: the one line ``systemctl status`` shows."""
        self.notify(*_status(status))

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the daemon is alive and making progress."""
        self.notify("WATCHDOG=1")


def _status(status: str | None) -> list[str]:
    # A newline would end the assignment and start a bogus one.
    return [] if status is None else ["STATUS=" + " ".join(status.split())]


def watchdog_interval(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """How often to send ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, as sd_watchdog_enabled
    advises, or None when the watchdog is off or meant for another process."""
    usec_text = environ.get("WATCHDOG_USEC", "")
    pid_text = environ.get("WATCHDOG_PID", "")
    if pid_text and pid_text != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / 2
