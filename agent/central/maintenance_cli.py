"""``heartwire central maintenance add|list|end``: windows added by hand.

They go into the receiver's database (``[storage] state_dir``, or the
``--state-dir`` given to ``heartwire central``), where the running receiver reads
them within a second; no reload is needed. A window needs ``--for`` (at most 7
days), so it always ends on its own; ``end`` ends it early.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from agent.central.config import CentralConfig
from agent.central.maintenance import MAX_WINDOW_S, MaintenanceStore
from agent.central.storage import Storage
from agent.common.names import NAME_RULE, is_valid_name
from agent.common.tables import format_duration, parse_duration
from agent.common.timefmt import rfc3339
from agent.errors import UsageError

EXIT_OK = 0
MAX_REASON = 200


def add_maintenance_parser(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
                           common: argparse.ArgumentParser,
                           parser_class: type[argparse.ArgumentParser]) -> None:
    """Adds ``maintenance add|list|end`` to ``heartwire central``."""
    maintenance = sub.add_parser("maintenance", parents=[common],
                                 help="hold alerts during planned work")
    actions = maintenance.add_subparsers(dest="maintenance_command", metavar="ACTION",
                                         parser_class=parser_class)
    actions.required = True
    add = actions.add_parser("add", parents=[common], help="start a window now")
    add.add_argument("agent", metavar="AGENT", help="the agent whose alerts wait")
    add.add_argument("--check", metavar="NAME", action="append", default=[],
                     help="only this check (repeatable; default: the whole agent, "
                          "silence included)")
    add.add_argument("--for", dest="duration", metavar="DURATION", required=True,
                     help="how long, e.g. 20m or 2h (at most 7d)")
    add.add_argument("--reason", metavar="TEXT", default="maintenance",
                     help="shown on the status page")
    actions.add_parser("list", parents=[common], help="windows running or planned")
    end = actions.add_parser("end", parents=[common], help="end a window now")
    end.add_argument("window", metavar="ID", type=int, help="its number (see list)")


def maintenance_main(args: argparse.Namespace, config: CentralConfig,
                     now: float | None = None) -> int:
    """Runs one ``maintenance`` action against the receiver's database."""
    if getattr(args, "state_dir", None):
        config = replace(config, state_dir=Path(args.state_dir))
    moment = time.time() if now is None else now
    storage = Storage.open_in(config.state_dir)
    try:
        store = MaintenanceStore(storage)
        if args.maintenance_command == "add":
            return _add(args, config, store, storage, moment)
        if args.maintenance_command == "end":
            with storage.transaction():
                ended = store.end(args.window, moment)
            if not ended:
                raise UsageError(f"no running or planned maintenance window {args.window}")
            print(f"ended maintenance window {args.window}")
            return EXIT_OK
        for window in store.current(moment):
            what = ",".join(window.checks) or "*"
            print(f"{window.id}\t{window.agent}\t{what}\t{rfc3339(window.starts_at)}\t"
                  f"{rfc3339(window.ends_at)}\t{window.reason}")
        for weekly in config.maintenance:
            print(f"config:{weekly.name}\t{weekly.agent}\t{','.join(weekly.checks) or '*'}\t"
                  f"weekly {weekly.start:%H:%M} day {weekly.weekday + 1} {weekly.zone.key}\t"
                  f"{format_duration(weekly.duration_s)}\t{weekly.reason}")
        return EXIT_OK
    finally:
        storage.close()


def _add(args: argparse.Namespace, config: CentralConfig, store: MaintenanceStore,
         storage: Storage, now: float) -> int:
    if args.agent not in config.agents:
        raise UsageError(f"agent {args.agent!r} is not registered (heartwire central agents list)")
    for check in args.check:
        if not is_valid_name(check):
            raise UsageError(f"--check {check!r} is not a check name: it {NAME_RULE}")
    try:
        duration = parse_duration(args.duration)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    if not 0 < duration <= MAX_WINDOW_S:
        raise UsageError("--for must be more than 0s and at most 7d")
    reason = " ".join(args.reason.split())[:MAX_REASON] or "maintenance"
    with storage.transaction():
        window = store.add(args.agent, args.check, now, now + duration, reason, now)
    what = ", ".join(args.check) if args.check else "all checks"
    print(f"maintenance window {window}: {args.agent} ({what}) until {rfc3339(now + duration)}")
    return EXIT_OK
