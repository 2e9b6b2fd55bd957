"""``make run``: the receiver and an agent wired to it on loopback, to watch them work.

The receiver's config comes from ``central.example.toml`` (a fresh Ed25519 key,
alerts to a webhook this process prints, a flap rule the demo's cadence stays
under). The agent's config is the demo's own: only checks whose targets this
process provides -- ``demo-service``, a port it opens and closes every
``--toggle-every`` seconds, ``demo-database``, a TCP listener (``service =
"demo-db"``), ``demo-gateway`` and ``demo-app`` (``depends_on = ["demo-gateway"]``), one
``dns``, ``udp`` and ``ntp`` check against loopback services it answers itself,
and an ``icmp`` check of 127.0.0.1 where the host allows ICMP sockets. So every
red row on the page is one the demo made red on purpose. A second agent,
``edge-agent``, checks ``demo-database`` too, through a port of its own (its
network path), so the receiver judges the service ``demo-db`` by a quorum of two.

Each run starts from a clean state (``--keep-state`` keeps the last one). Early
on, a maintenance window (``heartwire maintenance start``) covers
``demo-service`` while it goes down: the alert is held, and goes out when the
window ends. Then the gateway and the app behind it stop together: the
gateway alerts, the app's alert is held while its parent is down, and goes out
when the gateway is back and the app is not yet. Then the edge agent's path
breaks: it alone sees ``demo-db`` down, which is shown, not alerted; then the
database stops and both see it down: one alert for the service, not one per
agent. It prints one short line per
event (a check changing state, an alert, a window starting or ending). Ctrl-C
stops everything.

    python -m agent.central.demo [--state-dir .state/demo] [--port 8470] [--keep-state]
"""

from __future__ import annotations

import argparse
import json
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from agent.common.keyfiles import write_private_file
from agent.common.signing import Ed25519SigningKey

REPO = Path(__file__).resolve().parents[2]
AGENT_ID = "example-agent"
TOGGLED = "demo-service"
# A parent and a child: the demo stops both listeners at once.
PARENT = "demo-gateway"
CHILD = "demo-app"
# A second agent checks demo-database too, through its own port (its network path),
# so the receiver judges the service "demo-db" by a quorum of the two.
EDGE_ID = "edge-agent"
DATABASE = "demo-database"
SERVICE = "demo-db"
EDGE_PATH = "edge-path"
_LISTENING = re.compile(r"listening on (https?://\S+)")
_ROUTINE = re.compile(r"\S+ \S+ (INFO|WARNING) ")
# A line a newcomer reads at a glance on a 120-column terminal (a parent's alert
# naming the app it holds is 118).
MAX_LINE_CHARS = 120
# The flap rule of the demo's receiver: the toggled check goes down once per two
# --toggle-every periods, fewer than flap_threshold times within flap_window at
# the default cadence, so each outage alerts on its own as it would in production.
FLAP_WINDOW = "2m"
# The demo's gateway alert waits this long for the app behind it (the default is
# 30 s): its alert then names the app it holds, and the demo stays short.
DEPENDENCY_WAIT = "8s"
# "; path to 127.0.0.1: reached in 1 hop", as an alert's summary carries it.
_WITHOUT_PATH = re.compile(r"; path to [^;]*")
FLAP_THRESHOLD = 5


class Printer:
    """Prints short lines, never the same one twice in a row (from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = ""

    def line(self, text: str) -> None:
        """Prints ``text`` cut to :data:`MAX_LINE_CHARS`, unless it repeats the last line."""
        text = " ".join(text.split())
        if len(text) > MAX_LINE_CHARS:
            text = text[:MAX_LINE_CHARS - 3] + "..."
        with self._lock:
            if text == self._last:
                return
            self._last = text
            print(text, flush=True)


_PRINTER = Printer()


def say(text: str) -> None:
    """One line of the demo's own commentary."""
    _PRINTER.line(f"[demo] {text}")


