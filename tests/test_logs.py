"""Log lines: control characters from hostile text are escaped on every handler."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.common import journal, logs
from agent.model import Observation, Outcome, Reason, Result, Status
from tests.test_systemd import parse_journal

HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\x00host\x9b31m\nFAKE line\r\u202egnp.exe\u2028end\x7f"
ESCAPED = ("evil\\x1b[2J\\x1b]0;pwned\\x07\\x00host\\x9b31m\\nFAKE line\\r\\u202egnp.exe"
           "\\u2028end\\x7f")


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger(logs.LOGGER_NAME)
    saved = root.handlers[:], root.level, root.propagate
    yield
    root.handlers[:], _, root.propagate = saved
    root.setLevel(saved[1])


def test_escape_control_writes_every_control_character_as_an_escape() -> None:
    assert logs.escape_control(HOSTILE) == ESCAPED
    assert logs.escape_control("plain ünïcode, tabs\tand all") == "plain ünïcode, tabs\\tand all"


@pytest.mark.parametrize("logger_name", ["heartwire.delivery", "heartwire.central.ingest",
                                         # hypercorn's error log in the receiver
                                         "heartwire.central.http"])
def test_the_agent_and_the_receiver_log_hostile_text_escaped_on_one_line(
    configured: None, capsys: pytest.CaptureFixture[str], logger_name: str
) -> None:
    logs.configure()
    logging.getLogger(logger_name).warning("HTTP 503 %s from %s", "Service\x1b[31m", HOSTILE)
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.rstrip("\n").endswith(f"HTTP 503 Service\\x1b[31m from {ESCAPED}")
    assert not any(ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0 for c in err.rstrip("\n"))


def test_a_traceback_keeps_its_lines_but_escapes_them(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure()
    try:
        raise ValueError(HOSTILE)
    except ValueError:
        logs.get_logger("delivery").exception("unexpected")
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == f"ValueError: {ESCAPED}"
    assert lines[1] == "Traceback (most recent call last):"


def test_journal_entries_are_escaped_in_the_message_and_the_structured_fields(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as journal_socket:
        journal_socket.bind(str(path))
        journal_socket.settimeout(5)
        real_stderr = os.fstat(2)
        handler = journal.journal_handler(
            {"JOURNAL_STREAM": f"{real_stderr.st_dev}:{real_stderr.st_ino}"},
            socket_path=path, prefer_library=False)
        assert handler is not None
        try:
            handler.handle(logging.makeLogRecord({
                "msg": "%s: up -> down", "args": (HOSTILE,), "levelno": logging.WARNING,
                "check": HOSTILE, "reason": "refused\x00", "status": "down"}))
            fields = parse_journal(journal_socket.recv(65536))
        finally:
            handler.close()
    assert fields["MESSAGE"] == f"{ESCAPED}: up -> down"
    assert (fields["CHECK"], fields["REASON"]) == (ESCAPED, "refused\\x00")


def _ordinary_result() -> Result:
    observation = Observation(Outcome.OK, Reason.OPEN, latency_ms=0.4)
    return Result("web", Status.UP, observation, consecutive_failures=0, at=1_700_000_000.0)


def test_an_ordinary_result_costs_no_formatting_when_debug_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    described: list[Result] = []
    monkeypatch.setattr(logs, "describe_result", lambda result: described.append(result) or "")
    logger = logging.getLogger("heartwire.test-quiet")
    logger.setLevel(logging.INFO)
    logs.log_result(logger, _ordinary_result(), None)
    assert described == []
    logger.setLevel(logging.DEBUG)  # and with DEBUG on, the line is still made
    logs.log_result(logger, _ordinary_result(), None)
    assert len(described) == 1
