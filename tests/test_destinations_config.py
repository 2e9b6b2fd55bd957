"""The ``[central]`` and ``[destinations.*]`` tables: parsing and exact error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main as cli
from agent.config import loader as config
from agent.config.destinations import check_secrets, load_signing_keys
from agent.errors import ConfigError

KEY = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="
BASE = """
[checks.db]
host = "127.0.0.1"
port = 5432
"""


def _load(tmp_path: Path, extra: str) -> config.Config:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + extra)
    return config.load(path)


def _native(tmp_path: Path, keys: str) -> config.Config:
    """A config with one native destination ``main``; ``keys``: its extra lines."""
    return _load(tmp_path, f"""
[destinations.main]
kind = "native"
url = "https://central.example.net/v1/ingest"
{keys}
""")


def _error(tmp_path: Path, extra: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, extra)
    return str(caught.value)


def test_no_central_or_destinations_gives_defaults(tmp_path: Path) -> None:
    loaded = _load(tmp_path, "")
    assert loaded.destinations == ()
    assert loaded.central.heartbeat_interval_s == 30.0
    assert loaded.central.max_outbox_messages == 10_000


def test_native_destination_with_keys_for_rotation(tmp_path: Path) -> None:
    (tmp_path / "new.key").write_text(KEY)
    (tmp_path / "new.key").chmod(0o600)
    loaded = _load(tmp_path, f"""
[central]
heartbeat_interval = "10s"
max_outbox_messages = 500

[destinations.main]
kind = "native"
url = "https://central.example.net/v1/ingest"
signing_key_file = ["{tmp_path / 'new.key'}"]
secret_env = "HW_SECRET"
send = "all"
""")
    assert loaded.central.heartbeat_interval_s == 10.0
    (main,) = loaded.destinations
    assert (main.name, main.kind, main.send) == ("main", "native", "all")
    assert [(s.kind, s.key) for s in main.signing_keys] == [
        ("file", "destinations.main.signing_key_file"), ("env", "destinations.main.secret_env")]


def test_world_readable_key_is_a_one_line_error_naming_config_key_and_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "agent.key"
    key.write_text(KEY)
    key.chmod(0o644)
    loaded = _native(tmp_path, f'signing_key_file = "{key}"')
    with pytest.raises(ConfigError) as caught:
        load_signing_keys(loaded.destinations[0])
    assert str(caught.value) == (
        f"{tmp_path / 'agent.toml'}: destinations.main.signing_key_file: {key} is readable by "
        f"group or others (mode 0644); run: chmod 600 {key}")
    # heartwire validate refuses it too, on one line, with exit code 3.
    assert cli.main(["validate", "--config", str(tmp_path / "agent.toml")]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"run: chmod 600 {key}" in err
    key.chmod(0o600)
    check_secrets(loaded.destinations)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[destinations.x]\nkind = "native"\nurl = "https://c/"\n',
         "destinations.x: a native destination needs signing_key_file"),
        ('[destinations.x]\nkind = "pagerduty"\nurl = "https://c/"\n',
         'destinations.x.kind: must be one of "native", "healthchecks", "uptime-kuma", '
         '"gatus", "betterstack"'),
        ('[destinations.x]\nkind = "native"\nurl = "ftp://c/"\nsigning_key_env = "K"\n',
         "destinations.x.url: expected an http(s):// URL, got 'ftp://c/'"),
        ('[destinations.x]\nkind = "native"\nurl = ["https://c1/", "ftp://c2/"]\n'
         'signing_key_env = "K"\n',
         "destinations.x.url[1]: expected an http(s):// URL, got 'ftp://c2/'"),
        ('[destinations.x]\nkind = "native"\nurl = []\nsigning_key_env = "K"\n',
         "destinations.x.url: must name at least one receiver"),
        ('[destinations.x]\nkind = "native"\nurl = ["https://c1/", "https://c1"]\n'
         'signing_key_env = "K"\n', "destinations.x.url: names the same receiver twice"),
        ('[destinations.x]\nkind = "native"\nurl = "https://c/"\nsigning_key_env = "K"\n'
         'timout = "5s"\n', "destinations.x.timout: unknown key (did you mean 'timeout'?)"),
        ('[destinations.x]\nkind = "healthchecks"\ncheck = "agent-dc1"\n',
         "destinations.x.check: slug 'agent-dc1' needs ping_key_file"),
        ('[destinations.x]\nkind = "healthchecks"\nping_key_env = "P"\n[destinations.x.checks]\n'
         'db = "Bad Slug"\n', "destinations.x.checks.db: a slug holds only a-z"),
        ('[destinations.x]\nkind = "uptime-kuma"\nurl = "https://k/"\nsend = "all"\n',
         'destinations.x.send: "all" needs kind = "native"'),
        ('[destinations.x]\nkind = "gatus"\nurl = "https://g/"\n',
         "destinations.x: needs token_file, token_env or token_credential"),
        ('[central]\nheartbeat_interval = "0.5s"\n',
         "central.heartbeat_interval: must be at least 1s"),
        ('[central]\nmax_outbox_bytes = 10\n',
         "central.max_outbox_bytes: must be at least 65536, got 10"),
    ],
)
def test_bad_destination_config_is_one_exact_line(tmp_path: Path, extra: str, message: str) -> None:
    text = _error(tmp_path, extra)
    assert message in text
    assert text.startswith(str(tmp_path / "agent.toml") + ": ")
    assert "\n" not in text


def test_a_native_destination_takes_several_receivers_in_order(tmp_path: Path) -> None:
    loaded = _load(tmp_path, """
