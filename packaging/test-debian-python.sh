#!/usr/bin/env bash
# The agent's and the receiver's test suite against Debian's own python3-*
# packages: the versions the .deb really runs with (trio 0.22, httpx 0.23,
# Hypercorn 0.13 on Debian 12), not the newer ones the development virtualenv
# gets from PyPI. Only the test tools come from PyPI, into a virtualenv that
# sees the system's packages; a test tool that would replace a Debian package
# fails the run. Root (installs the python3-* packages).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

# What debian/control and dh_python3 make the packages depend on.
runtime=(python3-trio python3-httpx python3-tomli-w python3-nacl python3-dnspython
         python3-systemd python3-hypercorn)
apt-get install -y -qq --no-install-recommends python3-venv "${runtime[@]}" >/dev/null

venv=build/debian-python
rm -rf "$venv"
/usr/bin/python3 -m venv --system-site-packages "$venv"
# The [test] extra of pyproject.toml: what it lists that Debian's packages above
# already satisfy (hypercorn) stays Debian's.
mapfile -t test_tools < <(/usr/bin/python3 -c 'import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["test"]))')
"$venv/bin/pip" install --quiet --upgrade-strategy only-if-needed "${test_tools[@]}"

"$venv/bin/python" - <<'PY'
import importlib, sys
for name in ("trio", "httpx", "httpcore", "hypercorn", "nacl", "dns", "tomli_w", "systemd"):
    module = importlib.import_module(name)
    if not module.__file__.startswith("/usr/lib/python3/dist-packages/"):
        sys.exit(f"{name} comes from {module.__file__}, not from Debian's python3-* package")
    print(f"{name} {getattr(module, '__version__', '')} from Debian")
PY

"$venv/bin/python" -m pytest -q -p no:cacheprovider
