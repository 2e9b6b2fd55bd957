"""The ``heartwire`` command: argument parsing and exit codes, nothing else.

Exit codes follow the monitoring-plugins convention so that ``heartwire check``
can be used from Nagios-style tooling:

    0  all checks up (or: the command succeeded)
    1  some check degraded, none down
    2  some check down
    3  config or usage error (UNKNOWN)
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trio

from agent import __version__
from agent.common import logs, stdout
from agent.common.wording import counted, one_line
from agent.config import loader as config
from agent.errors import HeartwireError, UsageError
from agent.model import Result, Status

PROG = "heartwire"
EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_DOWN = 2
EXIT_UNKNOWN = 3

_STATUS_EXIT = {Status.UP: EXIT_OK, Status.DEGRADED: EXIT_DEGRADED, Status.DOWN: EXIT_DOWN}


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; 2 means "down" here, so raise instead."""

    def error(self, message: str) -> NoReturn:
        # main() prints "heartwire: " before every error; name only the subcommand.
        command = self.prog.removeprefix(PROG).strip()
        raise UsageError(f"{command + ': ' if command else ''}{message} (see {self.prog} --help)")


def _global_flags() -> _Parser:
    """``--config`` and ``--debug``, accepted before the command and after it.

    Their defaults are suppressed: a subcommand's parser would otherwise reset a
    flag given before it (``heartwire --debug check``) to its own default.
    """
    flags = _Parser(add_help=False)
    flags.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"main config file (default: ${config.CONFIG_ENV_VAR}, "
        f"else {config.DEFAULT_CONFIG_PATH})",
    )
    flags.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="verbose logs and tracebacks")
    return flags


# The receiver's command line imports the receiver's config and channel code (httpx,
# sqlite3): it is built only when the command line names it. Otherwise ``central``
# is listed with this help line and nothing behind it.
_CENTRAL_HELP = "run the reference central receiver"


