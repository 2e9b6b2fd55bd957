"""``heartwire config show``: the effective config, defaults filled in, secrets redacted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent import cli, config
from agent.config_view import REDACTED, effective_toml, is_secret_key, redact_text, to_plain
from tests.config_dirs import write_main


@pytest.mark.parametrize(
    "key",
    ["token", "api_token", "apiToken", "secret", "client_secret", "password", "db_passwd",
     "passphrase", "credentials", "signing_key", "key", "api_key", "apikey", "private_keys",
     "authorization", "auth_cookie", "webhook_secret_value"],
)
def test_keys_naming_secrets_are_redacted(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    ["secret_file", "signing_key_file", "token_path", "key_dir", "password_files", "host",
     "port", "state_dir", "max_concurrent_checks", "key_id", "monkey", "keyspace", "tags"],
)
def test_paths_to_secrets_and_ordinary_keys_are_shown(key: str) -> None:
    assert not is_secret_key(key)


def test_urls_lose_their_password_and_secret_query_values() -> None:
    assert redact_text("https://agent:hunter2@central.example/beat?token=abc&x=1") == (
        f"https://agent:{REDACTED}@central.example/beat?token={REDACTED}&x=1"
    )
    assert redact_text("https://central.example/ping/1234") == "https://central.example/ping/1234"


@dataclasses.dataclass(frozen=True)
class _Destination:
    """Stands for a section another part of the code adds later."""

    name: str
    url: str
    secret_file: Path
    token: str
    headers: dict[str, str]


def test_redaction_reaches_any_dataclass_and_nested_tables() -> None:
    destination = _Destination(
        name="central",
        url="https://u:p@central.example/",
        secret_file=Path("/etc/heartwire/secret"),
        token="t0ps3cret",
        headers={"Authorization": "Bearer x", "User-Agent": "heartwire"},
    )
    assert to_plain({"destinations": [destination]}) == {"destinations": [{
        "name": "central",
        "url": f"https://u:{REDACTED}@central.example/",
        "secret_file": "/etc/heartwire/secret",
        "token": REDACTED,
        "headers": {"Authorization": REDACTED, "User-Agent": "heartwire"},
    }]}


def write_dropin(main: Path) -> Path:
    dropin = main.parent / "conf.d" / "10-web.toml"
    dropin.parent.mkdir()
    dropin.write_text('\n[checks.web]\nhost = "::1"\nport = 443\ninterval = "10s"\n'
                      'degraded_after = "250ms"\ntags = ["edge"]\n')
    return dropin


def test_show_prints_a_valid_config_equal_to_the_effective_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = write_main(tmp_path, port=5432)
    dropin = write_dropin(main)
    assert cli.main(["config", "show", "--config", str(main)]) == 0
    shown = capsys.readouterr().out
    assert f"# from {main}:11\n[checks.db]\n" in shown
    assert f"# from {dropin}:2\n[checks.web]\n" in shown
    assert 'failures_before_down = 2' in shown  # a default nobody wrote

    # Fed back as a config of its own, it means the same thing.
    alone = tmp_path / "alone" / "agent.toml"
    alone.parent.mkdir()
    alone.write_text(shown)
    original, reread = config.load(main), config.load(alone)
    assert (reread.agent, reread.defaults) == (original.agent, original.defaults)
    assert [dataclasses.replace(check, source="") for check in reread.checks] == [
        dataclasses.replace(check, source="") for check in original.checks
    ]


def test_show_json_has_every_default_and_where_each_check_is_from(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main = write_main(tmp_path, port=5432)
    dropin = write_dropin(main)
    assert cli.main(["config", "show", "--json", "--config", str(main)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["files"] == [str(main), str(dropin)]
    assert shown["agent"] == {"id": "test-agent", "state_dir": str(tmp_path / "state"),
                              "max_concurrent_checks": 256}
    assert shown["defaults"] == {"interval_s": 30.0, "timeout_s": 2.0, "degraded_after_s": None,
                                 "failures_before_down": 2, "family": "any"}
    assert shown["checks"][1] == {
        "name": "web", "host": "::1", "port": 443, "kind": "tcp", "interval_s": 10.0,
        "timeout_s": 2.0, "degraded_after_s": 0.25, "failures_before_down": 2, "family": "any",
        "group": None, "tags": ["edge"], "options": {}, "source": str(dropin),
    }


def test_kind_options_sit_in_the_check_table(tmp_path: Path) -> None:
    main = write_main(tmp_path, port=5432)
    loaded = config.load(main)
    check = dataclasses.replace(loaded.checks[0], options={"expect": "PONG", "password": "pw"})
    shown = effective_toml(dataclasses.replace(loaded, checks=(check,)))
    assert f'expect = "PONG"\npassword = "{REDACTED}"\n' in shown
