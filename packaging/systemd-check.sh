#!/usr/bin/env bash
# The packages in a booted Debian 12, as an admin meets them: systemd is PID 1 in a
# container (systemd-nspawn), the .debs are installed with apt, and what they do is
# checked with systemctl and journalctl.
#
#   packaging/systemd-check.sh      # after packaging/build.sh deb; root
#
# Needs debootstrap and systemd-container. The root file system (debootstrap
# --variant=minbase, about a minute) is cached in $HEARTWIRE_ROOTFS (default
# /var/cache/heartwire-ci/bookworm) and made again when missing or incomplete; each
# run boots a throwaway copy of it. apt's downloads are cached beside it. Every wait
# is bounded; the container is powered off (or killed) at the end, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

ROOTFS=${HEARTWIRE_ROOTFS:-/var/cache/heartwire-ci/bookworm}
CACHE=$(dirname "$ROOTFS")
# Written beside the root file system once debootstrap has finished.
COMPLETE=$ROOTFS.complete
version=$(packaging/version.sh)
upgrade_version=$version+upgrade1

step() { printf '\n== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

work=$(mktemp -d /var/tmp/heartwire-systemd.XXXXXX)
nspawn_pid=
pid1=

in_ct() {
    # A command inside the container, with a clean environment, at most 3 minutes.
    timeout 180 nsenter -t "$pid1" -a -- /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

cleanup() {
    local rc=$?
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        if [ "$rc" -ne 0 ] && [ -n "$pid1" ]; then
            echo "-- the container's journal (heartwire units, last 80 lines):" >&2
            in_ct journalctl --no-pager -n 80 -u heartwire -u heartwire-central >&2 || true
        fi
        [ -z "$pid1" ] || in_ct systemctl poweroff >/dev/null 2>&1 || true
        timeout 30 tail --pid="$nspawn_pid" -f /dev/null || kill -KILL "$nspawn_pid" 2>/dev/null || true
        wait "$nspawn_pid" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ] && [ -s "$work/console" ]; then
        echo "-- the container's console (last 20 lines):" >&2
        tail -n 20 "$work/console" >&2
    fi
    [ -z "${ping_groups:-}" ] || echo "$ping_groups" > /proc/sys/net/ipv4/ping_group_range || true
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# until_ok WHAT SECONDS COMMAND...: runs COMMAND every half second until it succeeds.
until_ok() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "after ${limit}s still not: $what"
        sleep 0.5
    done
}
prop() { in_ct systemctl show -P "$2" "$1"; }
status_is() { [ "$(prop heartwire StatusText)" = "$1" ]; }
status_starts() { case $(prop heartwire StatusText) in "$1"*) return 0 ;; esac; return 1; }
# Whether journalctl shows any entry (captured whole: with pipefail, grep -q
# closing a pipe early would fail the check when journalctl gets SIGPIPE).
journal_has() { [ -n "$(in_ct journalctl --no-pager -q "$@")" ]; }
# The PID 1 debug line for a notification the agent sent (systemd 252 logs each one).
notified() { journal_has -u heartwire --since "@$1" -g "Got notification message from PID [0-9]+ \\($2"; }

debs=(dist/heartwire_"${version}"_all.deb dist/heartwire-central_"${version}"_all.deb)
for deb in "${debs[@]}"; do
    [ -f "$deb" ] || fail "$deb is missing: run packaging/build.sh deb first"
done

# The container shares this machine's network (apt needs it): the receiver's and
# the listeners' ports must be free here.
busy=$({ ss -Htln | awk '{ print $4 }' | grep -E ':(8470|1800[1-9]|1801[0-2]|18080)$'
        ss -Huln | awk '{ print $4 }' | grep -E ':1801[3-5]$'; } | tr '\n' ' ' || true)
[ -z "$busy" ] || fail "ports the test listens on are in use on this machine: $busy"
# icmp checks need unprivileged ICMP sockets, which a booted Debian allows (systemd's
# sysctl.d/50-default.conf sets net.ipv4.ping_group_range to every group). The
# container shares this machine's network namespace, where the sysctl lives and the
# container cannot write it: it is set as a booted Debian has it for the test's
# duration and put back at the end.
ping_groups=$(cat /proc/sys/net/ipv4/ping_group_range)

step "a newer build ($upgrade_version), as after dch -v"
mkdir -p "$work/upgrade"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$work/upgrade"
else
    tar --exclude=./.venv --exclude=./build --exclude=./dist --exclude=.git \
        --exclude=__pycache__ --exclude='.*_cache' -cf - . | tar -xf - -C "$work/upgrade"
