"""Every command of ``heartwire`` as a real process, against the real receiver.

One receiver (``heartwire central``) runs for the whole module on loopback, with
the agent registered through ``heartwire central agents add`` and a key made by
``heartwire keygen``; the agent's config checks one open and one refused port and
delivers to that receiver. Every command listed by ``--help`` is run here
(:data:`COMMANDS` must name them all), on that config and on the example configs,
and then with hostile arguments: control characters, a 100,000-character
argument, a 5,000-deep ``--set`` or config file, a FIFO or /dev/zero as config.

Every run must exit with the code the README documents (0 success, 1 degraded,
2 down, 3 config or usage error), never print a traceback, and say any error in
one line starting with ``heartwire:``. Every process has a timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.netutil import open_port, refused_port
from tests.test_central_e2e import Process, wait_until
from tests.test_example_config import EXAMPLE, uncommented_example

REPO = Path(__file__).resolve().parents[2]
CENTRAL_EXAMPLE = REPO / "central.example.toml"
AGENT_ID = "world-agent"
# One command's bound; the slowest (check on the example config) takes ~2 s.
COMMAND_TIMEOUT_S = 60.0
DEEP = 5000
PARALLEL_COMMANDS = 3

# Every command and action of `heartwire --help` (and of its subcommands' helps).
COMMANDS = frozenset({
    "check", "run", "validate", "send-test", "keygen",
    "checks list", "checks add", "checks set", "checks remove", "config show",
    "maintenance start", "maintenance end",
    "central run", "central validate", "central agents add", "central agents list",
    "central maintenance add", "central maintenance list", "central maintenance end",
    "central migrate", "central export", "central import",
})


@dataclass
class Completed:
    """What one run of the command left behind."""

    argv: list[str]
    code: int
    stdout: str
    stderr: str


def heartwire(*argv: str, env: dict[str, str] | None = None,
              stdout: int = subprocess.PIPE) -> Completed:
    """Runs ``python -m agent ARGV`` to completion (bounded) and checks the basics."""
    completed = subprocess.run(
        [sys.executable, "-m", "agent", *argv], stdout=stdout, stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})}, timeout=COMMAND_TIMEOUT_S, check=False,
        text=True, errors="backslashreplace",
    )
    result = Completed(list(argv), completed.returncode, completed.stdout or "",
                       completed.stderr)
    assert_well_behaved(result)
    return result


def run_all(argvs: list[list[str]]) -> list[Completed]:
    """Runs independent commands a few at a time (each is mostly interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=PARALLEL_COMMANDS) as pool:
        return list(pool.map(lambda argv: heartwire(*argv), argvs))


def assert_well_behaved(result: Completed) -> None:
    """No traceback ever; an error is one line ``heartwire: ...`` and exit code 3."""
    assert "Traceback" not in result.stderr, result
    assert result.code in (0, 1, 2, 3), result
    if result.code == 3:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("heartwire: "), result


@dataclass
class World:
    """The receiver, the agent's files and the ports its checks point at."""

    directory: Path
    base_url: str
    agent_toml: Path
    central_toml: Path
    public_key: str
    receiver: Process


