"""The heartwire command, in-process and as a real process, against loopback ports."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from tests.netutil import open_port, refused_port


def write_config(tmp_path: Path, checks: dict[str, int], extra: str = "") -> Path:
    text = '[agent]\nid = "test-agent"\n' + extra
    for name, port in checks.items():
        text += f'\n[checks.{name}]\nhost = "127.0.0.1"\nport = {port}\ntimeout = "1s"\n'
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_check_prints_a_table_and_exits_2_when_something_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_port() as up, refused_port() as down:
        path = write_config(tmp_path, {"web-db": up, "cache": down})
        code = main(["check", "--config", str(path)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 2
    assert lines[0].split() == ["NAME", "TARGET", "STATUS", "REASON", "LATENCY", "DETAIL"]
    assert lines[1].split()[:4] == ["web-db", f"127.0.0.1:{up}", "up", "open"]
    assert lines[1].split()[5] == "ms"
    assert lines[2].split()[:5] == ["cache", f"127.0.0.1:{down}", "down", "refused", "-"]
    assert lines[2].endswith("Connection refused")


def test_check_exits_0_when_all_up(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_port() as first, open_port() as second:
        path = write_config(tmp_path, {"a": first, "b": second})
        assert main(["check", "--config", str(path)]) == 0


def test_check_exits_1_when_degraded_and_none_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_port() as port:
        # A threshold of one microsecond: any real handshake is slower.
        path = write_config(
            tmp_path, {"slow": port}, extra="[defaults]\ndegraded_after = 0.000001\n"
        )
        code = main(["check", "--config", str(path), "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert (code, row["status"], row["reason"]) == (1, "degraded", "open")


def test_check_json_fields(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with open_port() as up, refused_port() as down:
        path = write_config(tmp_path, {"a": up, "b": down})
        code = main(["check", "--json", "--config", str(path)])
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert code == 2
    up_row, down_row = rows["a"], rows["b"]
    assert {"name", "host", "port", "status", "reason", "latency_ms", "address"} <= set(up_row)
    assert (up_row["host"], up_row["port"], up_row["status"], up_row["reason"]) == (
        "127.0.0.1",
        up,
        "up",
        "open",
    )
    assert isinstance(up_row["latency_ms"], float) and up_row["address"] == "127.0.0.1"
    assert (
        down_row["status"],
        down_row["reason"],
        down_row["latency_ms"],
        down_row["address"],
    ) == ("down", "refused", None, None)
    assert down_row["detail"] == f"127.0.0.1:{down}: Connection refused"


def test_check_runs_only_the_named_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_port() as up, refused_port() as down:
        path = write_config(tmp_path, {"a": up, "b": down})
        code = main(["check", "--json", "--config", str(path), "a"])
    assert code == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)] == ["a"]


def test_check_with_an_unknown_name_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"a": 1})
    assert main(["check", "--config", str(path), "nope"]) == 3
    assert capsys.readouterr().err == f"heartwire: no check named nope in {path} (known: a)\n"


def test_validate_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, {"a": 1, "b": 2})
    assert main(["validate", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK, 2 checks from 1 file\n"


def test_validate_reports_one_line_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"a": 70000})
    assert main(["validate", "--config", str(path)]) == 3
    captured = capsys.readouterr()
    assert (
        captured.err
        == f"heartwire: {path}: checks.a.port: must be between 1 and 65535, got 70000\n"
    )
    assert captured.out == ""


def test_config_comes_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, {"a": 1})
    monkeypatch.setenv("HEARTWIRE_CONFIG", str(path))
    assert main(["validate"]) == 0
    assert str(path) in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["check", "--bogus"], ["validate", "extra"]])
def test_usage_errors_exit_3(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("heartwire: ") and err.count("\n") == 1 and "Traceback" not in err


def test_python_dash_m_agent_is_the_same_command(tmp_path: Path) -> None:
    with refused_port() as port:
        path = write_config(tmp_path, {"a": port})
        completed = subprocess.run(
            [sys.executable, "-m", "agent", "check", "--json", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert completed.returncode == 2
    assert json.loads(completed.stdout)[0]["reason"] == "refused"


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "agent", "check", "--config", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 3
    assert completed.stderr == f"heartwire: {tmp_path / 'nope.toml'}: no such file\n"


def _run(*argv: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=30, check=False)


@pytest.mark.parametrize("as_json", [False, True])
def test_check_into_a_closed_pipe_exits_with_the_checks_code_quietly(
    tmp_path: Path, as_json: bool
) -> None:
    # `heartwire check | head -1`: the reader is gone before the table is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        with refused_port() as port:
            path = write_config(tmp_path, {"a": port})
            completed = _run("check", "--config", str(path), *(["--json"] * as_json),
                             stdout=write_end)
    finally:
        os.close(write_end)
    assert completed.returncode == 2
    assert completed.stderr == ""


@pytest.mark.parametrize("argv", [
    ["--debug", "validate", "--config", "{path}"],
    ["validate", "--debug", "--config", "{path}"],
    ["--config", "{path}", "validate"],
    ["--config", "{path}", "--debug", "checks", "list"],
    ["checks", "--config", "{path}", "list"],
    ["--debug", "config", "show", "--config", "{path}"],
])
def test_global_flags_go_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    path = write_config(tmp_path, {"a": 1})
    assert main([part.format(path=path) for part in argv]) == 0, capsys.readouterr().err


def test_a_config_error_with_debug_still_exits_3_with_its_traceback(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"a": 70000})
    completed = _run("--debug", "validate", "--config", str(path))
    assert completed.returncode == 3
    assert "Traceback" in completed.stderr
    assert completed.stderr.endswith(
        f"heartwire: {path}: checks.a.port: must be between 1 and 65535, got 70000\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["checks"], "heartwire: checks: the following arguments are required: ACTION"),
    (["checks", "add", "web"],
     "heartwire: checks add: the following arguments are required: --host"),
    (["frobnicate"], "heartwire: argument COMMAND: invalid choice: 'frobnicate'"),
    (["central", "agents"], "heartwire: central agents: the following arguments are required"),
])
def test_usage_errors_name_the_program_once(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(argv) == 3
    assert capsys.readouterr().err.startswith(message)


def test_validate_counts_in_the_singular(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"a": 1})
    assert main(["validate", "--config", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK, 1 check from 1 file\n"


def test_control_characters_in_an_error_are_escaped_on_its_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"a": 1})
    assert main(["check", "--config", str(path), "x\nnope\x1b[31m"]) == 3
    err = capsys.readouterr().err
    assert err == f"heartwire: no check named x\\nnope\\x1b[31m in {path} (known: a)\n"
    assert main(["validate", "--config", "/nowhere/a\nb"]) == 3
    assert capsys.readouterr().err == "heartwire: /nowhere/a\\nb: no such file\n"


def test_an_error_about_a_huge_argument_stays_short(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"a": 1})
    assert main(["check", "--config", str(path), "n" * 100_000]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 1200 and "more characters" in err
