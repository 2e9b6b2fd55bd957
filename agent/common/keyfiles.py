"""Private keys and secrets: where they come from and how they are kept private.

A secret is never written inline in the config (configs are often world-readable
and end up in backups and tickets); the config names where to find it:

* ``*_file = "/etc/heartwire/agent.key"``: a file that only its owner may read;
  a file readable (or writable) by group or others is refused, with the chmod fix;
* ``*_env = "HEARTWIRE_SIGNING_KEY"``: an environment variable;
* ``*_credential = "agent.key"``: a systemd credential, read from
  ``$CREDENTIALS_DIRECTORY/agent.key`` (``LoadCredential=`` / ``SetCredential=``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.common.tables import Table
from agent.errors import SecretFileError

CREDENTIALS_ENV_VAR: Final = "CREDENTIALS_DIRECTORY"
SOURCE_KINDS: Final = ("file", "env", "credential")
PRIVATE_MODE: Final = 0o600
# Where the packaged units' LoadCredential= take each credential prefix from
# (heartwire.service: heartwire:/etc/heartwire/credentials), so that a command run
# from a shell (validate, send-test) reads the same file the service will.
UNIT_CREDENTIALS: Final[Mapping[str, Path]] = {
    "heartwire_": Path("/etc/heartwire/credentials"),
    "central_": Path("/etc/heartwire/central-credentials"),
}


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where one secret is read from.

    Attributes:
        kind: "file", "env" or "credential".
        name: the path, the variable name or the credential name.
        key: the config key path that named it (for error messages).
    """

    kind: str
    name: str
    key: str = ""

    def describe(self) -> str:
        """``file /etc/heartwire/agent.key``, ``$HEARTWIRE_KEY`` or ``credential agent.key``."""
        if self.kind == "env":
            return f"${self.name}"
        return f"{self.kind} {self.name}"


def check_private(path: Path) -> None:
    """Refuses a key or secret file that group or others could read or change.

    Raises:
        SecretFileError: naming the file, its mode and the chmod that fixes it.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SecretFileError(f"{path}: not a regular file")
    if mode & 0o077:
        what = "readable" if mode & 0o044 else "writable"
        raise SecretFileError(
            f"{path} is {what} by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )


def read_private_file(path: Path) -> str:
    """The text of a key or secret file after :func:`check_private` accepted it.

    Raises:
        SecretFileError: the file is missing, unreadable, empty or not private.
    """
    check_private(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except PermissionError:
        raise SecretFileError(f"{path}: permission denied") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(f"{path}: cannot read: {exc}") from None
    if not text:
        raise SecretFileError(f"{path}: is empty")
    return text


def read_secret(
    source: SecretSource,
    environ: Mapping[str, str] = os.environ,
    *,
    unit_credentials: Mapping[str, Path] = UNIT_CREDENTIALS,
) -> str:
    """The secret's text, from its file, variable or systemd credential.

    Without ``$CREDENTIALS_DIRECTORY`` (outside the unit), a credential whose name
    starts with a prefix of ``unit_credentials`` is read from that directory, as
    the unit's ``LoadCredential=`` would load it.

    Raises:
        SecretFileError: the secret is missing, empty or in a file that is not private.
    """
    if source.kind == "env":
        value = environ.get(source.name, "").strip()
        if not value:
            raise SecretFileError(f"environment variable {source.name} is not set")
        return value
    if source.kind == "credential":
        directory = environ.get(CREDENTIALS_ENV_VAR)
        if not directory:
            for prefix, source_directory in unit_credentials.items():
                if source.name.startswith(prefix) and len(source.name) > len(prefix):
                    return read_private_file(source_directory / source.name[len(prefix) :])
            raise SecretFileError(
                f"credential {source.name!r} needs ${CREDENTIALS_ENV_VAR} "
                "(set by systemd LoadCredential=)"
            )
        return read_private_file(Path(directory) / source.name)
    return read_private_file(Path(source.name))


def write_private_file(path: Path, text: str, *, overwrite: bool = False) -> None:
    """Writes a new key file with mode 0600, created that way (never chmod-ed later).

    Raises:
        SecretFileError: the file exists (without ``overwrite``) or cannot be written.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, PRIVATE_MODE)
    except FileExistsError:
        raise SecretFileError(f"{path} already exists; remove it or pass --force") from None
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot write: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        # An existing file keeps its old mode under O_TRUNC: tighten it too.
        os.fchmod(handle.fileno(), PRIVATE_MODE)
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_sources(table: Table, prefix: str) -> tuple[SecretSource, ...]:
    """Reads ``<prefix>_file``, ``<prefix>_env`` and ``<prefix>_credential`` from a table.

    Each may be a string or an array of strings (several keys during a rotation).
    """
    sources: list[SecretSource] = []
    for kind in SOURCE_KINDS:
        key = f"{prefix}_{kind}"
        if not table.has(key):
            table.mark_read(key)
            continue
        if isinstance(table.raw[key], str):
            names: tuple[str, ...] = (table.nonempty_string(key),)
        else:
            names = table.string_list(key)
        sources += [SecretSource(kind, name, table.key_path(key)) for name in names]
    return tuple(sources)


def single_source(table: Table, prefix: str, *, required: bool) -> SecretSource | None:
    """The one source of a secret that takes exactly one: ``<prefix>_file``,
    ``<prefix>_env`` or ``<prefix>_credential`` (None when none is given and it is
    not ``required``).

    Raises:
        ConfigError: naming the key, when several are given or a required one is not.
    """
    sources = read_sources(table, prefix)
    if len(sources) > 1:
        raise table.error(f"{prefix}_file", f"give one of {prefix}_file, {prefix}_env or "
                          f"{prefix}_credential")
    if required and not sources:
        raise table.error(None, f"needs {prefix}_file, {prefix}_env or {prefix}_credential")
    return sources[0] if sources else None
