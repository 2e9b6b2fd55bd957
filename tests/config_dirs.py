"""Helpers for tests that edit real config directories and run the real command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# A hand-edited main file: its comments and layout must survive every command.
MAIN_TEMPLATE = """\
# heartwire on the test box -- edited by hand, keep these comments!
[agent]
id = "test-agent"      # shows up in the heartbeat
state_dir = "{state_dir}"

[defaults]
interval = "30s"
timeout = "2s"         # loopback answers fast

# The database: do not move this table.
[checks.db]
host = "127.0.0.1"
port = {port}
group = "Databases"
"""

FileState = tuple[bytes, int, int, int]


def write_main(directory: Path, *, port: int, mode: int = 0o644) -> Path:
    """Writes the hand-edited main file (with a state dir inside ``directory``)."""
    main = directory / "agent.toml"
    main.write_text(MAIN_TEMPLATE.format(state_dir=directory / "state", port=port))
    main.chmod(mode)
    return main


def snapshot(directory: Path) -> dict[str, FileState]:
    """Every file under ``directory``: content, mode, owner, group (for "nothing changed")."""
    files = {}
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            info = path.stat()
            files[str(path.relative_to(directory))] = (
                path.read_bytes(), info.st_mode, info.st_uid, info.st_gid
            )
    return files


def heartwire_command(*arguments: str) -> list[str]:
    """The real command line, run with this interpreter."""
    return [sys.executable, "-m", "agent", *arguments]


def run_heartwire(*arguments: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Runs ``heartwire`` in a subprocess and returns what it printed."""
    return subprocess.run(
        heartwire_command(*arguments),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
