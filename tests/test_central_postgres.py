"""``[storage] url`` on PostgreSQL: the config, the password, migrate, export and import."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from agent.central import config as central_config
from agent.central.storage import StorageSettings, open_storage
from agent.cli.main import EXIT_OK, EXIT_UNKNOWN, main
from agent.errors import ConfigError
from tests.central_postgres import PrivatePostgres
from tests.central_support import BASE_TIME, Messages, check_item, make_config, signed


def _write(directory: Path, storage: str) -> Path:
    path = directory / "central.toml"
    path.write_text(f"[storage]\nstate_dir = \"{directory / 'state'}\"\n{storage}\n")
    return path


@pytest.mark.parametrize(("storage", "key", "message"), [
    ('url = "postgresql://central:hunter2@db.example/central"', "storage.url",
     "must not hold a password; give it with password_file, password_env or "
     "password_credential"),
    ('url = "postgresql://central@db.example/central?password=hunter2"', "storage.url",
     "must not hold a password; give it with password_file, password_env or "
     "password_credential"),
    ('url = "mysql://db.example/central"', "storage.url",
     'expected "sqlite" or "postgresql://user@host:port/database"'),
    ('password_env = "PGPASS_FOR_TEST"', "storage.password_env",
     "a password needs a PostgreSQL url"),
])
def test_a_storage_url_never_holds_a_password(
    tmp_path: Path, storage: str, key: str, message: str
) -> None:
    path = _write(tmp_path, storage)
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert (caught.value.key, caught.value.message) == (key, message)
    assert "hunter2" not in str(caught.value)


def test_the_password_comes_from_a_private_file_and_is_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pg-password"
    secret.write_text("s3cret-for-the-role\n")
    os.chmod(secret, 0o600)
    path = _write(tmp_path, f'url = "postgresql://central@db.example:5433/central"\n'
                            f'password_file = "{secret}"')
    loaded = central_config.load(path)
    assert loaded.storage.url == "postgresql://central@db.example:5433/central"
    assert loaded.storage.password == "s3cret-for-the-role"
    assert "s3cret" not in repr(loaded) and "s3cret" not in repr(loaded.storage)


def test_a_receiver_logs_in_with_its_role_and_password(
    tmp_path: Path, postgres_server: PrivatePostgres
) -> None:
    # The README's recipe: a role that owns its database, password-authenticated.
    url = postgres_server.new_database()
    database = url.rsplit("/", 1)[1]
    postgres_server.psql("CREATE ROLE heartwire_test LOGIN PASSWORD 'role-password-1'")
    postgres_server.psql(f"ALTER DATABASE {database} OWNER TO heartwire_test")
    role_url = url.replace("postgres@", "heartwire_test@")
    wrong = StorageSettings(tmp_path, role_url, "not-the-password")
    with pytest.raises(Exception, match="password authentication failed") as caught:
        open_storage(wrong)
    assert "not-the-password" not in str(caught.value)
    store = open_storage(StorageSettings(tmp_path, role_url, "role-password-1"))
    try:
        assert store.schema_version() >= 1
    finally:
        store.close()


def test_migrate_reports_the_version_and_a_newer_schema_is_one_line_exit_3(
    tmp_path: Path, postgres_server: PrivatePostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    url = postgres_server.new_database()
    path = _write(tmp_path, f'url = "{url}"')
    assert main(["central", "migrate", "--config", str(path)]) == EXIT_OK
    assert capsys.readouterr().out.endswith(": schema version 1\n")
    postgres_server.psql("UPDATE heartwire_schema SET version = 99",
                         database=url.rsplit("/", 1)[1])
    assert main(["central", "migrate", "--config", str(path)]) == EXIT_UNKNOWN
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "has schema version 99, newer than the 1 this receiver knows" in err


def test_an_unreachable_database_is_one_line_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.servers import free_port

    path = _write(tmp_path, f'url = "postgresql://postgres@127.0.0.1:{free_port()}/none"')
    assert main(["central", "migrate", "--config", str(path)]) == EXIT_UNKNOWN
    err = capsys.readouterr().err
    assert err.startswith("heartwire: storage: cannot connect to postgresql://127.0.0.1:")
    assert err.count("\n") == 1


def test_a_sqlite_receivers_data_moves_into_postgresql(
    tmp_path: Path, postgres_server: PrivatePostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.central.server import Central

    sqlite_config = make_config(tmp_path)
    central = Central(sqlite_config, wall_clock=lambda: BASE_TIME)
    messages = Messages()
    for status in ("up", "down", "up", "down"):
        headers, body = signed(messages.heartbeat([check_item("db", status)]))
        assert central.ingest.handle(headers, body).status == 200
    headers, body = signed(messages.heartbeat(seq=9))
    assert central.ingest.handle(headers, body).status == 200
    before = {table: central.storage.count(table)
              for table in ("agents", "checks", "messages", "seq_gaps", "incidents")}
    central.storage.close()
    central.reader.close()
    assert before["incidents"] == 2 and before["seq_gaps"] == 1

    export = tmp_path / "export.jsonl"
    assert main(["central", "export", "--config", str(_write(tmp_path, "")), "--state-dir",
                 str(sqlite_config.state_dir), "--output", str(export)]) == EXIT_OK
    header = json.loads(export.read_text().splitlines()[0])
    assert header == {"format": "heartwire-central-export", "version": 1}

    url = postgres_server.new_database()
    target = tmp_path / "pg"
    target.mkdir()
    pg_config = _write(target, f'url = "{url}"')
    assert main(["central", "import", "--config", str(pg_config), str(export)]) == EXIT_OK
    assert "5 messages" in capsys.readouterr().out
    store = open_storage(central_config.load(pg_config).storage)
    try:
        after = {table: store.count(table) for table in before}
        assert after == before
        assert [gap[:2] for gap in store.seq_gaps("dc1")] == [(5, 9)]
        # New rows get ids past the imported ones.
        opened = store.open_incident("agent_silent", "dc1", "", "silent", "x", BASE_TIME)
        assert opened is not None and opened.id == 3
    finally:
        store.close()
    # A second import into the now full store is refused, and changes nothing.
    assert main(["central", "import", "--config", str(pg_config), str(export)]) == EXIT_UNKNOWN
    assert "already holds data" in capsys.readouterr().err