def _build_parser(arguments: Sequence[str] = ("central",)) -> argparse.ArgumentParser:
    """The whole command line; ``central``'s subcommands only if ``arguments`` name it."""
    common = _global_flags()
    parser = _Parser(prog=PROG, parents=[common],
                     description="Checks private services, reports outbound.")
    parser.add_argument("--version", action="version", version=f"heartwire {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    check = commands.add_parser("check", parents=[common], help="run checks once and print them")
    check.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    check.add_argument("names", nargs="*", metavar="NAME", help="checks to run (default: all)")

    run = commands.add_parser("run", parents=[common], help="run the checks on their schedules")
    run.add_argument(
        "--state-dir", metavar="DIR",
        help="where the outbox lives, instead of [agent] state_dir "
        "(default: $HEARTWIRE_STATE_DIR, then the config)")
    commands.add_parser("validate", parents=[common], help="check the config and exit")

    commands.add_parser("send-test", parents=[common],
                        help="send one signed heartbeat to each destination, step by step")

    keygen = commands.add_parser(
        "keygen", parents=[common],
        help="write a new Ed25519 signing key (mode 0600) and print its public key")
    keygen.add_argument("--out", required=True, metavar="PATH", help="the private key file")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    _add_editing_commands(commands, common)
    from agent.cli.maintenance import add_parser as add_maintenance_parser

    add_maintenance_parser(commands, common)

    if "central" not in arguments:
        commands.add_parser("central", help=_CENTRAL_HELP)
        return parser
    from agent.central.cli import add_parser as add_central_parser

    add_central_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the process exit code.

    Every error an operator can cause is one line on stderr and exit code 3, with
    ``--debug`` too (which prints the traceback before that line): Nagios reads 1
    as "degraded", so a broken config must never exit 1.
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser(arguments)
    debug = "--debug" in arguments  # before parsing: a usage error has no args yet
    try:
        args = parser.parse_args(arguments)
        debug = getattr(args, "debug", False)
        logs.configure(debug=debug)
        return _dispatch(args)
    except HeartwireError as exc:
        if debug:
            traceback.print_exc()
        # One line whatever the input was: a name or path can hold a newline or ESC.
        print(f"{PROG}: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        return 130
    finally:
        stdout.flush()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        return _keygen(Path(args.out), overwrite=args.force)
    if args.command == "central":
        from agent.central.cli import main as central_main

        return central_main(args)
    path = config.config_path(getattr(args, "config", None))
    if args.command in _EDITING_COMMANDS:
        return _run_editing_command(path, args)
    if args.command == "send-test":
        return _send_test(path)
    if args.command == "maintenance":
        from agent.cli.maintenance import main as maintenance_main

        return maintenance_main(path, args)
    if args.command == "validate":
        return _validate(path)
    if args.command == "check":
        return _check(path, args.names, as_json=args.json)
    return _run(path, state_dir=args.state_dir)


def _validate(path: Path) -> int:
    loaded = config.load(path)
    from agent.config.destinations import check_secrets

    check_secrets(loaded.destinations)
    stdout.emit(f"{path}: OK, {counted(len(loaded.checks), 'check')} "
                f"from {counted(len(loaded.files), 'file')}")
    return EXIT_OK


def _send_test(path: Path) -> int:
    from agent.cli.send_test import render, send_test

    loaded = config.load(path)
    if not loaded.destinations:
        raise UsageError(f"no [destinations.*] are configured in {path}")
    reports = trio.run(send_test, loaded)
    stdout.emit(render(reports))
    return EXIT_OK if all(report.ok for report in reports) else EXIT_DOWN


def _keygen(out: Path, *, overwrite: bool) -> int:
    from agent.common.keyfiles import write_private_file
    from agent.common.signing import Ed25519SigningKey

    key = Ed25519SigningKey.generate()
    write_private_file(out, key.to_text(), overwrite=overwrite)
    print(f"wrote the private key to {out} (mode 0600); give the central this public key:",
          file=sys.stderr)
    stdout.emit(key.public_key().to_text())
    return EXIT_OK


def _run(path: Path, *, state_dir: str | None = None) -> int:
    from agent.service.daemon import Daemon

    daemon = Daemon(path, state_dir=config.state_dir_override(state_dir))
    trio.run(daemon.run_with_pid_file)
    return EXIT_OK


def _check(path: Path, names: list[str], *, as_json: bool) -> int:
    from agent.schedule.scheduler import run_all_once

    loaded = config.load(path)
    checks = list(loaded.checks)
    if names:
        by_name = {check.name: check for check in checks}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            known = ", ".join(by_name) or "none"
            raise UsageError(f"no check named {', '.join(unknown)} in {path} (known: {known})")
        checks = [by_name[name] for name in dict.fromkeys(names)]
    if not checks:
        raise UsageError(f"no checks are configured in {', '.join(loaded.files)}")

    results = trio.run(
        lambda: run_all_once(checks, max_concurrent=loaded.agent.max_concurrent_checks)
    )
    by_check = {check.name: check for check in checks}
    if as_json:
        rows = [_result_json(result, by_check[result.check]) for result in results]
        stdout.emit(json.dumps(rows, indent=2))
    else:
        stdout.emit(_result_table(results, by_check))
    return max(_STATUS_EXIT[result.status] for result in results)


def _target(check: config.CheckConfig) -> str:
    if not check.port:  # an icmp check addresses a host, not a port
        return check.host
    host = f"[{check.host}]" if ":" in check.host else check.host
    return f"{host}:{check.port}"


def _result_json(result: Result, check: config.CheckConfig) -> dict[str, object]:
    observation = result.observation
    return {
        "name": check.name,
        "kind": check.kind,
        "host": check.host,
        "port": check.port,
        "group": check.group,
        "tags": list(check.tags),
        "status": result.status.value,
        "reason": observation.reason,
        "detail": observation.detail,
        "latency_ms": observation.latency_ms,
        "dns_ms": observation.dns_ms,
        "address": observation.address,
        "facts": dict(observation.facts),
        "at": result.at,
    }


def _result_table(results: list[Result], by_check: dict[str, config.CheckConfig]) -> str:
    header = ("NAME", "TARGET", "STATUS", "REASON", "LATENCY", "DETAIL")
    rows = [header]
    for result in results:
        observation = result.observation
        latency = "-" if observation.latency_ms is None else f"{observation.latency_ms:.1f} ms"
        rows.append((
            result.check,
            _target(by_check[result.check]),
            result.status.value,
            observation.reason,
            latency,
            observation.detail or "",
        ))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + ("  " + row[-1] if row[-1] else "")
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


# --- heartwire checks list/add/remove/set, heartwire config show ----------------------

_EDITING_COMMANDS = ("checks", "config")


def _add_editing_commands(
    commands: argparse._SubParsersAction[_Parser], common: _Parser
) -> None:
    checks = commands.add_parser("checks", parents=[common],
                                 help="list, add, change or remove checks")
    actions = checks.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    listing = actions.add_parser("list", parents=[common], help="every check and its file")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")

    reload = _Parser(add_help=False)
    reload.add_argument("--reload", action="store_true",
                        help="make the running daemon reload after a successful write")
    add = actions.add_parser("add", parents=[common, reload], help="add a check in a drop-in")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--host", required=True)
    add.add_argument("--port",
                     help="required unless the kind has a default (dns, ntp) or none (icmp)")
    add.add_argument("--kind")
    for flag in ("--interval", "--timeout", "--degraded-after", "--failures-before-down",
                 "--family", "--group"):
        add.add_argument(flag)
    add.add_argument("--tag", action="append", default=[], help="a label (repeatable)")
    add.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any other key of the check (repeatable)")
    remove = actions.add_parser("remove", parents=[common, reload], help="remove a drop-in check")
    remove.add_argument("name", metavar="NAME")
    change = actions.add_parser("set", parents=[common, reload], help="change a drop-in check")
    change.add_argument("name", metavar="NAME")
    change.add_argument("assignments", nargs="+", metavar="KEY=VALUE",
                        help="VALUE is a TOML value or plain text; KEY= unsets KEY")

    config_command = commands.add_parser("config", parents=[common],
                                         help="show the effective config")
    config_actions = config_command.add_subparsers(
        dest="action", metavar="ACTION", parser_class=_Parser
    )
    config_actions.required = True
    show = config_actions.add_parser(
        "show", parents=[common], help="the merged config, defaults filled in, secrets redacted"
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")


def _run_editing_command(path: Path, args: argparse.Namespace) -> int:
    from agent.config import editing
    from agent.config import view as config_view

    if args.command == "config":
        loaded = config.load(path)
        if args.json:
            stdout.emit(json.dumps(config_view.effective_json(loaded), indent=2))
        else:
            stdout.emit(config_view.effective_toml(loaded), end="")
        return EXIT_OK
    if args.action == "list":
        loaded = config.load(path)
        rows = config_view.check_rows(loaded, editing.locate_checks(path))
        stdout.emit(
            json.dumps(rows, indent=2) if args.json else config_view.format_check_rows(rows))
        return EXIT_OK

    if args.action == "add":
        result = editing.add_check(path, args.name, _added_settings(args))
    elif args.action == "remove":
        result = editing.remove_check(path, args.name)
    else:
        result = editing.set_check(path, args.name, editing.parse_assignments(args.assignments))
    stdout.emit(f"{result.action} check {args.name!r}: {result.file}")
    if args.reload:
        state_dir = config.state_dir_override(None) or result.config.agent.state_dir
        stdout.emit(_reload_daemon(result.file, state_dir))
    return EXIT_OK


def _added_settings(args: argparse.Namespace) -> dict[str, object]:
    """The new check's table from the ``checks add`` flags, in the order they are written."""
    from agent.config.editing import parse_assignments, parse_value

    settings: dict[str, object] = {} if args.kind is None else {"kind": args.kind}
    settings["host"] = args.host
    for key in ("port", "interval", "timeout", "degraded_after", "failures_before_down"):
        if getattr(args, key) is not None:
            settings[key] = parse_value(getattr(args, key))
    for key in ("family", "group"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.tag:
        settings["tags"] = args.tag
    changes = parse_assignments(args.set)
    settings.update({key: value for key, value in changes.items() if value is not None})
    return settings


def _reload_daemon(written: Path, state_dir: Path) -> str:
    from agent.errors import ReloadError
    from agent.service.pidfile import PID_FILE_NAME, pid_file_path
    from agent.service.reload import Reloader

    pid_files = dict.fromkeys([pid_file_path(state_dir), state_dir / PID_FILE_NAME])
    try:
        return Reloader(pid_files=list(pid_files)).reload()
    except ReloadError as exc:
        raise ReloadError(f"{written} was changed, but the daemon was not reloaded: {exc}") \
            from None
