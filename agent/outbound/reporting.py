"""What the agent reports, and when: heartbeats, state changes, batched results.

* ``state_change``: queued at once when a check's status flips.
* ``heartbeat``: every ``[central] heartbeat_interval`` (the first at start), with
  every check's latest status, run counts, the outbox depth and what was dropped
  or rejected since the previous heartbeat.
* ``results``: when a destination has ``send = "all"``, every observation,
  gathered for ``results_batch_interval`` and queued as one message.

The scheduler calls :meth:`Reporting.on_result` synchronously, so it only puts the
message on an in-memory channel; a writer task moves what has gathered into the
outbox in one transaction (in a worker thread). The heartbeat goes through the same
outbox and delivery as everything else, so "heartbeats stopped" means "this agent
can no longer deliver".

A full disk under the state directory does not stop the agent: what cannot be
stored is counted as dropped (:class:`~agent.errors.OutboxFullError`), logged once
per episode, and reported in the first heartbeat stored once space returns.
"""

from __future__ import annotations

import functools
import math
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from agent import __version__
from agent.common.logs import get_logger
from agent.common.network_path import path_data
from agent.common.redact import redact_url
from agent.common.webhook_auth import WebhookAuth
from agent.config.destinations import load_secret, load_signing_keys, secrets_of
from agent.config.loader import STATE_DIR_ENV_VAR, Config
from agent.errors import ConfigError, OutboxFullError
from agent.model import Result, StateChange, Status
from agent.outbound.delivery import PROGRESS_TICK_S, Deliverer, Delivery, open_client
from agent.outbound.sinks import make_sink
from agent.outbound.spool import RESULTS, STATE_CHANGE, AsyncOutbox, OutboxDepth, iso_time
from agent.outbound.spool import open_outbox as open_outbox_file
from agent.schedule.scheduler import Scheduler
from agent.service.liveness import CounterProgress

log = get_logger("reporting")


# In-memory hand-over from the scheduler to the outbox writer. The writer empties
# it within milliseconds; it only fills when the disk stalls, and then the oldest
# waiting observations are the ones to lose (state changes are never dropped here).
PENDING_LIMIT = 10_000
WRITE_BATCH = 500
# One results message holds at most this many observations (about 200 KB), so that
# however many checks an agent runs, it stays far below a receiver's body limit
# (a 413 would be permanent for the message).
RESULTS_PER_MESSAGE = 1_000
# A full-disk episode ends when no write failed for this long (see Reporting._store).
STORAGE_QUIET_S = 60.0
# A heartbeat lists its checks this many at a time, yielding to the checks between
# parts (about 1-2 ms of work each).
SNAPSHOT_PART = 500
# How long a stopping agent may spend writing what is still in memory and closing
# the outbox. With closing the HTTP clients (delivery.CLIENT_CLOSE_TIMEOUT_S) and
# the journal's flush (systemd.FLUSH_TIMEOUT_S, twice), SIGTERM ends the process
# within 5 s (README).
CLOSE_TIMEOUT_S = 3.0


def observation_data(result: Result) -> dict[str, Any]:
    """One observation as the protocol writes it (docs/protocol.md)."""
    seen = result.observation
    return {
        "check": result.check,
        "status": result.status.value,
        "reason": seen.reason,
        "latency_ms": seen.latency_ms,
        "dns_ms": seen.dns_ms,
        "address": seen.address,
        "detail": seen.detail,
        "consecutive_failures": result.consecutive_failures,
        "at": iso_time(result.at),
    }


def state_change_data(change: StateChange) -> dict[str, Any]:
    """A state change's ``data`` object (``path`` only when a trace was made)."""
    data = {"check": change.check, "previous": change.previous.value,
            "current": change.current.value, "observation": observation_data(change.result)}
    if change.path is not None:
        data["path"] = path_data(change.path)
    return data