fi
{
    printf 'heartwire (%s) unstable; urgency=medium\n\n  * A newer build for the upgrade test.\n\n' "$upgrade_version"
    printf ' -- heartwire maintainers <maintainers@heartwire.invalid>  %s\n\n' "$(date -R)"
    cat packaging/debian/changelog
} > "$work/upgrade/packaging/debian/changelog"
(cd "$work/upgrade" && packaging/build.sh deb) > "$work/upgrade.log" 2>&1 \
    || { tail -n 30 "$work/upgrade.log" >&2; fail "the newer build failed"; }
mkdir -p "$work/dist"
cp "${debs[@]}" "$work/upgrade/dist/"*_"${upgrade_version}"_all.deb "$work/dist/"

step "the root file system: $ROOTFS"
if [ ! -x "$ROOTFS/usr/bin/systemctl" ] || [ ! -e "$COMPLETE" ]; then
    echo "missing or incomplete: debootstrap bookworm (about a minute)"
    rm -rf "$ROOTFS" "$ROOTFS.new" "$COMPLETE"
    mkdir -p "$CACHE"
    timeout 900 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
        bookworm "$ROOTFS.new" > "$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
    mv "$ROOTFS.new" "$ROOTFS"
    touch "$COMPLETE"
fi
cp -a --reflink=auto "$ROOTFS" "$work/root"
mkdir -p "$CACHE/apt-archives" "$CACHE/apt-lists"

step "boot it: systemd-nspawn -b, systemd as PID 1"
systemd-nspawn --quiet --register=no --keep-unit -D "$work/root" \
    --bind-ro="$work/dist:/srv/dist" --bind-ro="$PWD/packaging:/srv/packaging" \
    --bind="$CACHE/apt-archives:/var/cache/apt/archives" \
    --bind="$CACHE/apt-lists:/var/lib/apt/lists" \
    -b > "$work/console" 2>&1 < /dev/null &
nspawn_pid=$!
deadline=$((SECONDS + 30))
until pid1=$(pgrep -P "$nspawn_pid" -x systemd); do
    kill -0 "$nspawn_pid" 2>/dev/null || fail "systemd-nspawn exited"
    [ "$SECONDS" -lt "$deadline" ] || fail "no systemd in the container after 30s"
    sleep 0.2
done
# Until its bus is up, systemctl cannot even ask; then --wait waits for the boot.
deadline=$((SECONDS + 90))
state=
while [ -z "$state" ]; do
    state=$(in_ct timeout 60 systemctl is-system-running --wait 2>/dev/null) || true
    [ -n "$state" ] || [ "$SECONDS" -lt "$deadline" ] || fail "the container's systemd never answered"
    [ -n "$state" ] || sleep 0.5
done
echo "container PID 1 is $pid1 on the host; the system is $state"
case $state in running | degraded) ;; *) fail "the container did not boot: $state" ;; esac
# PID 1 logs every sd_notify message it gets (READY=1, RELOADING=1, ...) at debug level.
in_ct systemd-analyze log-level debug

step "apt-get install heartwire: it starts idle, and says what to do"
in_ct apt-get update -qq
started=$(in_ct date +%s)
in_ct apt-get install -y -qq "/srv/dist/heartwire_${version}_all.deb" > "$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; fail "apt-get install heartwire failed"; }
[ "$(in_ct systemctl is-enabled heartwire)" = enabled ] || fail "heartwire.service is not enabled"
until_ok "heartwire active" 30 status_starts "idle"
idle="idle, no checks: add them to /etc/heartwire/agent.toml or with 'heartwire checks add', then 'systemctl reload heartwire'"
status_is "$idle" || fail "idle status: $(prop heartwire StatusText)"
notified "$started" "READY=1" || fail "no READY=1 from the agent"
in_ct systemctl status heartwire > "$work/status" || true
grep -qF "Status: \"$idle\"" "$work/status" || { cat "$work/status"; fail "systemctl status lacks the Status: line"; }
journal_has -u heartwire -g "running as agent .* with 0 checks" || fail "the agent did not log its start"
[ "$(in_ct heartwire --version)" = "heartwire $version" ] || fail "heartwire --version: $(in_ct heartwire --version)"
[ -n "$(in_ct find /usr/share/heartwire/agent -name '*.cpython-*.pyc' -print -quit)" ] \
    || fail "the modules are not byte-compiled"

step "the autopkgtest (debian/tests): heartwire check against a real listener"
in_ct env AUTOPKGTEST_TMP=/tmp sh /srv/packaging/debian/tests/check-a-listener

