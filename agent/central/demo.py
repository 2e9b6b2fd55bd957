"""``make run``: the receiver and an agent wired to it on loopback, to watch them work.

Builds its configs from ``agent.example.toml`` and ``central.example.toml`` (a
fresh Ed25519 key, the agent pointed at the local receiver, alerts to a webhook
this process prints), adds a ``demo-service`` check on a port this process opens
and closes every ``--toggle-every`` seconds, one ``dns``, ``udp`` and ``ntp`` check
against loopback services it answers itself (and an ``icmp`` check of 127.0.0.1
where the host allows ICMP sockets), and starts both as real processes.
Every few seconds it prints what ``/api/v1/checks`` says; alerts print as they
arrive. Ctrl-C stops everything.

    python -m agent.central.demo [--state-dir .state/demo] [--port 8470]
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import struct
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
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
_LISTENING = re.compile(r"listening on (https?://\S+)")


def say(text: str) -> None:
    """One line of the demo's own commentary."""
    print(f"[demo] {text}", flush=True)


@contextmanager
def alert_printer() -> Iterator[str]:
    """A local webhook that prints each alert; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            with suppress(ValueError, KeyError):
                say(f"webhook received: {json.loads(body)['text']}")
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


def write_configs(state: Path, receiver_url: str, alert_url: str, service_port: int,
                  key: Ed25519SigningKey,
                  datagram_ports: dict[str, int] | None = None) -> tuple[Path, Path]:
    """The central and agent configs of the demo, derived from the two examples."""
    with (REPO / "central.example.toml").open("rb") as handle:
        central: dict[str, Any] = tomllib.load(handle)
    central["agents"] = {AGENT_ID: {"keys": [key.public_key().to_text()], "grace": "20s"}}
    central["channels"] = {"demo-webhook": {"kind": "webhook", "url": alert_url}}
    central["alerts"] = {**central.get("alerts", {}), "retry_initial": "2s"}
    central_file = state / "central" / "central.toml"
    central_file.parent.mkdir(parents=True, exist_ok=True)
    central_file.write_text(tomli_w.dumps(central))

    with (REPO / "agent.example.toml").open("rb") as handle:
        agent: dict[str, Any] = tomllib.load(handle)
    agent.setdefault("agent", {})["id"] = AGENT_ID
    agent["central"] = {**agent.get("central", {}), "heartbeat_interval": "10s"}
    agent.setdefault("checks", {})["demo-service"] = {
        "host": "127.0.0.1", "port": service_port, "group": "Demo",
        "interval": "2s", "timeout": "1s", "failures_before_down": 1,
    }
    agent["checks"].update(_datagram_checks(datagram_ports or {}))
    agent["destinations"] = {"central": {
        "kind": "native", "url": f"{receiver_url}/v1/ingest",
        "signing_key_file": str(state / "agent.key"),
    }}
    agent_file = state / "agent" / "agent.toml"
    agent_file.parent.mkdir(parents=True, exist_ok=True)
    agent_file.write_text(tomli_w.dumps(agent))
    return central_file, agent_file


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
    """``python -m agent ARGS``; its log lines are echoed, URLs it announces collected."""
    process = subprocess.Popen([sys.executable, "-m", "agent", *args],
                               stderr=subprocess.PIPE, text=True)

    def echo() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            print(line, end="", flush=True)
            if found is not None and (match := _LISTENING.search(line)):
                found.append(match.group(1))

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


def summary(client: httpx.Client) -> str:
    """One line: each check's status as the receiver shows it."""
    checks = client.get("/api/v1/checks").json()["checks"]
    agents = client.get("/api/v1/agents").json()["agents"]
    beat = next((a["last_heartbeat"] for a in agents if a["id"] == AGENT_ID), None)
    states = ", ".join(f"{row['name']} {row['status']}" for row in checks) or "no checks yet"
    return f"last heartbeat {beat or 'none yet'}; {states}"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the demo until Ctrl-C (or ``--duration`` seconds)."""
    parser = argparse.ArgumentParser(prog="python -m agent.central.demo")
    parser.add_argument("--state-dir", default=".state/demo", type=Path)
    parser.add_argument("--port", type=int, default=8470, help="the receiver's port (0: any)")
    parser.add_argument("--toggle-every", type=float, default=20.0, metavar="SECONDS")
    parser.add_argument("--duration", type=float, default=0.0, metavar="SECONDS",
                        help="stop after this long (default: run until Ctrl-C)")
    args = parser.parse_args(argv)
    state: Path = args.state_dir.resolve()
    state.mkdir(parents=True, exist_ok=True)
    key = Ed25519SigningKey.generate()
    write_private_file(state / "agent.key", key.to_text(), overwrite=True)

    service = Service()
    service.open()
    datagrams = DatagramServices()
    processes: list[subprocess.Popen[str]] = []
    try:
        with alert_printer() as alert_url:
            central_file, agent_file = write_configs(state, "http://unset", alert_url,
                                                     service.port, key, datagrams.ports)
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
            write_configs(state, base, alert_url, service.port, key, datagrams.ports)
            processes.append(start(["run", "--config", str(agent_file),
                                    "--state-dir", str(state / "agent")]))
            say(f"receiver on {base} (status page: {base}/); agent {AGENT_ID!r} reports to it")
            say(f"demo-service (127.0.0.1:{service.port}) goes down and up every "
                f"{args.toggle_every:g} s; Ctrl-C stops everything")
            began = time.monotonic()
            next_toggle = began + args.toggle_every
            with httpx.Client(base_url=base, timeout=5) as client:
                while not args.duration or time.monotonic() - began < args.duration:
                    time.sleep(min(5.0, args.toggle_every / 2))
                    if time.monotonic() >= next_toggle:
                        if service.socket is None:
                            service.open()
                            say("demo-service is listening again")
                        else:
                            service.close()
                            say("demo-service stopped listening")
                        next_toggle += args.toggle_every
                    with suppress(httpx.HTTPError):
                        say(summary(client))
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for process in reversed(processes):
            stop(process)
        service.close()
        datagrams.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
