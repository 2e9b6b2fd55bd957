"""Moving a receiver's data between stores: ``heartwire central export`` / ``import``.

The export is JSON Lines: a header ``{"format": "heartwire-central-export", "version":
1}``, then for each table a line ``{"table": NAME, "columns": [...]}`` followed by one
JSON array per row. Rows stream both ways (a cursor on the way out, batches of
:data:`BATCH_ROWS` on the way in), so memory stays bounded however large the
history. Rows keep their ids; the import goes into an empty store only, in one
transaction, so a failed import leaves the store as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, Final, TextIO

from agent.central.storage import TABLES, Storage
from agent.errors import HeartwireError

FORMAT: Final = "heartwire-central-export"
VERSION: Final = 1
BATCH_ROWS: Final = 500
# One row is a heartbeat's JSON at most (bounded by [server] max_body_bytes).
MAX_LINE_CHARS: Final = 64 * 1024 * 1024


class TransferError(HeartwireError):
    """An export file that cannot be imported (or a store that must not take it)."""


def export(store: Storage, out: TextIO) -> dict[str, int]:
    """Writes every table of ``store`` to ``out``; returns the rows written, by table."""
    out.write(json.dumps({"format": FORMAT, "version": VERSION}) + "\n")
    written: dict[str, int] = {}
    for table in TABLES:
        columns, rows = store.rows(table)
        out.write(json.dumps({"table": table, "columns": columns}) + "\n")
        written[table] = 0
        for row in rows:
            out.write(json.dumps(list(row), separators=(",", ":")) + "\n")
            written[table] += 1
    return written


def _lines(lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(lines, start=1):
        if len(line) > MAX_LINE_CHARS:
            raise TransferError(f"line {number}: longer than {MAX_LINE_CHARS} characters")
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            raise TransferError(f"line {number}: not JSON: {exc}") from None


def import_rows(store: Storage, lines: Iterable[str]) -> dict[str, int]:
    """Loads an export into ``store``, which must hold no row of any exported table yet.

    Returns:
        The rows loaded, by table.

    Raises:
        TransferError: the file is not an export, names an unknown table or
            column, or the store is not empty.
    """
    held = [table for table in TABLES if store.count(table)]
    if held:
        raise TransferError(f"the target store already holds data ({', '.join(held)}); "
                            "import into an empty one")
    loaded: dict[str, int] = {}
    parsed = _lines(lines)
    first = next(parsed, None)
    if first is None or not isinstance(first[1], dict) or first[1].get("format") != FORMAT:
        raise TransferError(f"not a {FORMAT} file")
    if first[1].get("version") != VERSION:
        raise TransferError(f"export version {first[1].get('version')!r} is not {VERSION}")
    table: str | None = None
    columns: list[str] = []
    batch: list[list[Any]] = []
    with store.transaction():
        for number, value in parsed:
            if isinstance(value, dict):
                if table is not None:
                    store.insert_rows(table, columns, batch)
                batch = []
                table, columns = _table_header(store, number, value)
                loaded[table] = 0
                continue
            if table is None or not isinstance(value, list) or len(value) != len(columns):
                raise TransferError(f"line {number}: expected a row of {len(columns)} values")
            batch.append(value)
            loaded[table] += 1
            if len(batch) >= BATCH_ROWS:
                store.insert_rows(table, columns, batch)
                batch = []
        if table is not None:
            store.insert_rows(table, columns, batch)
        store.after_import()
    return loaded


def _table_header(store: Storage, number: int, value: dict[str, Any]) -> tuple[str, list[str]]:
    table, columns = value.get("table"), value.get("columns")
    if table not in TABLES:
        raise TransferError(f"line {number}: unknown table {table!r}")
    known = store.columns(table)
    if not isinstance(columns, list) or not all(column in known for column in columns):
        raise TransferError(f"line {number}: columns of {table} are not {sorted(known)}")
    return table, columns