step "the modules are private: another 'agent' on Python's path cannot shadow them"
! in_ct python3 -c 'import agent' 2>/dev/null || fail "'import agent' works outside heartwire"
in_ct mkdir -p /usr/local/lib/python3.11/dist-packages/agent
in_ct sh -c 'echo "raise SystemExit(\"the wrong agent\")" > /usr/local/lib/python3.11/dist-packages/agent/__init__.py'
[ "$(in_ct heartwire --version)" = "heartwire $version" ] || fail "a foreign 'agent' module shadows heartwire"
in_ct rm -r /usr/local/lib/python3.11/dist-packages/agent

step "a real config, then systemctl enable --now: active (running), READY=1, the Status: line"
in_ct systemd-run --quiet --unit=ci-web python3 -m http.server --bind 127.0.0.1 18080
in_ct systemctl stop heartwire
in_ct tee /etc/heartwire/agent.toml > /dev/null <<'EOF'
[agent]
id = "ci-agent"

[defaults]
interval = "1s"
timeout = "500ms"
failures_before_down = 1

[checks.web]
host = "127.0.0.1"
port = 18080
EOF
in_ct heartwire validate
started=$(in_ct date +%s)
in_ct systemctl enable --now heartwire
until_ok "1 check: 1 up" 20 status_is "1 check: 1 up"
in_ct systemctl status heartwire > "$work/status" || true
grep -q "Active: active (running)" "$work/status" || { cat "$work/status"; fail "not active (running)"; }
grep -qF 'Status: "1 check: 1 up"' "$work/status" || { cat "$work/status"; fail "no Status: line"; }
notified "$started" "READY=1, STATUS=1 check: 1 unknown" || fail "no READY=1 with STATUS="

step "a check goes down and up; journalctl -u heartwire CHECK=web shows it"
in_ct systemctl stop ci-web
until_ok "1 check: 1 down" 20 status_is "1 check: 1 down"
in_ct systemd-run --quiet --unit=ci-web2 python3 -m http.server --bind 127.0.0.1 18080
until_ok "1 check: 1 up again" 20 status_is "1 check: 1 up"
in_ct journalctl --no-pager -u heartwire CHECK=web -o verbose > "$work/web.journal"
for field in "STATUS=down" "REASON=refused" "STATUS=up" "REASON=open" "LATENCY_MS=" "PRIORITY=4"; do
    grep -q "^ *$field" "$work/web.journal" || { cat "$work/web.journal"; fail "no $field for CHECK=web"; }
done
journal_has -u heartwire CHECK=web STATUS=down -p warning || fail "the down is not a warning"

step "systemctl reload: a valid config applies (RELOADING=1, READY=1)"
started=$(in_ct date +%s)
in_ct heartwire checks add cache --host 127.0.0.1 --port 18080 --reload
until_ok "2 checks: 2 up" 20 status_is "2 checks: 2 up"
in_ct systemctl status heartwire > "$work/status" || true
grep -qF 'Status: "2 checks: 2 up"' "$work/status" || fail "systemctl status lacks the README's Status: line"
notified "$started" "RELOADING=1" || fail "no RELOADING=1"
notified "$started" "READY=1, STATUS=2 checks" || fail "no READY=1 after the reload"
journal_has -u heartwire --since "@$started" -g "reloaded /etc/heartwire/agent.toml: 2 checks" \
    || fail "the reload is not logged"

step "systemctl reload: an invalid config is logged, the running one kept"
in_ct cp /etc/heartwire/agent.toml /root/agent.toml.good
in_ct sh -c 'printf "\n[checks.bad]\nhost = \"127.0.0.1\"\nport = 70000\n" >> /etc/heartwire/agent.toml'
! in_ct heartwire validate 2>/dev/null || fail "validate accepted port 70000"
started=$(in_ct date +%s)
in_ct systemctl reload heartwire
until_ok "the failed reload logged" 20 journal_has -u heartwire --since "@$started" -p err \
    -g "reload failed, keeping the running config: .*checks.bad.port"
notified "$started" "READY=1" || fail "no READY=1 after the failed reload"
status_is "2 checks: 2 up" || fail "the running config was not kept: $(prop heartwire StatusText)"
[ "$(in_ct systemctl is-active heartwire)" = active ] || fail "the agent stopped"
in_ct cp /root/agent.toml.good /etc/heartwire/agent.toml
in_ct systemctl reload heartwire

