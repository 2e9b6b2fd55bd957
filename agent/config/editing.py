"""Command-line edits of the checks, made so they can never break the config.

The hand-edited main file is never rewritten: ``checks add`` writes one drop-in per
check (``conf.d/50-check-NAME.toml``, with tomli-w), and ``checks set`` / ``checks
remove`` only touch drop-ins heartwire wrote itself (they start with
:data:`MANAGED_HEADER`). A check defined in the main file, or in a drop-in written
by hand, gets an error naming the file and line to edit instead.

Every edit follows the same steps, under an exclusive lock of the config directory:

1. read the main file and every drop-in as they are now;
2. build the documents as they would be after the edit, rendered to the exact
   bytes that would be written and read back;
3. validate the whole would-be config with :func:`agent.config.loader.parse`, the code the
   daemon and ``heartwire validate`` run, so an edit that would make the config
   invalid fails with the same one-line error and writes nothing;
4. write (or remove) the one drop-in, atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from agent.common.atomic_files import (
    DEFAULT_LOCK_TIMEOUT_S,
    FileOwnership,
    locked_directory,
    remove_durably,
    sweep_temporaries,
    sync_directory,
    write_atomically,
)
from agent.common.names import NAME_RULE, is_valid_name
from agent.common.tables import loads_bounded, read_toml
from agent.config import loader as config
from agent.errors import ConfigError, EditError, UsageError

SECTION = "checks"
DROPIN_PREFIX = "50-check-"
# The first line of every drop-in heartwire writes; only such files are rewritten.
MANAGED_HEADER = (
    "# Written by `heartwire checks`; `heartwire checks set` rewrites this file "
    "(hand edits are lost).\n"
)
# Keys that may be given on the command line: plain TOML bare keys.
_KEY = re.compile(r"[A-Za-z0-9_-]+")

Documents = dict[Path, dict[str, object]]


@dataclass(frozen=True, slots=True)
class CheckLocation:
    """Where one check is defined.

    Attributes:
        name: the check's name.
        file: the file holding its ``[checks.NAME]`` table.
        line: the line of that table's header, or None when it cannot be found.
        in_main_file: whether that file is the hand-edited main file.
        managed: whether the file is a drop-in heartwire wrote (and so may rewrite).
    """

    name: str
    file: Path
    line: int | None
    in_main_file: bool
    managed: bool


@dataclass(frozen=True, slots=True)
class EditResult:
    """What an edit did.

    Attributes:
        action: "added", "updated" or "removed".
        file: the drop-in written or removed.
        config: the validated config as it now is on disk.
    """

    action: str
    file: Path
    config: config.Config


def dropin_path(main_file: Path, name: str) -> Path:
    """The drop-in ``checks add`` writes for check ``name``.

    Raises:
        UsageError: when ``name`` is not a valid check name (it becomes a file name).
    """
    if not is_valid_name(name):
        raise UsageError(f"check name {NAME_RULE}, got {name!r}")
    return main_file.parent / config.DROPIN_DIR / f"{DROPIN_PREFIX}{name}.toml"


def parse_value(text: str) -> object:
    """Reads a command-line value: a TOML value when it is one, else a plain string.

    ``5432`` is an integer, ``true`` a boolean, ``["a", "b"]`` an array and
    ``"30s"`` a string; anything that is not a TOML value (``db1.internal``,
    ``30s``, ``::1``) is taken as the string it reads as.

    Raises:
        UsageError: for a value nested more than :data:`~agent.common.tables.MAX_NESTING` deep.
    """
    try:
        return loads_bounded(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
    except ValueError as exc:  # nested too deeply
        raise UsageError(f"value {exc}") from None


def parse_assignments(assignments: Iterable[str]) -> dict[str, object | None]:
    """Turns ``KEY=VALUE`` arguments into changes; ``KEY=`` (empty) unsets the key.

    Raises:
        UsageError: for an argument without ``=`` or a key that is not a plain name.
    """
    changes: dict[str, object | None] = {}
    for assignment in assignments:
        key, equals, value = assignment.partition("=")
        key = key.strip()
        if not equals or not _KEY.fullmatch(key):
            raise UsageError(f"expected KEY=VALUE with a plain key, got {assignment!r}")
        changes[key] = parse_value(value) if value else None
    return changes


def is_managed(path: Path) -> bool:
    """Whether ``path`` is a drop-in heartwire wrote (and may therefore rewrite)."""
    try:
        with path.open("rb") as handle:
            return handle.read(len(MANAGED_HEADER.encode())) == MANAGED_HEADER.encode()
    except OSError:
        return False


def render_dropin(checks: Mapping[str, Mapping[str, object]]) -> bytes:
    """The exact bytes of a managed drop-in holding ``checks``."""
    return (MANAGED_HEADER + tomli_w.dumps({SECTION: checks})).encode()


def locate_checks(main_file: Path) -> list[CheckLocation]:
    """Where every check of the current config is defined, main file first.

    Raises:
        ConfigError: when a file cannot be read or is not valid TOML.
    """
    return [
        _location(main_file, file, name)
        for file, document in _read_documents(main_file).items()
        for name in _check_tables(document)
    ]


def add_check(
    main_file: Path,
    name: str,
    settings: Mapping[str, object],
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> EditResult:
    """Adds check ``name`` in a new drop-in, if the whole config stays valid.

    Raises:
        UsageError: for an invalid name.
        EditError: when the check or its drop-in already exists.
        ConfigError: when the config would be invalid (nothing is written).
    """
    target = dropin_path(main_file, name)
    with _editing(main_file, lock_timeout_s):
        documents = _read_documents(main_file)
        existing = _find(main_file, documents, name)
        if existing is not None:
            raise EditError(str(existing.file), existing.line,
                            f"check {name!r} is already defined here")
        if target.exists():
            raise EditError(str(target), None, "already exists; remove it or pick another name")
        content = render_dropin({name: dict(settings)})
        validated = _validate(main_file, {**documents, target: _reread(content)})
        _make_dropin_directory(main_file)
        # A new drop-in gets the main file's owner and mode, so that whoever may read
        # the main file may read it too, and nobody else.
        main = FileOwnership.of(main_file)
        write_atomically(target, content, FileOwnership(main.mode & 0o666, main.uid, main.gid))
    return EditResult("added", target, validated)


def set_check(
    main_file: Path,
    name: str,
    changes: Mapping[str, object | None],
    *,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> EditResult:
    """Changes keys of drop-in check ``name`` (None unsets a key), if the config stays valid.

    Raises:
        UsageError: when there is no such check.
        EditError: when the check is in the main file or a hand-written drop-in.
        ConfigError: when the config would be invalid (nothing is written).
    """
    with _editing(main_file, lock_timeout_s):
        documents = _read_documents(main_file)
        location = _rewritable(main_file, documents, name, "change")
        checks = _check_tables(documents[location.file])
        table = dict(checks[name])
        for key, value in changes.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        content = render_dropin({**checks, name: table})
        validated = _validate(main_file, {**documents, location.file: _reread(content)})
        write_atomically(location.file, content, FileOwnership.of(location.file))
    return EditResult("updated", location.file, validated)


def remove_check(
    main_file: Path, name: str, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
) -> EditResult:
    """Removes drop-in check ``name``: its whole drop-in when it holds nothing else.

    Raises:
        UsageError: when there is no such check.
        EditError: when the check is in the main file, or in a hand-written drop-in
            that holds other checks too.
        ConfigError: when the config would be invalid (nothing is removed).
    """
    with _editing(main_file, lock_timeout_s):
        documents = _read_documents(main_file)
        location = _find_or_fail(main_file, documents, name)
        _refuse_main_file(main_file, location, "remove")
        document = documents[location.file]
        section = document.get(SECTION)
        if document.keys() == {SECTION} and isinstance(section, dict) and section.keys() == {name}:
            remaining = {file: doc for file, doc in documents.items() if file != location.file}
            validated = _validate(main_file, remaining)
            remove_durably(location.file)
            return EditResult("removed", location.file, validated)
        location = _rewritable(main_file, documents, name, "remove")
        others = {key: table for key, table in _check_tables(document).items() if key != name}
        content = render_dropin(others)
        validated = _validate(main_file, {**documents, location.file: _reread(content)})
        write_atomically(location.file, content, FileOwnership.of(location.file))
    return EditResult("removed", location.file, validated)


@contextlib.contextmanager
def _editing(main_file: Path, lock_timeout_s: float) -> Iterator[None]:
    """The lock every edit holds, plus the sweep of a crashed editor's leftovers."""
    if not main_file.parent.is_dir():
        raise ConfigError(str(main_file), None, "no such file")
    with locked_directory(main_file.parent, timeout_s=lock_timeout_s):
        sweep_temporaries(main_file.parent / config.DROPIN_DIR)
        yield


