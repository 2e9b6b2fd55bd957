"""Maintenance windows: alerts wait during one and go out after it if still true.

The receiver's watcher runs on trio's MockClock (the wall clock is BASE_TIME plus
virtual time), as in test_central_incidents.py, whose webhook recorder this uses.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.central import config as central_config
from agent.central.maintenance import Maintenance, MaintenanceStore, WeeklyWindow
from agent.central.server import Central
from agent.central.storage import Storage
from agent.cli.main import EXIT_OK, EXIT_UNKNOWN, main
from agent.errors import ConfigError
from tests.central_support import BASE_TIME, Messages, check_item
from tests.test_central_incidents import Hook, _config, send, wall_clock, watching

BERLIN = "Europe/Berlin"


def _window(central: Central, seconds: float, checks: tuple[str, ...] = (),
            agent: str = "dc1") -> int:
    store = central.maintenance.store
    with central.storage.transaction():
        window = store.add(agent, checks, wall_clock(), wall_clock() + seconds, "patching",
                           wall_clock())
    central.maintenance.changed()
    return window


async def test_a_check_down_in_a_window_alerts_when_the_window_ends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        _window(central, 600)
        send(central, messages.state_change("db", "up", "down"))
        await trio.sleep(599)
        assert hook.received == []
        page = central.views.status_page()
        assert central.views.checks()[0]["maintenance"] is True
        await trio.sleep(2)
        assert hook.events() == [("incident.trigger", "check_down")]
        assert 600 <= hook.received[0][0] <= 601.5
    assert re.search(r'class="overall (\w+)">All systems operational; 1 check in maintenance<',
                     page)
    assert '<span class="badge maintenance">maintenance</span>' in page
    assert "maintenance for 1 s more: patching (reports down)" in page


async def test_an_outage_over_before_the_window_ends_is_never_sent(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        _window(central, 600, checks=("db",))
        send(central, messages.state_change("db", "up", "down"))
        # Another check of the same agent is not covered: it alerts at once.
        send(central, messages.state_change("web", "up", "down"))
        await trio.sleep(60)
        send(central, messages.state_change("db", "down", "up", at="2026-01-01T00:01:00.000Z"))
        await trio.sleep(1000)
        incidents = central.storage.incidents()
    assert [(body["incident"]["check"], body["type"]) for _, body in hook.received] == [
        ("web", "incident.trigger")]
    assert {(incident.check, incident.resolved_at is not None) for incident in incidents} == {
        ("db", True), ("web", False)}


async def test_a_window_over_the_agent_holds_its_silence_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    async with watching(_config(tmp_path), hook) as central:
        send(central, Messages().heartbeat([check_item("db", "up")], interval_s=30))
        window = _window(central, 300)
        await trio.sleep(200)  # silent since 40 s, held
        assert hook.received == []
        with central.storage.transaction():
            assert central.maintenance.store.end(window, wall_clock())
        central.maintenance.changed()
        await trio.sleep(1.5)
        assert hook.events() == [("incident.trigger", "agent_silent")]


async def test_maintenance_time_is_not_counted_against_uptime(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=7200.0), Hook()) as central:
        send(central, messages.heartbeat([check_item(
            "db", "up", at=central_config_time(wall_clock()))], interval_s=3600))
        await trio.sleep(100)
        _window(central, 100)
        send(central, messages.state_change("db", "up", "down",
                                            at=central_config_time(wall_clock())))
        await trio.sleep(150)
        send(central, messages.state_change("db", "down", "up",
                                            at=central_config_time(wall_clock())))
        await trio.sleep(50)
        uptime = central.history.uptime("dc1", "db", wall_clock())
    # 300 s: 100 up, 100 in maintenance (down, not counted), 50 down, 50 up.
    assert uptime is not None
    assert uptime.uptime["24h"] == pytest.approx(75.0, abs=0.5)
    assert uptime.unknown["24h"] == pytest.approx(33.3, abs=0.5)


def central_config_time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- weekly windows ---------------------------------------------------------------


AGENT_TABLE = '[agents.dc1]\nkeys = ["whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="]\n'


def _weekly(text: str, tmp_path: Path) -> tuple[WeeklyWindow, ...]:
    path = tmp_path / "central.toml"
    path.write_text(AGENT_TABLE + text)
    return central_config.load(path).maintenance


def _utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).timestamp()


def test_a_weekly_window_follows_its_time_zone_across_daylight_saving(tmp_path: Path) -> None:
    (window,) = _weekly('[maintenance.patch]\nagent = "dc1"\nweekly = "sun 02:00"\n'
                        f'duration = "2h"\ntimezone = "{BERLIN}"\n', tmp_path)
    # Winter: 02:00 CET is 01:00 UTC; summer: 02:00 CEST is 00:00 UTC.
    winter = window.occurrence(_utc("2026-01-04T01:30:00+00:00"))
    assert winter is not None and winter.starts_at == _utc("2026-01-04T01:00:00+00:00")
    assert winter.ends_at == _utc("2026-01-04T03:00:00+00:00")
    assert window.occurrence(_utc("2026-01-04T03:00:00+00:00")) is None
    assert window.occurrence(_utc("2026-01-04T00:59:59+00:00")) is None
    summer = window.occurrence(_utc("2026-07-05T00:10:00+00:00"))
    assert summer is not None and summer.starts_at == _utc("2026-07-05T00:00:00+00:00")
    assert window.occurrence(_utc("2026-07-04T00:10:00+00:00")) is None  # a Saturday


def test_weekly_windows_hold_alerts_through_the_receiver(tmp_path: Path) -> None:
    (window,) = _weekly('[maintenance.patch]\nagent = "dc1"\nchecks = ["db"]\n'
                        'weekly = "thu 00:00"\nduration = "1h"\n', tmp_path)
    storage = Storage.open_in(tmp_path / "state")
    try:
        maintenance = Maintenance([window], MaintenanceStore(storage))
        assert BASE_TIME == _utc("2026-01-01T00:00:00+00:00")  # a Thursday
        assert maintenance.holds("dc1", "db", BASE_TIME + 10)
        assert not maintenance.holds("dc1", "web", BASE_TIME + 10)
        assert not maintenance.holds("dc1", "", BASE_TIME + 10)  # silence: not covered
        assert not maintenance.holds("dc1", "db", BASE_TIME + 3600)
    finally:
        storage.close()


@pytest.mark.parametrize(("text", "message"), [
    ('agent = "dc1"\nweekly = "sunday 2am"\nduration = "1h"\n',
     'maintenance.w.weekly: expected a day and a time such as "sun 02:00", got \'sunday 2am\''),
    ('agent = "dc1"\nweekly = "sun 02:00"\nduration = "1h"\ntimezone = "Mars/Olympus"\n',
     "maintenance.w.timezone: unknown time zone 'Mars/Olympus'"),
    ('agent = "dc1"\nweekly = "sun 02:00"\nduration = "7d"\n',
     "maintenance.w.duration: must be shorter than 6 days"),
    ('agent = "dc9"\nweekly = "sun 02:00"\nduration = "1h"\n',
     "maintenance.w.agent: agent 'dc9' is not registered"),
    ('agent = "dc1"\nweekly = "sun 02:00"\n', "maintenance.w.duration"),
])
def test_bad_weekly_windows_name_their_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _weekly("[maintenance.w]\n" + text, tmp_path)
    assert message in str(caught.value)


# -- the command line ---------------------------------------------------------------


def test_maintenance_add_list_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "central.toml"
    config.write_text(f'[storage]\nstate_dir = "{tmp_path / "state"}"\n{AGENT_TABLE}')
    base = ["central", "maintenance"]
    assert main([*base, "add", "dc1", "--check", "db", "--for", "20m",
                 "--reason", "swap  disk", "--config", str(config)]) == EXIT_OK
    added = capsys.readouterr().out
    assert re.match(r"maintenance window 1: dc1 \(db\) until 20\d\d-", added)
    assert main([*base, "list", "--config", str(config)]) == EXIT_OK
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 1 and listed[0].split("\t")[:3] == ["1", "dc1", "db"]
    assert listed[0].endswith("\tswap disk")
    assert main([*base, "end", "1", "--config", str(config)]) == EXIT_OK
    assert main([*base, "list", "--config", str(config)]) == EXIT_OK
    assert "ended maintenance window 1" in capsys.readouterr().out
    assert main([*base, "end", "1", "--config", str(config)]) == EXIT_UNKNOWN
    assert "no running or planned maintenance window 1" in capsys.readouterr().err
    for extra, message in [(["dc9", "--for", "1h"], "agent 'dc9' is not registered"),
                           (["dc1", "--for", "8d"], "--for must be more than 0s and at most 7d"),
                           (["dc1", "--for", "soon"], "--for: expected a duration")]:
        assert main([*base, "add", *extra, "--config", str(config)]) == EXIT_UNKNOWN
        assert message in capsys.readouterr().err


# -- windows the agent starts with a signed maintenance message ------------------------


def _maintenance(messages: Messages, data: dict[str, object], at: float) -> dict[str, object]:
    written = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return messages.envelope("maintenance", data,
                             timestamp=written.isoformat(timespec="milliseconds")[:-6] + "Z")


def _start(messages: Messages, duration_s: float, checks: list[str], at: float,
           reason: str | None = None) -> dict[str, object]:
    return _maintenance(messages, {"action": "start", "duration_s": duration_s,
                                   "checks": checks, "reason": reason}, at)


async def test_an_agents_maintenance_message_holds_its_checks_alert_until_it_ends(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        send(central, _start(messages, 1200, ["db"], wall_clock(), "upgrade"))
        (window,) = central.maintenance.windows(wall_clock())
        assert (window.agent, window.checks, window.reason) == ("dc1", ("db",), "upgrade")
        assert window.ends_at - window.starts_at == 1200
        send(central, messages.state_change("db", "up", "down"))
        await trio.sleep(300)
        assert hook.received == []
        # heartwire maintenance end: the window ends now, the outage still true alerts.
        send(central, _maintenance(messages, {"action": "end"}, wall_clock()))
        await trio.sleep(2)
        assert hook.events() == [("incident.trigger", "check_down")]
        assert central.maintenance.windows(wall_clock()) == []


async def test_an_agents_window_starts_when_the_command_ran_and_expires_on_its_own(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        # Written 10 minutes ago (it waited in the outbox): 10 of its 20 minutes are left.
        await trio.sleep(600)
        send(central, _start(messages, 1200, [], wall_clock() - 600))
        (window,) = central.maintenance.windows(wall_clock())
        assert window.checks == () and window.ends_at == pytest.approx(wall_clock() + 600)
        # One written longer ago than it lasts starts nothing.
        send(central, _start(messages, 60, ["web"], wall_clock() - 120))
        assert len(central.maintenance.windows(wall_clock())) == 1
        await trio.sleep(601)
        assert central.maintenance.windows(wall_clock()) == []


async def test_an_agents_end_leaves_the_receivers_own_windows_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    hook = Hook()
    messages = Messages()
    async with watching(_config(tmp_path, grace_s=3600.0), hook) as central:
        _window(central, 600)
        send(central, _maintenance(messages, {"action": "end"}, wall_clock()))
        assert len(central.maintenance.windows(wall_clock())) == 1


@pytest.mark.parametrize(("data", "message"), [
    ({"action": "pause"}, "data.action must be one of start, end"),
    ({"action": "start", "duration_s": 0, "checks": [], "reason": None},
     "data.duration_s must be greater than 0 and at most 604800"),
    ({"action": "start", "duration_s": 8 * 86400, "checks": [], "reason": None},
     "data.duration_s must be greater than 0 and at most 604800"),
    ({"action": "start", "duration_s": 60, "checks": ["a,b"], "reason": None},
     "data.checks[0] must be 1-64 letters"),
    ({"action": "start", "duration_s": 60, "checks": ["db"] * 101, "reason": None},
     "data.checks has 101 entries; at most 100 are accepted"),
    ({"action": "start", "duration_s": 60, "checks": [], "reason": "x" * 201},
     "data.reason must be 0-200 characters long"),
    ({"action": "end", "duration_s": 60}, "data.duration_s is not a field of a maintenance end"),
])
async def test_a_malformed_maintenance_message_is_refused_with_its_field(
    tmp_path: Path, data: dict[str, object], message: str
) -> None:
    from tests.central_support import make_config, running_central, signed

    async with running_central(make_config(tmp_path)) as (central, client):
        headers, body = signed(Messages().envelope("maintenance", data))
        answer = await client.post("/v1/ingest", content=body, headers=headers)
        assert answer.status_code == 422
        assert answer.json()["message"].startswith(f"message.{message}")
        assert central.maintenance.store.current(0) == []