step "the watchdog restarts a frozen agent (WatchdogSec=3s drop-in, kill -STOP)"
in_ct mkdir -p /etc/systemd/system/heartwire.service.d
in_ct sh -c 'printf "[Service]\nWatchdogSec=3s\n" > /etc/systemd/system/heartwire.service.d/50-watchdog.conf'
in_ct systemctl daemon-reload
in_ct systemctl restart heartwire
until_ok "2 checks: 2 up" 20 status_is "2 checks: 2 up"
restarts=$(prop heartwire NRestarts)
frozen=$(prop heartwire MainPID)
in_ct kill -STOP "$frozen"
restarted() { [ "$(prop heartwire NRestarts)" -gt "$restarts" ] && status_is "2 checks: 2 up"; }
until_ok "restarted by the watchdog" 60 restarted
[ "$(prop heartwire MainPID)" != "$frozen" ] || fail "the same process still runs"
journal_has -u heartwire -g "Watchdog timeout" || fail "no watchdog timeout in the journal"
in_ct rm -r /etc/systemd/system/heartwire.service.d
in_ct systemctl daemon-reload
in_ct systemctl restart heartwire

step "apt-get install heartwire-central: installed, not started"
in_ct apt-get install -y -qq "/srv/dist/heartwire-central_${version}_all.deb" > "$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; fail "apt-get install heartwire-central failed"; }
[ "$(in_ct systemctl is-enabled heartwire-central)" = disabled ] || fail "heartwire-central is enabled"
[ "$(in_ct systemctl is-active heartwire-central)" = inactive ] || fail "heartwire-central started"
in_ct getent passwd heartwire-central > /dev/null || fail "no heartwire-central user"

step "a key in /etc/heartwire/credentials/ signs (LoadCredential=), central receives"
public=$(in_ct heartwire keygen --out /etc/heartwire/credentials/agent.key | grep '^whpk_')
in_ct heartwire central agents add ci-agent --public-key "$public"
in_ct heartwire central validate
in_ct systemctl enable --now heartwire-central
until_ok "the receiver listening" 30 journal_has -u heartwire-central -g "listening on http://127.0.0.1:8470"
in_ct tee -a /etc/heartwire/agent.toml > /dev/null <<'EOF'

[central]
heartbeat_interval = "2s"
results_batch_interval = "1s"

[destinations.central]
kind = "native"
url = "http://127.0.0.1:8470/v1/ingest"
signing_key_credential = "heartwire_agent.key"
send = "all"
EOF
# From a shell there is no $CREDENTIALS_DIRECTORY: validate reads the same file.
in_ct heartwire validate
in_ct systemctl restart heartwire
api() {
    in_ct python3 -c 'import json, sys, urllib.request
print(json.dumps(json.load(urllib.request.urlopen(
    "http://127.0.0.1:8470/api/v1/" + sys.argv[1], timeout=5))))' "$1"
}
alive() { [[ $(api agents) == *'"id": "ci-agent", "registered": true, "state": "alive"'* ]]; }
until_ok "ci-agent alive at the receiver" 30 alive

step "the sandbox breaks no probe kind and no signing: one check of each kind"
probe_kinds="tcp ssh smtp redis postgres mysql amqp mongodb kafka expect tls http udp dns ntp icmp"
in_ct install -d -m 0755 /etc/heartwire/probe-tls
# The test listeners make their TLS certificate with cryptography, which the
# packages themselves do not depend on.
in_ct apt-get install -y -qq --no-install-recommends python3-cryptography > "$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; fail "apt-get install python3-cryptography failed"; }
in_ct systemd-run --quiet --unit=ci-listeners python3 /srv/packaging/systemd-test/listeners.py /etc/heartwire/probe-tls
until_ok "the listeners" 20 in_ct test -s /etc/heartwire/probe-tls/cert.pem
echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range
in_ct install -m 0644 /srv/packaging/systemd-test/probes.toml /etc/heartwire/conf.d/60-probes.toml
restarts=$(prop heartwire NRestarts)
started=$(in_ct date +%s)
in_ct systemctl reload heartwire
until_ok "18 checks: 18 up" 30 status_starts "18 checks: 18 up"
for kind in $probe_kinds; do
    journal_has -u heartwire CHECK="probe-$kind" STATUS=up || fail "probe-$kind is not up"