def _read_documents(main_file: Path) -> Documents:
    """The main file and its drop-ins as TOML documents, in the order they are read."""
    documents = {main_file: read_toml(main_file)}
    for dropin in config.dropin_files(main_file):
        documents[dropin] = read_toml(dropin)
    return documents


def _validate(main_file: Path, documents: Documents) -> config.Config:
    """Validates would-be documents in the order the loader would read them."""
    dropins = sorted(file for file in documents if file != main_file)
    ordered = [(str(file), documents[file]) for file in [main_file, *dropins]]
    return config.parse(ordered)


def _reread(content: bytes) -> dict[str, object]:
    """Reads back rendered bytes, so validation sees exactly what would be written."""
    return tomllib.loads(content.decode())


def _check_tables(document: Mapping[str, object]) -> dict[str, Mapping[str, object]]:
    """The ``[checks.*]`` tables of one document (malformed ones are left to validation)."""
    section = document.get(SECTION)
    if not isinstance(section, dict):
        return {}
    return {name: table for name, table in section.items() if isinstance(table, dict)}


def _location(main_file: Path, file: Path, name: str) -> CheckLocation:
    in_main = file == main_file
    return CheckLocation(
        name=name,
        file=file,
        line=config.definition_line(file, SECTION, name),
        in_main_file=in_main,
        managed=not in_main and is_managed(file),
    )


