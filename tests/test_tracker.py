from agent.model import Observation, Outcome, Reason, Status
from agent.schedule.tracker import CheckTracker
from tests.fakes import OPEN, REFUSED, make_check


def statuses(tracker: CheckTracker, observations: list[Observation]) -> list[str]:
    return [tracker.observe(observation, at=0.0)[0].status.value for observation in observations]


def test_failures_are_confirmed_before_down() -> None:
    tracker = CheckTracker(make_check(failures_before_down=3))
    assert statuses(tracker, [OPEN, REFUSED, REFUSED, REFUSED, REFUSED, OPEN]) == [
        "up",
        "up",
        "up",
        "down",
        "down",
        "up",
    ]


def test_the_first_failure_reports_the_previous_status_with_the_failure_counted() -> None:
    tracker = CheckTracker(make_check(failures_before_down=2))
    tracker.observe(OPEN, at=0.0)
    result, change = tracker.observe(REFUSED, at=1.0)
    assert (result.status, result.consecutive_failures, change) == (Status.UP, 1, None)
    assert result.observation is REFUSED


def test_a_success_resets_the_failure_count() -> None:
    tracker = CheckTracker(make_check(failures_before_down=2))
    assert statuses(tracker, [OPEN, REFUSED, OPEN, REFUSED, OPEN]) == ["up"] * 5


def test_a_check_that_fails_from_the_start_is_unknown_until_confirmed() -> None:
    tracker = CheckTracker(make_check(failures_before_down=2))
    assert statuses(tracker, [REFUSED, REFUSED]) == ["unknown", "down"]


def test_slow_handshakes_are_degraded() -> None:
    tracker = CheckTracker(make_check(degraded_after_s=0.5))
    slow = Observation(Outcome.OK, Reason.OPEN, latency_ms=500.1)
    edge = Observation(Outcome.OK, Reason.OPEN, latency_ms=500.0)
    assert statuses(tracker, [slow, edge, slow]) == ["degraded", "up", "degraded"]


def test_no_threshold_means_never_degraded_by_latency() -> None:
    tracker = CheckTracker(make_check())
    assert statuses(tracker, [Observation(Outcome.OK, Reason.OPEN, latency_ms=4000.0)]) == ["up"]


def test_a_probe_can_report_degraded_itself() -> None:
    tracker = CheckTracker(make_check())
    loading = Observation(Outcome.DEGRADED, "loading", latency_ms=1.0)
    assert statuses(tracker, [loading]) == ["degraded"]


def test_state_changes_carry_the_observation_that_caused_them() -> None:
    tracker = CheckTracker(make_check(failures_before_down=1))
    _, first = tracker.observe(OPEN, at=1.0)
    _, same = tracker.observe(OPEN, at=2.0)
    _, down = tracker.observe(REFUSED, at=3.0)
    assert first is not None and (first.previous, first.current) == (Status.UNKNOWN, Status.UP)
    assert same is None
    assert down is not None and (down.previous, down.current) == (Status.UP, Status.DOWN)
    assert down.result.observation is REFUSED and down.result.at == 3.0
