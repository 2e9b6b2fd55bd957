"""``heartwire central validate`` and ``heartwire central agents add/list``."""

from __future__ import annotations

import stat
import sys
import tomllib
from pathlib import Path

import pytest

from agent.cli.main import EXIT_OK, EXIT_UNKNOWN, main
from agent.common.signing import Ed25519SigningKey

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "central.toml"
    path.write_text('[alerts]\ngrace = "30s"\n')
    return path


def test_validate(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["central", "validate", "--config", str(config_file)]) == EXIT_OK
    assert capsys.readouterr().out == f"{config_file}: OK, 0 agents, 0 channels from 1 file\n"
    assert main(["central", "--config", str(config_file) + ".missing", "validate"]) == EXIT_UNKNOWN
    assert "no such file" in capsys.readouterr().err


def test_agents_add_registers_and_rotates_keys(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (Ed25519SigningKey.generate().public_key().to_text() for _ in range(2))
    base = ["central", "agents", "add", "dc1", "--config", str(config_file)]
    assert main([*base, "--public-key", first, "--grace", "2m"]) == EXIT_OK
    dropin = config_file.parent / "agents.d" / "dc1.toml"
    assert "registered agent dc1" in capsys.readouterr().out
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    assert main([*base, "--public-key", second]) == EXIT_OK
    assert "updated agent dc1" in capsys.readouterr().out
    table = tomllib.loads(dropin.read_text())["agents"]["dc1"]
    assert table == {"keys": [first, second], "grace": "2m"}

    assert main(["central", "agents", "list", "--config", str(config_file)]) == EXIT_OK
    assert capsys.readouterr().out == f"dc1\tv1a, v1a\t{dropin}\n"


def test_agents_add_with_a_secret_file(
    config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "dc2.secret"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    argv = ["central", "agents", "add", "dc2", "--secret-file", str(secret),
            "--config", str(config_file)]
    assert main(argv) == EXIT_UNKNOWN
    assert "chmod 600" in capsys.readouterr().err
    assert not (config_file.parent / "agents.d" / "dc2.toml").exists()
    secret.chmod(0o600)
    assert main(argv) == EXIT_OK
    table = tomllib.loads((config_file.parent / "agents.d" / "dc2.toml").read_text())
    assert table["agents"]["dc2"] == {"secret_file": [str(secret)]}
    # The secret itself never lands in the drop-in.
    assert SECRET not in (config_file.parent / "agents.d" / "dc2.toml").read_text()


@pytest.mark.parametrize(("argv", "error"), [
    (["bad/id", "--public-key", "whpk_x"], "agent id 'bad/id' must be"),
    (["dc1\n", "--public-key", "whpk_x"], "agent id 'dc1\\n' must be"),
    (["dc1", "--public-key", SECRET], "--public-key expects a whpk_... key"),
    (["dc1", "--public-key", "whpk_AAAA"], "an Ed25519 public key must be 32 bytes"),
    (["dc1", "--public-key", "whpk_ebVWLo/mVPlAeLES6KmLp5AfhTrmlb7X4OORC60ElmQ=",
      "--grace", "soon"], "--grace: expected a duration"),
    (["dc1"], "one of the arguments --public-key --secret-file is required"),
])
def test_agents_add_refuses_bad_input(
    config_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    assert main(["central", "agents", "add", *argv, "--config", str(config_file)]) == EXIT_UNKNOWN
    assert error in capsys.readouterr().err
    assert not (config_file.parent / "agents.d").exists()


def test_validate_counts_in_the_singular(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = Ed25519SigningKey.generate().public_key().to_text()
    config_file.write_text(f'[agents.dc1]\nkeys = ["{key}"]\n')
    assert main(["central", "validate", "--config", str(config_file)]) == EXIT_OK
    assert capsys.readouterr().out == f"{config_file}: OK, 1 agent, 0 channels from 1 file\n"


@pytest.mark.parametrize("argv", [
    ["--debug", "central", "validate", "--config", "{path}"],
    ["central", "--debug", "validate", "--config", "{path}"],
    ["central", "validate", "--debug", "--config", "{path}"],
    ["--config", "{path}", "central", "validate"],
    ["central", "--config", "{path}", "agents", "list"],
])
def test_global_flags_go_before_or_after_each_command(
    config_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main([part.format(path=config_file) for part in argv]) == EXIT_OK, \
        capsys.readouterr().err


def test_without_hypercorn_the_receiver_says_which_package_brings_it(
    config_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent's package runs without Hypercorn; "heartwire central" then names the
    # package to install (pip is blocked on Debian: EXTERNALLY-MANAGED).
    monkeypatch.delitem(sys.modules, "agent.central.server", raising=False)
    monkeypatch.setitem(sys.modules, "hypercorn", None)
    monkeypatch.setitem(sys.modules, "hypercorn.config", None)
    assert main(["central", "--config", str(config_file)]) == EXIT_UNKNOWN
    assert capsys.readouterr().err == (
        "heartwire: the receiver needs hypercorn: install the heartwire-central package "
        "(apt install heartwire-central, dnf install heartwire-central), "
        "or pip install 'heartwire[central]'\n"
    )