@contextmanager
def alert_printer(received: list[str] | None = None) -> Iterator[str]:
    """A local webhook that prints each alert (and appends its text to ``received``);
    yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with suppress(ValueError, KeyError, TypeError):
                text = str(json.loads(body)["text"])
                # The path trace is on the page; the console line keeps what matters.
                say(f"webhook: {_WITHOUT_PATH.sub('', text)}")
                if received is not None:
                    received.append(text)
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    finally:
        server.shutdown()
        server.server_close()


class Service:
    """The demo's TCP service: a listener it opens and closes, accepting in a thread.

    Connections are accepted and closed at once: a listener that never accepts
    fills its backlog, and then connects time out although it is "up".
    """

    def __init__(self) -> None:
        self.socket: socket.socket | None = None
        self.port = 0

    def open(self) -> None:
        """Starts listening (on the same port as before, once there was one)."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        self.socket = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self.socket is listener:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            connection.close()

    def close(self) -> None:
        """Stops listening: connects are refused from now on."""
        if self.socket is not None:
            listener, self.socket = self.socket, None
            listener.close()


DEMO_NAME = "demo.heartwire.test"
_NTP = struct.Struct("!BBbbII4sQQQQ")
_NTP_EPOCH_S = 2_208_988_800


class DatagramServices:
    """Loopback UDP services for the demo's datagram checks, answered in one thread.

    A DNS server that knows ``demo.heartwire.test`` (A 127.0.0.1), an echo that
    answers "PING" with "PONG", and an NTP server telling this host's time.
    """

    def __init__(self) -> None:
        self.sockets = {name: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        for name in ("dns", "echo", "ntp")}
        for sock in self.sockets.values():
            sock.bind(("127.0.0.1", 0))
        self.ports = {name: sock.getsockname()[1] for name, sock in self.sockets.items()}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        answers = {"dns": _dns_answer, "echo": lambda data: b"PONG" if data == b"PING" else None,
                   "ntp": _ntp_answer}
        by_socket = {sock: answers[name] for name, sock in self.sockets.items()}
        while True:
            try:
                ready, _, _ = select.select(list(by_socket), [], [])
            except (OSError, ValueError):
                return  # closed
            for sock in ready:
                with suppress(OSError):  # closed meanwhile, or an ICMP error queued
                    data, peer = sock.recvfrom(2048)
                    reply = by_socket[sock](data)
                    if reply is not None:
                        sock.sendto(reply, peer)

    def close(self) -> None:
        """Stops answering."""
        for sock in self.sockets.values():
            sock.close()


def _dns_answer(data: bytes) -> bytes | None:
    import dns.exception
    import dns.message
    import dns.rcode
    import dns.rrset

    try:
        query = dns.message.from_wire(data)
    except dns.exception.DNSException:
        return None  # not a query: no answer
    if not query.question:
        return None
    response = dns.message.make_response(query)
    question = query.question[0]
    if question.name.to_text().rstrip(".").lower() != DEMO_NAME:
        response.set_rcode(dns.rcode.NXDOMAIN)
    elif question.rdtype == 1:  # A
        response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "127.0.0.1"))
    return bytes(response.to_wire())


def _ntp_answer(data: bytes) -> bytes | None:
    if len(data) < _NTP.size:
        return None
    now = int((time.time() + _NTP_EPOCH_S) * 2**32)
    origin = _NTP.unpack_from(data)[10]
    return _NTP.pack(0x24, 2, 6, -20, 0, 0, b"\x7f\0\0\1", now, origin, now, now)


