"""The daemon's pid file, so that ``heartwire checks ... --reload`` can find it.

The file is ``$RUNTIME_DIRECTORY/heartwire.pid`` when systemd gives the service a
runtime directory, else ``<state_dir>/heartwire.pid``. The daemon holds an exclusive
``flock`` on it for as long as it runs and removes it when it stops. A reader
trusts the pid only while that lock is held, so a file left behind by a killed
daemon (whose pid may since belong to some other process) is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from agent.errors import AlreadyRunning

PID_FILE_NAME = "heartwire.pid"
RUNTIME_DIRECTORY_ENV = "RUNTIME_DIRECTORY"


def pid_file_path(state_dir: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the daemon writes its pid: the systemd runtime directory, else ``state_dir``."""
    # systemd passes a colon-separated list when a unit names several directories.
    runtime = environ.get(RUNTIME_DIRECTORY_ENV, "").split(":")[0]
    return (Path(runtime) if runtime else state_dir) / PID_FILE_NAME


@contextlib.contextmanager
def hold_pid_file(path: Path) -> Iterator[None]:
    """Writes this process's pid to ``path``, locked, and removes it on the way out.

    Raises:
        AlreadyRunning: when a live daemon already holds ``path``.
        OSError: when the file cannot be created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(descriptor, 32).decode(errors="replace").strip() or "?"
            raise AlreadyRunning(
                f"another heartwire daemon (pid {other}) is running with pid file {path}"
            ) from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        os.fsync(descriptor)
        try:
            yield
        finally:
            # Unlink while still holding the lock: nobody can lock the old file and
            # take it for a live daemon in between.
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    finally:
        os.close(descriptor)


def running_daemon_pid(path: Path) -> int | None:
    """The pid of the live daemon holding ``path``, or None when there is none."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(descriptor, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        return None  # nobody holds it: a stale file
    finally:
        os.close(descriptor)
