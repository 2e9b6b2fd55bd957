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
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import trio

from agent import __version__, config, logs
from agent.errors import HeartwireError, UsageError
from agent.model import Result, Status

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_DOWN = 2
EXIT_UNKNOWN = 3

_STATUS_EXIT = {Status.UP: EXIT_OK, Status.DEGRADED: EXIT_DEGRADED, Status.DOWN: EXIT_DOWN}


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; 2 means "down" here, so raise instead."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help=f"main config file (default: ${config.CONFIG_ENV_VAR}, "
        f"else {config.DEFAULT_CONFIG_PATH})",
    )
    common.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")

    parser = _Parser(prog="heartwire", description="Checks private services, reports outbound.")
    parser.add_argument("--version", action="version", version=f"heartwire {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    check = commands.add_parser("check", parents=[common], help="run checks once and print them")
    check.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    check.add_argument("names", nargs="*", metavar="NAME", help="checks to run (default: all)")

    commands.add_parser("run", parents=[common], help="run the checks on their schedules")
    commands.add_parser("validate", parents=[common], help="check the config and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line and returns the process exit code."""
    parser = _build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        logs.configure(debug=args.debug)
        path = config.config_path(args.config)
        if args.command == "validate":
            return _validate(path)
        if args.command == "check":
            return _check(path, args.names, as_json=args.json)
        return _run(path)
    except HeartwireError as exc:
        if debug:
            raise
        print(f"heartwire: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        return 130


def _validate(path: Path) -> int:
    loaded = config.load(path)
    files = len(loaded.files)
    print(f"{path}: OK, {len(loaded.checks)} checks from {files} file{'s' * (files != 1)}")
    return EXIT_OK


def _run(path: Path) -> int:
    from agent.daemon import Daemon

    daemon = Daemon(path)
    trio.run(daemon.run)
    return EXIT_OK


def _check(path: Path, names: list[str], *, as_json: bool) -> int:
    from agent.scheduler import run_all_once

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
        print(json.dumps(rows, indent=2))
    else:
        print(_result_table(results, by_check))
    return max(_STATUS_EXIT[result.status] for result in results)


def _target(check: config.CheckConfig) -> str:
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
