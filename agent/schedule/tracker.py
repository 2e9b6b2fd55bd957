"""Status decisions: turning each probe's observation into up, degraded or down.

Two rules keep pages honest:

* confirmation: a failed observation makes a check ``down`` only after
  ``failures_before_down`` failures in a row; before that the previous status is
  reported with the failure counted, so one lost packet pages nobody;
* latency threshold: a successful connect slower than ``degraded_after`` is
  ``degraded``, because a slow handshake is a warning sign of its own.

A :class:`StateChange` is emitted whenever the reported status differs from the
previous one, including the first status a check gets after start.
"""

from __future__ import annotations

from agent.config.loader import CheckConfig
from agent.model import Observation, Outcome, Result, StateChange, Status


class CheckTracker:
    """The status of one check over time.

    Args:
        check: the check's config (thresholds and confirmation count).
    """

    def __init__(self, check: CheckConfig) -> None:
        self.check = check
        self.status = Status.UNKNOWN
        self.consecutive_failures = 0
        self.last_result: Result | None = None

    def observe(self, observation: Observation, at: float) -> tuple[Result, StateChange | None]:
        """Folds one observation into the check's status.

        Args:
            observation: what the probe saw.
            at: wall-clock time the probe started (seconds since the epoch).

        Returns:
            The result, and the state change it caused (or None).
        """
        previous = self.status
        if observation.outcome is Outcome.FAILED:
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.check.failures_before_down:
                self.status = Status.DOWN
        else:
            self.consecutive_failures = 0
            self.status = self._status_when_answered(observation)

        result = Result(
            check=self.check.name,
            status=self.status,
            observation=observation,
            consecutive_failures=self.consecutive_failures,
            at=at,
        )
        self.last_result = result
        change = None
        if self.status is not previous:
            change = StateChange(self.check.name, previous, self.status, result)
        return result, change

    def turns_down(self, observation: Observation) -> bool:
        """Whether :meth:`observe` would turn the check down with ``observation``.

        Asked before observing, so that what is done about it (a path trace) happens
        while the check still reports its previous status.
        """
        return (
            observation.outcome is Outcome.FAILED
            and self.status is not Status.DOWN
            and self.consecutive_failures + 1 >= self.check.failures_before_down
        )

    def _status_when_answered(self, observation: Observation) -> Status:
        if observation.outcome is Outcome.DEGRADED:
            return Status.DEGRADED
        threshold_s = self.check.degraded_after_s
        if (
            threshold_s is not None
            and observation.latency_ms is not None
            and observation.latency_ms > threshold_s * 1000.0
        ):
            return Status.DEGRADED
        return Status.UP
