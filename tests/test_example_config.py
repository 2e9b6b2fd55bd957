"""agent.example.toml: valid as shipped, and valid with its destinations uncommented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from agent.config import loader as config

EXAMPLE = Path(__file__).resolve().parent.parent / "agent.example.toml"
# A commented-out table header or key = value line of the destinations section.
_COMMENTED_TOML = re.compile(r"^# (\[destinations\.[^\]]+\]|[a-z_-]+ = .*)$")


def test_the_example_is_valid_as_shipped() -> None:
    loaded = config.load(EXAMPLE)
    assert loaded.destinations == ()
    assert loaded.central.heartbeat_interval_s == 30.0


def uncommented_example() -> str:
    """agent.example.toml with its commented-out destination examples in effect."""
    text = EXAMPLE.read_text()
    section = text[text.index("# -- Reporting"):]
    uncommented = "\n".join(
        match.group(1) if (match := _COMMENTED_TOML.match(line)) else line
        for line in section.splitlines())
    return text[:text.index("# -- Reporting")] + uncommented + "\n"


def test_the_commented_destinations_are_valid_when_uncommented() -> None:
    loaded = config.parse([(str(EXAMPLE), tomllib.loads(uncommented_example()))])
    kinds = {d.name: d.kind for d in loaded.destinations}
    assert kinds == {"central": "native", "healthchecks": "healthchecks", "kuma": "uptime-kuma"}
    by_name = {d.name: d for d in loaded.destinations}
    assert dict(by_name["healthchecks"].check_monitor_tokens) == {
        "postgres-primary": "postgres-primary"}
    assert [(s.kind, s.name) for s in by_name["central"].signing_keys] == [
        ("credential", "heartwire_agent.key")]
