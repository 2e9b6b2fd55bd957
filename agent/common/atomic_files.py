"""Writing and removing config files so that a crash never leaves half a file.

A write goes to a temporary file in the same directory (so the rename cannot cross
file systems), is flushed to disk, gets the mode and owner the file must keep, and
is then renamed over the old file; the directory is flushed too, so the rename
itself survives a power cut. Readers see the old file or the new one, never a mix.

Editors serialise on an exclusive ``flock`` of the config directory, so two scripts
editing at the same moment cannot lose each other's change (read, validate and
write all happen under the lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EditError

# Temporary files carry this prefix and suffix: the suffix keeps them out of the
# ``*.toml`` glob of the config loader, the prefix lets a later editor sweep the
# ones a crashed editor left behind.
TEMP_PREFIX = ".heartwire-"
TEMP_SUFFIX = ".tmp"
# How long an editor waits for another one before giving up.
DEFAULT_LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class FileOwnership:
    """Permission bits and owner a written file must have.

    Attributes:
        mode: permission bits (``0o640``).
        uid: owning user id.
        gid: owning group id.
    """

    mode: int
    uid: int
    gid: int

    @classmethod
    def of(cls, path: Path) -> FileOwnership:
        """The permission bits and owner of an existing file or directory."""
        info = path.stat()
        return cls(mode=info.st_mode & 0o7777, uid=info.st_uid, gid=info.st_gid)


def write_atomically(path: Path, content: bytes, ownership: FileOwnership) -> None:
    """Replaces ``path`` with ``content`` in one step, with the given mode and owner.

    Raises:
        OSError: when the directory is not writable, the disk is full, the owner
            cannot be set, ...; the old file is then untouched and the temporary
            file is removed.
    """
    descriptor, temporary = _open_temporary(path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            # Mode and owner are set before the rename so the file is never visible
            # with the wrong permissions (a secret-bearing file must never be 0644).
            os.fchmod(handle.fileno(), ownership.mode)
            info = os.fstat(handle.fileno())
            if (info.st_uid, info.st_gid) != (ownership.uid, ownership.gid):
                os.fchown(handle.fileno(), ownership.uid, ownership.gid)
                # chown clears set-id bits; put the mode back as it was asked for.
                os.fchmod(handle.fileno(), ownership.mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    sync_directory(path.parent)


def _open_temporary(directory: Path) -> tuple[int, Path]:
    """Creates a new, empty, private temporary file in ``directory``."""
    for _ in range(100):
        name = directory / f"{TEMP_PREFIX}{os.urandom(6).hex()}{TEMP_SUFFIX}"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


def remove_durably(path: Path) -> None:
    """Removes ``path`` and flushes its directory so the removal survives a crash."""
    path.unlink()
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Flushes a directory's entries (new, renamed and removed names) to disk."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sweep_temporaries(directory: Path) -> list[Path]:
    """Removes temporary files a crashed editor left in ``directory``.

    Only call this while holding :func:`locked_directory` on the config directory:
    then no other editor can be in the middle of a write.

    Returns:
        The files removed.
    """
    if not directory.is_dir():
        return []
    removed = []
    for leftover in directory.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
            removed.append(leftover)
    return removed


@contextlib.contextmanager
def locked_directory(
    directory: Path, *, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> Iterator[None]:
    """Holds an exclusive lock on ``directory`` for the duration of the block.

    The lock is a ``flock`` on the directory itself, so there is no lock file to
    leave behind or to get the permissions of wrong; the kernel drops it when the
    process dies, so a crashed editor never blocks the next one.

    Raises:
        EditError: when another editor holds the lock for longer than ``timeout_s``.
    """
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EditError(
                        str(directory),
                        None,
                        f"another heartwire edit has held the lock for {timeout_s:g}s; "
                        "nothing was written, try again",
                    ) from None
                time.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock
