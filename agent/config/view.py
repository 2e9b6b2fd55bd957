"""What ``heartwire config show`` and ``heartwire checks list`` print.

``config show`` prints the effective config: every file merged, every default filled
in, secrets redacted. The default form is TOML in the config file's own terms
(``interval = "30s"``, a kind's own keys in the check's table), with each check's
source file and line as a comment: exactly the keys the config readers know and the
values they used (see :meth:`agent.common.tables.Table.effective`), so it is itself a valid
config. The JSON form is the :class:`~agent.config.loader.Config` dataclasses as they are
(durations in seconds, ``interval_s``).

Redaction is by key name, so that sections added later are covered without a list
to keep up to date. A value is replaced by ``"<redacted>"`` when its key, split
into words (``signing_key`` → signing, key; ``apiToken`` → api, token):

* contains token(s), secret(s), password(s), passwd, passphrase, credential(s),
  apikey, authorization or cookie, or
* ends with the word key or keys (``key``, ``signing_key``, ``private_keys``),

unless it has more than one word and its last word is file, files, path, paths, dir,
directory, env or credential: that names where a secret is (``secret_file``,
``signing_key_env``, ``ping_key_credential``), never the secret, and is shown, so the
output still reads the same secrets when it is used as a config. Under a secret key
a table keeps its keys and loses its values (``push_tokens.web``). In any string, the
password of a URL (``https://user:PASSWORD@host``) and the values of query
parameters named like a secret (``?token=...``, ``?sig=...``: the one rule of
:func:`agent.common.redact.is_secret_query_name`, which send-test and the log lines
use too) are redacted too; a URL that
is a secret as a whole (Better Stack's heartbeat URLs, Healthchecks check UUIDs)
loses the part that is the secret (:func:`redact_secret_url`).
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import tomli_w

from agent.common.names import is_uuid
from agent.common.redact import is_secret_query_name
from agent.common.tables import format_duration
from agent.config import loader as config
from agent.config.destinations import DestinationConfig
from agent.config.editing import CheckLocation

REDACTED = "<redacted>"
_SECRET_WORDS = frozenset({
    "token", "tokens", "secret", "secrets", "password", "passwords", "passwd",
    "passphrase", "credential", "credentials", "apikey", "authorization", "cookie",
})
_KEY_WORDS = frozenset({"key", "keys"})
# The last word of a key that holds where a secret is, not the secret itself.
_REFERENCE_WORDS = frozenset({
    "file", "files", "path", "paths", "dir", "directory", "env", "credential",
})
_URL_PASSWORD = re.compile(r"(?P<user>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@", re.IGNORECASE)
_QUERY_PARAMETER = re.compile(r"(?P<name>[?&;][^=&;#\s]+=)(?P<value>[^&;#\s]*)")
# Destination kinds whose URLs are secrets as a whole (whoever has one can ping),
# and the keys that hold them.
_SECRET_URL_KEYS = {"betterstack": ("url", "check_urls")}
Plain = dict[str, object]


def is_secret_key(name: str) -> bool:
    """Whether a value stored under key ``name`` is redacted (see the module docstring)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    words = [word for word in re.split(r"[^a-z0-9]+", spaced) if word]
    if not words or (len(words) > 1 and words[-1] in _REFERENCE_WORDS):
        return False
    if words[-1] in _REFERENCE_WORDS - {"credential"}:
        return False  # a bare "file" or "path"
    return bool(_SECRET_WORDS.intersection(words)) or words[-1] in _KEY_WORDS


def redact_text(text: str) -> str:
    """Redacts URL passwords and secret-named query parameters inside a string."""
    text = _URL_PASSWORD.sub(rf"\g<user>{REDACTED}@", text)

    def parameter(match: re.Match[str]) -> str:
        name = match.group("name")
        return name + REDACTED if is_secret_query_name(name[1:-1]) else match.group(0)

    return _QUERY_PARAMETER.sub(parameter, text) if "?" in text else text