def write_configs(state: Path, receiver_url: str, alert_url: str, tcp_ports: dict[str, int],
                  key: Ed25519SigningKey,
                  datagram_ports: dict[str, int] | None = None,
                  edge_key: Ed25519SigningKey | None = None) -> tuple[Path, Path]:
    """The central and agent configs of the demo.

    Args:
        state: the demo's state directory; the configs go in its ``central/`` and
            ``agent/`` folders.
        receiver_url: the receiver's base URL, where the agent sends.
        alert_url: the webhook that prints alerts.
        tcp_ports: the port of each TCP check the demo provides, by check name.
        key: the agent's signing key (its public half is registered at the receiver).
        datagram_ports: the ports of :class:`DatagramServices`, by service.
        edge_key: the second agent's key; with it (and an ``edge-path`` port), the
            second agent's config goes in :func:`edge_config` and its key is registered.

    Returns:
        The central and the agent config file.
    """
    with (REPO / "central.example.toml").open("rb") as handle:
        central: dict[str, Any] = tomllib.load(handle)
    central["agents"] = {AGENT_ID: {"keys": [key.public_key().to_text()], "grace": "20s"}}
    edge = edge_key is not None and EDGE_PATH in tcp_ports
    if edge_key is not None and edge:
        central["agents"][EDGE_ID] = {"keys": [edge_key.public_key().to_text()], "grace": "20s"}
    central["channels"] = {"demo-webhook": {"kind": "webhook", "url": alert_url}}
    central["alerts"] = {**central.get("alerts", {}), "retry_initial": "2s",
                         "flap_window": FLAP_WINDOW, "flap_threshold": FLAP_THRESHOLD,
                         "dependency_wait": DEPENDENCY_WAIT}
    central.pop("maintenance", None)
    central_file = state / "central" / "central.toml"
    central_file.parent.mkdir(parents=True, exist_ok=True)
    central_file.write_text(tomli_w.dumps(central))

    # The demo's own agent config, not agent.example.toml: its other checks point
    # at services that do not run here and would open the page with red rows.
    common = {"host": "127.0.0.1", "group": "Demo", "interval": "2s", "timeout": "1s"}
    checks: dict[str, dict[str, Any]] = {
        name: {**common, "port": port, "failures_before_down": 1}
        for name, port in tcp_ports.items() if name != EDGE_PATH
    }
    if edge and DATABASE in checks:
        checks[DATABASE]["service"] = SERVICE
    if PARENT in checks and CHILD in checks:
        # The app confirms an outage with a second failure, so its down reaches the
        # receiver after its gateway's: the gateway that went down first holds it.
        checks[CHILD].update(depends_on=[PARENT], failures_before_down=2)
    checks.update(_datagram_checks(datagram_ports or {}))
    agent: dict[str, Any] = {
        "agent": {"id": AGENT_ID},
        "central": {"heartbeat_interval": "10s"},
        "checks": checks,
        "destinations": {"central": {
            "kind": "native", "url": f"{receiver_url}/v1/ingest",
            "signing_key_file": str(state / "agent.key"),
        }},
    }
    agent_file = state / "agent" / "agent.toml"
    agent_file.parent.mkdir(parents=True, exist_ok=True)
    agent_file.write_text(tomli_w.dumps(agent))
    if edge:
        # The second agent: one check, the same database and service, its own path.
        edge_agent = {
            **agent, "agent": {"id": EDGE_ID},
            "checks": {DATABASE: {**common, "port": tcp_ports[EDGE_PATH],
                                  "failures_before_down": 1, "service": SERVICE}},
            "destinations": {"central": {**agent["destinations"]["central"],
                                         "signing_key_file": str(state / f"{EDGE_ID}.key")}},
        }
        edge_config(state).parent.mkdir(parents=True, exist_ok=True)
        edge_config(state).write_text(tomli_w.dumps(edge_agent))
    return central_file, agent_file


def edge_config(state: Path) -> Path:
    """The second agent's config file (its state directory is the file's folder)."""
    return state / EDGE_ID / "agent.toml"


def _datagram_checks(ports: dict[str, int]) -> dict[str, dict[str, Any]]:
    """One check of each datagram kind against :class:`DatagramServices`, and a ping."""
    from agent.checks.icmp import sockets_allowed

    common = {"host": "127.0.0.1", "group": "Demo", "interval": "2s", "timeout": "1s"}
    checks: dict[str, dict[str, Any]] = {}
    if "dns" in ports:
        checks["demo-dns"] = {**common, "kind": "dns", "port": ports["dns"], "name": DEMO_NAME,
                              "expect": ["127.0.0.1"]}
    if "echo" in ports:
        checks["demo-udp"] = {**common, "kind": "udp", "port": ports["echo"], "send": "PING",
                              "expect": "^PONG$"}
    if "ntp" in ports:
        checks["demo-ntp"] = {**common, "kind": "ntp", "port": ports["ntp"]}
    # Only where this host lets the agent open ICMP sockets (net.ipv4.ping_group_range).
    if sockets_allowed():
        checks["demo-ping"] = {**common, "kind": "icmp"}
    return checks


