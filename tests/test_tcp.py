"""The TCP probe against real loopback sockets."""

import socket

import pytest
import trio

from agent.checks import tcp
from agent.model import Outcome, Reason, Target
from tests.netutil import (
    needs_ipv6,
    open_fd_count,
    open_port,
    refused_port,
    silent_port,
)


class StaticResolver(trio.abc.HostnameResolver):
    """Resolves chosen names to fixed addresses (and answers nothing else)."""

    def __init__(self, names: dict[str, list[tuple[int, str]]], delay_s: float = 0.0) -> None:
        self.names = names
        self.delay_s = delay_s

    async def getaddrinfo(self, host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def, override]
        await trio.sleep(self.delay_s)
        host = host.decode() if isinstance(host, bytes) else host
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = [
            (
                fam,
                socket.SOCK_STREAM,
                6,
                "",
                (addr, port) if fam == socket.AF_INET else (addr, port, 0, 0),
            )
            for fam, addr in self.names[host]
            if family in (0, fam)
        ]
        if not answers:
            raise socket.gaierror(
                socket.EAI_ADDRFAMILY, "Address family for hostname not supported"
            )
        return answers

    async def getnameinfo(self, sockaddr, flags):  # type: ignore[no-untyped-def, override]
        raise NotImplementedError


async def test_open_port() -> None:
    with open_port() as port:
        observation = await tcp.probe(Target("127.0.0.1", port), timeout=2)
    assert observation.outcome is Outcome.OK
    assert observation.reason == Reason.OPEN
    assert observation.address == "127.0.0.1"
    assert observation.latency_ms is not None and 0 < observation.latency_ms < 2000
    assert observation.dns_ms is None  # an IP literal needs no resolution


async def test_refused_port() -> None:
    with refused_port() as port:
        observation = await tcp.probe(Target("127.0.0.1", port), timeout=2)
    assert observation.outcome is Outcome.FAILED
    assert observation.reason == Reason.REFUSED
    assert observation.latency_ms is None and observation.address is None
    assert observation.detail == f"127.0.0.1:{port}: Connection refused"


async def test_silent_port_times_out_within_the_timeout() -> None:
    with silent_port() as port:
        started = trio.current_time()
        observation = await tcp.probe(Target("127.0.0.1", port), timeout=0.3)
        elapsed = trio.current_time() - started
    assert observation.reason == Reason.TIMEOUT
    assert observation.detail == f"127.0.0.1:{port}: no answer within 0.3s"
    assert observation.latency_ms is None
    assert 0.3 <= elapsed < 1.3


async def test_unresolvable_name_is_dns() -> None:
    trio.socket.set_custom_hostname_resolver(StaticResolver({}))
    observation = await tcp.probe(Target("db.invalid", 5432), timeout=1)
    assert observation.reason == Reason.DNS
    assert observation.detail == "db.invalid: Name or service not known"
    assert observation.dns_ms is not None


async def test_slow_dns_is_a_dns_failure_not_a_timeout_of_the_service(
    autojump_clock: object,
) -> None:
    trio.socket.set_custom_hostname_resolver(
        StaticResolver({"slow.test": [(socket.AF_INET, "127.0.0.1")]}, delay_s=10)
    )
    observation = await tcp.probe(Target("slow.test", 5432), timeout=2)
    assert observation.reason == Reason.DNS
    assert "did not finish before the timeout" in (observation.detail or "")
    assert observation.dns_ms == pytest.approx(2000)


async def test_dns_time_is_kept_apart_from_the_handshake() -> None:
    trio.socket.set_custom_hostname_resolver(
        StaticResolver({"db.test": [(socket.AF_INET, "127.0.0.1")]}, delay_s=0.2)
    )
    with open_port() as port:
        observation = await tcp.probe(Target("db.test", port), timeout=2)
    assert observation.reason == Reason.OPEN
    assert observation.dns_ms is not None and observation.dns_ms >= 200
    assert observation.latency_ms is not None and observation.latency_ms < 100


@needs_ipv6
async def test_ipv6_loopback() -> None:
    with open_port("::1") as port:
        observation = await tcp.probe(Target("::1", port), timeout=2)
    assert (observation.reason, observation.address) == (Reason.OPEN, "::1")