done
all_up_at_central() {
    local checks
    checks=$(api checks)
    for kind in $probe_kinds; do
        grep -q "\"name\": \"probe-$kind\", [^}]*\"status\": \"up\"" <<<"$checks" || return 1
    done
}
until_ok "every probe up at the receiver (signed results delivered)" 30 all_up_at_central
[ "$(prop heartwire NRestarts)" = "$restarts" ] || fail "the agent restarted"
# Neither the agent (a refused syscall, an unreadable file) nor systemd (SIGSYS from
# the seccomp filter, a crash) reported anything since the probes started.
# One line is neither's fault: PID 1 could not tell a D-Bus client (a systemctl that
# had already exited) about a unit change ("Failed to send unit change signal").
warnings=$(in_ct journalctl --no-pager -q -u heartwire --since "@$started" -p warning \
           | grep -v "Failed to send unit change signal" || true)
[ -z "$warnings" ] || { echo "$warnings" >&2
    fail "the agent or systemd logged a warning while the probes ran (see the journal)"; }
! journal_has -u heartwire --since "@$started" -g "Main process exited|SIGSYS" \
    || fail "the agent's process died while the probes ran"

step "apt-get install of a newer build restarts both services and keeps edited config"
in_ct sh -c 'echo "# edited by the admin" >> /etc/heartwire/central.toml'
agent_pid=$(prop heartwire MainPID)
central_pid=$(prop heartwire-central MainPID)
started=$(in_ct date +%s)
in_ct apt-get install -y -qq "/srv/dist/heartwire_${upgrade_version}_all.deb" \
    "/srv/dist/heartwire-central_${upgrade_version}_all.deb" < /dev/null > "$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; fail "the upgrade failed"; }
[ "$(in_ct heartwire --version)" = "heartwire $upgrade_version" ] || fail "not upgraded"
until_ok "the agent restarted" 30 test "$(prop heartwire MainPID)" != "$agent_pid"
until_ok "the receiver restarted" 30 test "$(prop heartwire-central MainPID)" != "$central_pid"
notified "$started" "STOPPING=1" || fail "no STOPPING=1 from the agent on its way out"
for unit in heartwire heartwire-central; do
    [ "$(in_ct systemctl is-active "$unit")" = active ] || fail "$unit is not active after the upgrade"
    [ "$(in_ct systemctl is-enabled "$unit")" = enabled ] || fail "$unit is not enabled after the upgrade"
done
in_ct grep -q '^id = "ci-agent"' /etc/heartwire/agent.toml || fail "agent.toml lost its edits"
in_ct grep -qx "# edited by the admin" /etc/heartwire/central.toml || fail "central.toml lost its edit"
until_ok "18 checks: 18 up after the upgrade" 30 status_starts "18 checks: 18 up"
# Debian's Hypercorn 0.13 and trio 0.22: the receiver's stop printed a
# TrioDeprecationWarning before.
! journal_has -u heartwire-central -g "Warning|Traceback" || fail "the receiver's stop warned"

step "apt-get remove heartwire-central stops it and keeps its config"
in_ct apt-get remove -y -qq heartwire-central > "$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; fail "apt-get remove heartwire-central failed"; }
[ "$(in_ct systemctl is-active heartwire-central)" != active ] || fail "the receiver still runs"
in_ct grep -qx "# edited by the admin" /etc/heartwire/central.toml || fail "remove lost central.toml"

step "apt-get purge leaves nothing of ours"
# The test's own listeners and their certificate go first: they are not the package's.
in_ct systemctl stop ci-listeners
in_ct rm -r /etc/heartwire/probe-tls
in_ct test -f /etc/heartwire/conf.d/50-check-cache.toml || fail "checks add wrote no drop-in"
in_ct apt-get purge -y -qq heartwire-central heartwire > "$work/apt.log" 2>&1 \
    || { tail -n 30 "$work/apt.log" >&2; fail "apt-get purge failed"; }
for path in /etc/heartwire /var/lib/heartwire /var/lib/heartwire-central /run/heartwire \
        /usr/share/heartwire /usr/bin/heartwire /usr/share/doc/heartwire \
        /lib/systemd/system/heartwire.service /lib/systemd/system/heartwire-central.service \
        /etc/systemd/system/multi-user.target.wants/heartwire.service \
        /etc/systemd/system/multi-user.target.wants/heartwire-central.service; do
    ! in_ct test -e "$path" || fail "purge left $path"
done
left=$(in_ct sh -c 'find /etc /usr /var /run -name "*heartwire*" 2>/dev/null | grep -v "^/run/systemd/" || true')
[ -z "$left" ] || fail "purge left: $left"
in_ct systemctl daemon-reload
[ "$(in_ct systemctl show -P LoadState heartwire)" = not-found ] || fail "heartwire.service still loads"

step "booted-system checks passed"
