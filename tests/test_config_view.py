"""``heartwire config show``: the effective config, defaults filled in, secrets redacted."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from agent.cli import main as cli
from agent.common.signing import Ed25519SigningKey
from agent.config import loader as config
from agent.config.view import REDACTED, is_secret_key, redact_table, redact_text, to_plain
from tests.config_dirs import write_main
from tests.test_example_config import EXAMPLE, uncommented_example


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
     "port", "state_dir", "max_concurrent_checks", "key_id", "monkey", "keyspace", "tags",
     "signing_key_env", "ping_key_credential", "token_env", "secret_credential"],
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
        "group": None, "tags": ["edge"], "depends_on": [], "service": None, "options": {},
        "source": str(dropin),
    }


def _comparable(loaded: config.Config) -> tuple[object, ...]:
    """What a config means, without where it was read from."""
    checks = [dataclasses.replace(check, source="") for check in loaded.checks]
    destinations = [dataclasses.replace(d, config_file="") for d in loaded.destinations]
    return loaded.agent, loaded.defaults, checks, loaded.central, destinations


def _show(main: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["config", "show", "--config", str(main)]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _validate_alone(shown: str, directory: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Writes ``shown`` as a config of its own and runs ``heartwire validate`` on it."""
    alone = directory / "shown" / "agent.toml"
    alone.parent.mkdir()
    alone.write_text(shown)
    code = cli.main(["validate", "--config", str(alone)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return alone


def _credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The systemd credentials the example's destinations name, as private files."""
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, text in [("heartwire_agent.key", Ed25519SigningKey.generate().to_text()),
                       ("heartwire_hc-ping-key", "pingkey-1234567890abcdef")]:
        (directory / name).write_text(text + "\n")
        (directory / name).chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(directory))


def test_the_example_config_shows_as_a_config_validate_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = _show(EXAMPLE, capsys)
    for internal in ("steps", "re.compile", "pattern", "signing_keys", "config_file",
                     "monitor_token", "options", "source", "_s ="):
        assert internal not in shown
    assert 'expect = "^OK\\\\b"\n' in shown and 'send = "STATUS\\r\\n"\n' in shown
    alone = _validate_alone(shown, tmp_path, capsys)
    assert _comparable(config.load(alone)) == _comparable(config.load(EXAMPLE))


def test_the_example_with_every_destination_shows_as_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _credentials(tmp_path, monkeypatch)
    main = tmp_path / "agent.toml"
    main.write_text(uncommented_example())
    assert cli.main(["validate", "--config", str(main)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    shown = _show(main, capsys)
    # Secrets named by credential are shown by name, so the output still finds them.
    assert 'signing_key_credential = "heartwire_agent.key"\n' in shown
    assert 'ping_key_credential = "heartwire_hc-ping-key"\n' in shown
    # Push tokens written inline are redacted, keys kept: the output stays valid.
    assert "PushToken" not in shown
    assert f'push_token = "{REDACTED}"\n' in shown
    assert f'[destinations.kuma.push_tokens]\nredis-sessions = "{REDACTED}"\n' in shown
    alone = _validate_alone(shown, tmp_path, capsys)
    original, reread = _comparable(config.load(main)), _comparable(config.load(alone))
    assert original[:4] == reread[:4]
    assert [d.name for d in original[4]] == [d.name for d in reread[4]]  # type: ignore[attr-defined]


def test_secret_urls_and_check_uuids_are_redacted_in_both_forms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uuid = "5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278"
    main = tmp_path / "agent.toml"
    main.write_text(
        '[agent]\nid = "a1"\n'
        '[checks.web]\nhost = "127.0.0.1"\nport = 80\n'
        '[destinations.bs]\nkind = "betterstack"\n'
        'url = "https://uptime.betterstack.com/api/v1/heartbeat/AgentBeatSecret"\n'
        '[destinations.bs.check_urls]\n'
        'web = "https://uptime.betterstack.com/api/v1/heartbeat/WebBeatSecret"\n'
        f'[destinations.hc]\nkind = "healthchecks"\ncheck = "{uuid}"\n'
        f'[destinations.hc.checks]\nweb = "{uuid.upper()}"\n'
    )
    shown = _show(main, capsys)
    assert cli.main(["config", "show", "--json", "--config", str(main)]) == 0
    shown_json = capsys.readouterr().out
    for text in (shown, shown_json):
        assert "BeatSecret" not in text and uuid not in text.lower()
    assert (f'url = "https://uptime.betterstack.com/api/v1/heartbeat/{REDACTED}"\n'
            in shown)
    assert f'check = "{REDACTED}"\n' in shown
    # Better Stack's redacted URLs are still URLs: without the Healthchecks UUIDs
    # (which nothing can stand in for) the output is a valid config.
    without_uuids = shown[:shown.index("[destinations.hc]")]
    _validate_alone(without_uuids, tmp_path, capsys)


def test_references_to_secrets_are_shown_and_secrets_are_not() -> None:
    assert redact_table({"signing_key_env": "KEY_VAR", "ping_key_credential": "hc",
                         "secret_file": ["/a", "/b"], "push_tokens": {"web": "t1"},
                         "keys": ["whpk_x"], "token": "t2", "credentials": "c"}) == {
        "signing_key_env": "KEY_VAR", "ping_key_credential": "hc",
        "secret_file": ["/a", "/b"], "push_tokens": {"web": REDACTED},
        "keys": [REDACTED], "token": REDACTED, "credentials": REDACTED,
    }


@pytest.mark.parametrize("name", ["sig", "signature", "session", "access_token", "apiKey",
                                  "auth", "code", "X-Amz-Signature", "pwd", "passphrase",
                                  "cookie", "client_secret"])
def test_config_show_hides_every_query_value_the_log_lines_hide(name: str) -> None:
    """One rule for secret-named query parameters: what send-test and the logs hide
    (common/redact.py) config show hides too, so no printout shows a signed URL's key."""
    from agent.common.redact import redact_url

    url = f"https://central.example/in?{name}=s3cr3tvalue&x=1"
    assert "s3cr3tvalue" not in redact_url(url)
    assert redact_text(url) == f"https://central.example/in?{name}={REDACTED}&x=1"
