"""Key files, secret sources and ``heartwire keygen``."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from agent.cli import main as cli
from agent.common import signing
from agent.common.keyfiles import SecretSource, read_private_file, read_secret, write_private_file
from agent.errors import SecretFileError

KEY = "whsk_AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="


def _private(path: Path, text: str = KEY, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


def test_keygen_writes_a_0600_key_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "agent.key"
    assert cli.main(["keygen", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    key = signing.Ed25519SigningKey.from_text(out.read_text())
    printed = capsys.readouterr().out.strip()
    assert printed == key.public_key().to_text()
    assert printed.startswith("whpk_") and len(base64.b64decode(printed[5:])) == 32


def test_keygen_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _private(tmp_path / "agent.key")
    assert cli.main(["keygen", "--out", str(out)]) == cli.EXIT_UNKNOWN
    assert "already exists; remove it or pass --force" in capsys.readouterr().err
    assert out.read_text().strip() == KEY
    out.chmod(0o644)
    assert cli.main(["keygen", "--out", str(out), "--force"]) == 0
    assert out.read_text().strip() != KEY
    assert out.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("mode", "word"), [(0o640, "readable"), (0o604, "readable"),
                                            (0o620, "writable")])
def test_a_key_file_open_to_others_is_refused_with_the_chmod_fix(
    tmp_path: Path, mode: int, word: str
) -> None:
    path = _private(tmp_path / "agent.key", mode=mode)
    with pytest.raises(SecretFileError) as caught:
        read_private_file(path)
    assert str(caught.value) == (
        f"{path} is {word} by group or others (mode {mode:04o}); run: chmod 600 {path}")


def test_a_private_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    assert read_private_file(_private(tmp_path / "k", mode=0o400)) == KEY


def test_missing_and_empty_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="no such file"):
        read_private_file(tmp_path / "absent")
    with pytest.raises(SecretFileError, match="is empty"):
        read_private_file(_private(tmp_path / "empty", text=""))


def test_secret_from_environment_variable() -> None:
    source = SecretSource("env", "HW_KEY")
    assert read_secret(source, {"HW_KEY": KEY}) == KEY
    with pytest.raises(SecretFileError, match="environment variable HW_KEY is not set"):
        read_secret(source, {})


def test_secret_from_systemd_credentials_directory(tmp_path: Path) -> None:
    _private(tmp_path / "agent.key")
    source = SecretSource("credential", "agent.key")
    assert read_secret(source, {"CREDENTIALS_DIRECTORY": str(tmp_path)}) == KEY
    with pytest.raises(SecretFileError, match=r"needs \$CREDENTIALS_DIRECTORY"):
        read_secret(source, {})


def test_a_credential_outside_the_unit_is_read_where_the_unit_loads_it(tmp_path: Path) -> None:
    # heartwire.service has LoadCredential=heartwire:/etc/heartwire/credentials, so
    # the unit's "heartwire_agent.key" is that directory's agent.key: validate from a
    # shell finds the same file.
    _private(tmp_path / "agent.key")
    directories = {"heartwire_": tmp_path}
    source = SecretSource("credential", "heartwire_agent.key")
    assert read_secret(source, {}, unit_credentials=directories) == KEY
    # Under the unit, $CREDENTIALS_DIRECTORY wins.
    other = tmp_path / "loaded"
    other.mkdir()
    _private(other / "heartwire_agent.key", "whsec_other")
    environ = {"CREDENTIALS_DIRECTORY": str(other)}
    assert read_secret(source, environ, unit_credentials=directories) == "whsec_other"
    # The same checks as any key file: a missing or readable file is refused.
    with pytest.raises(SecretFileError, match=r"agent\.key is readable by group or others"):
        _private(tmp_path / "agent.key", mode=0o644)
        read_secret(source, {}, unit_credentials=directories)
    with pytest.raises(SecretFileError, match=r"other\.key: no such file"):
        read_secret(SecretSource("credential", "heartwire_other.key"), {},
                    unit_credentials=directories)
    # A name no unit loads still needs $CREDENTIALS_DIRECTORY.
    with pytest.raises(SecretFileError, match=r"needs \$CREDENTIALS_DIRECTORY"):
        read_secret(SecretSource("credential", "agent.key"), {}, unit_credentials=directories)


def test_write_private_file_never_exists_with_a_wider_mode(tmp_path: Path) -> None:
    old = os.umask(0)  # even with a permissive umask
    try:
        write_private_file(tmp_path / "k", KEY)
    finally:
        os.umask(old)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
