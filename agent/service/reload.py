"""Telling the running daemon to re-read its config (``--reload`` on the editing commands).

First choice is the daemon's pid file (see :mod:`agent.service.pidfile`): a live daemon gets
SIGHUP. When there is none but systemd runs a ``heartwire`` service, the reload goes
through ``systemctl reload heartwire`` (the unit's ``ExecReload`` sends the SIGHUP,
and systemd knows the pid even when the pid file is in a runtime directory this
shell cannot see).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.errors import ReloadError
from agent.service.pidfile import running_daemon_pid

SERVICE_NAME = "heartwire"
# Present only when systemd is the running init (sd_booted(3)).
SYSTEMD_RUN_DIR = Path("/run/systemd/system")
_SYSTEMCTL_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Reloader:
    """How to reach the daemon; the defaults are the real system's.

    Attributes:
        pid_files: the pid files to look for a live daemon in, in order.
        systemctl: the systemctl command.
        systemd_run_dir: the directory whose presence says systemd is init.
        service: the unit name.
    """

    pid_files: Sequence[Path]
    systemctl: Sequence[str] = ("systemctl",)
    systemd_run_dir: Path = SYSTEMD_RUN_DIR
    service: str = SERVICE_NAME

    def reload(self) -> str:
        """Makes the running daemon reload and says how it was reached.

        Raises:
            ReloadError: when no running daemon can be found or told.
        """
        for path in self.pid_files:
            pid = running_daemon_pid(path)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGHUP)
            except ProcessLookupError:
                continue  # it stopped between the lock test and now
            except PermissionError:
                raise ReloadError(
                    f"not allowed to signal the daemon (pid {pid} from {path}); "
                    "run as its user or root"
                ) from None
            return f"sent SIGHUP to the daemon (pid {pid} from {path})"
        if self.systemd_run_dir.is_dir() and self._systemctl("is-active", "--quiet") == 0:
            if self._systemctl("reload") != 0:
                raise ReloadError(f"`systemctl reload {self.service}` failed")
            return f"reloaded {self.service}.service with systemctl"
        looked = ", ".join(str(path) for path in self.pid_files)
        raise ReloadError(f"no running heartwire daemon found (no live pid file at {looked}, "
                          f"no active {self.service}.service)")

    def _systemctl(self, *arguments: str) -> int:
        try:
            finished = subprocess.run(
                [*self.systemctl, *arguments, self.service],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_SYSTEMCTL_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ReloadError(f"cannot run systemctl: {exc}") from None
        return finished.returncode