@dataclass(frozen=True, slots=True)
class CheckSnapshot:
    """A check's latest status, as a heartbeat lists it."""

    name: str
    status: Status
    last: Result | None
    # Where the check points and how it is shown, so a receiver can group its page.
    group: str | None = None
    host: str | None = None
    port: int | None = None

    def data(self) -> dict[str, Any]:
        """The heartbeat's entry for this check."""
        last = self.last
        return {
            "name": self.name,
            "group": self.group,
            "host": self.host,
            "port": self.port,
            "status": self.status.value,
            "reason": last.observation.reason if last else None,
            "latency_ms": last.observation.latency_ms if last else None,
            "at": iso_time(last.at) if last else None,
        }


def heartbeat_data(
    *, started_at: float, interval_s: float, checks: list[CheckSnapshot], runs: int,
    skipped: int, counts: Mapping[str, int], depth: OutboxDepth
) -> dict[str, Any]:
    """A heartbeat's ``data`` object (counts: the outbox's drop/reject counters)."""
    return {
        "version": __version__,
        "started_at": iso_time(started_at),
        "interval_s": interval_s,
        "checks": [check.data() for check in checks],
        "runs": runs,
        "skipped": skipped,
        "outbox": {"depth": depth.messages, "bytes": depth.bytes},
        "dropped": {
            "results": counts.get("dropped.results", 0),
            "heartbeats": counts.get("dropped.heartbeats", 0),
            "state_changes": counts.get("dropped.state_changes", 0),
            "set_aside": counts.get("dropped.set_aside", 0),
        },
        "rejected": counts.get("rejected", 0),
    }


