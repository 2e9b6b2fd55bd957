"""``heartwire checks add/list/set/remove`` on real config directories."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks import PROBES
from agent.cli import main as cli
from agent.common.atomic_files import locked_directory
from agent.config import editing
from agent.config import loader as config
from agent.errors import EditError
from tests.config_dirs import snapshot, write_main
from tests.netutil import open_port, refused_port


class Heartwire:
    """Runs the command in-process against one config directory and keeps its output."""

    def __init__(self, main: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.main = main
        self.capsys = capsys
        self.stdout = ""
        self.stderr = ""

    def __call__(self, *arguments: str) -> int:
        code = cli.main([*arguments, "--config", str(self.main)])
        captured = self.capsys.readouterr()
        self.stdout, self.stderr = captured.out, captured.err
        return code

    def json(self, *arguments: str) -> object:
        assert self(*arguments, "--json") in (0, 1, 2), self.stderr
        return json.loads(self.stdout)


@pytest.fixture
def db_port() -> Iterator[int]:
    with open_port() as port:
        yield port


@pytest.fixture
def main(tmp_path: Path, db_port: int) -> Path:
    return write_main(tmp_path, port=db_port)


@pytest.fixture
def heartwire(main: Path, capsys: pytest.CaptureFixture[str]) -> Heartwire:
    return Heartwire(main, capsys)


def dropin(main: Path, name: str) -> Path:
    return main.parent / "conf.d" / f"50-check-{name}.toml"


def statuses(heartwire: Heartwire) -> dict[str, tuple[str, str]]:
    rows = heartwire.json("check")
    assert isinstance(rows, list)
    return {row["name"]: (row["status"], row["reason"]) for row in rows}


def test_round_trip_add_list_set_remove(heartwire: Heartwire, main: Path) -> None:
    original = main.read_bytes()
    web = dropin(main, "web")
    with open_port() as web_port:
        assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", str(web_port),
                         "--interval", "10s", "--tag", "http", "--group", "Web") == 0
        assert heartwire.stdout == f"added check 'web': {web}\n"

        assert heartwire("validate") == 0
        assert heartwire.stdout == f"{main}: OK, 2 checks from 2 files\n"
        assert statuses(heartwire) == {"db": ("up", "open"), "web": ("up", "open")}
        listed = heartwire.json("checks", "list")
        assert listed == [
            {"name": "db", "kind": "tcp", "host": "127.0.0.1", "port": listed[0]["port"],  # type: ignore[index]
             "interval_s": 30.0, "timeout_s": 2.0, "group": "Databases", "tags": [],
             "file": str(main), "line": 11, "main_file": True, "managed": False},
            {"name": "web", "kind": "tcp", "host": "127.0.0.1", "port": web_port,
             "interval_s": 10.0, "timeout_s": 2.0, "group": "Web", "tags": ["http"],
             "file": str(web), "line": 2, "main_file": False, "managed": True},
        ]

    # Point the check at a port nothing listens on.
    with refused_port() as refused:
        assert heartwire("checks", "set", "web", f"port={refused}", "timeout=1s") == 0
        assert heartwire.stdout == f"updated check 'web': {web}\n"
        assert statuses(heartwire) == {"db": ("up", "open"), "web": ("down", "refused")}
    [web_row] = [row for row in heartwire.json("checks", "list") if row["name"] == "web"]  # type: ignore[union-attr]
    assert (web_row["port"], web_row["timeout_s"]) == (refused, 1.0)

    assert heartwire("checks", "remove", "web") == 0
    assert heartwire.stdout == f"removed check 'web': {web}\n"
    assert not web.exists()
    assert heartwire("validate") == 0
    assert heartwire.stdout == f"{main}: OK, 1 check from 1 file\n"
    assert statuses(heartwire) == {"db": ("up", "open")}
    assert main.read_bytes() == original


def test_added_dropin_is_one_managed_file_with_typed_values(heartwire: Heartwire,
                                                            main: Path) -> None:
    assert heartwire("checks", "add", "cache.1", "--host", "::1", "--port", "6379",
                     "--interval", "15", "--timeout", "2s", "--family", "ipv6",
                     "--failures-before-down", "3", "--tag", "a", "--tag", "b",
                     "--set", "degraded_after=500ms") == 0
    written = dropin(main, "cache.1")
    assert sorted(p.name for p in written.parent.iterdir()) == [written.name]
    assert written.read_text().startswith(editing.MANAGED_HEADER)
    assert tomllib.loads(written.read_text()) == {"checks": {"cache.1": {
        "host": "::1", "port": 6379, "interval": 15, "timeout": "2s", "family": "ipv6",
        "failures_before_down": 3, "tags": ["a", "b"], "degraded_after": "500ms",
    }}}
    assert config.definition_line(written, "checks", "cache.1") == 2


INVALID_ADDS = [
    (["--port", "70000"], "checks.web.port: must be between 1 and 65535, got 70000"),
    (["--port", "http"], "checks.web.port: expected an integer, got a string 'http'"),
    (["--port", "80", "--timeout", "1m"],
     "checks.web.timeout: timeout (1m) must be less than interval (30s)"),
    (["--port", "80", "--set", "intervall=5s"],
     "checks.web.intervall: unknown key (did you mean 'interval'?)"),
    (["--port", "80", "--family", "ipv6"],
     "checks.web.family: host 127.0.0.1 is an IPv4 address but family is 'ipv6'"),
    (["--port", "80", "--kind", "gopher"],
     "checks.web.kind: must be one of "
     + ", ".join(f'"{kind}"' for kind in sorted(PROBES)) + ", got 'gopher'"),
]


@pytest.mark.parametrize(("flags", "message"), INVALID_ADDS)
def test_invalid_add_names_the_key_and_writes_nothing(
    heartwire: Heartwire, main: Path, flags: list[str], message: str
) -> None:
    before = snapshot(main.parent)
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", *flags) == cli.EXIT_UNKNOWN
    assert heartwire.stderr == f"heartwire: {dropin(main, 'web')}: {message}\n"
    assert heartwire.stdout == ""
    assert snapshot(main.parent) == before
    assert not (main.parent / "conf.d").exists()


def test_rejected_add_says_exactly_what_validate_would(
    heartwire: Heartwire, main: Path, tmp_path: Path
) -> None:
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "0") == 3
    rejected = heartwire.stderr
    # Write the same drop-in by hand and ask `validate`.
    dropin(main, "web").parent.mkdir()
    dropin(main, "web").write_text('[checks.web]\nhost = "127.0.0.1"\nport = 0\n')
    assert heartwire("validate") == 3
    assert heartwire.stderr == rejected


def test_invalid_set_names_the_key_and_leaves_files_byte_identical(
    heartwire: Heartwire, main: Path
) -> None:
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80") == 0
    before = snapshot(main.parent)
    cases = [
        (["interval=500ms"], "checks.web.interval: interval must be at least 1s, got 500ms"),
        (["host="], "checks.web.host: is required"),
        (["tags=web"], "checks.web.tags: expected an array of strings, got a string"),
        (["port=443", "degraded_after=5s"],
         "checks.web.degraded_after: degraded_after (5s) must be less than timeout (2s)"),
    ]
    for assignments, message in cases:
        assert heartwire("checks", "set", "web", *assignments) == 3
        assert heartwire.stderr == f"heartwire: {dropin(main, 'web')}: {message}\n"
        assert snapshot(main.parent) == before


def test_set_without_equals_is_a_usage_error(heartwire: Heartwire, main: Path) -> None:
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80") == 0
    before = snapshot(main.parent)
    assert heartwire("checks", "set", "web", "port") == 3
    assert heartwire.stderr == "heartwire: expected KEY=VALUE with a plain key, got 'port'\n"
    assert heartwire("checks", "set", "web", "a.b=1") == 3
    assert snapshot(main.parent) == before


def test_set_with_an_empty_value_unsets_the_key(heartwire: Heartwire, main: Path) -> None:
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80",
                     "--interval", "10s", "--group", "Web") == 0
    assert heartwire("checks", "set", "web", "interval=", "group=") == 0
    [web] = [check for check in config.load(main).checks if check.name == "web"]
    assert (web.interval_s, web.group) == (30.0, None)  # back to [defaults]
    assert "interval" not in dropin(main, "web").read_text()


def test_an_already_invalid_config_blocks_every_edit(heartwire: Heartwire, main: Path) -> None:
    main.write_text(main.read_text().replace('timeout = "2s"', 'timeout = "two"'))
    before = snapshot(main.parent)
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80") == 3
    assert heartwire.stderr.startswith(f"heartwire: {main}: defaults.timeout: expected a duration")
    assert snapshot(main.parent) == before


def test_checks_in_the_main_file_point_at_the_line_to_edit(heartwire: Heartwire,
                                                            main: Path) -> None:
    before = snapshot(main.parent)
    assert heartwire("checks", "remove", "db") == 3
    assert heartwire.stderr == (
        f"heartwire: {main}:11: check 'db' is defined in the main file, which heartwire never "
        "rewrites; remove it there by hand\n"
    )
    assert heartwire("checks", "set", "db", "port=1") == 3
    assert heartwire.stderr.startswith(f"heartwire: {main}:11: check 'db' is defined in the main")
    assert heartwire("checks", "add", "db", "--host", "127.0.0.1", "--port", "1") == 3
    assert heartwire.stderr == f"heartwire: {main}:11: check 'db' is already defined here\n"
    assert snapshot(main.parent) == before


def test_unknown_check_lists_the_known_ones(heartwire: Heartwire, main: Path) -> None:
    assert heartwire("checks", "remove", "nope") == 3
    assert heartwire.stderr == f"heartwire: no check named 'nope' in {main} (known: db)\n"


def test_bad_names_never_become_paths(heartwire: Heartwire, main: Path) -> None:
    before = snapshot(main.parent)
    assert heartwire("checks", "add", "../evil", "--host", "127.0.0.1", "--port", "1") == 3
    assert "check name must be 1-64 letters" in heartwire.stderr
    assert snapshot(main.parent) == before


def test_hand_written_dropins_are_never_rewritten(heartwire: Heartwire, main: Path) -> None:
    conf_d = main.parent / "conf.d"
    conf_d.mkdir()
    pair = conf_d / "10-pair.toml"
    pair.write_text('# two of ours\n[checks.a]\nhost = "127.0.0.1"\nport = 1\n\n'
                    '[checks.b]\nhost = "127.0.0.1"\nport = 2\n')
    single = conf_d / "20-single.toml"
    single.write_text('# just one\n[checks.c]\nhost = "127.0.0.1"\nport = 3\n')
    before = snapshot(main.parent)

    assert heartwire("checks", "set", "b", "port=4") == 3
    assert heartwire.stderr == (
        f"heartwire: {pair}:6: check 'b' is in a drop-in written by hand, which heartwire does "
        "not rewrite; change it there by hand\n"
    )
    assert heartwire("checks", "remove", "a") == 3
    assert heartwire.stderr.startswith(f"heartwire: {pair}:2: check 'a' is in a drop-in written")
    assert snapshot(main.parent) == before

    # A drop-in that holds nothing but the check is the check: removing it is safe.
    assert heartwire("checks", "remove", "c") == 0
    assert not single.exists()
    assert pair.read_bytes() == before["conf.d/10-pair.toml"][0]
    assert [c.name for c in config.load(main).checks] == ["db", "a", "b"]


def test_main_file_is_byte_identical_after_every_checks_command(heartwire: Heartwire,
                                                                main: Path) -> None:
    before = main.stat()
    original = main.read_bytes()
    commands = [
        ["checks", "list"],
        ["checks", "list", "--json"],
        ["checks", "add", "web", "--host", "127.0.0.1", "--port", "80"],
        ["checks", "add", "bad", "--host", "127.0.0.1", "--port", "0"],
        ["checks", "set", "web", "port=81", "group=Web"],
        ["checks", "set", "web", "port=-1"],
        ["checks", "set", "db", "port=2"],
        ["checks", "remove", "db"],
        ["checks", "remove", "web"],
        ["config", "show"],
    ]
    for command in commands:
        heartwire(*command)
        after = main.stat()
        assert main.read_bytes() == original, command
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), command


def test_new_dropins_take_the_main_files_mode_and_owner(
    heartwire: Heartwire, main: Path
) -> None:
    main.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(main, 1234, 5678)
    main.parent.chmod(0o750)
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80") == 0
    info = dropin(main, "web").stat()
    assert info.st_mode & 0o7777 == 0o640
    assert (main.parent / "conf.d").stat().st_mode & 0o7777 == 0o750
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (1234, 5678)


def test_set_keeps_the_dropins_own_mode_and_owner(heartwire: Heartwire, main: Path) -> None:
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80") == 0
    written = dropin(main, "web")
    written.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(written, 4321, 8765)
    old_inode = written.stat().st_ino
    assert heartwire("checks", "set", "web", "port=81") == 0
    info = written.stat()
    assert info.st_ino != old_inode  # replaced by rename, not rewritten in place
    assert info.st_mode & 0o7777 == 0o600
    if os.geteuid() == 0:
        assert (info.st_uid, info.st_gid) == (4321, 8765)
    assert not list(written.parent.glob(".heartwire-*"))


def test_an_edit_gives_up_when_another_editor_holds_the_lock(main: Path) -> None:
    before = snapshot(main.parent)
    with locked_directory(main.parent), pytest.raises(EditError) as raised:
        editing.add_check(main, "web", {"host": "127.0.0.1", "port": 80}, lock_timeout_s=0.2)
    assert str(raised.value) == (
        f"{main.parent}: another heartwire edit has held the lock for 0.2s; "
        "nothing was written, try again"
    )
    assert snapshot(main.parent) == before


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5432", 5432),
        ("1.5", 1.5),
        ("true", True),
        ('["a", "b"]', ["a", "b"]),
        ('"30s"', "30s"),
        ("30s", "30s"),
        ("db1.internal", "db1.internal"),
        ("10.0.0.1", "10.0.0.1"),
        ("::1", "::1"),
        ("Databases and caches", "Databases and caches"),
    ],
)
def test_command_line_values_are_toml_or_plain_text(text: str, value: object) -> None:
    assert editing.parse_value(text) == value


def test_a_dropin_with_anything_beside_the_check_is_not_deleted(heartwire: Heartwire,
                                                                 main: Path) -> None:
    conf_d = main.parent / "conf.d"
    conf_d.mkdir()
    mixed = conf_d / "30-mixed.toml"
    mixed.write_text('[checks]\nweb = { host = "127.0.0.1", port = 80 }\nstray = 1\n')
    before = snapshot(main.parent)
    assert heartwire("checks", "remove", "web") == 3
    assert heartwire.stderr.startswith(f"heartwire: {mixed}:2: check 'web' is in a drop-in")
    assert snapshot(main.parent) == before


@pytest.mark.parametrize("name", ["web\n", "web\r\n", "web\x00"])
def test_a_name_with_a_control_character_never_becomes_a_path(
    heartwire: Heartwire, main: Path, name: str
) -> None:
    before = snapshot(main.parent)
    assert heartwire("checks", "add", name, "--host", "127.0.0.1", "--port", "1") == 3
    assert heartwire.stderr.startswith("heartwire: check name must be 1-64 letters")
    assert heartwire.stderr.count("\n") == 1
    assert snapshot(main.parent) == before


@pytest.mark.parametrize("depth", [40, 5000])
def test_a_deeply_nested_value_is_a_usage_error(
    heartwire: Heartwire, main: Path, depth: int
) -> None:
    before = snapshot(main.parent)
    nested = "{a = " * depth + "1" + "}" * depth
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "1",
                     "--set", f"x={nested}") == 3
    assert heartwire.stderr == "heartwire: value nested more than 32 levels deep\n"
    assert snapshot(main.parent) == before