[destinations.main]
kind = "native"
url = ["https://c1.example.net/v1/ingest", "https://c2.example.net/v1/ingest/"]
signing_key_env = "K"
""")
    (main,) = loaded.destinations
    assert main.url == "https://c1.example.net/v1/ingest"
    assert main.failover_urls == ("https://c2.example.net/v1/ingest",)


def test_healthchecks_uuid_needs_no_ping_key_and_default_url(tmp_path: Path) -> None:
    loaded = _load(tmp_path, """
[destinations.hc]
kind = "healthchecks"
check = "5bfa5f5e-7a2b-4d2a-9f0e-2f3a4b5c6d7e"
""")
    (hc,) = loaded.destinations
    assert hc.url == "https://hc-ping.com" and hc.token is None and not hc.create


def test_destinations_are_not_allowed_in_dropins(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "x.toml").write_text('[destinations.x]\nkind = "native"\n')
    text = _error(tmp_path, "")
    assert "only [checks.*] tables may appear in a drop-in file" in text


def test_unusable_tls_files_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    from agent.outbound.delivery import ssl_context

    loaded = _native(tmp_path, f'signing_key_env = "K"\nca_file = "{tmp_path / "missing.pem"}"')
    with pytest.raises(ConfigError, match=r"destinations\.main\.ca_file: cannot load: "):
        ssl_context(loaded.destinations[0])
    cert = tmp_path / "client.pem"
    cert.write_text("not a certificate")
    cert.chmod(0o644)
    loaded = _native(tmp_path, f'signing_key_env = "K"\nclient_cert = "{cert}"')
    with pytest.raises(ConfigError) as caught:
        ssl_context(loaded.destinations[0])
    assert str(caught.value).endswith(f"destinations.main.client_cert: {cert} is readable by "
                                      f"group or others (mode 0644); run: chmod 600 {cert}")


def test_config_show_does_not_print_push_tokens(tmp_path: Path) -> None:
    import json

    from agent.config.view import effective_json, effective_toml

    loaded = _load(tmp_path, """
[destinations.kuma]
kind = "uptime-kuma"
url = "https://kuma.example.net"
push_token = "AgentPushToken"

[destinations.kuma.push_tokens]
db = "DbPushToken"
""")
    for text in (json.dumps(effective_json(loaded)), effective_toml(loaded)):
        assert "https://kuma.example.net" in text
        assert "PushToken" not in text
