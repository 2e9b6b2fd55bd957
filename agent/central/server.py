"""The running receiver: Hypercorn's trio worker and the receiver's own tasks, one nursery.

Tasks: the HTTP server, the watcher (dead man's switch sweeps, flapping ends,
hourly pruning of history past its retention) and the dispatcher (alert
deliveries). SIGTERM and
SIGINT stop it gracefully (Hypercorn finishes the requests in flight); SIGHUP
re-reads the config's agents and alert settings (channels and listen addresses
need a restart).
"""

from __future__ import annotations

import logging
import math
import resource
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from agent import __version__
from agent.central import config as central_config
from agent.central.app import App, Workers
from agent.central.channels.alertmanager import AlertmanagerChannel, refresh_forever
from agent.central.config import CentralConfig, is_loopback
from agent.central.dependencies import Dependencies
from agent.central.dispatch import IDLE_WAKE_S, Dispatcher
from agent.central.history import History
from agent.central.incidents import Incidents
from agent.central.ingest import Ingest
from agent.central.maintenance import Maintenance, MaintenanceStore
from agent.central.metrics import Metrics, ReceiverCounters
from agent.central.page import StatusPage
from agent.central.routes import Routes
from agent.central.services import Services
from agent.central.storage import STORAGE_ERRORS, open_storage
from agent.central.views import Views
from agent.common.logs import get_logger
from agent.errors import ConfigError

log = get_logger("central")

# The watcher looks at least this often, so an agent first seen mid-sleep is
# watched within this bound; one sweep is a handful of small queries.
SWEEP_EVERY_S = 1.0
PRUNE_EVERY_S = 3600.0
# With several receivers on one database, each looks at the delivery queue this
# often for alerts another receiver queued and could not send (it was killed).
SHARED_QUEUE_POLL_S = 2.0
CHANNEL_TIMEOUT_S = 15.0
GRACEFUL_TIMEOUT_S = 5.0
# Database files, log sockets, alert channels' connections, listeners.
FILES_BESIDES_REQUESTS = 64
READ_TIMEOUT_MARGIN_S = 5


