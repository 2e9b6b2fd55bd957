"""``heartwire central ...``: the receiver's commands (wired into agent/cli/main.py).

    heartwire central [--config PATH]              run the receiver
    heartwire central validate [--config PATH]     check the config and exit
    heartwire central agents add ID (--public-key whpk_... | --secret-file PATH) [--grace 1m]
    heartwire central agents list [--config PATH]
    heartwire central maintenance add AGENT [--check NAME ...] --for 20m [--reason TEXT]
    heartwire central maintenance list | end ID
    heartwire central migrate [--config PATH]      bring the database's schema up to date
    heartwire central export [--config PATH] [--state-dir PATH] [--output FILE]
    heartwire central import [--config PATH] FILE  load an export into [storage]

``export`` reads the SQLite database in the state directory; ``import`` loads
into the store ``[storage]`` names (PostgreSQL, typically), which must be empty.
A database that cannot be reached, or whose schema is newer than this receiver
knows, is a one-line error and exit code 3, like a config error.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import tomli_w
import trio

from agent.central import config as central_config
from agent.central import transfer
from agent.central.maintenance_cli import add_maintenance_parser, maintenance_main
from agent.central.storage import DATABASE_NAME, StorageError, StorageSettings, open_storage
from agent.common.keyfiles import read_private_file
from agent.common.names import NAME_RULE, is_valid_name
from agent.common.signing import PUBLIC_KEY_PREFIX, read_verify_key
from agent.common.stdout import emit
from agent.common.tables import parse_duration
from agent.common.wording import counted
from agent.errors import ConfigError, HeartwireError, UsageError

EXIT_OK = 0


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Adds the ``central`` command and its subcommands to the main parser."""
    config_help = f"receiver config file (default: {central_config.DEFAULT_CONFIG_PATH})"
    # --config and --debug are accepted at every level (``heartwire --debug central
    # validate``, ``central --config X validate``, ``central validate --config X``).
    # Their defaults are suppressed so that a later level never resets an earlier one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help=config_help)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="verbose logs and tracebacks")
    central = commands.add_parser("central", parents=[common],
                                  help="run the reference central receiver")
    central.add_argument("--listen", metavar="HOST:PORT", action="append",
                         help="serve here instead of [server] listen (repeatable)")
    central.add_argument("--state-dir", metavar="PATH",
                         help="keep the database here instead of [storage] state_dir")
    sub = central.add_subparsers(dest="central_command", metavar="SUBCOMMAND",
                                 parser_class=type(central))
    sub.add_parser("run", parents=[common], help="run the receiver (the default)")
    sub.add_parser("validate", parents=[common], help="check the receiver config and exit")
    agents = sub.add_parser("agents", parents=[common], help="register agents")
    agents_sub = agents.add_subparsers(dest="agents_command", metavar="ACTION",
                                       parser_class=type(central))
    agents_sub.required = True
    add = agents_sub.add_parser("add", parents=[common],
                                help="register an agent (or add a key to it, for a rotation)")
    add.add_argument("agent_id", metavar="ID", help="the agent's [agent] id")
    key = add.add_mutually_exclusive_group(required=True)
    key.add_argument("--public-key", metavar="whpk_...", help="its Ed25519 public key")
    key.add_argument("--secret-file", metavar="PATH",
                     help="a private file holding its whsec_ shared secret")
    add.add_argument("--grace", metavar="DURATION",
                     help="silence allowed after its heartbeat interval (default: [alerts] grace)")
    agents_sub.add_parser("list", parents=[common], help="list registered agents")
    add_maintenance_parser(sub, common, type(central))
    sub.add_parser("migrate", parents=[common],
                   help="bring the database's schema up to date (the receiver does it at start)")
    export = sub.add_parser("export", parents=[common],
                            help="write the SQLite database's rows as JSON Lines")
    export.add_argument("--state-dir", metavar="PATH", dest="export_state_dir",
                        help="the SQLite database's directory (default: [storage] state_dir)")
    export.add_argument("--output", metavar="FILE", default="-",
                        help="where to write (default: standard output)")
    load = sub.add_parser("import", parents=[common],
                          help="load an export into the (empty) store [storage] names")
    load.add_argument("file", metavar="FILE", help="an export file, or - for standard input")


def config_path(value: str | None) -> Path:
    """The receiver config path: ``--config`` or the default."""
    return Path(value) if value else central_config.DEFAULT_CONFIG_PATH


def main(args: argparse.Namespace) -> int:
    """Runs one ``heartwire central`` command."""
    path = config_path(getattr(args, "config", None))
    command = args.central_command or "run"
    if command == "validate":
        loaded = central_config.load(path)
        emit(f"{path}: OK, {counted(len(loaded.agents), 'agent')}, "
             f"{counted(len(loaded.channels), 'channel')} "
             f"from {counted(len(loaded.files), 'file')}")
        return EXIT_OK
    if command == "maintenance":
        return maintenance_main(args, central_config.load(path))
    if command == "agents":
        if args.agents_command == "list":
            return _list_agents(path)
        return _add_agent(path, args.agent_id, args.public_key, args.secret_file, args.grace)
    try:
        if command in ("migrate", "export", "import"):
            return _storage_command(command, central_config.load(path), args)
        return _run(path, args)
    except StorageError as exc:
        raise HeartwireError(f"storage: {exc}") from None


