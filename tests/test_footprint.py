"""What a TCP-only agent imports: only what its config uses.

Each case runs in a fresh interpreter and reads its ``sys.modules``, so an import
made by anything earlier in the test session cannot hide or fake one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.checks import PROBES

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60

# Libraries a TCP check without destinations never needs.
HEAVY_PACKAGES = ("httpx", "httpcore", "cryptography", "nacl", "dns", "hypercorn", "systemd",
                  "sqlite3")
# The agent's own code such a run never needs: the receiver and the journal handler.
UNUSED_AGENT_MODULES = ("agent.central", "agent.service.systemd")


def _probe_modules_other_than_tcp() -> set[str]:
    modules = {PROBES[kind].probe.__module__ for kind in PROBES}  # imports every kind here
    return modules - {PROBES["tcp"].probe.__module__}


def _modules_after(code: str, config: Path) -> tuple[set[str], str]:
    """The modules loaded by ``code`` in a new interpreter, and what it printed."""
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    script = (f"import sys, json\nCONFIG = {str(config)!r}\n{code}\n"
              "print(json.dumps(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    last_line = done.stderr.strip().splitlines()[-1]
    return set(json.loads(last_line)), done.stdout


def _unwanted(modules: set[str]) -> list[str]:
    unwanted_prefixes = (*HEAVY_PACKAGES, *UNUSED_AGENT_MODULES, *_probe_modules_other_than_tcp())
    return sorted(name for name in modules
                  if any(name == prefix or name.startswith(prefix + ".")
                         for prefix in unwanted_prefixes))


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def tcp_config(tmp_path: Path, listener: int) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(f'[checks.web]\nhost = "127.0.0.1"\nport = {listener}\n')
    path.chmod(0o600)
    return path


def test_loading_a_tcp_only_config_imports_no_other_probe_nor_http_nor_crypto(
    tcp_config: Path,
) -> None:
    modules, _ = _modules_after(
        "from pathlib import Path\nfrom agent.config import loader\n"
        "print(len(loader.load(Path(CONFIG)).checks))", tcp_config)
    assert "agent.checks.tcp" in modules  # the case is real: the check was read
    assert _unwanted(modules) == []


def test_check_of_one_tcp_target_imports_no_other_probe_nor_http_nor_crypto(
    tcp_config: Path,
) -> None:
    modules, printed = _modules_after(
        "from agent.cli.main import main\nmain(['check', '--config', CONFIG])", tcp_config)
    assert " up " in printed  # the check ran against the listener
    assert _unwanted(modules) == []


def test_a_kind_is_imported_when_a_check_of_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[checks.cache]\nkind = "redis"\nhost = "127.0.0.1"\nport = 6379\n')
    path.chmod(0o600)
    modules, _ = _modules_after(
        "from pathlib import Path\nfrom agent.config import loader\nloader.load(Path(CONFIG))",
        path)
    assert "agent.checks.redis" in modules
    assert "agent.checks.postgres" not in modules


def test_the_registry_default_ports_are_the_probe_modules_own() -> None:
    from agent.checks import dns_query, ntp

    assert PROBES["dns"].default_port == dns_query.DEFAULT_PORT
    assert PROBES["ntp"].default_port == ntp.DEFAULT_PORT


def test_an_agent_without_destinations_loads_no_http_client_nor_outbox(
    tcp_config: Path, tmp_path: Path,
) -> None:
    # The daemon itself (`heartwire run`), built from a TCP-only config: nothing to
    # report to, so neither httpx nor sqlite3 nor the signing code is needed.
    modules, _ = _modules_after(
        "from pathlib import Path\nfrom agent.service.daemon import Daemon\n"
        f"daemon = Daemon(Path(CONFIG), state_dir=Path({str(tmp_path)!r}))\n"
        "assert daemon.reporting is None", tcp_config)
    assert "agent.service.daemon" in modules
    heavy = sorted(name for name in modules
                   if name.split(".")[0] in ("httpx", "httpcore", "cryptography", "nacl",
                                              "sqlite3"))
    assert heavy == []


def test_ed25519_keys_sign_and_verify_without_cryptography(tmp_path: Path) -> None:
    # cryptography maps its whole Rust extension (about 7 MiB of RSS) for one
    # signature scheme; the agent and the receiver sign and verify through
    # libsodium (PyNaCl) instead.
    modules, printed = _modules_after(
        "from agent.common import signing\n"
        "key = signing.read_signing_key(signing.Ed25519SigningKey.generate().to_text())\n"
        "headers = signing.sign_headers('msg_1', 1767225600, b'{}', [key])\n"
        "public = signing.read_verify_key(key.public_key().to_text())\n"
        "print(signing.verify(headers, b'{}', [public], now=1767225600).msg_id)", tmp_path)
    assert printed.strip() == "msg_1"
    assert sorted(name for name in modules if name.split(".")[0] == "cryptography") == []
