#!/usr/bin/env bash
# The packaging checks CI runs (as root, on a throwaway machine): the units'
# hardening score, the .debs (build, lintian, contents, then everything an admin
# does with them in a booted Debian 12: packaging/systemd-check.sh) and the .rpms
# (build, same files). Any failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export DEBIAN_FRONTEND=noninteractive

MAX_EXPOSURE=2.0
version=$(packaging/version.sh)
deb=dist/heartwire_${version}_all.deb
central_deb=dist/heartwire-central_${version}_all.deb
rpm_file=dist/heartwire-${version}-1.noarch.rpm
central_rpm=dist/heartwire-central-${version}-1.noarch.rpm
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

step "the version: agent/__init__.py and the packaging changelog agree"
source_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/__init__.py)
[ "$source_version" = "$version" ] \
    || fail "packaging/debian/changelog says $version, agent/__init__.py says $source_version"

step "build $deb and $central_deb"
rm -f dist/heartwire_*.deb dist/heartwire-central_*.deb
packaging/build.sh deb
[ -f "$deb" ] && [ -f "$central_deb" ] || fail "the .debs were not built"

step "lintian: no warning that is not overridden (each override says why)"
lintian --fail-on error,warning --info "$deb" "$central_deb"

step "dpkg -c: the units, the conffiles, the private modules"
dpkg -c "$deb" > "$work/deb-contents"
dpkg -c "$central_deb" > "$work/central-deb-contents"
for path in ./lib/systemd/system/heartwire.service ./etc/heartwire/agent.toml ./usr/bin/heartwire \
        ./usr/share/heartwire/agent/service/daemon.py ./usr/share/heartwire/agent/checks/tcp.py \
        ./usr/share/heartwire/agent/central/server.py ./usr/share/man/man1/heartwire.1.gz \
        ./usr/share/doc/heartwire/examples/agent.example.toml; do
    grep -q " $path\$" "$work/deb-contents" || fail "$deb lacks $path"
done
! grep -q "dist-packages" "$work/deb-contents" || fail "$deb puts modules on Python's path"
for path in ./lib/systemd/system/heartwire-central.service ./etc/heartwire/central.toml \
        ./usr/share/man/man1/heartwire-central.1.gz; do
    grep -q " $path\$" "$work/central-deb-contents" || fail "$central_deb lacks $path"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | grep -qx /etc/heartwire/agent.toml \
    || fail "agent.toml is not a conffile"
dpkg-deb --ctrl-tarfile "$central_deb" | tar -xOf - ./conffiles | grep -qx /etc/heartwire/central.toml \
    || fail "central.toml is not a conffile"
dpkg-deb -f "$central_deb" Depends | grep -q python3-hypercorn || fail "heartwire-central lacks Hypercorn"

# Everything an admin does with them, in a booted Debian 12.
packaging/systemd-check.sh

step "build $rpm_file and $central_rpm"
rm -f dist/heartwire-*.rpm
packaging/build.sh rpm
[ -f "$rpm_file" ] && [ -f "$central_rpm" ] || fail "the .rpms were not built"

step "each RPM holds the same files as its .deb"
# Same layout modulo each distribution's conventions: /lib vs /usr/lib for units
# on bookworm, docs, man pages and licenses, and the byte-code (compiled at
# install time on Debian, shipped in the RPM).
same_files() {
    local listing=$1 name=$2
    sed -e 's|^/lib/systemd/|/usr/lib/systemd/|' "$listing" \
        | grep -Ev '^/usr/share/(doc|man|licenses|lintian|python3)/|/__pycache__/|\.dist-info/LICENSE$' \
        | sort > "$work/$name"
}
awk '$1 ~ /^-/ { print substr($6, 2) }' "$work/deb-contents" > "$work/deb-listing"
awk '$1 ~ /^-/ { print substr($6, 2) }' "$work/central-deb-contents" > "$work/central-deb-listing"
for pair in "$rpm_file deb-listing" "$central_rpm central-deb-listing"; do
    set -- $pair
    rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$1" | awk '$1 ~ /^-/ { print $2 }' \
        > "$work/rpm-listing"
    same_files "$work/$2" deb-files
    same_files "$work/rpm-listing" rpm-files
    diff -u "$work/deb-files" "$work/rpm-files" || fail "$1 and its .deb differ"
done
rpm -qlp "$rpm_file" > "$work/rpm-all-files"
grep -q '^/usr/share/heartwire/agent/cli/__pycache__/main\.cpython-3[0-9]*\.pyc$' "$work/rpm-all-files" \
    || fail "the RPM's modules are not byte-compiled"
rpm -qpc "$rpm_file" | grep -qx /etc/heartwire/agent.toml || fail "agent.toml is not %config in the RPM"
rpm -qpc "$central_rpm" | grep -qx /etc/heartwire/central.toml \
    || fail "central.toml is not %config in the RPM"
rpm -qp --scripts "$rpm_file" | grep -q 'systemctl --no-reload preset heartwire.service' \
    || fail "the RPM does not preset the unit"
rpm -qp --scripts "$central_rpm" | grep -q 'systemctl try-restart heartwire-central.service' \
    || fail "an RPM upgrade does not restart the receiver"
[ "$(rpm -qp --requires "$rpm_file" | sort | uniq -d | grep -v '^/bin/sh$')" = "" ] \
    || fail "the RPM has duplicate Requires"

step "packaging checks passed"
