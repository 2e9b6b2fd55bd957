"""``heartwire maintenance start|end``: a maintenance window, asked for from the agent's host.

The command writes one signed-to-be ``maintenance`` message into the agent's outbox
(docs/protocol.md) and returns; the running agent sends it to every heartwire
receiver (``kind = "native"``) within a few seconds, and keeps it until it is
delivered. So it works from the host being changed: run ``start`` before the work
(the window holds the alerts, the agent's silence too when no ``--check`` is given),
``end`` after it. A window always ends on its own after ``--for``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from agent.common import stdout
from agent.common.names import NAME_RULE, is_valid_name
from agent.common.tables import format_duration, parse_duration
from agent.config import loader as config
from agent.errors import ConfigError, OutboxFullError, UsageError
from agent.outbound.messages import MAINTENANCE
from agent.outbound.messages import MAX_MAINTENANCE_CHECKS as MAX_CHECKS
from agent.outbound.messages import MAX_MAINTENANCE_REASON_CHARS as MAX_REASON_CHARS
from agent.outbound.messages import MAX_MAINTENANCE_S as MAX_WINDOW_S

EXIT_OK: Final = 0


def add_parser(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
               common: argparse.ArgumentParser) -> None:
    """Adds ``maintenance start`` and ``maintenance end`` to the main parser."""
    maintenance = commands.add_parser(
        "maintenance", parents=[common],
        help="hold this agent's alerts at its heartwire receivers for a while")
    actions = maintenance.add_subparsers(dest="action", metavar="ACTION",
                                         parser_class=type(maintenance))
    actions.required = True
    start = actions.add_parser("start", parents=[common], help="start a window now")
    start.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                       help="how long (e.g. 20m, 2h; at most 7d): it ends on its own then")
    start.add_argument("--check", action="append", default=[], metavar="NAME",
                       help="a check it covers (repeat; default: the whole agent, its "
                       "silence included)")
    start.add_argument("--reason", default=None, metavar="TEXT",
                       help="shown beside the checks on the status page")
    end = actions.add_parser("end", parents=[common], help="end the windows started here")
    for parser in (start, end):
        parser.add_argument(
            "--state-dir", metavar="DIR",
            help="where the outbox lives, as for heartwire run (default: "
            "$HEARTWIRE_STATE_DIR, then the config)")


def start_data(loaded: config.Config, duration: str, checks: list[str],
               reason: str | None) -> dict[str, object]:
    """The ``data`` of a maintenance start, checked against the config and the bounds.

    Raises:
        UsageError: a bad duration, an unknown check, a reason too long.
    """
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if not 0 < seconds <= MAX_WINDOW_S:
        raise UsageError(f"--for must be more than 0 and at most {format_duration(MAX_WINDOW_S)}"
                         " (a window always ends on its own)")
    known = {check.name for check in loaded.checks}
    for name in checks:
        if not is_valid_name(name):
            raise UsageError(f"--check {name!r}: a check name {NAME_RULE}")
        if name not in known:
            raise UsageError(f"--check {name}: no such check in {', '.join(loaded.files)}")
    names = list(dict.fromkeys(checks))
    if len(names) > MAX_CHECKS:
        raise UsageError(f"at most {MAX_CHECKS} --check; leave them out for the whole agent")
    if reason is not None:
        reason = " ".join(reason.split())  # one line on the page, whatever was typed
        if len(reason) > MAX_REASON_CHARS:
            raise UsageError(f"--reason is {len(reason)} characters; at most {MAX_REASON_CHARS}")
    return {"action": "start", "duration_s": seconds, "checks": names, "reason": reason or None}


def main(path: Path, args: argparse.Namespace) -> int:
    """Runs ``heartwire maintenance start|end``; returns the exit code."""
    # Here, not at the top: every command builds this one's parser, and `heartwire
    # check` must not load the outbox (sqlite3) and delivery (httpx).
    import sqlite3

    from agent.outbound.delivery import PROGRESS_TICK_S
    from agent.outbound.spool import open_outbox

    loaded = config.load(path)
    receivers = [d.name for d in loaded.destinations if d.kind == "native"]
    if not receivers:
        raise UsageError(f"no heartwire receiver (a destination with kind = \"native\") in "
                         f"{path}: maintenance windows are kept there")
    if args.action == "start":
        data = start_data(loaded, args.duration, args.check, args.reason)
    else:
        data = {"action": "end"}
    state_dir = config.state_dir_override(args.state_dir) or loaded.agent.state_dir
    try:
        outbox = open_outbox(state_dir, agent_id=loaded.agent.id,
                             destinations=[d.name for d in loaded.destinations],
                             max_messages=loaded.central.max_outbox_messages,
                             max_bytes=loaded.central.max_outbox_bytes)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(loaded.files[0], "agent.state_dir",
                          f"cannot open the outbox in {state_dir}: {exc}") from None
    try:
        (message,) = outbox.enqueue_many([(MAINTENANCE, data, None)])
    except OutboxFullError as exc:
        raise UsageError(f"the maintenance message was not stored: {exc}") from None
    finally:
        outbox.close()
    if args.action == "start":
        covered = ", ".join(args.check) or "the whole agent"
        what = f"maintenance of {covered} for {format_duration(parse_duration(args.duration))}"
    else:
        what = "the end of this agent's maintenance"
    stdout.emit(f"{what} is queued (message {message.seq}); the running agent sends it to "
                f"{', '.join(receivers)} within {PROGRESS_TICK_S:g} s")
    return EXIT_OK
