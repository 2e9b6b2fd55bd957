"""The receiver's config: the example validates, bad files give exact one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.central import config as central_config
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
PUBLIC = "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_the_example_config_validates() -> None:
    loaded = central_config.load(REPO / "central.example.toml")
    assert loaded.listen == ("127.0.0.1:8470",)
    assert central_config.is_loopback(loaded.listen[0])
    assert list(loaded.agents) == ["example-agent"]
    assert loaded.grace_for("example-agent") == 120.0
    assert loaded.grace_for("someone-else") == 60.0
    assert list(loaded.channels) == ["ops-webhook"]


def test_defaults_when_almost_empty(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text("")
    loaded = central_config.load(path)
    assert loaded.listen == ("127.0.0.1:8470",)
    assert loaded.tolerance_s == 300.0 and loaded.max_body_bytes == 8 * 1024 * 1024
    assert loaded.agents == {} and loaded.channels == {}
    assert loaded.dependency_wait_s == 30.0


@pytest.mark.parametrize(("text", "message"), [
    ('[server]\nlisten = ["8470"]\n',
     'server.listen[0]: expected "host:port" (e.g. "127.0.0.1:8470"), got \'8470\''),
    ("[server]\nlistn = []\n", "server.listn: unknown key (did you mean 'listen'?)"),
    ('[server]\ncertfile = "/c.pem"\n', "server.keyfile: certfile and keyfile go together"),
    ('[storage]\ndedup_retention = "1m"\n',
     "storage.dedup_retention: must be at least [server] timestamp_tolerance"),
    ('[alerts]\nretry_initial = "1m"\nretry_max = "10s"\n',
     "alerts.retry_max: must not be less than retry_initial"),
    ('[alerts]\ndependency_wait = "11m"\n', "alerts.dependency_wait: at most 600s, got 660s"),
    ("[agents.dc1]\n", "agents.dc1: needs keys, secret_file, secret_env or secret_credential"),
    (f'[agents.dc1]\nkeys = ["{SECRET}"]\n',
     "agents.dc1.keys[0]: only whpk_ public keys go inline; give whsec_ secrets with "
     "secret_file, secret_env or secret_credential"),
    ('[channels.x]\nkind = "slack"\nurl_file = "{secret}"\nurl_env = "X"\n',
     "channels.x.url_file: give one of url_file, url_env or url_credential"),
    ('[channels.x]\nkind = "telegram"\nchat_id = "1"\n',
     "channels.x: needs token_file, token_env or token_credential"),
    ('[agents.dc1]\nkeys = ["whpk_AAAA"]\n',
     "agents.dc1.keys[0]: an Ed25519 public key must be 32 bytes, got 3"),
    (f'[agents."bad id"]\nkeys = ["{PUBLIC}"]\n',
     "agents.bad id: agent id 'bad id' must be 1-64 letters, digits, '.', '_' or '-', "
     "starting with a letter or digit"),
    ('[channels.x]\nkind = "carrier-pigeon"\n',
     'channels.x.kind: must be one of "webhook", "slack", "email", "telegram", "pagerduty", '
     "\"alertmanager\", got 'carrier-pigeon'"),
    ('[channels.x]\nkind = "webhook"\nurl = "ftp://x"\n',
     "channels.x.url: expected an http(s):// URL, got 'ftp://x'"),
    ('[channels.x]\nkind = "email"\nhost = "h"\nfrom = "a@b"\nto = ["c@d"]\n'
     'security = "none"\nusername = "u"\npassword_file = "{secret}"\n',
     'channels.x.security: AUTH needs "starttls" or "tls"'),
])
def test_bad_configs_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    path = tmp_path / "central.toml"
    path.write_text(text.replace("{secret}", str(secret)))
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value) == f"{path}: {message}"


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "dc1.secret"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o640)
    path = tmp_path / "central.toml"
    path.write_text(f'[agents.dc1]\nsecret_file = "{secret}"\n')
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value).startswith(f"{path}: agents.dc1.secret_file: {secret} is readable")
    secret.chmod(0o600)
    loaded = central_config.load(path)
    assert [key.scheme for key in loaded.agents["dc1"].keys] == ["v1"]


def test_agents_drop_ins_are_read_and_may_not_redefine(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text(f'[agents.dc1]\nkeys = ["{PUBLIC}"]\n')
    dropins = tmp_path / "agents.d"
    dropins.mkdir()
    (dropins / "dc2.toml").write_text(f'[agents.dc2]\nkeys = ["{PUBLIC}"]\ngrace = "5m"\n')
    loaded = central_config.load(path)
    assert sorted(loaded.agents) == ["dc1", "dc2"]
    assert loaded.grace_for("dc2") == 300.0
    assert loaded.files == (str(path), str(dropins / "dc2.toml"))
    (dropins / "dc3.toml").write_text(f'[agents.dc1]\nkeys = ["{PUBLIC}"]\n')
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value) == (
        f"{dropins / 'dc3.toml'}: agents.dc1: agent 'dc1' is already defined in {path}"
    )
    os.remove(dropins / "dc3.toml")


def test_secrets_from_systemd_credentials_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name, text in (("central_dc1", SECRET), ("central_tg", "123:token")):
        (credentials / name).write_text(text + "\n")
        (credentials / name).chmod(0o600)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("SLACK_HOOK", "https://hooks.slack.com/services/T0/B0/X")
    path = tmp_path / "central.toml"
    path.write_text(
        '[agents.dc1]\nsecret_credential = "central_dc1"\n'
        '[channels.tg]\nkind = "telegram"\ntoken_credential = "central_tg"\nchat_id = "1"\n'
        '[channels.slack]\nkind = "slack"\nurl_env = "SLACK_HOOK"\n'
    )
    loaded = central_config.load(path)
    assert [key.scheme for key in loaded.agents["dc1"].keys] == ["v1"]
    assert loaded.channels["tg"].token == "123:token"  # type: ignore[attr-defined]
    assert loaded.channels["slack"].url.startswith("https://hooks.slack.com/")  # type: ignore[attr-defined]
    monkeypatch.delenv("SLACK_HOOK")
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value) == (
        f"{path}: channels.slack.url_env: environment variable SLACK_HOOK is not set"
    )


def test_history_settings_have_defaults_and_bounds(tmp_path: Path) -> None:
    path = tmp_path / "central.toml"
    path.write_text('[history]\nraw_retention = "2d"\nrollup_retention = "30d"\n')
    loaded = central_config.load(path)
    assert (loaded.history.enabled, loaded.history.raw_retention_s,
            loaded.history.rollup_retention_s) == (True, 2 * 86400.0, 30 * 86400.0)
    assert central_config.load(REPO / "central.example.toml").history == \
        central_config.HistorySettings()
    for text, message in [
        ('[history]\nraw_retention = "10m"\n', "history.raw_retention: must be at least 1h"),
        ('[history]\nrollup_retention = "1d"\n',
         "history.rollup_retention: must not be less than raw_retention"),
        ("[history]\nkeep = 1\n", "history.keep: unknown key"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            central_config.load(path)
        assert str(caught.value).endswith(message), str(caught.value)


_KEY = 'keys = ["whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ="]\n'


def _agents(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "central.toml"
    path.write_text(f"[agents.gw]\n{_KEY}[agents.dc1]\n{_KEY}" + text)
    return path


def test_an_agent_depends_on_other_agents_checks(tmp_path: Path) -> None:
    loaded = central_config.load(_agents(tmp_path, 'depends_on = ["gw/vpn", "gw/vpn"]\n'))
    assert loaded.agents["dc1"].depends_on == (("gw", "vpn"),)
    assert loaded.agents["gw"].depends_on == ()


@pytest.mark.parametrize(("text", "where", "fault"), [
    ('depends_on = ["vpn"]\n', "agents.dc1.depends_on[0]",
     'expected "<agent>/<check>", got \'vpn\''),
    ('depends_on = ["gw/"]\n', "agents.dc1.depends_on[0]",
     'expected "<agent>/<check>", got \'gw/\''),
    ('depends_on = [' + '"gw/vpn", ' * 17 + ']\n', "agents.dc1.depends_on",
     "at most 16 checks, got 17"),
    ('depends_on = ["nobody/vpn"]\n', "agents.dc1.depends_on[0]",
     "agent 'nobody' is not registered"),
    ('depends_on = ["dc1/db"]\n', "agents.dc1.depends_on[0]",
     "agent 'dc1' cannot depend on itself (its checks say depends_on in the agent's own "
     "config)"),
    ('depends_on = ["gw2/vpn"]\n[agents.gw2]\n' + _KEY + 'depends_on = ["dc1/db"]\n',
     "agents.dc1.depends_on", "a dependency cycle between agents: dc1 -> gw2 -> dc1"),
])
def test_a_bad_agent_dependency_is_one_line(
    tmp_path: Path, text: str, where: str, fault: str
) -> None:
    path = _agents(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value) == f"{path}: {where}: {fault}"


def test_a_service_names_checks_of_registered_agents_and_a_quorum(tmp_path: Path) -> None:
    loaded = central_config.load(_agents(tmp_path, (
        '[services.orders-db]\nchecks = ["gw/pg", "dc1/pg", "gw/pg"]\nquorum = 2\n'
        "[services.cache]\n")))
    assert loaded.services["orders-db"].checks == (("gw", "pg"), ("dc1", "pg"))
    assert loaded.services["orders-db"].quorum == 2
    # A table of nothing: members come from the checks' service key, quorum by default.
    assert loaded.services["cache"].checks == () and loaded.services["cache"].quorum is None


@pytest.mark.parametrize(("text", "where", "fault"), [
    ("[services.x]\nquorum = 0\n", "services.x.quorum", "must be between 1 and 1000, got 0"),
    ("[services.x]\nquorum = 1001\n", "services.x.quorum",
     "must be between 1 and 1000, got 1001"),
    ('[services.x]\nquorum = "2"\n', "services.x.quorum", "expected an integer, got a string '2'"),
    ("[services.x]\nquorum = true\n", "services.x.quorum",
     "expected an integer, got a boolean True"),
    ('[services.x]\nchecks = ["pg"]\n', "services.x.checks[0]",
     'expected "<agent>/<check>", got \'pg\''),
    ('[services.x]\nchecks = ["nobody/pg"]\n', "services.x.checks[0]",
     "agent 'nobody' is not registered"),
    ('[services.x]\nchecks = ["dc1/pg"]\nquorom = 2\n', "services.x.quorom",
     "unknown key (did you mean 'quorum'?)"),
    ('[services."bad name"]\n', "services.bad name",
     "service name 'bad name' must be 1-64 letters, digits, '.', '_' or '-', starting with "
     "a letter or digit"),
    ('[services.x]\nchecks = [' + '"dc1/pg", ' * 100_000 + ']\n', "services.x.checks",
     "at most 1000 checks, got 100000"),
])
def test_a_bad_service_is_one_line(tmp_path: Path, text: str, where: str, fault: str) -> None:
    path = _agents(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        central_config.load(path)
    assert str(caught.value) == f"{path}: {where}: {fault}"
