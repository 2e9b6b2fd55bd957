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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import trio

from agent.common.logs import get_logger
from agent.common.loopback import is_loopback_host
from agent.common.redact import redact_url
from agent.common.webhook_auth import WebhookAuth
from agent.config.destinations import load_secret, load_signing_keys, secrets_of
from agent.config.loader import STATE_DIR_ENV_VAR, Config
from agent.errors import ConfigError, OutboxFullError
from agent.model import Result, StateChange
from agent.outbound.delivery import Deliverer, Delivery, open_client
from agent.outbound.messages import (
    RESULTS,
    STATE_CHANGE,
    CheckSnapshot,
    heartbeat_data,
    observation_data,
    results_data,
    state_change_data,
)
from agent.outbound.sinks import make_sink
from agent.outbound.spool import AsyncOutbox, OutboxDepth
from agent.outbound.spool import open_outbox as open_outbox_file

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
# the journal's flush (journal.FLUSH_TIMEOUT_S, twice), SIGTERM ends the process
# within 5 s (README).
CLOSE_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class CheckSource:
    """Where heartbeats read the checks from; the daemon wires the scheduler in.

    Attributes:
        snapshot: every check's latest status, read on the trio thread, in parts
            of at most the size given (each part is read when it is asked for).
        run_counts: probe runs completed and runs skipped since start.
    """

    snapshot: Callable[[int], Iterator[list[CheckSnapshot]]]
    run_counts: Callable[[], tuple[int, int]]


class Reporting:
    """The outbox, the messages that go into it and the delivery loops that empty it.

    Args:
        config: the agent's config (``[central]`` and the destinations).
        outbox: the opened outbox.
        delivery: a deliverer per destination.
        checks: where the check statuses and run counts come from.
        wall_clock: seconds since the epoch, for timestamps.
        pending_results_limit: how many observations may wait for the next
            ``results`` message; beyond it the oldest are dropped (and counted).
    """

    def __init__(
        self,
        config: Config,
        outbox: AsyncOutbox,
        delivery: Delivery,
        checks: CheckSource,
        *,
        wall_clock: Callable[[], float] = time.time,
        pending_results_limit: int = PENDING_LIMIT,
    ) -> None:
        self.central = config.central
        self.destinations = config.destinations
        self.pending_results_limit = pending_results_limit
        self.outbox = outbox
        self.delivery = delivery
        self.checks = checks
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
        snapshots: list[CheckSnapshot] = []
        for index, part in enumerate(self.checks.snapshot(SNAPSHOT_PART)):
            if index:
                await trio.lowlevel.checkpoint()
            snapshots.extend(part)
        return snapshots

    async def send_heartbeat(self) -> None:
        """Queues one heartbeat now (its counts are taken inside the transaction)."""
        checks = await self._snapshot()  # read on the trio thread, not in the worker
        runs, skipped = self.checks.run_counts()
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
                (RESULTS, results_data(batch[start:start + RESULTS_PER_MESSAGE]), None)
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

    def status(self) -> str:
        """The STATUS= fragment: ``outbox 3 waiting, central failing``."""
        depth = self.outbox.sync.depth()
        failing = [d.name for d in self.delivery.deliverers if d.stats.failing]
        return f"outbox {depth.messages} waiting" + "".join(
            f", {name} failing" for name in failing)


def open_reporting(
    config: Config,
    checks: CheckSource,
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
        if destination.url.startswith("http://") and \
                not is_loopback_host(urlsplit(destination.url).hostname or ""):
            # Plain http to this machine's loopback never crosses a network.
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
    return Reporting(config, outbox, Delivery(deliverers), checks, wall_clock=wall_clock)
