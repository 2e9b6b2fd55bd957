"""The receiver's schema module: the nesting pre-scan, the JSON limits, the validator's answers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.outbound.messages import (
    MAX_DEPTH,
    InvalidMessage,
    MalformedJSON,
    nesting_exceeds,
    parse_json,
    validate,
)
from tests.central_support import Messages, check_item


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


tricky_text = st.text(st.sampled_from('[]{}"\\ab\n\u2028'), max_size=8)
values = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(tricky_text, children, max_size=3),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(value=values, limit=st.integers(1, 8))
def test_the_pre_scan_measures_nesting_exactly_whatever_the_strings_hold(
    value: Any, limit: int
) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    assert nesting_exceeds(body, limit) == (_depth(value) > limit)


@pytest.mark.parametrize("body", [b"[", b"]", b'{"a": [}', b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["])
def test_unbalanced_or_deep_bodies_are_malformed(body: bytes) -> None:
    with pytest.raises(MalformedJSON):
        parse_json(body)


def test_the_pre_scan_of_a_maximal_body_is_cheap() -> None:
    flat = b'{"agent": "dc1", "data": [' + b'{"a": [1, "x\\"]["]},' * 400_000 + b"1]}"
    deep = b"[" * (8 * 1024 * 1024)
    for body in (flat, deep):
        started = time.perf_counter()
        nesting_exceeds(body, MAX_DEPTH)
        assert time.perf_counter() - started < 2.0


def test_a_valid_message_passes_and_each_fault_names_its_field() -> None:
    message = Messages().heartbeat([check_item("db", "up", port=5432)])
    assert validate(message).reports[0].port == 5432
    message["data"]["checks"][0]["port"] = 70_000
    with pytest.raises(InvalidMessage, match=r"data\.checks\[0\]\.port"):
        validate(message)


@pytest.mark.parametrize(("depends_on", "fault"), [
    ("uplink", r"data\.checks\[0\]\.depends_on must be an array"),
    ([f"c{i}" for i in range(17)], r"data\.checks\[0\]\.depends_on has 17 entries"),
    (["ok", "not ok"], r"data\.checks\[0\]\.depends_on\[1\]"),
    ([{"name": "x"}], r"data\.checks\[0\]\.depends_on\[0\]"),
])
def test_a_heartbeat_check_depends_on_at_most_sixteen_valid_names(
    depends_on: object, fault: str
) -> None:
    message = Messages().heartbeat([check_item("db", "up", depends_on=["uplink", "uplink"])])
    assert validate(message).reports[0].depends_on == ("uplink",)
    message["data"]["checks"][0]["depends_on"] = depends_on
    with pytest.raises(InvalidMessage, match=fault):
        validate(message)


@pytest.mark.parametrize(("service", "fault"), [
    ("s" * 10_000, r"data\.checks\[0\]\.service must be 1-64 letters"),
    ("orders db", r"data\.checks\[0\]\.service must be 1-64 letters"),
    (["orders-db"], r"data\.checks\[0\]\.service must be 1-64 letters"),
    (7, r"data\.checks\[0\]\.service must be 1-64 letters"),
])
def test_a_heartbeat_check_names_at_most_one_valid_service(service: object, fault: str) -> None:
    message = Messages().heartbeat([check_item("db", "up", service="orders-db")])
    assert validate(message).reports[0].service == "orders-db"
    message["data"]["checks"][0]["service"] = None
    assert validate(message).reports[0].service is None
    message["data"]["checks"][0]["service"] = service
    with pytest.raises(InvalidMessage, match=fault) as caught:
        validate(message)
    assert len(str(caught.value)) < 200


def test_what_the_agent_builds_is_what_the_receiver_accepts() -> None:
    """One schema: messages built by agent.outbound.messages pass its validator, and a
    superseded heartbeat's counts read back as the counters that filled it."""
    from agent.model import Observation, Outcome, Reason, Result, StateChange, Status
    from agent.outbound import messages

    at = 1.7e9
    result = Result("db", Status.DOWN, Observation(Outcome.FAILED, Reason.REFUSED), 2, at)
    counts = {"dropped.results": 3, "dropped.set_aside": 1, "rejected": 2}

    class Depth:
        messages = 4
        bytes = 512

    beat = messages.heartbeat_data(
        started_at=at, interval_s=30, runs=5, skipped=0, counts=counts, depth=Depth(),
        checks=[messages.CheckSnapshot("db", Status.DOWN, result, port=5432,
                                       depends_on=("uplink", "vpn"), service="orders-db")])
    built = [
        messages.envelope(messages.HEARTBEAT, "msg_" + "a" * 32, 7, "web-1", at, beat),
        messages.envelope(messages.STATE_CHANGE, "msg_" + "b" * 32, 8, "web-1", at,
                          messages.state_change_data(
                              StateChange("db", Status.UP, Status.DOWN, result))),
        messages.envelope(messages.RESULTS, "msg_" + "c" * 32, 9, "web-1", at,
                          messages.results_data([messages.observation_data(result)])),
    ]
    kinds = [validate(parse_json(messages.encode(message))).kind for message in built]
    assert kinds == ["heartbeat", "state_change", "results"]
    assert validate(parse_json(messages.encode(built[0]))).reports[0].depends_on == (
        "uplink", "vpn")
    assert validate(parse_json(messages.encode(built[0]))).reports[0].service == "orders-db"
    assert messages.heartbeat_counts(beat) == counts
    test_beat = messages.heartbeat_data(started_at=at, interval_s=30, checks=[], runs=0,
                                        skipped=0, counts={}, depth=Depth(), test=True)
    received = validate(parse_json(messages.encode(
        messages.envelope(messages.HEARTBEAT, "msg_" + "d" * 32, 0, "web-1", at, test_beat))))
    assert received.test


def test_a_server_message_longer_than_the_receiver_takes_is_clipped_by_the_agent() -> None:
    """A probe's detail is the server's own words (a banner, an error page) and may be
    any length: the agent clips it to what the receiver accepts, so the message is not
    refused for ever (a 422) and the observation is not lost."""
    from agent.model import Observation, Outcome, Reason, Result, StateChange, Status
    from agent.outbound import messages

    long_detail = "x" * (messages.MAX_DETAIL_CHARS * 3)
    seen = Observation(Outcome.FAILED, Reason.REFUSED, detail=long_detail,
                       address="2001:db8::1%" + "e" * 300)
    result = Result("db", Status.DOWN, seen, 1, 1.7e9)
    built = messages.envelope(messages.STATE_CHANGE, "msg_" + "e" * 32, 3, "web-1", 1.7e9,
                              messages.state_change_data(
                                  StateChange("db", Status.UP, Status.DOWN, result)))
    body = parse_json(messages.encode(built))
    assert validate(body).kind == "state_change"
    detail = body["data"]["observation"]["detail"]
    assert len(detail) == messages.MAX_DETAIL_CHARS
    assert detail.endswith("…") and detail.startswith("xxx")
    assert len(body["data"]["observation"]["address"]) == messages.MAX_HOST_CHARS