def redact_secret_url(url: str) -> str:
    """A URL whose path ends in a secret (a Better Stack heartbeat URL), made harmless.

    The last path segment is replaced, and the password and query values go as in
    :func:`redact_text`: ``https://uptime.betterstack.com/api/v1/heartbeat/<redacted>``.
    The result is still a URL, so the shown config stays valid. This is the one
    place that decides how such a URL is shown.
    """
    parts = urlsplit(redact_text(url))
    head, _, last = parts.path.rstrip("/").rpartition("/")
    path = f"{head}/{REDACTED}" if last else parts.path
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def to_plain(value: object, key: str | None = None) -> object:
    """Turns config values (dataclasses, paths, tuples, ...) into JSON-ready data, redacted."""
    if key is not None and value is not None and is_secret_key(key):
        return REDACTED
    if isinstance(value, DestinationConfig) and value.kind in _SECRET_URL_KEYS:
        value = dataclasses.replace(value, url=redact_secret_url(value.url))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            item.name: to_plain(getattr(value, item.name), item.name)
            for item in dataclasses.fields(value)
            if not item.metadata.get("internal")
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
    """The effective config as TOML in the config file's own terms (``config show``).

    Fed back to ``heartwire validate`` it is accepted and means the same config,
    except that a secret written inline (a push token, a Better Stack URL) reads as
    ``<redacted>``; secrets named by file, environment variable or credential are
    shown as those names and keep working.
    """
    document = dict(loaded.effective)
    sources = {check.name: check.source for check in loaded.checks}
    parts = ["# The effective heartwire config, read from:\n"]
    parts += [f"#   {file}\n" for file in loaded.files]
    for section, value in document.items():
        if section == "checks" and isinstance(value, Mapping):
            for name, table in value.items():
                parts.append("\n" + _source_comment(section, name, sources.get(name, "")))
                parts.append(tomli_w.dumps({section: {name: redact_table(table)}}))
        elif section == "destinations" and isinstance(value, Mapping):
            for name, table in value.items():
                parts.append("\n" + tomli_w.dumps({section: {name: _redact_destination(table)}}))
        elif isinstance(value, Mapping):
            parts.append("\n" + tomli_w.dumps({section: redact_table(value)}))
    return "".join(parts)


def redact_table(value: object, key: str | None = None) -> object:
    """A TOML value with every secret redacted by key name, its shape kept.

    Under a secret key, a table keeps its keys (``push_tokens.web``) and an array
    its length, so the result still reads as a config of the same shape.
    """
    if key is not None and is_secret_key(key):
        return _redacted_leaves(value)
    if isinstance(value, Mapping):
        return {str(name): redact_table(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [redact_table(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _redacted_leaves(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(name): _redacted_leaves(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_redacted_leaves(item) for item in value]
    return REDACTED


def _redact_destination(table: object) -> object:
    """One destination's table: by key name, then what its kind makes secret."""
    redacted = redact_table(table)
    if not isinstance(redacted, dict):
        return redacted
    kind = redacted.get("kind")
    for key in _SECRET_URL_KEYS.get(str(kind), ()):
        value = redacted.get(key)
        if isinstance(value, str):
            redacted[key] = redact_secret_url(value)
        elif isinstance(value, dict):
            redacted[key] = {name: redact_secret_url(url) if isinstance(url, str) else url
                             for name, url in value.items()}
    if kind == "healthchecks":
        # A check UUID needs no ping key: it is all it takes to ping that check.
        if isinstance(redacted.get("check"), str) and is_uuid(str(redacted["check"])):
            redacted["check"] = REDACTED
        per_check = redacted.get("checks")
        if isinstance(per_check, dict):
            redacted["checks"] = {
                name: REDACTED if isinstance(slug, str) and is_uuid(slug) else slug
                for name, slug in per_check.items()
            }
    return redacted


def _source_comment(section: str, name: str, source: str) -> str:
    """``# from FILE:LINE`` for a check, when its file is known."""
    if not source:
        return ""
    line = config.definition_line(source, section, name)
    return f"# from {source}{f':{line}' if line else ''}\n"


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
