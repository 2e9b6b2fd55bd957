"""What ``heartwire config show`` and ``heartwire checks list`` print.

``config show`` prints the effective config: every file merged, every default filled
in, secrets redacted. The JSON form is the :class:`~agent.config.Config` dataclasses
as they are (durations in seconds, ``interval_s``); the default form is TOML written
the way the config file is (``interval = "30s"``), with each check's source file and
line as a comment, so that it is itself a valid config.

Redaction is by key name, so that sections added later are covered without a list
to keep up to date. A value is replaced by ``"<redacted>"`` when its key, split
into words (``signing_key`` → signing, key; ``apiToken`` → api, token):

* contains token(s), secret(s), password(s), passwd, passphrase, credential(s),
  apikey, authorization or cookie, or
* ends with the word key or keys (``key``, ``signing_key``, ``private_keys``),

unless its last word is file, files, path, paths, dir or directory: a path to a
secret (``secret_file``, ``signing_key_file``) is shown, never the secret. In any
string, the password of a URL (``https://user:PASSWORD@host``) and the values of
query parameters whose names match the rule (``?token=...``) are redacted too.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import tomli_w

from agent import config
from agent.editing import CheckLocation
from agent.tables import format_duration

REDACTED = "<redacted>"
_SECRET_WORDS = frozenset({
    "token", "tokens", "secret", "secrets", "password", "passwords", "passwd",
    "passphrase", "credential", "credentials", "apikey", "authorization", "cookie",
})
_KEY_WORDS = frozenset({"key", "keys"})
_PATH_WORDS = frozenset({"file", "files", "path", "paths", "dir", "directory"})
_URL_PASSWORD = re.compile(r"(?P<user>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", re.IGNORECASE)
_QUERY_PARAMETER = re.compile(r"(?P<name>[?&;][^=&;#\s]+=)(?P<value>[^&;#\s]*)")
Plain = dict[str, object]


def is_secret_key(name: str) -> bool:
    """Whether a value stored under key ``name`` is redacted (see the module docstring)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    words = [word for word in re.split(r"[^a-z0-9]+", spaced) if word]
    if not words or words[-1] in _PATH_WORDS:
        return False
    return bool(_SECRET_WORDS.intersection(words)) or words[-1] in _KEY_WORDS


def redact_text(text: str) -> str:
    """Redacts URL passwords and secret-named query parameters inside a string."""
    text = _URL_PASSWORD.sub(rf"\g<user>{REDACTED}@", text)

    def parameter(match: re.Match[str]) -> str:
        name = match.group("name")
        return name + REDACTED if is_secret_key(name[1:-1]) else match.group(0)

    return _QUERY_PARAMETER.sub(parameter, text) if "?" in text else text


def to_plain(value: object, key: str | None = None) -> object:
    """Turns config values (dataclasses, paths, tuples, ...) into JSON-ready data, redacted."""
    if key is not None and value is not None and is_secret_key(key):
        return REDACTED
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: to_plain(getattr(value, item.name), item.name)
            for item in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(name): to_plain(item, str(name)) for name, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return to_plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def effective_json(loaded: config.Config) -> Plain:
    """The effective config as JSON-ready data (``config show --json``)."""
    plain = to_plain(loaded)
    assert isinstance(plain, dict)
    return plain


def effective_toml(loaded: config.Config) -> str:
    """The effective config as TOML in the config file's own terms (``config show``)."""
    plain = effective_json(loaded)
    files = plain.pop("files", [])
    assert isinstance(files, list)
    parts = ["# The effective heartwire config, read from:\n"]
    parts += [f"#   {file}\n" for file in files]
    for section, value in plain.items():
        if isinstance(value, dict):
            parts.append("\n" + tomli_w.dumps({section: _toml_table(value)}))
        elif _is_named_tables(value):
            assert isinstance(value, list)
            for item in value:
                parts.append("\n" + _named_table(section, item))
        elif value is not None:
            parts.append(tomli_w.dumps({section: value}))
    return "".join(parts)


def _is_named_tables(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value
    )


def _named_table(section: str, item: Plain) -> str:
    """One ``[section.NAME]`` table, with where it came from as a comment."""
    table = dict(item)
    name = str(table.pop("name"))
    source = table.pop("source", None)
    comment = ""
    if isinstance(source, str) and source:
        line = config.definition_line(source, section, name)
        comment = f"# from {source}{f':{line}' if line else ''}\n"
    return comment + tomli_w.dumps({section: {name: _toml_table(table)}})


def _toml_table(plain: Plain) -> Plain:
    """Field names back to file keys: ``interval_s: 30.0`` → ``interval = "30s"``.

    None (not set) is left out, as TOML has no null; ``options`` (a kind's own
    keys) sit in the check's table in the file, so they are flattened back into it.
    """
    table: Plain = {}
    for name, value in plain.items():
        if value is None:
            continue
        if name == "options" and isinstance(value, dict):
            table.update(_toml_table(value))
        elif name.endswith("_s") and isinstance(value, int | float) and value is not True:
            table[name[:-2]] = format_duration(float(value))
        elif isinstance(value, dict):
            table[name] = _toml_table(value)
        else:
            table[name] = value
    return table


def check_rows(loaded: config.Config, locations: Sequence[CheckLocation]) -> list[Plain]:
    """One row per check for ``checks list``: what it checks and where it is defined."""
    where = {location.name: location for location in locations}
    rows: list[Plain] = []
    for check in loaded.checks:
        location = where.get(check.name)
        rows.append({
            "name": check.name,
            "kind": check.kind,
            "host": check.host,
            "port": check.port,
            "interval_s": check.interval_s,
            "timeout_s": check.timeout_s,
            "group": check.group,
            "tags": list(check.tags),
            "file": check.source,
            "line": location.line if location else None,
            "main_file": location.in_main_file if location else False,
            "managed": location.managed if location else False,
        })
    return rows


def format_check_rows(rows: Sequence[Plain]) -> str:
    """The ``checks list`` table: one line per check, columns aligned."""
    lines = [("NAME", "KIND", "TARGET", "INTERVAL", "GROUP", "DEFINED IN")]
    for row in rows:
        host = str(row["host"])
        target = f"[{host}]:{row['port']}" if ":" in host else f"{host}:{row['port']}"
        interval = row["interval_s"]
        defined_in = f"{row['file']}:{row['line']}" if row["line"] else str(row["file"])
        if row["managed"]:
            defined_in += " (managed)"
        lines.append((
            str(row["name"]),
            str(row["kind"]),
            target,
            format_duration(interval) if isinstance(interval, float) else "-",
            str(row["group"] or "-"),
            defined_in,
        ))
    widths = [max(len(line[column]) for line in lines) for column in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
