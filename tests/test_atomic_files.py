"""Atomic writes, crashes mid-write and concurrent editors, with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.common.atomic_files import (
    FileOwnership,
    locked_directory,
    sweep_temporaries,
    write_atomically,
)
from agent.config import loader as config
from tests.config_dirs import heartwire_command, run_heartwire, snapshot, write_main


def python(script: str, *arguments: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script), *arguments]


def test_write_replaces_the_file_with_the_mode_and_owner_asked_for(tmp_path: Path) -> None:
    target = tmp_path / "a.toml"
    target.write_bytes(b"old\n")
    owner = (2345, 6789) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    write_atomically(target, b"new\n", FileOwnership(0o640, *owner))
    info = target.stat()
    assert target.read_bytes() == b"new\n"
    assert (info.st_mode & 0o7777, info.st_uid, info.st_gid) == (0o640, *owner)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.toml"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    # A real write failure half-way: the file size limit makes write() fail with
    # EFBIG after the first 4 KiB (Python ignores SIGXFSZ, so it is an OSError).
    target = tmp_path / "a.toml"
    target.write_bytes(b"precious\n")
    script = """
        import resource, sys
        from pathlib import Path
        from agent.common.atomic_files import FileOwnership, write_atomically
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        target = Path(sys.argv[1])
        try:
            write_atomically(target, b"x" * 1_000_000, FileOwnership.of(target))
        except OSError as exc:
            print(exc.errno)
    """
    finished = subprocess.run(python(script, str(target)), capture_output=True, text=True,
                              timeout=60, check=True)
    assert finished.stdout.strip() == "27"  # EFBIG
    assert target.read_bytes() == b"precious\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.toml"]


def test_a_killed_writer_never_leaves_a_half_written_file(tmp_path: Path) -> None:
    target = tmp_path / "conf.d" / "50-check-big.toml"
    target.parent.mkdir()
    versions = [
        (f'[checks.big]\nhost = "127.0.0.1"\nport = {port}\n' + "# padding\n" * 200_000).encode()
        for port in (1, 2)
    ]
    target.write_bytes(versions[0])
    script = """
        import sys
        from pathlib import Path
        from agent.common.atomic_files import FileOwnership, write_atomically
        target = Path(sys.argv[1])
        versions = [target.read_bytes().replace(b"port = 1", b"port = 2"), target.read_bytes()]
        for round in range(10_000):
            write_atomically(target, versions[round % 2], FileOwnership.of(target))
    """
    writer = subprocess.Popen(python(script, str(target)))
    try:
        # Kill it while it is writing: once it has replaced the file at least once.
        deadline = time.monotonic() + 30
        while target.read_bytes()[:60] == versions[0][:60] and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert target.read_bytes() in versions
    # Whatever temporary it left behind, the next editor (holding the lock) sweeps.
    (target.parent / ".heartwire-0123456789ab.tmp").write_bytes(b"half")
    with locked_directory(tmp_path):
        sweep_temporaries(target.parent)
    assert sorted(path.name for path in target.parent.iterdir()) == [target.name]


def test_an_editor_waits_for_the_one_holding_the_lock(tmp_path: Path) -> None:
    main = write_main(tmp_path, port=1)
    before = snapshot(tmp_path)
    with locked_directory(tmp_path):
        editor = subprocess.Popen(
            heartwire_command("checks", "add", "web", "--host", "127.0.0.1", "--port", "80",
                              "--config", str(main)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                editor.wait(timeout=2)  # longer than interpreter start-up
            assert snapshot(tmp_path) == before
        except BaseException:
            editor.kill()
            editor.wait(timeout=30)
            raise
    out, err = editor.communicate(timeout=60)
    assert (editor.returncode, err) == (0, "")
    assert out.startswith("added check 'web'")
    assert (tmp_path / "conf.d" / "50-check-web.toml").exists()


EDITOR_SCRIPT = """
    import sys
    from pathlib import Path
    from agent.config import editing
    main, who, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for index in range(rounds):
        editing.add_check(main, f"{who}{index}", {"host": "127.0.0.1", "port": 1000 + index})
        # Both change the same drop-in, each its own key: a lost update would show.
        key = "group" if who == "a" else "tags"
        value = f"{who}{index}" if who == "a" else [f"{who}{index}"]
        editing.set_check(main, "shared", {key: value})
        if index % 2:
            editing.remove_check(main, f"{who}{index}")
"""


def test_two_concurrent_editing_processes_never_corrupt_or_lose_an_edit(
    tmp_path: Path,
) -> None:
    main = write_main(tmp_path, port=1)
    assert run_heartwire("checks", "add", "shared", "--host", "127.0.0.1", "--port", "2",
                         "--config", str(main)).returncode == 0
    rounds = 30
    editors = [
        subprocess.Popen(python(EDITOR_SCRIPT, str(main), who, str(rounds)),
                         stderr=subprocess.PIPE, text=True)
        for who in ("a", "b")
    ]
    errors = [editor.communicate(timeout=120)[1] for editor in editors]
    assert [editor.returncode for editor in editors] == [0, 0], errors

    loaded = config.load(main)
    kept = [f"{who}{index}" for who in "ab" for index in range(0, rounds, 2)]
    assert sorted(loaded.check_names()) == sorted(["db", "shared", *kept])
    [shared] = [check for check in loaded.checks if check.name == "shared"]
    assert (shared.group, shared.tags) == (f"a{rounds - 1}", (f"b{rounds - 1}",))
    assert not list((tmp_path / "conf.d").glob(".heartwire-*"))
    validated = run_heartwire("validate", "--config", str(main))
    assert validated.stdout == f"{main}: OK, {len(kept) + 2} checks from {len(kept) + 2} files\n"