def _agent_config(directory: Path, base_url: str, up: int, down: int) -> str:
    return (
        f'[agent]\nid = "{AGENT_ID}"\nstate_dir = "{directory / "agent-state"}"\n'
        '[defaults]\ninterval = "5s"\ntimeout = "1s"\n'
        f'[checks.up]\nhost = "127.0.0.1"\nport = {up}\n'
        f'[checks.down]\nhost = "127.0.0.1"\nport = {down}\n'
        '[central]\nheartbeat_interval = "1s"\n'
        f'[destinations.central]\nkind = "native"\nurl = "{base_url}/v1/ingest"\n'
        f'signing_key_file = "{directory / "agent.key"}"\n'
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("world")
    keygen = heartwire("keygen", "--out", str(directory / "agent.key"))
    assert keygen.code == 0 and keygen.stdout.startswith("whpk_")
    public_key = keygen.stdout.strip()
    central_toml = directory / "central.toml"
    central_toml.write_text(
        f'[storage]\nstate_dir = "{directory / "central-state"}"\n[alerts]\ngrace = "30s"\n')
    added = heartwire("central", "agents", "add", AGENT_ID, "--public-key", public_key,
                      "--config", str(central_toml))
    assert added.code == 0, added
    with ExitStack() as stack:
        up = stack.enter_context(open_port())
        down = stack.enter_context(refused_port())
        receiver = Process("central", "--config", str(central_toml), "--listen", "127.0.0.1:0")
        base_url = receiver.wait_for_line(r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        agent_toml = directory / "agent.toml"
        agent_toml.write_text(_agent_config(directory, base_url, up, down))
        try:
            yield World(directory, base_url, agent_toml, central_toml, public_key, receiver)
        finally:
            receiver.proc.send_signal(signal.SIGTERM)
            code = receiver.proc.wait(timeout=15)
            receiver.stop()
        # `heartwire central` (run) ends cleanly on SIGTERM.
        assert code == 0, receiver.lines
        assert not any("Traceback" in line for line in receiver.lines), receiver.lines


def _help_commands(*prefix: str) -> set[str]:
    """The commands a ``--help`` lists, with their own actions, recursively."""
    listed = heartwire(*prefix, "--help").stdout.splitlines()
    start = next(i for i, line in enumerate(listed) if line.startswith("positional arguments"))
    names = set()
    for line in listed[start + 2:]:
        if not line.startswith("    ") or line.startswith("     "):
            if line and not line.startswith(" "):
                break
            continue
        names.add(line.split()[0])
    found = set()
    for name in names:
        if prefix == () and name == "central":
            found |= _help_commands("central")
        elif name in ("checks", "config", "agents", "maintenance"):
            found |= _help_commands(*prefix, name)
        else:
            found.add(" ".join([*prefix, name]))
    return found


def test_every_command_of_the_help_is_covered_here() -> None:
    assert _help_commands() == COMMANDS


# --- the agent's commands against the real receiver ---------------------------------


def test_check_reports_down_up_and_json(world: World) -> None:
    config = str(world.agent_toml)
    assert heartwire("check", "--config", config).code == 2
    assert heartwire("check", "--config", config, "up").code == 0
    rows = json.loads(heartwire("--debug", "check", "--json", "--config", config).stdout)
    assert {row["name"]: row["status"] for row in rows} == {"up": "up", "down": "down"}


def test_check_into_a_closed_pipe_keeps_its_code(world: World) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = heartwire("check", "--config", str(world.agent_toml), stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.code, result.stderr) == (2, "")


def test_validate_and_config_show_accept_each_others_output(world: World) -> None:
    assert heartwire("validate", "--config", str(world.agent_toml)).code == 0
    shown = heartwire("config", "show", "--config", str(world.agent_toml)).stdout
    again = world.directory / "shown" / "agent.toml"
    again.parent.mkdir()
    again.write_text(shown)
    assert heartwire("validate", "--config", str(again)).code == 0
    plain = json.loads(heartwire("config", "show", "--json", "--config", str(again)).stdout)
    assert plain["agent"]["id"] == AGENT_ID


def test_send_test_passes_against_the_real_receiver(world: World) -> None:
    result = heartwire("send-test", "--config", str(world.agent_toml))
    assert result.code == 0, result


def test_send_test_to_a_receiver_that_is_down_exits_2_and_says_why(world: World) -> None:
    with refused_port() as port:
        text = world.agent_toml.read_text().replace(world.base_url, f"http://127.0.0.1:{port}")
        config = world.directory / "down" / "agent.toml"
        config.parent.mkdir()
        config.write_text(text)
        result = heartwire("send-test", "--config", str(config))
    assert result.code == 2
    assert "Connection refused" in result.stdout


def test_run_delivers_to_the_receiver_and_stops_cleanly_on_sigterm(world: World) -> None:
    api = httpx.Client(base_url=world.base_url, timeout=5)

    def alive() -> bool:
        agents = api.get("/api/v1/agents").json()["agents"]
        return any(a["id"] == AGENT_ID and a["state"] == "alive" for a in agents)

    agent = Process("run", "--config", str(world.agent_toml))
    try:
        wait_until(alive, "the agent's first heartbeat", 30)
        agent.proc.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        code = agent.proc.wait(timeout=15)
        stopped_in_s = time.monotonic() - stopping
    finally:
        agent.stop()
        api.close()
    assert code == 0, agent.lines
    assert stopped_in_s < 5
    assert not any("Traceback" in line for line in agent.lines), agent.lines


def test_checks_add_list_set_remove_on_a_copy_of_the_config(world: World) -> None:
    directory = world.directory / "edited"
    directory.mkdir()
    config = str(shutil.copy(world.agent_toml, directory / "agent.toml"))
    assert heartwire("checks", "add", "web", "--host", "127.0.0.1", "--port", "80",
                     "--config", config).code == 0
    listed = json.loads(heartwire("checks", "list", "--json", "--config", config).stdout)
    assert [row["name"] for row in listed] == ["up", "down", "web"]
    assert heartwire("checks", "set", "web", "port=8080", "--config", config).code == 0
    assert heartwire("checks", "set", "web", "port=70000", "--config", config).code == 3
    assert heartwire("checks", "remove", "web", "--config", config).code == 0
    assert heartwire("checks", "remove", "web", "--config", config).code == 3
    # A check of the hand-written main file is never rewritten: an error, exit 3.
    assert heartwire("checks", "remove", "up", "--config", config).code == 3
    # --reload without a running daemon: the edit is written, the command says so.
    assert heartwire("checks", "add", "web2", "--host", "h", "--port", "1", "--reload",
                     "--config", config, env={"HEARTWIRE_STATE_DIR": str(directory)}).code == 3


def test_keygen_refuses_to_overwrite_a_key(world: World) -> None:
    key = world.directory / "agent.key"
    before = key.read_bytes()
    assert heartwire("keygen", "--out", str(key)).code == 3
    assert key.read_bytes() == before


# --- the receiver's commands ---------------------------------------------------------


def test_central_validate_and_agents_list(world: World) -> None:
    assert heartwire("central", "validate", "--config", str(world.central_toml)).code == 0
    listed = heartwire("central", "agents", "list", "--config", str(world.central_toml))
    assert listed.code == 0 and listed.stdout.startswith(f"{AGENT_ID}\t")
    assert heartwire("central", "validate", "--config", str(CENTRAL_EXAMPLE)).code == 0


def test_central_migrate_export_and_import_on_the_live_receivers_store(world: World) -> None:
    migrated = heartwire("central", "migrate", "--config", str(world.central_toml))
    assert migrated.code == 0 and "schema version" in migrated.stdout
    export = world.directory / "export.jsonl"
    assert heartwire("central", "export", "--output", str(export),
                     "--config", str(world.central_toml)).code == 0
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert lines[0]["format"] and any("table" in line for line in lines[1:])
    # Whatever the store holds now, the import says so in one line (its count, or
    # that the store is not empty), and a file that is no export is refused.
    again = heartwire("central", "import", str(export), "--config", str(world.central_toml))
    assert len((again.stdout + again.stderr).strip().splitlines()) == 1, again
    garbage = world.directory / "garbage.jsonl"
    garbage.write_text('{"format": "something else"}\n')
    refused = heartwire("central", "import", str(garbage), "--config", str(world.central_toml))
    assert refused.code != 0 and len(refused.stderr.strip().splitlines()) == 1, refused


def test_central_agents_add_rotates_a_key_then_the_receiver_reloads(world: World) -> None:
    key = heartwire("keygen", "--out", str(world.directory / "second.key")).stdout.strip()
    assert heartwire("central", "agents", "add", AGENT_ID, "--public-key", key,
                     "--config", str(world.central_toml)).code == 0
    world.receiver.proc.send_signal(signal.SIGHUP)
    world.receiver.wait_for_line(r"reload", timeout_s=15)
    assert heartwire("central", "validate", "--config", str(world.central_toml)).code == 0


def test_maintenance_from_the_agent_reaches_the_real_receiver(world: World) -> None:
    api = httpx.Client(base_url=world.base_url, timeout=5)
    agent = Process("run", "--config", str(world.agent_toml))
    try:
        started = heartwire("maintenance", "start", "--for", "20m", "--check", "down",
                            "--config", str(world.agent_toml))
        assert started.code == 0, started
        wait_until(lambda: api.get("/api/v1/maintenance").json()["maintenance"],
                   "the agent's window at the receiver", 30)
        assert heartwire("maintenance", "end", "--config", str(world.agent_toml)).code == 0
        wait_until(lambda: not api.get("/api/v1/maintenance").json()["maintenance"],
                   "the window ended", 30)
    finally:
        agent.stop()
        api.close()


def test_central_maintenance_add_list_end(world: World) -> None:
    config = str(world.central_toml)
    added = heartwire("central", "maintenance", "add", AGENT_ID, "--for", "10m", "--config",
                      config)
    assert added.code == 0, added
    listed = heartwire("central", "maintenance", "list", "--config", config)
    assert listed.code == 0 and AGENT_ID in listed.stdout
    (number,) = {line.split()[0] for line in listed.stdout.splitlines()
                 if AGENT_ID in line and line.split()[0].isdigit()}
    assert heartwire("central", "maintenance", "end", number, "--config", config).code == 0
    assert heartwire("central", "maintenance", "end", number, "--config", config).code == 3


# --- the example configs -------------------------------------------------------------


def test_the_example_config_validates_shows_and_checks(tmp_path: Path) -> None:
    assert heartwire("validate", "--config", str(EXAMPLE)).code == 0
    shown = tmp_path / "agent.toml"
    shown.write_text(heartwire("config", "show", "--config", str(EXAMPLE)).stdout)
    assert heartwire("validate", "--config", str(shown)).code == 0
    listed = heartwire("checks", "list", "--config", str(EXAMPLE))
    assert listed.code == 0 and "legacy-service" in listed.stdout
    # Whatever this machine runs on those ports, the code is a check's code.
    assert heartwire("check", "--config", str(EXAMPLE), "mariadb", "bastion-ssh").code in (0, 1, 2)


def test_the_example_with_destinations_needs_its_credentials(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(uncommented_example())
    missing = heartwire("validate", "--config", str(config), env={"CREDENTIALS_DIRECTORY": ""})
    # Outside the unit, the credential is looked for where the unit loads it from.
    assert missing.code == 3 and "/etc/heartwire/credentials/agent.key" in missing.stderr
    assert heartwire("config", "show", "--config", str(config)).code == 0


# --- hostile arguments and files -----------------------------------------------------


def _nested(depth: int) -> str:
    return "{a = " * depth + "1" + "}" * depth


@pytest.mark.parametrize("argv", [
    ["check", "x\nnope\x1b[31m"],
    ["check", "n" * 100_000],
    ["checks", "add", "web\n", "--host", "h", "--port", "1"],
    ["checks", "add", "web", "--host", "h", "--port", "1", "--set", f"x={_nested(DEEP)}"],
    ["checks", "add", "web", "--host", "h\x7f\u202e", "--port", "1"],
    ["checks", "set", "up", "\x1b]0;owned\x07=1"],
    ["central", "agents", "add", "dc1\n", "--public-key", "whpk_x"],
    ["maintenance", "start", "--for", "9" * 400],
    ["maintenance", "start", "--for", "1h", "--check", "up\n\x1b[2J"],
    ["central", "maintenance", "add", "dc1\x1b[31m", "--for", "1h"],
    ["check", "--json", "--bogus"],
    ["validate", "--config", "/nowhere/\x1b[2J"],
    ["checks"],
    [],
])
def test_hostile_arguments_get_one_line_and_exit_3(world: World, argv: list[str]) -> None:
    if argv and argv[0] == "central":
        argv = [*argv, "--config", str(world.central_toml)]
    elif argv and "--config" not in argv:
        argv = [*argv, "--config", str(world.agent_toml)]
    before = world.agent_toml.read_bytes()
    result = heartwire(*argv)
    assert result.code == 3, result
    assert "\x1b" not in result.stderr and len(result.stderr) < 1200
    assert world.agent_toml.read_bytes() == before
    assert not (world.agent_toml.parent / "conf.d").exists()


@pytest.mark.parametrize("make", ["deep", "fifo", "zero", "huge", "binary", "directory"])
def test_hostile_config_files_get_one_line_and_exit_3(tmp_path: Path, make: str) -> None:
    path = tmp_path / "agent.toml"
    if make == "deep":
        path.write_text(f"[checks.a]\nhost = \"h\"\nport = 1\nx = {_nested(DEEP)}\n")
    elif make == "fifo":
        os.mkfifo(path)
    elif make == "zero":
        path = Path("/dev/zero")
    elif make == "huge":
        with path.open("wb") as handle:
            handle.truncate(64 * 1024 * 1024)
    elif make == "binary":
        path.write_bytes(b"\xff\xfe[agent]\x00\n")
    else:
        path.mkdir()
    # config show reads through the same loader as validate; checks list has its own.
    commands = (["validate"], ["check"], ["checks", "list"])
    results = run_all([[*command, "--config", str(path)] for command in commands])
    assert [result.code for result in results] == [3, 3, 3]


def test_a_deep_receiver_config_gets_one_line_and_exit_3(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text(f"[alerts]\nx = {_nested(DEEP)}\n")
    assert heartwire("central", "validate", "--config", str(path)).code == 3