def _storage_command(command: str, loaded: central_config.CentralConfig,
                     args: argparse.Namespace) -> int:
    if command == "export":
        given = args.export_state_dir or args.state_dir
        state_dir = Path(given) if given else loaded.state_dir
        if not (state_dir / DATABASE_NAME).exists():
            raise UsageError(f"no receiver database in {state_dir}")
        source = open_storage(StorageSettings(state_dir))
        try:
            if args.output == "-":
                written = transfer.export(source, sys.stdout)
            else:
                with open(args.output, "w", encoding="utf-8") as out:
                    written = transfer.export(source, out)
        finally:
            source.close()
        print(f"exported {_counts(written)}", file=sys.stderr)
        return EXIT_OK
    target = open_storage(loaded.storage)
    try:
        if command == "migrate":
            print(f"{_where(loaded)}: schema version {target.schema_version()}")
            return EXIT_OK
        if args.file == "-":
            loaded_rows = transfer.import_rows(target, sys.stdin)
        else:
            with open(args.file, encoding="utf-8") as lines:
                loaded_rows = transfer.import_rows(target, lines)
    finally:
        target.close()
    print(f"imported into {_where(loaded)}: {_counts(loaded_rows)}")
    return EXIT_OK


def _where(loaded: central_config.CentralConfig) -> str:
    if loaded.storage_url:
        from agent.central.storage.postgres import redacted

        return redacted(loaded.storage_url)
    return str(loaded.state_dir / DATABASE_NAME)


def _counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in rows.items())


def _run(path: Path, args: argparse.Namespace) -> int:
    try:
        from agent.central.server import Central
    except ImportError as exc:  # hypercorn is an optional dependency of the agent
        raise UsageError(
            f"the receiver needs {(exc.name or 'hypercorn').split('.')[0]}: install the "
            "heartwire-central package (apt install heartwire-central, dnf install "
            "heartwire-central), or pip install 'heartwire[central]'"
        ) from None

    loaded = central_config.load(path)
    # Flags override the file only when given.
    if args.listen:
        loaded = replace(loaded, listen=tuple(args.listen))
    if args.state_dir:
        loaded = replace(loaded, state_dir=Path(args.state_dir))
    central = Central(loaded, config_path=path)
    trio.run(central.run)
    return EXIT_OK


def _list_agents(path: Path) -> int:
    loaded = central_config.load(path)
    for agent in loaded.agents.values():
        schemes = ", ".join(key.scheme for key in agent.keys)
        emit(f"{agent.id}\t{schemes}\t{agent.source}")
    return EXIT_OK


def _add_agent(
    path: Path, agent_id: str, public_key: str | None, secret_file: str | None,
    grace: str | None,
) -> int:
    if not is_valid_name(agent_id):
        raise UsageError(f"agent id {agent_id!r} {NAME_RULE}")
    if public_key is not None:
        if not public_key.startswith(PUBLIC_KEY_PREFIX):
            raise UsageError(f"--public-key expects a {PUBLIC_KEY_PREFIX}... key")
        read_verify_key(public_key)
    if secret_file is not None:
        secret_file = str(Path(secret_file).resolve())
        read_verify_key(read_private_file(Path(secret_file)))
    if grace is not None:
        try:
            parse_duration(grace)
        except ValueError as exc:
            raise UsageError(f"--grace: {exc}") from None
    # The main file must be valid before we add to it, or the error would be ours.
    central_config.load(path)

    dropin = path.parent / central_config.AGENTS_DIR / f"{agent_id}.toml"
    table: dict[str, object] = {}
    previous: bytes | None = None
    if dropin.exists():
        previous = dropin.read_bytes()
        try:
            table = tomllib.loads(previous.decode())["agents"][agent_id]
        except (KeyError, TypeError, ValueError, tomllib.TOMLDecodeError):
            raise ConfigError(
                str(dropin), f"agents.{agent_id}",
                "exists but was not written by this command; edit it by hand",
            ) from None
    if public_key is not None:
        keys = list(table.get("keys", []))  # type: ignore[call-overload]
        if public_key not in keys:
            keys.append(public_key)
        table["keys"] = keys
    if secret_file is not None:
        files = table.get("secret_file", [])
        files = [files] if isinstance(files, str) else list(files)  # type: ignore[call-overload]
        if secret_file not in files:
            files.append(secret_file)
        table["secret_file"] = files
    if grace is not None:
        table["grace"] = grace

    dropin.parent.mkdir(parents=True, exist_ok=True)
    text = ("# Written by `heartwire central agents add`; several keys are accepted at once\n"
            "# (key rotation). Remove the old key once the agent no longer signs with it.\n"
            + tomli_w.dumps({"agents": {agent_id: table}}))
    temporary = dropin.with_suffix(".toml.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.chmod(temporary, 0o644)  # public keys and file paths only: no secret here
    os.replace(temporary, dropin)
    try:
        central_config.load(path)
    except HeartwireError:
        # Leave things as they were: a broken drop-in would stop the receiver.
        if previous is None:
            dropin.unlink()
        else:
            dropin.write_bytes(previous)
        raise
    action = "updated" if previous is not None else "registered"
    emit(f"{action} agent {agent_id} in {dropin}; "
         "reload the receiver (SIGHUP) to accept its messages")
    return EXIT_OK
