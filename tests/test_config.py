import os
from pathlib import Path

import pytest

from agent.common import tables
from agent.config import loader as config
from agent.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def load_text(tmp_path: Path, text: str) -> config.Config:
    return config.load(write(tmp_path / "agent.toml", text))


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(tmp_path, text)
    return str(caught.value)


def test_example_config_validates() -> None:
    loaded = config.load(REPO / "agent.example.toml")
    kinds_of_service = {check.port for check in loaded.checks}
    assert {5432, 6379, 5672, 25} <= kinds_of_service  # database, cache, broker, SMTP


def test_defaults_are_inherited_and_overridden(tmp_path: Path) -> None:
    loaded = load_text(
        tmp_path,
        """
[agent]
id = "a1"
[defaults]
interval = "30s"
timeout = "2s"
degraded_after = "500ms"
[checks.db]
host = "db.internal"
port = 5432
[checks.cache]
host = "10.0.0.2"
port = 6379
interval = 10
failures_before_down = 4
family = "ipv4"
group = "Caches"
tags = ["redis"]
""",
    )
    db, cache = loaded.checks
    assert (db.interval_s, db.timeout_s, db.degraded_after_s) == (30.0, 2.0, 0.5)
    assert db.failures_before_down == 2 and db.family == "any" and db.kind == "tcp"
    assert (cache.interval_s, cache.failures_before_down, cache.family) == (10.0, 4, "ipv4")
    assert cache.group == "Caches" and cache.tags == ("redis",)
    assert loaded.agent.id == "a1" and loaded.agent.max_concurrent_checks == 256


def test_builtin_defaults(tmp_path: Path) -> None:
    (check,) = load_text(tmp_path, '[checks.db]\nhost = "h"\nport = 1\n').checks
    assert (check.interval_s, check.timeout_s, check.degraded_after_s) == (60.0, 5.0, None)
    assert check.failures_before_down == 2