@needs_ipv6
async def test_happy_eyeballs_falls_back_to_the_family_that_answers() -> None:
    trio.socket.set_custom_hostname_resolver(
        StaticResolver({"dual.test": [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]})
    )
    # ::1 is tried first and refuses at once (bound, not listening); 127.0.0.1 answers.
    with open_port("127.0.0.1") as port, socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as v6:
        v6.bind(("::1", port))
        observation = await tcp.probe(Target("dual.test", port), timeout=2)
    assert observation.reason == Reason.OPEN
    assert observation.address == "127.0.0.1"


@needs_ipv6
async def test_pinned_family_uses_only_that_family() -> None:
    trio.socket.set_custom_hostname_resolver(
        StaticResolver({"dual.test": [(socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")]})
    )
    with open_port("127.0.0.1") as port, socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as v6:
        v6.bind(("::1", port))  # bound, not listening: refuses
        pinned = await tcp.probe(Target("dual.test", port, family="ipv6"), timeout=2)
        either = await tcp.probe(Target("dual.test", port, family="any"), timeout=2)
    assert (pinned.reason, pinned.detail) == (Reason.REFUSED, f"[::1]:{port}: Connection refused")
    assert either.reason == Reason.OPEN


async def test_happy_eyeballs_starts_the_next_address_after_the_delay() -> None:
    # The first address swallows the SYN; the second answers. The winner is found
    # after one attempt delay, long before the check's timeout.
    trio.socket.set_custom_hostname_resolver(
        StaticResolver({"two.test": [(socket.AF_INET, "127.0.0.2"), (socket.AF_INET, "127.0.0.3")]})
    )
    with silent_port("127.0.0.2") as port, socket.socket() as listener:
        listener.bind(("127.0.0.3", port))
        listener.listen(8)
        started = trio.current_time()
        observation = await tcp.probe(Target("two.test", port), timeout=3)
        elapsed = trio.current_time() - started
    assert (observation.reason, observation.address) == (Reason.OPEN, "127.0.0.3")
    assert tcp.HAPPY_EYEBALLS_DELAY_S <= elapsed < 2.0
    # The latency is the winning handshake alone, not the wait for the first address.
    assert observation.latency_ms is not None and observation.latency_ms < 200


async def test_refused_beats_unreachable_when_every_address_fails() -> None:
    trio.socket.set_custom_hostname_resolver(
        StaticResolver(
            {"mixed.test": [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "127.0.0.4")]}
        )
    )
    with refused_port("127.0.0.1") as port, socket.socket() as other:
        other.bind(("127.0.0.4", port))
        observation = await tcp.probe(Target("mixed.test", port), timeout=2)
    assert observation.reason == Reason.REFUSED
    assert f"127.0.0.1:{port}: Connection refused" in (observation.detail or "")
    assert f"127.0.0.4:{port}: Connection refused" in (observation.detail or "")


def test_interleaving_follows_rfc_8305() -> None:
    v6 = [(socket.AF_INET6, (f"::{n}", 1, 0, 0)) for n in (1, 2, 3)]
    v4 = [(socket.AF_INET, (f"10.0.0.{n}", 1)) for n in (1, 2)]
    ordered = tcp.interleave_families([v6[0], v6[1], v6[2], v4[0], v4[1], v4[0]])
    assert ordered == [v6[0], v4[0], v6[1], v4[1], v6[2]]  # type: ignore[comparison-overlap]


@pytest.mark.parametrize(
    ("errno_name", "reason"),
    [
        ("ECONNREFUSED", Reason.REFUSED),
        ("ETIMEDOUT", Reason.TIMEOUT),
        ("ENETUNREACH", Reason.UNREACHABLE),
        ("EHOSTUNREACH", Reason.UNREACHABLE),
        ("EACCES", Reason.ERROR),
    ],
)
def test_os_errors_are_classified(errno_name: str, reason: Reason) -> None:
    import errno

    assert tcp.classify_os_error(OSError(getattr(errno, errno_name), "x")) == reason


async def test_no_socket_leaks_even_when_cancelled() -> None:
    with silent_port() as silent, refused_port() as refused, open_port() as listening:
        before = open_fd_count()
        for _ in range(20):
            await tcp.probe(Target("127.0.0.1", listening), timeout=1)
            await tcp.probe(Target("127.0.0.1", refused), timeout=1)
        with trio.move_on_after(0.05) as scope:
            await tcp.probe(Target("127.0.0.1", silent), timeout=5)
        assert scope.cancelled_caught
        assert open_fd_count() == before
