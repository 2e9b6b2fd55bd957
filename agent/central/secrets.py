"""Reading the receiver's secret files (HMAC secrets, channel tokens), privately."""

from __future__ import annotations

import stat
from pathlib import Path

from agent.errors import SecretFileError


def read_private_file(path: Path) -> str:
    """The stripped text of a file that only its owner may read or write.

    Raises:
        SecretFileError: the file is missing, unreadable, empty or open to group/others.
    """
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise SecretFileError(
                f"{path} is readable or writable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SecretFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"{path}: cannot read: {exc}") from None
    if not text:
        raise SecretFileError(f"{path}: is empty")
    return text
