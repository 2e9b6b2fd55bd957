"""The running receiver: Hypercorn's trio worker and the receiver's own tasks, one nursery.

Tasks: the HTTP server, the watcher (dead man's switch sweeps, flapping ends,
pruning of old message ids) and the dispatcher (alert deliveries). SIGTERM and
SIGINT stop it gracefully (Hypercorn finishes the requests in flight); SIGHUP
re-reads the config's agents and alert settings (channels and listen addresses
need a restart).
"""

from __future__ import annotations

import logging
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
from agent.central.app import App
from agent.central.config import CentralConfig
from agent.central.dispatch import Dispatcher
from agent.central.incidents import Incidents
from agent.central.ingest import Ingest
from agent.central.storage import Storage
from agent.central.views import Views
from agent.errors import ConfigError
from agent.logs import get_logger

log = get_logger("central")

# The watcher looks at least this often, so an agent first seen mid-sleep is
# watched within this bound; one sweep is a handful of small queries.
SWEEP_EVERY_S = 1.0
PRUNE_EVERY_S = 3600.0
CHANNEL_TIMEOUT_S = 15.0
GRACEFUL_TIMEOUT_S = 5.0


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
        self.storage = Storage.open_in(config.state_dir)
        self.client = httpx.AsyncClient(transport=transport, timeout=CHANNEL_TIMEOUT_S)
        channels = {name: settings.open(self.client) for name, settings in config.channels.items()}
        self.dispatcher = Dispatcher(
            self.storage, channels, wall_clock=wall_clock,
            retry_initial_s=config.retry_initial_s, retry_max_s=config.retry_max_s,
        )
        self.incidents = Incidents(self.storage, config, list(channels), self.dispatcher.wake,
                                   watching_since=wall_clock())
        self.ingest = Ingest(config, self.storage, self.incidents, wall_clock)
        self.views = Views(config, self.storage, self.incidents, wall_clock)
        self.app = App(self.ingest, self.views, config.max_body_bytes)
        self._last_prune = float("-inf")

    def apply_config(self, new: CentralConfig) -> None:
        """Uses a new config's agents and alert settings from now on."""
        self.config = new
        self.incidents.config = new
        self.ingest.config = new
        self.views.config = new

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

    def watch_once(self) -> float | None:
        """One sweep: dead man's switch, flapping, pruning. Returns the next due time."""
        now = self.wall_clock()
        next_due = self.incidents.sweep(now)
        if now - self._last_prune >= PRUNE_EVERY_S:
            with self.storage.transaction():
                pruned = self.storage.prune_messages(now - self.config.dedup_retention_s)
            if pruned:
                log.info("forgot %d message ids older than the dedup retention", pruned)
            self._last_prune = now
        return next_due

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweeps until cancelled: at each deadline, and at least every SWEEP_EVERY_S."""
        task_status.started()
        while True:
            next_due = self.watch_once()
            wait = SWEEP_EVERY_S if next_due is None else next_due - self.wall_clock()
            await trio.sleep(max(0.0, min(wait, SWEEP_EVERY_S)))

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
        return settings

    async def serve(
        self,
        *,
        shutdown: trio.Event | None = None,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serves until ``shutdown`` is set (or cancelled); reports the bound URLs."""
        stop = trio.Event() if shutdown is None else shutdown
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.dispatcher.run)
                await nursery.start(self.watch)
                binds: list[str] = await nursery.start(self._http, stop, nursery.cancel_scope)
                for url in binds:
                    log.info("heartwire central %s listening on %s", __version__, url)
                task_status.started(binds)
                await trio.sleep_forever()  # until _http cancels the nursery
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()
            self.storage.close()

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
