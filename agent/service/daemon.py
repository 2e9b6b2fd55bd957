"""The long-running agent: loads the config, runs the scheduler, handles signals.

SIGTERM and SIGINT stop it (cancellation closes every socket at once; what is
still in memory gets ``reporting.CLOSE_TIMEOUT_S`` to reach the outbox); SIGHUP
reloads the config: a valid new config replaces the old one without losing the
status of unchanged checks, an invalid one is logged as one line and the running
config stays.

Under systemd (``Type=notify``) it reports READY=1 once every task has started,
RELOADING=1/READY=1 around a reload, STOPPING=1 on the way out, a one-line STATUS=,
and WATCHDOG=1 while its progress sources advance (see :mod:`agent.service.liveness`).
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from agent import __version__
from agent.checks.tracepath import PathTracer
from agent.common.logs import get_logger, log_result
from agent.common.wording import counted
from agent.config import loader as config
from agent.errors import ConfigError
from agent.model import Result, StateChange
from agent.outbound.messages import CheckSnapshot
from agent.schedule.scheduler import Scheduler
from agent.service import liveness, systemd
from agent.service.pidfile import hold_pid_file, pid_file_path

if TYPE_CHECKING:
    from agent.outbound.reporting import CheckSource, Reporting

log = get_logger("daemon")


def scheduler_checks(scheduler: Scheduler) -> CheckSource:
    """What heartbeats list, read from the scheduler's trackers when one is due."""
    # Here, not at the top: only an agent that reports loads the outbox and httpx.
    from agent.outbound.reporting import CheckSource

    def snapshot(part_size: int) -> Iterator[list[CheckSnapshot]]:
        trackers = list(scheduler.trackers.items())
        for start in range(0, len(trackers), part_size):
            # An icmp check has no port (0 in its config): the heartbeat says null.
            yield [
                CheckSnapshot(name, tracker.status, tracker.last_result,
                              group=tracker.check.group, host=tracker.check.host,
                              port=tracker.check.port or None,
                              depends_on=tracker.check.depends_on,
                              service=tracker.check.service)
                for name, tracker in trackers[start:start + part_size]
            ]

    return CheckSource(snapshot, lambda: (scheduler.stats.runs, scheduler.stats.skipped))


class Daemon:
    """One agent process's worth of work.

    Args:
        config_path: the main config file (drop-ins are found beside it).
        wall_clock: seconds since the epoch, for timestamps.
        notifier: where sd_notify messages go (default: from ``$NOTIFY_SOCKET``).
        state_dir: overrides ``[agent] state_dir`` (``--state-dir``), or None.
    """

    def __init__(
        self,
        config_path: Path,
        *,
        wall_clock: Callable[[], float] = time.time,
        notifier: systemd.Notifier | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.state_dir = state_dir
        self.config = self._with_state_dir(config.load(config_path))
        self.scheduler = Scheduler(
            self.config.checks,
            max_concurrent=self.config.agent.max_concurrent_checks,
            on_result=self._on_result,
            wall_clock=wall_clock,
            path_tracer=PathTracer(),
        )
        self._results_log = get_logger("checks")
        self.notifier = notifier if notifier is not None else systemd.Notifier.from_environ()
        # Every source must advance while it has work, or WATCHDOG=1 is withheld and
        # systemd restarts the daemon; other parts append their own.
        self.progress_sources: list[liveness.ProgressSource] = [
            liveness.scheduler_progress(self.scheduler, lambda: self.config.checks),
        ]
        # Fragments of the STATUS= line, in order; other parts append their own.
        self.status_parts: list[liveness.StatusPart] = [self._checks_status]

        self.reporting: Reporting | None = None
        if self.config.destinations:
            # Only an agent that reports loads the outbox (sqlite3), httpx and signing.
            from agent.outbound.reporting import open_reporting

            self.reporting = open_reporting(self.config, scheduler_checks(self.scheduler),
                                            wall_clock=wall_clock)
        if self.reporting is not None:
            self.progress_sources.append(liveness.delivery_progress(self.reporting.delivery))
            self.status_parts.append(self.reporting.status)

    def _checks_status(self) -> str:
        # The packaged config has no checks: an idle agent tells the admin what to do.
        if not self.config.checks:
            return (
                f"idle, no checks: add them to {self.config_path} or with "
                "'heartwire checks add', then 'systemctl reload heartwire'"
            )
        return liveness.checks_summary(self.scheduler.trackers.values())

    def status_line(self) -> str:
        """The one-line summary systemd shows (``systemctl status heartwire``)."""
        return liveness.status_line(self.status_parts)

    def _with_state_dir(self, loaded: config.Config) -> config.Config:
        if self.state_dir is None:
            return loaded
        return replace(loaded, agent=replace(loaded.agent, state_dir=self.state_dir))

    def _on_result(self, result: Result, change: StateChange | None) -> None:
        log_result(self._results_log, result, change)
        if self.reporting is not None:
            self.reporting.on_result(result, change)

    def reload(self) -> bool:
        """Re-reads the config; keeps the running one when the new one is invalid.

        Returns:
            Whether the new config was applied.
        """
        try:
            new_config = self._with_state_dir(config.load(self.config_path))
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            return False
        self.scheduler.reload(
            new_config.checks, max_concurrent=new_config.agent.max_concurrent_checks
        )
        self.config = new_config
        if self.reporting is not None:
            self.reporting.note_reload(new_config)
        log.info("reloaded %s: %s", self.config_path, counted(len(new_config.checks), "check"))
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs until SIGTERM or SIGINT; reloads on SIGHUP."""
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.scheduler.run)
                if self.reporting is not None:
                    await nursery.start(self.reporting.run)
                log.info(
                    "heartwire %s running as agent %r with %s from %s",
                    __version__,
                    self.config.agent.id,
                    counted(len(self.config.checks), "check"),
                    ", ".join(self.config.files),
                )
                nursery.start_soon(
                    liveness.supervise, self.notifier, self.progress_sources, self.status_parts
                )
                self.notifier.ready(self.status_line())
                task_status.started()
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self.notifier.reloading(f"reloading {self.config_path}")
                        self.reload()
                        for source in self.progress_sources:
                            source.restart(trio.current_time())
                        self.notifier.ready(self.status_line())
                        continue
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    break
                self.notifier.stopping("stopping")
                nursery.cancel_scope.cancel()
        log.info("stopped")

    async def run_with_pid_file(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """:meth:`run`, holding the pid file ``heartwire checks --reload`` signals.

        The pid file is ``$RUNTIME_DIRECTORY/heartwire.pid`` under systemd, else
        ``<state_dir>/heartwire.pid``; it is removed on the way out. A daemon that
        cannot create it still runs (reload then needs SIGHUP or systemctl).

        Raises:
            AlreadyRunning: when another daemon holds the same pid file.
        """
        path = pid_file_path(self.config.agent.state_dir)
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(hold_pid_file(path))
            except OSError as exc:
                log.warning("cannot write pid file %s (%s); running without one", path, exc)
            await self.run(task_status=task_status)