def start(args: Sequence[str], found: list[str] | None = None) -> subprocess.Popen[str]:
    """``python -m agent ARGS``; its log lines are echoed short, URLs it announces collected."""
    process = subprocess.Popen([sys.executable, "-m", "agent", *args],
                               stderr=subprocess.PIPE, text=True)

    def echo() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            match = _LISTENING.search(line)
            if found is not None and match:
                found.append(match.group(1))
            # Routine log lines repeat what the demo says in its own short words;
            # the address it listens on, errors and anything unexpected are shown.
            if match or not _ROUTINE.match(line):
                _PRINTER.line(line)

    threading.Thread(target=echo, daemon=True).start()
    return process


def stop(process: subprocess.Popen[str]) -> None:
    """Stops a started process (SIGTERM, then SIGKILL after 10 s)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def clean_state(state: Path, keep: bool) -> bool:
    """Removes what an earlier run left in ``state`` (its own files only), unless ``keep``.

    An earlier run's incidents would otherwise count towards the flap rule and
    its rows would greet the newcomer. Only the demo's own files go, and only
    where its key shows an earlier run, so a mistyped ``--state-dir`` loses
    nothing.

    Returns:
        False when ``state`` holds a ``central`` or ``agent`` folder the demo did not make.
    """
    own = [state / "central", state / "agent", state / "agent.key", state / EDGE_ID,
           state / f"{EDGE_ID}.key"]
    if keep:
        say(f"keeping the state of earlier runs in {_short(state)}")
        return True
    if not own[2].exists() and (own[0].exists() or own[1].exists()):
        say(f"not the demo's state (no agent.key), use another --state-dir: {_short(state)}")
        return False
    for path in own:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    say(f"starting from a clean state in {_short(state)} (--keep-state keeps it)")
    return True


def _short(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (as ``make run``'s)."""
    with suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def timeline(toggle_every: float, maintenance_for: float) -> Iterator[tuple[float, str]]:
    """What the demo does, each step as (seconds after the previous one, action).

    ``demo-service`` goes down after ``T`` and up ``T`` later (an alert and its
    resolve); a maintenance window is asked for halfway through the next up
    phase, and the check goes down under it (``held-down``: once the receiver
    shows the window), staying down until ``T/2`` after the window has ended,
    so the held alert goes out then. ``T/2`` later the gateway and the app
    behind it stop (``parent-down``); ``T`` later, once the receiver shows the
    app held by its parent, the gateway comes back (``parent-up``), and the app
    once its own alert went out, at least ``T/2`` later (``child-up``). ``T/2``
    later the second agent's path to the database breaks (``path-down``): it alone
    sees ``demo-db`` down, shown and not alerted; ``T`` later the database itself
    stops (``database-down``): both agents see it down, one alert for the service;
    ``T`` later it comes back with the path (``database-up``), one resolve. After
    that ``demo-service`` goes down and up every ``T``.
    """
    period = toggle_every
    yield period, "down"
    yield period, "up"
    yield period / 2, "maintenance"
    yield period / 2, "held-down"
    yield maintenance_for + period / 2, "up"
    yield period / 2, "parent-down"
    yield period, "parent-up"
    yield period / 2, "child-up"
    yield period / 2, "path-down"
    yield period, "database-down"
    yield period, "database-up"
    while True:
        yield period, "down"
        yield period, "up"


# How long a step waits for what it follows (the receiver showing the window, the
# child held, the child's alert): the agent sends within its outbox tick (5 s).
WINDOW_WAIT_S = 20.0