def _find(main_file: Path, documents: Documents, name: str) -> CheckLocation | None:
    for file, document in documents.items():
        if name in _check_tables(document):
            return _location(main_file, file, name)
    return None


def _find_or_fail(main_file: Path, documents: Documents, name: str) -> CheckLocation:
    location = _find(main_file, documents, name)
    if location is None:
        known = ", ".join(sorted(n for doc in documents.values() for n in _check_tables(doc)))
        raise UsageError(f"no check named {name!r} in {main_file} (known: {known or 'none'})")
    return location


def _refuse_main_file(main_file: Path, location: CheckLocation, verb: str) -> None:
    if location.in_main_file:
        raise EditError(
            str(location.file),
            location.line,
            f"check {location.name!r} is defined in the main file, which heartwire never "
            f"rewrites; {verb} it there by hand",
        )


def _rewritable(main_file: Path, documents: Documents, name: str, verb: str) -> CheckLocation:
    """The location of ``name`` if heartwire may rewrite its file, else an EditError."""
    location = _find_or_fail(main_file, documents, name)
    _refuse_main_file(main_file, location, verb)
    if not location.managed:
        raise EditError(
            str(location.file),
            location.line,
            f"check {name!r} is in a drop-in written by hand, which heartwire does not "
            f"rewrite; {verb} it there by hand",
        )
    return location


def _make_dropin_directory(main_file: Path) -> None:
    """Creates ``conf.d`` with the mode and owner of the main file's directory."""
    directory = main_file.parent / config.DROPIN_DIR
    if directory.is_dir():
        return
    parent = FileOwnership.of(main_file.parent)
    directory.mkdir(mode=0o700)
    os.chown(directory, parent.uid, parent.gid)
    os.chmod(directory, parent.mode)
    sync_directory(main_file.parent)
