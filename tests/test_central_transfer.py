"""heartwire central export/import on SQLite stores, against files an operator may hold."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agent.central.storage import Storage, StorageError, StorageSettings, open_storage
from agent.central.transfer import TransferError, export, import_rows


def _store_with_an_agent(directory: Path) -> Storage:
    store = open_storage(StorageSettings(directory))
    with store.transaction():
        store.insert_rows("agents", ["id", "first_seen", "last_seq"], [["a1", 1.0, 0]])
    return store


def test_an_export_of_a_fresh_store_imports_into_another(tmp_path: Path) -> None:
    source = _store_with_an_agent(tmp_path / "a")
    out = io.StringIO()
    export(source, out)
    target = open_storage(StorageSettings(tmp_path / "b"))
    loaded = import_rows(target, out.getvalue().splitlines())
    assert loaded["agents"] == 1 and target.count("agents") == 1


def test_a_store_that_holds_data_is_refused_by_name(tmp_path: Path) -> None:
    store = _store_with_an_agent(tmp_path / "a")
    out = io.StringIO()
    export(store, out)
    with pytest.raises(TransferError, match=r"already holds data \(agents\)"):
        import_rows(store, out.getvalue().splitlines())


def test_a_row_the_file_holds_twice_is_one_line_and_nothing_is_loaded(tmp_path: Path) -> None:
    out = io.StringIO()
    export(_store_with_an_agent(tmp_path / "a"), out)
    lines = out.getvalue().splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith('["a1"'))
    lines.insert(row, lines[row])
    target = open_storage(StorageSettings(tmp_path / "b"))
    with pytest.raises(StorageError, match=r"^agents: UNIQUE constraint failed"):
        import_rows(target, lines)
    assert target.count("agents") == 0
    assert json.loads(lines[0])["format"]  # the file itself was an export
