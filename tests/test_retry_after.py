"""The one Retry-After parser, against what honest and hostile peers send."""
import pytest

from agent.common.retry_after import parse_retry_after


def test_delta_seconds_and_http_date() -> None:
    assert parse_retry_after("30", now=0) == 30
    assert parse_retry_after(" 30 ", now=0) == 30
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40) == 60
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=1000) == 0


@pytest.mark.parametrize("value", [
    None, "", "soon", "-5", "1.5",
    "²",                    # str.isdigit() is true, float() refuses it
    "١٢",                   # Arabic-Indic digits: isdigit() too
    "9" * 5000,             # a number no one meant
    "Fri, 31 Dec 99999 23:59:59 GMT",
    "Mon, 99 Foo 2024 99:99:99 GMT",
    "\x00\x1b[31m",
])
def test_garbage_is_ignored_not_raised(value: str | None) -> None:
    assert parse_retry_after(value, now=0) is None
