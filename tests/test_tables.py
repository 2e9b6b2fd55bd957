import pytest

from agent.common.tables import Table, format_duration, parse_duration
from agent.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("14d", 14 * 86400.0),
        (30, 30.0),
        (1.5, 1.5),
        ("0.5s", 0.5),
    ],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "5 min", "ms", "-5s", "5sec", "", True, [5], "1h30m"])
def test_bad_durations_are_rejected_with_a_hint(text: object) -> None:
    with pytest.raises(ValueError, match=r'such as "250ms", "5s", "2m", "1h"'):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (30, "30s"), (120, "2m"), (3600, "1h"), (90, "90s"), (0.0005, "0.5ms")],
)
def test_durations_format_back(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_unknown_key_suggests_the_close_one() -> None:
    table = Table({"intervall": "5s"}, "a.toml", "checks.db")
    table.duration("interval", 60.0)
    with pytest.raises(ConfigError) as caught:
        table.finish()
    assert (
        str(caught.value) == "a.toml: checks.db.intervall: unknown key (did you mean 'interval'?)"
    )


def test_booleans_are_not_integers() -> None:
    table = Table({"port": True}, "a.toml", "checks.db")
    with pytest.raises(ConfigError, match=r"checks\.db\.port: expected an integer, got a boolean"):
        table.integer("port")
