#!/usr/bin/env bash
# The packaging checks CI runs (as root, on a throwaway machine): the unit's
# hardening score, the .deb (build, lintian, install, run, upgrade, remove,
# purge) and the .rpm (build, same files). Any failure fails the script.
#
# It installs the .deb on this machine and purges it at the end: do not run it
# where a heartwire package is installed for real.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive

MAX_EXPOSURE=2.0
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/__init__.py)
deb=dist/heartwire_${version}_all.deb
rpm_file=dist/heartwire-${version}-1.noarch.rpm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

step "systemd-analyze security: every unit at most $MAX_EXPOSURE"
for unit in systemd/*.service; do
    report=$(systemd-analyze security --offline=yes --no-pager "$unit" 2>&1) || true
    score=$(sed -n 's/^→ Overall exposure level for [^:]*: \([0-9.]*\) .*/\1/p' <<<"$report")
    [ -n "$score" ] || { echo "$report" >&2; fail "no exposure level for $unit"; }
    echo "$unit: $score"
    awk -v score="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(score <= max) }' \
        || { echo "$report" >&2; fail "$unit is rated $score, above $MAX_EXPOSURE"; }
done

step "build $deb"
packaging/build.sh deb
[ -f "$deb" ] || fail "$deb was not built"

step "lintian (errors fail)"
lintian --fail-on error --info "$deb"

step "dpkg -c: the units, the conffile and the package"
dpkg -c "$deb" > "$work/deb-contents"
for path in ./lib/systemd/system/heartwire.service ./lib/systemd/system/heartwire-central.service \
        ./etc/heartwire/agent.toml ./usr/bin/heartwire \
        ./usr/lib/python3/dist-packages/agent/daemon.py ./usr/lib/python3/dist-packages/agent/systemd.py; do
    grep -q " $path\$" "$work/deb-contents" || fail "$deb lacks $path"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles > "$work/conffiles"
grep -qx /etc/heartwire/agent.toml "$work/conffiles" || fail "agent.toml is not a conffile"

step "install $deb"
apt-get install -y -qq "./$deb"
getent passwd heartwire >/dev/null || fail "postinst did not create the heartwire user"
[ "$(stat -c %a /etc/heartwire/credentials)" = 700 ] || fail "/etc/heartwire/credentials is not 0700"
dpkg-query -W -f='${Status}\n' heartwire | grep -qx 'install ok installed' || fail "not installed"

step "systemd-analyze verify: the installed units load, their commands exist"
systemd-analyze verify /lib/systemd/system/heartwire.service /lib/systemd/system/heartwire-central.service

step "the installed heartwire validates the shipped config (as root and as heartwire)"
heartwire validate --config /etc/heartwire/agent.toml
runuser -u heartwire -- heartwire validate --config /etc/heartwire/agent.toml

step "the installed daemon notifies READY=1 and STOPPING=1 (systemd-python transport)"
python3 - <<'PY'
import os, signal, socket, subprocess, sys, tempfile
with tempfile.TemporaryDirectory() as directory:
    address = os.path.join(directory, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(20)
        environ = dict(os.environ, NOTIFY_SOCKET=address, WATCHDOG_USEC="2000000")
        daemon = subprocess.Popen(
            ["heartwire", "run", "--config", "/etc/heartwire/agent.toml"], env=environ)
        try:
            import systemd.daemon  # noqa: F401 -- python3-systemd came in as a dependency
            ready = sock.recv(4096).decode()
            import re
            assert re.match(r"READY=1\nSTATUS=\d+ checks: ", ready), ready
            daemon.send_signal(signal.SIGTERM)
            messages = []
            while not messages or not messages[-1].startswith("STOPPING=1"):
                messages.append(sock.recv(4096).decode())
            assert daemon.wait(timeout=20) == 0
        finally:
            daemon.kill()
print("READY=1 and STOPPING=1 received, exit 0")
PY

step "a local edit of the conffile survives reinstalling"
echo "# local edit" >> /etc/heartwire/agent.toml
dpkg -i "$deb"
grep -qx "# local edit" /etc/heartwire/agent.toml || fail "the conffile was overwritten"

step "remove keeps the config, purge removes config and state"
mkdir -p /var/lib/heartwire/spool && touch /var/lib/heartwire/spool/outbox.sqlite
apt-get remove -y -qq heartwire
[ ! -e /usr/bin/heartwire ] || fail "remove left /usr/bin/heartwire"
[ -f /etc/heartwire/agent.toml ] || fail "remove deleted the conffile"
apt-get purge -y -qq heartwire
[ ! -e /etc/heartwire/agent.toml ] || fail "purge left the conffile"
[ ! -e /var/lib/heartwire ] || fail "purge left /var/lib/heartwire"

step "build $rpm_file"
packaging/build.sh rpm
[ -f "$rpm_file" ] || fail "$rpm_file was not built"
rpm -qlp "$rpm_file"

step "the RPM holds the same files as the .deb"
# Same layout modulo each distribution's paths: /lib vs /usr/lib for units,
# dist-packages vs site-packages for Python, and each one's doc conventions.
awk '$1 ~ /^-/ { print substr($6, 2) }' "$work/deb-contents" \
    | sed -e 's|^/lib/systemd/|/usr/lib/systemd/|' -e 's|^/usr/lib/python3/dist-packages/|SITE/|' \
    | grep -v '^/usr/share/' | sort > "$work/deb-files"
rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm_file" | awk '$1 ~ /^-/ { print $2 }' \
    | sed -e 's|^/usr/lib/python3\.[0-9]*/site-packages/|SITE/|' \
    | grep -v '^/usr/share/' | sort > "$work/rpm-files"
diff -u "$work/deb-files" "$work/rpm-files" || fail "the .deb and the .rpm differ"
rpm -qpc "$rpm_file" | grep -qx /etc/heartwire/agent.toml || fail "agent.toml is not %config in the RPM"
rpm -qp --scripts "$rpm_file" | grep -q 'systemctl --no-reload preset heartwire.service' \
    || fail "the RPM does not preset the unit"

step "packaging checks passed"