class Reporting:
    """The outbox, the messages that go into it and the delivery loops that empty it.

    Args:
        config: the agent's config (``[central]`` and the destinations).
        outbox: the opened outbox.
        delivery: a deliverer per destination.
        scheduler: where the check statuses and run counts come from.
        wall_clock: seconds since the epoch, for timestamps.
        pending_results_limit: how many observations may wait for the next
            ``results`` message; beyond it the oldest are dropped (and counted).
    """

    def __init__(
        self,
        config: Config,
        outbox: AsyncOutbox,
        delivery: Delivery,
        scheduler: Scheduler,
        *,
        wall_clock: Callable[[], float] = time.time,
        pending_results_limit: int = PENDING_LIMIT,
    ) -> None:
        self.central = config.central
        self.destinations = config.destinations
        self.pending_results_limit = pending_results_limit
        self.outbox = outbox
        self.delivery = delivery
        self.scheduler = scheduler
        self.wall_clock = wall_clock
        self.started_at = wall_clock()
        self.wants_results = any(d.wants_results for d in config.destinations)
        self.heartbeats = 0
        self._send, self._receive = trio.open_memory_channel[tuple[str, dict[str, Any]]](
            math.inf)
        self._results: deque[dict[str, Any]] = deque()
        self.results_lost = 0
        # A full-disk episode is under way (logged once), and when a write last failed.
        self.storage_failing = False
        self._storage_failed_at = -math.inf

    async def _store(self, write: Callable[[], Awaitable[object]]) -> bool:
        """Runs one outbox write; a full disk is logged once per episode, not raised.

        An episode ends once writes succeed again and none failed for
        ``STORAGE_QUIET_S``: on a nearly full disk a small write may pass between
        failing ones, and that must not log the episode again at every check.

        Returns:
            Whether the write was stored (if not, its messages were counted as dropped).
        """
        try:
            await write()
        except OutboxFullError as exc:
            if not self.storage_failing:
                log.error("%s; dropping (and counting) messages until space returns", exc)
            self.storage_failing = True
            self._storage_failed_at = trio.current_time()
            return False
        if self.storage_failing and trio.current_time() - self._storage_failed_at >= \
                STORAGE_QUIET_S:
            log.warning("the outbox stores messages again; heartbeats report how many "
                        "were dropped")
            self.storage_failing = False
        return True

    def on_result(self, result: Result, change: StateChange | None) -> None:
        """Called by the scheduler for every result; never blocks."""
        if change is not None:
            self._put(STATE_CHANGE, state_change_data(change))
        if self.wants_results:
            if len(self._results) >= self.pending_results_limit:
                self._results.popleft()
                self.results_lost += 1
            self._results.append(observation_data(result))

    def _put(self, msg_type: str, data: dict[str, Any]) -> None:
        try:
            self._send.send_nowait((msg_type, data))
        except trio.ClosedResourceError:
            # Stopping: a probe that finished while being cancelled; its state
            # change is seen again at the next start.
            log.debug("stopping: %s not stored", msg_type)

    async def _snapshot(self) -> list[CheckSnapshot]:
        """Every check's status, listed in parts with a checkpoint between them.

        Listing 10,000 checks in one go held the event loop for tens of
        milliseconds, in which no check could start: scheduling lag at every
        heartbeat. A check that changes between two parts is listed as it is then.
        """
        trackers = list(self.scheduler.trackers.items())
        snapshots: list[CheckSnapshot] = []
        for start in range(0, len(trackers), SNAPSHOT_PART):
            if start:
                await trio.lowlevel.checkpoint()
            # An icmp check has no port (0 in its config): the heartbeat says null.
            snapshots.extend(
                CheckSnapshot(name, tracker.status, tracker.last_result,
                              group=tracker.check.group, host=tracker.check.host,
                              port=tracker.check.port or None)
                for name, tracker in trackers[start:start + SNAPSHOT_PART])
        return snapshots

    async def send_heartbeat(self) -> None:
        """Queues one heartbeat now (its counts are taken inside the transaction)."""
        checks = await self._snapshot()  # read on the trio thread, not in the worker
        runs, skipped = self.scheduler.stats.runs, self.scheduler.stats.skipped
        started_at, interval_s = self.started_at, self.central.heartbeat_interval_s
        # Results that never reached the outbox (a stalled disk) count as dropped too.
        lost, self.results_lost = self.results_lost, 0

        def build(counts: dict[str, int], depth: OutboxDepth) -> dict[str, Any]:
            counts = {**counts, "dropped.results": counts.get("dropped.results", 0) + lost}
            return heartbeat_data(started_at=started_at, interval_s=interval_s, checks=checks,
                                  runs=runs, skipped=skipped, counts=counts, depth=depth)

        if await self._store(lambda: self.outbox.enqueue_heartbeat(build)):
            self.heartbeats += 1
        else:
            self.results_lost += lost  # for the next heartbeat that can be stored

    def _take_waiting(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        while len(batch) < WRITE_BATCH:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def _write_pending(self, scope: trio.CancelScope) -> None:
        """Moves what gathers on the channel into the outbox until the channel closes,
        then the results gathered so far, then closes the outbox.

        ``scope`` shields this from the shutdown that stops everything else, so that
        nothing taken off the channel is lost; the shutdown gives it a deadline
        instead (``CLOSE_TIMEOUT_S``). Past it, a write stuck in a hung disk is
        abandoned (it finishes in its thread, or dies with the process).
        """
        with scope:
            async for first in self._receive:
                batch = [first]
                self._take_waiting(batch)
                items = [(msg_type, data, None) for msg_type, data in batch]
                await self._store(functools.partial(self.outbox.enqueue_many, items))
            await self.flush_results()
            await self.outbox.aclose()
        if scope.cancelled_caught:
            log.warning("the outbox did not finish within %gs of stopping: messages still in "
                        "memory may be lost", CLOSE_TIMEOUT_S)

    async def _beat(self) -> None:
        due = trio.current_time()
        while True:
            await self.send_heartbeat()
            due += self.central.heartbeat_interval_s
            # After a stall, beat once now rather than once per missed interval.
            due = max(due, trio.current_time())
            await trio.sleep_until(due)

    async def flush_results(self) -> None:
        """Queues the observations gathered so far as ``results`` messages, in order,
        at most ``RESULTS_PER_MESSAGE`` each."""
        if self._results:
            batch, self._results = list(self._results), deque()
            messages: list[tuple[str, dict[str, Any], None]] = [
                (RESULTS, {"results": batch[start:start + RESULTS_PER_MESSAGE]}, None)
                for start in range(0, len(batch), RESULTS_PER_MESSAGE)
            ]
            await self._store(lambda: self.outbox.enqueue_many(messages))

    async def _batch_results(self) -> None:
        while True:
            await trio.sleep(self.central.results_batch_interval_s)
            await self.flush_results()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs the writer, the heartbeat, the results batcher and delivery.

        When cancelled, everything but the writer stops at once; the writer stores
        what is still in memory and closes the outbox within ``CLOSE_TIMEOUT_S``.
        """
        writer_scope = trio.CancelScope(shield=True)
        async with trio.open_nursery() as writer_nursery:
            writer_nursery.start_soon(self._write_pending, writer_scope)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.delivery.run)
                    nursery.start_soon(self._beat)
                    if self.wants_results:
                        nursery.start_soon(self._batch_results)
                    task_status.started()
            finally:
                writer_scope.deadline = trio.current_time() + CLOSE_TIMEOUT_S
                self._send.close()  # the writer empties the channel, then ends

    def note_reload(self, new_config: Config) -> None:
        """Destinations and ``[central]`` are read at start: say so when a reload changes them."""
        if new_config.destinations != self.destinations or new_config.central != self.central:
            log.warning("[central] and [destinations] changes take effect at the next restart")

    def last_progress(self) -> float:
        """The trio time the slowest delivery loop last showed life (for a watchdog)."""
        return self.delivery.last_progress()

    def progress_source(self) -> CounterProgress:
        """The watchdog's view of delivery: the loops' iteration count must advance.

        Every loop ticks at least every ``PROGRESS_TICK_S``, also while idle or backing
        off, and between ticks it waits at most one request (bounded by its deadline).
        A count that stands still longer means a loop is stuck; a dead central is not
        a stuck loop: it keeps ticking between retries.
        """
        deliverers = self.delivery.deliverers
        allowed_s = max((d.request_deadline_s for d in deliverers), default=0.0)
        allowed_s += 2 * PROGRESS_TICK_S
        return CounterProgress(
            "delivery loop iterations",
            lambda: sum(d.stats.iterations for d in deliverers),
            lambda: allowed_s if deliverers else None,
        )

    def status(self) -> str:
        """The STATUS= fragment: ``outbox 3 waiting, central failing``."""
        depth = self.outbox.sync.depth()
        failing = [d.name for d in self.delivery.deliverers if d.stats.failing]
        return f"outbox {depth.messages} waiting" + "".join(
            f", {name} failing" for name in failing)


def open_reporting(
    config: Config,
    scheduler: Scheduler,
    *,
    wall_clock: Callable[[], float] = time.time,
) -> Reporting | None:
    """Opens the outbox and a deliverer per destination; None when there is none.

    Raises:
        ConfigError: a key or secret file that cannot be used.
    """
    if not config.destinations:
        return None
    deliverers = []
    # Read every secret before opening anything, so a bad key fails fast and cleanly.
    secrets = [(d, load_signing_keys(d), load_secret(d)) for d in config.destinations]
    directory = config.agent.state_dir
    try:
        outbox = AsyncOutbox(open_outbox_file(
            directory, agent_id=config.agent.id,
            destinations=[d.name for d in config.destinations],
            max_messages=config.central.max_outbox_messages,
            max_bytes=config.central.max_outbox_bytes, wall_clock=wall_clock))
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            config.files[0], "agent.state_dir",
            f"cannot open the outbox in {directory}: {exc}; give a writable directory "
            f"(--state-dir or ${STATE_DIR_ENV_VAR})") from None
    for destination, keys, secret in secrets:
        if destination.url.startswith("http://"):
            signed = "signed but " if destination.kind == "native" else ""
            log.warning("%s: %s is plain http: messages are %snot encrypted",
                        destination.name, redact_url(destination.url, destination.kind),
                        signed)
        auth = WebhookAuth(keys, wall_clock=wall_clock) if keys else None
        deliverers.append(Deliverer(
            destination.name, make_sink(destination, secret), open_client(destination, auth),
            outbox, max_backoff_s=config.central.max_backoff_s, wall_clock=wall_clock,
            request_deadline_s=destination.connect_timeout_s + destination.timeout_s,
            secrets=secrets_of(destination, secret)))
    log.info("reporting to %s; outbox %s", ", ".join(f"{d.name} ({d.kind})"
                                                    for d in config.destinations),
             outbox.sync.path)
    return Reporting(config, outbox, Delivery(deliverers), scheduler, wall_clock=wall_clock)