def test_unknown_key_in_a_check(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 5432\nintervall = "5s"\n')
    assert message == (
        f"{tmp_path / 'agent.toml'}: checks.db.intervall: unknown key (did you mean 'interval'?)"
    )


def test_unknown_top_level_table(tmp_path: Path) -> None:
    assert "agents: unknown key (did you mean 'agent'?)" in error_of(tmp_path, "[agents]\n")


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_port_out_of_range(tmp_path: Path, port: int) -> None:
    message = error_of(tmp_path, f'[checks.db]\nhost = "h"\nport = {port}\n')
    assert f"checks.db.port: must be between 1 and 65535, got {port}" in message


def test_port_of_the_wrong_type(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = "5432"\n')
    assert "checks.db.port: expected an integer, got a string '5432'" in message


def test_missing_port(tmp_path: Path) -> None:
    assert "checks.db.port: is required" in error_of(tmp_path, '[checks.db]\nhost = "h"\n')


@pytest.mark.parametrize("host", ['""', '"   "'])
def test_empty_host(tmp_path: Path, host: str) -> None:
    message = error_of(tmp_path, f"[checks.db]\nhost = {host}\nport = 1\n")
    assert "checks.db.host: must not be empty" in message


def test_timeout_not_below_interval_in_a_check(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, '[checks.db]\nhost = "h"\nport = 1\ninterval = "5s"\ntimeout = "5s"\n'
    )
    assert "checks.db.timeout: timeout (5s) must be less than interval (5s)" in message


def test_check_interval_below_the_default_timeout_names_the_interval(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 1\ninterval = "3s"\n')
    assert "checks.db.interval: timeout (5s) must be less than interval (3s)" in message


def test_timeout_not_below_interval_in_defaults(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[defaults]\ninterval = "10s"\ntimeout = "1m"\n')
    assert "defaults.timeout: timeout (1m) must be less than interval (10s)" in message


def test_degraded_after_must_be_below_timeout(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 1\ndegraded_after = "5s"\n')
    assert "checks.db.degraded_after: degraded_after (5s) must be less than timeout (5s)" in message


def test_interval_too_short(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, '[checks.db]\nhost = "h"\nport = 1\ninterval = "500ms"\ntimeout = "100ms"\n'
    )
    assert "checks.db.interval: interval must be at least 1s, got 500ms" in message


def test_bad_duration(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 1\ntimeout = "5 sec"\n')
    assert "checks.db.timeout: expected a duration such as" in message
    assert "got '5 sec'" in message


def test_zero_duration(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 1\ntimeout = 0\n')
    assert "checks.db.timeout: must be greater than zero" in message


def test_failures_before_down_at_least_one(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[defaults]\nfailures_before_down = 0\n")
    assert "defaults.failures_before_down: must be between 1 and 1000, got 0" in message


def test_family_choices(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 1\nfamily = "inet6"\n')
    assert 'checks.db.family: must be one of "any", "ipv4", "ipv6", got \'inet6\'' in message


def test_literal_address_of_the_other_family(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "::1"\nport = 1\nfamily = "ipv4"\n')
    assert "checks.db.family: host ::1 is an IPv6 address but family is 'ipv4'" in message


def test_unknown_kind_lists_the_known_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nport = 1\nkind = "ftp"\n')
    assert "checks.db.kind: must be one of" in message and '"tcp"' in message


def test_bad_check_name(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks."my db"]\nhost = "h"\nport = 1\n')
    assert "checks.my db: check name must be 1-64 letters" in message


def test_a_check_that_is_not_a_table(tmp_path: Path) -> None:
    assert "checks.db: expected a table, got an integer" in error_of(tmp_path, "[checks]\ndb = 5\n")


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h\nport = 1\n')
    assert message.startswith(f"{tmp_path / 'agent.toml'}: invalid TOML:")
    assert "line 2" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        config.load(tmp_path / "nope.toml")


def test_dropins_merge_in_lexical_order(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.toml", '[checks.a]\nhost = "h"\nport = 1\n')
    write(tmp_path / "conf.d" / "20-c.toml", '[checks.c]\nhost = "h"\nport = 3\n')
    write(tmp_path / "conf.d" / "10-b.toml", '[checks.b]\nhost = "h"\nport = 2\n')
    write(tmp_path / "conf.d" / "README", "not toml, not read")
    loaded = config.load(main)
    assert loaded.check_names() == ["a", "b", "c"]
    assert loaded.checks[1].source == str(tmp_path / "conf.d" / "10-b.toml")
    assert len(loaded.files) == 3


def test_duplicate_names_across_files_name_both(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.toml", '[checks.db]\nhost = "h"\nport = 1\n')
    dropin = write(tmp_path / "conf.d" / "50-db.toml", '[checks.db]\nhost = "h2"\nport = 2\n')
    with pytest.raises(ConfigError) as caught:
        config.load(main)
    assert str(caught.value) == f"{dropin}: checks.db: 'db' is already defined in {main}"


def test_dropins_hold_only_checks(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.toml", "")
    dropin = write(tmp_path / "conf.d" / "10-x.toml", '[agent]\nid = "x"\n')
    with pytest.raises(ConfigError) as caught:
        config.load(main)
    assert str(caught.value).startswith(f"{dropin}: agent: only [checks.*] tables may appear")


def test_error_in_a_dropin_names_the_dropin(tmp_path: Path) -> None:
    main = write(tmp_path / "agent.toml", "")
    dropin = write(tmp_path / "conf.d" / "10-x.toml", '[checks.x]\nhost = "h"\nport = 99999\n')
    with pytest.raises(ConfigError, match=rf"^{dropin}: checks\.x\.port: must be between"):
        config.load(main)


def test_config_path_precedence() -> None:
    env = {config.CONFIG_ENV_VAR: "/env/agent.toml"}
    assert config.config_path("/cli.toml", env) == Path("/cli.toml")
    assert config.config_path(None, env) == Path("/env/agent.toml")
    assert config.config_path(None, {}) == config.DEFAULT_CONFIG_PATH


def test_bracketed_ipv6_host_is_accepted(tmp_path: Path) -> None:
    (check,) = load_text(tmp_path, '[checks.db]\nhost = "[::1]"\nport = 1\n').checks
    assert check.host == "::1"


@pytest.mark.parametrize("name", ['"web\\n"', '"web\\r"'])
def test_a_check_name_with_a_line_break_is_refused(tmp_path: Path, name: str) -> None:
    message = error_of(tmp_path, f'[checks.{name}]\nhost = "h"\nport = 1\n')
    assert "check name must be 1-64 letters" in message


def test_an_agent_id_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[agent]\nid = "box\\n"\n')
    assert "agent.id: must be 1-64 letters" in message


def test_a_missing_key_beside_a_near_miss_says_which_was_meant(tmp_path: Path) -> None:
    message = error_of(tmp_path, '[checks.db]\nhost = "h"\nprot = 1\n')
    assert message.endswith("checks.db.prot: unknown key (did you mean 'port'?)")


@pytest.mark.parametrize("depth", [40, 5000])
def test_deeply_nested_tables_are_one_config_error(tmp_path: Path, depth: int) -> None:
    nested = "{a = " * depth + "1" + "}" * depth
    message = error_of(tmp_path, f'[checks.db]\nhost = "h"\nport = 1\nx = {nested}\n')
    assert message == f"{tmp_path / 'agent.toml'}: nested more than 32 levels deep"


def test_deeply_nested_arrays_are_one_config_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert message == f"{tmp_path / 'agent.toml'}: nested more than 32 levels deep"


def test_a_config_that_is_not_a_regular_file_is_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    with pytest.raises(ConfigError, match=r"agent\.toml: is not a regular file"):
        config.load(fifo)
    with pytest.raises(ConfigError, match=r"^/dev/zero: is not a regular file"):
        config.load(Path("/dev/zero"))


def test_a_huge_config_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    huge = tmp_path / "agent.toml"
    with huge.open("wb") as handle:
        handle.truncate(tables.MAX_CONFIG_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError, match=r"is larger than 16 MiB"):
        config.load(huge)


@pytest.mark.parametrize("host", ['"db\\u007f"', '"db\\u202e"', '"db\\u001b[2J"'])
def test_a_host_with_control_characters_is_refused(tmp_path: Path, host: str) -> None:
    message = error_of(tmp_path, f"[checks.db]\nhost = {host}\nport = 1\n")
    assert "checks.db.host: must not contain control characters" in message


CHECKS = """
[checks.uplink]
host = "h"
port = 1
[checks.db]
host = "h"
port = 2
depends_on = ["uplink"]
"""


def test_a_check_depends_on_other_checks(tmp_path: Path) -> None:
    checks = {check.name: check for check in load_text(tmp_path, CHECKS).checks}
    assert checks["db"].depends_on == ("uplink",)
    assert checks["uplink"].depends_on == ()


@pytest.mark.parametrize(("extra", "where", "fault"), [
    ('[checks.web]\nhost = "h"\nport = 3\ndepends_on = ["dbb"]\n',
     "checks.web.depends_on[0]", "no check named 'dbb'"),
    ('[checks.web]\nhost = "h"\nport = 3\ndepends_on = ["web"]\n',
     "checks.web.depends_on", "check 'web' cannot depend on itself"),
    ('[checks.web]\nhost = "h"\nport = 3\ndepends_on = [' + '"db", ' * 17 + ']\n',
     "checks.web.depends_on", "at most 16 checks, got 17"),
    ('[checks.web]\nhost = "h"\nport = 3\ndepends_on = "db"\n',
     "checks.web.depends_on", "expected an array of strings, got a string"),
])
def test_a_dependency_on_nothing_or_on_itself_is_one_line(
    tmp_path: Path, extra: str, where: str, fault: str
) -> None:
    assert error_of(tmp_path, CHECKS + extra) == f"{tmp_path / 'agent.toml'}: {where}: {fault}"


def test_a_dependency_cycle_is_named_in_order(tmp_path: Path) -> None:
    text = CHECKS.replace("port = 1\n", 'port = 1\ndepends_on = ["web"]\n') + (
        '[checks.web]\nhost = "h"\nport = 3\ndepends_on = ["db"]\n')
    message = error_of(tmp_path, text)
    assert message == (f"{tmp_path / 'agent.toml'}: checks.uplink.depends_on: "
                       "a dependency cycle: uplink -> web -> db -> uplink")
    assert "\n" not in message


def test_a_check_names_the_service_it_checks(tmp_path: Path) -> None:
    text = CHECKS.replace('port = 2\n', 'port = 2\nservice = "orders-db"\n')
    checks = {check.name: check for check in load_text(tmp_path, text).checks}
    assert checks["db"].service == "orders-db"
    assert checks["uplink"].service is None


@pytest.mark.parametrize(("value", "fault"), [
    ('"' + "s" * 10_000 + '"', "service name must be 1-64 letters"),
    ('"orders db"', "service name must be 1-64 letters"),
    ('""', "service name must be 1-64 letters"),
    ('["orders-db"]', "expected a string"),
])
def test_a_bad_service_name_is_one_short_line(tmp_path: Path, value: str, fault: str) -> None:
    message = error_of(tmp_path, CHECKS + f"service = {value}\n")
    assert message.startswith(f"{tmp_path / 'agent.toml'}: checks.db.service: {fault}")
    assert "\n" not in message and len(message) < 300


@pytest.mark.parametrize(("key", "value", "limit"), [
    ("group", "g" * 257, 256),
    ("host", "h" * 256, 255),
])
def test_a_label_longer_than_the_receiver_takes_is_a_config_error(
        tmp_path: Path, key: str, value: str, limit: int) -> None:
    """Every heartbeat lists a check's group and host; the receiver refuses a longer
    one for ever (422), so the agent says so at start instead of losing its heartbeats."""
    fields = {"host": "db.internal", "port": "5432"}
    fields[key] = f'"{value}"'
    body = "\n".join(f"{name} = {text}" if name == "port" or name == key
                     else f'{name} = "{text}"' for name, text in fields.items())
    message = error_of(tmp_path, f'[agent]\nid = "a1"\n[checks.db]\n{body}\n')
    assert f"checks.db.{key}: at most {limit} characters, got {len(value)}" in message
    assert "\n" not in message