class Central:
    """One receiver's worth of state and tasks.

    Args:
        config: the receiver config.
        wall_clock: seconds since the epoch: the one clock every decision reads.
        transport: the HTTP transport of alert channels (tests pass a MockTransport).
        config_path: the file to re-read on SIGHUP, if any.
    """

    def __init__(
        self,
        config: CentralConfig,
        *,
        wall_clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
        config_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.wall_clock = wall_clock
        self.storage = open_storage(config.storage)
        try:
            # The read side's own connection: pages are read while a write goes on
            # (a PostgreSQL pool serves both sides).
            self.reader = (self.storage if self.storage.concurrent
                           else open_storage(config.storage))
        except BaseException:
            self.storage.close()
            raise
        self.workers = Workers(writers=config.storage_pool_size if self.storage.concurrent
                               else 1)
        # The watcher's and the dispatcher's store calls: a database across the
        # network is waited for in a worker thread, a local file right here.
        self.run_store = (self.workers.write if self.storage.concurrent
                          else self.workers.write_here)
        self.client = httpx.AsyncClient(transport=transport, timeout=CHANNEL_TIMEOUT_S)
        channels = {name: settings.open(self.client) for name, settings in config.channels.items()}
        self.dispatcher = Dispatcher(
            self.storage, channels, wall_clock=wall_clock,
            retry_initial_s=config.retry_initial_s, retry_max_s=config.retry_max_s,
            run_store=self.run_store, lease_s=config.delivery_lease_s,
            idle_wake_s=SHARED_QUEUE_POLL_S if self.storage.concurrent else IDLE_WAKE_S,
        )
        self.incidents = Incidents(self.storage, config, list(channels), self._wake_dispatcher,
                                   watching_since=wall_clock())
        self.ingest = Ingest(config, self.storage, self.incidents, wall_clock)
        self.maintenance = Maintenance(config.maintenance, MaintenanceStore(self.storage))
        self.dependencies = Dependencies(self.storage, config)
        self.services = Services(self.storage, config, self.incidents, self.dependencies,
                                 self.maintenance)
        self.incidents.holds = lambda agent, check, now: (
            self.maintenance.holds(agent, check, now)
            or self.dependencies.holds(agent, check, now)
            or self.dependencies.waits(agent, check, now)
            or self.services.holds(agent, check, now))
        self.incidents.held_children = self.dependencies.children_held
        self.ingest.maintenance = self.maintenance
        self.ingest.services = self.services
        self.history = History(config, self.storage, wall_clock)
        self.history.maintenance = self.maintenance
        self.ingest.history = self.history
        # The read side (pages, API, /metrics) reads through its own connection, in the
        # reader thread: its own history and maintenance objects over that connection.
        self.read_history = History(config, self.reader, wall_clock, seed=False)
        self.read_maintenance = Maintenance(config.maintenance, MaintenanceStore(self.reader))
        self.read_history.maintenance = self.read_maintenance
        self.views = Views(config, self.reader, self.incidents, wall_clock)
        self.views.history = self.read_history
        self.views.maintenance = self.read_maintenance
        self.page = StatusPage(config, self.reader, self.incidents, self.read_history,
                               wall_clock)
        self.page.maintenance = self.read_maintenance
        self.read_dependencies = Dependencies(self.reader, config)
        self.views.dependencies = self.page.dependencies = self.read_dependencies
        self.read_services = Services(self.reader, config, self.incidents,
                                      self.read_dependencies, self.read_maintenance,
                                      says_bounds=False)
        self.views.services = self.page.services = self.read_services
        self.views.page = self.page
        self.app = App(
            self.ingest, self.views, config.max_body_bytes, wall_clock=wall_clock,
            workers=self.workers, body_timeout_s=config.body_timeout_s,
            max_concurrent_requests=config.max_concurrent_requests,
            read_tokens=config.read_tokens,
        )
        self.counters = ReceiverCounters()
        self.app.on_answer = self.counters.count
        for channel in channels.values():
            if isinstance(channel, AlertmanagerChannel):
                # A one-row read on the read side's connection (SQLite serialises a
                # connection's use across threads), never on the writer's mid-transaction.
                channel.check_of = self.reader.check
                channel.run_read = self.workers.read
                channel.service_of = self.read_services.service_of_check
                channel.wall_clock = wall_clock
        self.app.routes = Routes(self.reader, self.read_history, self.page,
                                 Metrics(self.views, self.counters, wall_clock))
        self.app.routes.maintenance = self.read_maintenance
        self._last_prune = float("-inf")

    def _wake_dispatcher(self) -> None:
        # Incidents are queued by ingest in a worker thread, or by the watcher on
        # the event loop: a trio.Event may only be set from the loop's thread.
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            try:
                trio.from_thread.run_sync(self.dispatcher.wake)
                return
            except RuntimeError:
                pass  # no trio at all (a command-line use of the store)
        self.dispatcher.wake()

    def apply_config(self, new: CentralConfig) -> None:
        """Uses a new config's agents and alert settings from now on."""
        self.config = new
        self.incidents.config = new
        self.ingest.config = new
        self.views.config = new
        self.history.config = new
        self.read_history.config = new
        self.maintenance.weekly = new.maintenance
        self.read_maintenance.weekly = new.maintenance
        self.page.config = new
        self.services.config = self.read_services.config = new
        self.services.forget()
        self.dependencies.config = self.read_dependencies.config = new
        self.app.read_tokens = new.read_tokens

    def reload(self) -> bool:
        """Re-reads the config file; keeps the running config when it is invalid."""
        if self.config_path is None:
            return False
        try:
            new = central_config.load(self.config_path)
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            return False
        self.apply_config(new)
        log.info("reloaded %s: %d agents", self.config_path, len(new.agents))
        return True

    def watch_once(self, now: float | None = None) -> float | None:
        """One sweep: dead man's switch, flapping, pruning. Returns the next due time.

        Args:
            now: the wall time of the sweep (default: the clock; the watcher reads it
                on the event loop and sweeps in a worker thread).
        """
        now = self.wall_clock() if now is None else now
        self.services.forget()  # members read once per sweep, as they are now
        next_due = self.incidents.sweep(now)
        # Each receiver looks hourly; of several on one database, the first to
        # claim the hour prunes.
        if now - self._last_prune >= PRUNE_EVERY_S:
            if self.storage.claim_job("prune", PRUNE_EVERY_S, now):
                pruned = self.storage.prune(self.config.retention, now)
                if any(pruned.values()):
                    log.info("pruned past their retention: %s",
                             ", ".join(f"{count} {table}" for table, count in pruned.items()))
            self._last_prune = now
        self.history.tick(now)
        with self.storage.transaction():
            # Silences and maintenance windows change who counts for a service.
            self.services.evaluate(now)
        self.incidents.release_held(now)
        return next_due

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweeps until cancelled: at each deadline, and at least every SWEEP_EVERY_S."""
        task_status.started()
        failing = False
        while True:
            try:
                next_due = await self.run_store(self.watch_once, self.wall_clock())
            except STORAGE_ERRORS as exc:
                # A full disk must not end the receiver: say so once, sweep again soon.
                if not failing:
                    log.error("the watcher cannot use the store: %s; retrying every %gs",
                              exc, SWEEP_EVERY_S)
                failing, next_due = True, None
            else:
                if failing:
                    log.info("the watcher can use the store again")
                failing = False
            wait = SWEEP_EVERY_S if next_due is None else next_due - self.wall_clock()
            await trio.sleep(max(0.0, min(wait, SWEEP_EVERY_S)))

    async def refresh_alertmanagers(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keeps the firing alerts of Alertmanager channels from expiring there."""
        channels = [channel for channel in self.dispatcher.channels.values()
                    if isinstance(channel, AlertmanagerChannel)]
        await refresh_forever(channels, self.reader.open_incidents, task_status=task_status)

    def hypercorn_config(self) -> HypercornConfig:
        """Hypercorn's settings from ours (bind, TLS, logs through our logger)."""
        settings = HypercornConfig()
        settings.bind = list(self.config.listen)
        if self.config.certfile and self.config.keyfile:
            settings.certfile = str(self.config.certfile)
            settings.keyfile = str(self.config.keyfile)
        settings.accesslog = None
        settings.errorlog = logging.getLogger("heartwire.central.http")
        settings.graceful_timeout = GRACEFUL_TIMEOUT_S
        # A connection whose next bytes do not come within the body timeout is closed
        # (the app bounds a whole body's time; this bounds a read that never returns).
        # Later than the app's own limit, so that the app's 408 answers first.
        settings.read_timeout = math.ceil(self.config.body_timeout_s) + READ_TIMEOUT_MARGIN_S
        return settings

    def warn_about_exposure(self) -> None:
        """Logs what makes this receiver easier to attack than it needs to be."""
        if self.config.certfile is None:
            for address in self.config.listen:
                if not is_loopback(address):
                    log.warning(
                        "listening on %s without TLS: messages and the status page travel in"
                        " clear text; set [server] certfile/keyfile or listen on loopback"
                        " behind a TLS reverse proxy", address)
        if not self.config.read_tokens and not all(map(is_loopback, self.config.listen)):
            log.warning("the status page and /api/v1 are public; set [server] read_token_file"
                        " to require a token")
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.config.max_concurrent_requests + FILES_BESIDES_REQUESTS
        if soft != resource.RLIM_INFINITY and soft < wanted:
            log.warning("the open-files limit (%d) is below max_concurrent_requests + %d;"
                        " raise LimitNOFILE= or lower max_concurrent_requests",
                        soft, FILES_BESIDES_REQUESTS)

    async def serve(
        self,
        *,
        shutdown: trio.Event | None = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serves until ``shutdown`` is set (or cancelled); reports the bound URLs."""
        stop = trio.Event() if shutdown is None else shutdown
        self.warn_about_exposure()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.dispatcher.run)
                await nursery.start(self.watch)
                await nursery.start(self.refresh_alertmanagers)
                binds: list[str] = await nursery.start(self._http, stop, nursery.cancel_scope)
                for url in binds:
                    log.info("heartwire central %s listening on %s", __version__, url)
                task_status.started(binds)
                await trio.sleep_forever()  # until _http cancels the nursery
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()
            self.storage.close()
            self.reader.close()

    async def _http(
        self, stop: trio.Event, scope: trio.CancelScope,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # Hypercorn drains the requests in flight once stop is set, then returns;
        # only then do the other tasks end.
        with warnings.catch_warnings():
            # Hypercorn 0.13 (Debian 12) names trio.MultiError in an except clause,
            # which trio 0.22 answers with a deprecation warning on every stop.
            warnings.filterwarnings(
                "ignore", r"trio\.MultiError is deprecated", trio.TrioDeprecationWarning
            )
            await serve(
                self.app,  # type: ignore[arg-type]  # our ASGI types are structural
                self.hypercorn_config(),
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        scope.cancel()

    async def run(self) -> None:
        """Runs until SIGTERM or SIGINT; SIGHUP reloads."""
        stop = trio.Event()
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: self.serve(shutdown=stop))
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self.reload()
                        continue
                    log.info("received %s, stopping", signal.Signals(signum).name)
                    stop.set()
                    break
                nursery.cancel_scope.deadline = trio.current_time() + GRACEFUL_TIMEOUT_S
        log.info("stopped")