class Watcher:
    """Reads the receiver's API and says what changed since the last look."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.seen: dict[str, tuple[str, bool]] = {}
        self.held_by: dict[str, str | None] = {}
        self.held_because: dict[str, str | None] = {}
        self.heartbeats: set[str] = set()
        self.services: dict[str, str] = {}

    def in_maintenance(self, name: str) -> bool:
        """Whether the receiver last showed check ``name`` in a maintenance window."""
        return self.seen.get(name, ("unknown", False))[1]

    def is_held(self, name: str) -> bool:
        """Whether the receiver last showed check ``name`` held by a parent that is down."""
        return self.held_by.get(name) is not None

    def look(self) -> None:
        """One line per check that changed status, went in or out of maintenance, or
        whose alerts a parent started or stopped holding."""
        if not {AGENT_ID, EDGE_ID} <= self.heartbeats:
            for agent in self.client.get("/api/v1/agents").json()["agents"]:
                if agent.get("last_heartbeat") and agent["id"] not in self.heartbeats:
                    self.heartbeats.add(agent["id"])
                    say(f"first heartbeat from {agent['id']}")
        for service in self.client.get("/api/v1/services").json()["services"]:
            before_status = self.services.get(service["name"], "unknown")
            self.services[service["name"]] = service["status"]
            if before_status != service["status"]:
                agents = "agent sees" if service["reporting"] == 1 else "agents see"
                say(f"service {service['name']}: {before_status} -> {service['status']} "
                    f"({service['down']} of {service['reporting']} {agents} it down)")
        for row in self.client.get("/api/v1/checks").json()["checks"]:
            # The second agent's checks are named with their agent: the names repeat.
            name = row["name"] if row["agent"] == AGENT_ID else f"{row['agent']}/{row['name']}"
            now = (row["status"], bool(row.get("maintenance")))
            before = self.seen.get(name)
            self.seen[name] = now
            if before is None:
                before = ("unknown", False)
            held_before, held = self.held_by.get(name), row.get("held_by")
            self.held_by[name] = held
            self.held_because[name] = because = row.get("held_because")
            if before[1] != now[1]:
                say(f"maintenance window {'started' if now[1] else 'ended'} for {name}")
            why = f" (parent {held} is down: its alert waits)" if held else ""
            if because and not held:  # its service's alert speaks for it
                why = f" ({because})"
            if before[0] == "unknown" != now[0]:
                say(f"{name}: {now[0]}{why}")  # its first result
            elif before[0] != now[0]:
                say(f"{name}: {before[0]} -> {now[0]}{why}")
            elif held != held_before:
                say(f"{name}: {now[0]}{why}" if held else
                    f"{name}: still {now[0]}, its parent is back: its alert goes out")


def start_maintenance(agent_file: Path, state: Path, seconds: float) -> None:
    """``heartwire maintenance start --for SECONDS --check demo-service`` on the agent's side."""
    result = subprocess.run(
        [sys.executable, "-m", "agent", "maintenance", "start", "--for", f"{round(seconds)}s",
         "--check", TOGGLED, "--reason", "demo", "--config", str(agent_file),
         "--state-dir", str(state / "agent")],
        capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        say(f"heartwire maintenance start failed: {(result.stderr or result.stdout).strip()}")
        return
    say(f"maintenance start --for {round(seconds)}s --check {TOGGLED}: its alerts wait for the end")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo until Ctrl-C (or ``--duration`` seconds)."""
    parser = argparse.ArgumentParser(prog="python -m agent.central.demo")
    parser.add_argument("--state-dir", default=".state/demo", type=Path)
    parser.add_argument("--keep-state", action="store_true",
                        help="keep what earlier runs left (default: start clean)")
    parser.add_argument("--port", type=int, default=8470, help="the receiver's port (0: any)")
    parser.add_argument("--toggle-every", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--maintenance-for", type=float, default=40.0, metavar="SECONDS",
                        help="how long the demo's maintenance window lasts")
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    args = parser.parse_args(argv)
    if args.toggle_every <= 0 or args.maintenance_for < 1:
        parser.error("--toggle-every must be positive and --maintenance-for at least 1")
    state: Path = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    if not clean_state(state, args.keep_state):
        return 1
    key = Ed25519SigningKey.generate()
    write_private_file(state / "agent.key", key.to_text(), overwrite=True)
    edge_key = Ed25519SigningKey.generate()
    write_private_file(state / f"{EDGE_ID}.key", edge_key.to_text(), overwrite=True)

    services = {name: Service() for name in (TOGGLED, DATABASE, PARENT, CHILD, EDGE_PATH)}
    for listener in services.values():
        listener.open()
    tcp_ports = {name: listener.port for name, listener in services.items()}
    datagrams = DatagramServices()
    processes: list[subprocess.Popen[str]] = []
    try:
        alerts: list[str] = []
        with alert_printer(alerts) as alert_url:
            central_file, agent_file = write_configs(state, "http://unset", alert_url,
                                                     tcp_ports, key, datagrams.ports, edge_key)
            found: list[str] = []
            processes.append(start(["central", "--config", str(central_file),
                                    "--listen", f"127.0.0.1:{args.port}",
                                    "--state-dir", str(state / "central")], found))
            deadline = time.monotonic() + 30
            while not found and time.monotonic() < deadline and processes[0].poll() is None:
                time.sleep(0.1)
            if not found:
                say("the receiver did not start; see its log above")
                return 1
            base = found[0]
            write_configs(state, base, alert_url, tcp_ports, key, datagrams.ports, edge_key)
            processes.append(start(["run", "--config", str(agent_file),
                                    "--state-dir", str(state / "agent")]))
            processes.append(start(["run", "--config", str(edge_config(state)),
                                    "--state-dir", str(edge_config(state).parent)]))
            say(f"status page: {base}/ (response-time charts fill as results arrive)")
            say(f"{TOGGLED} goes down and up every {args.toggle_every:g} s; Ctrl-C stops")
            try:
                run_demo(args, services, agent_file, state, base, alerts)
            finally:  # before the webhook goes: an alert in flight is not an error
                for process in reversed(processes):
                    stop(process)
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for process in reversed(processes):
            stop(process)
        for listener in services.values():
            listener.close()
        datagrams.close()
    return 0


def run_demo(args: argparse.Namespace, services: dict[str, Service], agent_file: Path,
             state: Path, base: str, alerts: list[str]) -> None:
    """Follows the :func:`timeline` until ``--duration`` ends, saying what changes.

    Args:
        args: the command line.
        services: the demo's TCP listeners, by check name.
        agent_file: the agent's config file.
        state: the demo's state directory.
        base: the receiver's base URL.
        alerts: the alert texts the webhook received so far (appended to as they come).
    """
    toggled, parent, child = services[TOGGLED], services[PARENT], services[CHILD]
    database, path = services[DATABASE], services[EDGE_PATH]

    def database_up() -> None:
        database.open()
        path.open()

    def parent_down() -> None:
        parent.close()
        child.close()

    actions: dict[str, tuple[Callable[[], None], str]] = {
        "down": (toggled.close, f"{TOGGLED} stopped listening"),
        "held-down": (toggled.close, f"{TOGGLED} stopped listening"),
        "up": (toggled.open, f"{TOGGLED} is listening"),
        "maintenance": (lambda: start_maintenance(agent_file, state, args.maintenance_for), ""),
        "parent-down": (parent_down, f"{PARENT} and {CHILD} (depends_on {PARENT}) stopped "
                                     "listening"),
        "parent-up": (parent.open, f"{PARENT} is listening; {CHILD} not yet"),
        "child-up": (child.open, f"{CHILD} is listening"),
        "path-down": (path.close, f"{EDGE_ID}'s path to {DATABASE} is cut ({SERVICE}: "
                                  f"{AGENT_ID} still sees it)"),
        "database-down": (database.close, f"{DATABASE} stopped listening: both agents see "
                                          f"{SERVICE} down"),
        "database-up": (database_up, f"{DATABASE} and {EDGE_ID}'s path are back"),
    }
    began = time.monotonic()
    steps = timeline(args.toggle_every, args.maintenance_for)
    delay, action = next(steps)
    due = began + delay
    with httpx.Client(base_url=base, timeout=5) as client:
        watcher = Watcher(client)
        # What a step waits for (at most WINDOW_WAIT_S past its time): the state the
        # previous step set out to show, so a slow host still shows every event.
        ready: dict[str, Callable[[], bool]] = {
            "held-down": lambda: watcher.in_maintenance(TOGGLED),
            "parent-up": lambda: watcher.is_held(CHILD) and any(
                f"check {PARENT} is" in text and text.startswith("ALERT") for text in alerts),
            "child-up": lambda: any(f"check {CHILD} is" in text and text.startswith("ALERT")
                                    for text in alerts),
            "database-down": lambda: watcher.services.get(SERVICE) == "degraded",
            "database-up": lambda: any(text.startswith(f"ALERT: service {SERVICE} down")
                                       for text in alerts),
        }
        while not args.duration or time.monotonic() - began < args.duration:
            time.sleep(0.5)
            with suppress(httpx.HTTPError, ValueError, KeyError):
                watcher.look()
            now = time.monotonic()
            waiting = action in ready and not ready[action]() and now < due + WINDOW_WAIT_S
            if now < due or waiting:
                continue
            act, words = actions[action]
            act()
            if words:
                say(words)
            delay, action = next(steps)
            due = now + delay


if __name__ == "__main__":
    sys.exit(main())
