"""The caching resolver against a real DNS server on loopback, with time mocked.

The clock is a MockClock without autojump: real UDP round trips happen while
virtual time stands still, and only ``clock.jump`` ages the cache.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.checks.resolver import (
    MAX_TTL_S,
    OTHER_FAMILY_GRACE_S,
    RESOLV_CONF_RECHECK_S,
    ResolutionFailed,
    Resolver,
    parse_hosts,
)
from tests.support.dns_server import NO_ANSWER, SERVFAIL, Zone, serve_dns


@dataclass
class Served:
    """A DNS server on loopback, its zone, and a resolver asking only it."""

    zone: Zone
    address: tuple[str, int]
    hosts_path: Path
    resolver: Resolver

    def with_hosts(self, text: str) -> Resolver:
        """A fresh resolver whose hosts file holds ``text``."""
        self.hosts_path.write_text(text)
        return Resolver(nameservers=[self.address], hosts_path=self.hosts_path, timeout_s=2.0)


@pytest.fixture
async def served(nursery: trio.Nursery, tmp_path: Path) -> AsyncIterator[Served]:
    zone = Zone(records={"db.test": {"A": ["192.0.2.10"], "AAAA": ["2001:db8::10"]}})
    address = await nursery.start(serve_dns, zone)
    hosts_path = tmp_path / "hosts"
    hosts_path.write_text("")
    resolver = Resolver(nameservers=[address], hosts_path=hosts_path, timeout_s=2.0)
    yield Served(zone, address, hosts_path, resolver)


async def test_answer_is_cached_for_its_ttl_then_asked_again(
    served: Served, mock_clock: trio.testing.MockClock
) -> None:
    records, resolver = served.zone, served.resolver
    records.ttl_s = 30

    first = await resolver.resolve("db.test", 5432, "ipv4")
    assert first == [(socket.AF_INET, ("192.0.2.10", 5432))]
    records.records["db.test"] = {"A": ["192.0.2.11"]}
    mock_clock.jump(29.9)
    assert await resolver.resolve("db.test", 5432, "ipv4") == first
    assert records.queries[("db.test", "A")] == 1

    mock_clock.jump(0.2)
    assert await resolver.resolve("db.test", 5432, "ipv4") == [
        (socket.AF_INET, ("192.0.2.11", 5432))
    ]
    assert records.queries[("db.test", "A")] == 2
    assert resolver.stats.hits == 1


async def test_any_family_asks_both_types_ipv6_first(served: Served) -> None:
    records, resolver = served.zone, served.resolver
    assert await resolver.resolve("DB.test.", 80) == [
        (socket.AF_INET6, ("2001:db8::10", 80, 0, 0)),
        (socket.AF_INET, ("192.0.2.10", 80)),
    ]
    assert records.queries[("db.test", "A")] == records.queries[("db.test", "AAAA")] == 1


async def test_a_failure_after_expiry_is_reported_not_the_stale_answer(
    served: Served, mock_clock: trio.testing.MockClock
) -> None:
    records, resolver = served.zone, served.resolver
    await resolver.resolve("db.test", 80, "ipv4")

    del records.records["db.test"]
    mock_clock.jump(records.ttl_s + 1)
    with pytest.raises(ResolutionFailed, match=r"db\.test: no such name \(NXDOMAIN\)"):
        await resolver.resolve("db.test", 80, "ipv4")
    # Failures are not cached either: the next lookup asks again and sees the fix.
    records.records["db.test"] = {"A": ["192.0.2.12"]}
    assert await resolver.resolve("db.test", 80, "ipv4") == [(socket.AF_INET, ("192.0.2.12", 80))]
    assert records.queries[("db.test", "A")] == 3
    assert resolver.stats.failures == 1


async def test_servfail_and_names_without_addresses_fail(served: Served) -> None:
    records, resolver = served.zone, served.resolver
    records.records["broken.test"] = SERVFAIL
    records.records["v6only.test"] = {"AAAA": ["2001:db8::1"]}
    with pytest.raises(ResolutionFailed, match=r"broken\.test: every DNS server failed"):
        await resolver.resolve("broken.test", 80)
    with pytest.raises(ResolutionFailed, match=r"v6only\.test: the name has no address records"):
        await resolver.resolve("v6only.test", 80, "ipv4")
    for _ in range(2):
        with pytest.raises(ResolutionFailed):
            await resolver.resolve("v6only.test", 80, "ipv4")
    assert records.queries[("v6only.test", "A")] == 3


async def test_ttl_zero_is_never_cached_and_huge_ttls_are_capped(
    served: Served, mock_clock: trio.testing.MockClock
) -> None:
    records, resolver = served.zone, served.resolver
    records.ttl_s = 0
    for _ in range(3):
        await resolver.resolve("db.test", 80, "ipv4")
    assert records.queries[("db.test", "A")] == 3

    records.ttl_s = 7 * 24 * 3600
    await resolver.resolve("db.test", 80, "ipv6")
    mock_clock.jump(MAX_TTL_S - 1)
    await resolver.resolve("db.test", 80, "ipv6")
    assert records.queries[("db.test", "AAAA")] == 1
    mock_clock.jump(2)
    await resolver.resolve("db.test", 80, "ipv6")
    assert records.queries[("db.test", "AAAA")] == 2


async def test_overlapping_lookups_share_one_query(served: Served) -> None:
    records, resolver = served.zone, served.resolver
    answers: list[object] = []

    async def lookup() -> None:
        answers.append(await resolver.resolve("db.test", 80, "ipv4"))

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(lookup)
    assert len(answers) == 50 and all(answer == answers[0] for answer in answers)
    assert records.queries[("db.test", "A")] == 1
    assert resolver.stats.shared == 49


async def test_hosts_file_wins_over_dns_and_changes_are_seen(
    served: Served, mock_clock: trio.testing.MockClock
) -> None:
    records = served.zone
    resolver = served.with_hosts("192.0.2.99 db.test db # the primary\n")
    assert await resolver.resolve("db.test", 80) == [(socket.AF_INET, ("192.0.2.99", 80))]
    assert await resolver.resolve("db", 80) == [(socket.AF_INET, ("192.0.2.99", 80))]
    assert sum(records.queries.values()) == 0

    hosts_path = served.hosts_path
    hosts_path.write_text("::1 other\n")
    # Make sure the new mtime differs even on coarse-timestamp file systems.
    stat = hosts_path.stat()
    os.utime(hosts_path, (stat.st_atime, stat.st_mtime + 5))
    mock_clock.jump(1.5)
    assert await resolver.resolve("db.test", 80, "ipv4") == [(socket.AF_INET, ("192.0.2.10", 80))]


async def test_ip_literals_need_no_lookup(tmp_path: Path) -> None:
    resolver = Resolver(nameservers=[("127.0.0.1", 9)], hosts_path=tmp_path / "none")
    assert await resolver.resolve("::1", 7) == [(socket.AF_INET6, ("::1", 7, 0, 0))]
    assert await resolver.resolve("127.0.0.2", 7) == [(socket.AF_INET, ("127.0.0.2", 7))]
    assert resolver.stats.queries == 0


def test_parse_hosts_skips_garbage_and_keeps_order() -> None:
    text = "# comment\n127.0.0.1 localhost\n::1 localhost ip6-localhost\nnot-an-ip name\n\n"
    assert parse_hosts(text) == {
        "localhost": ["127.0.0.1", "::1"],
        "ip6-localhost": ["::1"],
    }


@pytest.mark.parametrize(("broken", "working", "expected"), [
    ("AAAA", "A", (socket.AF_INET, ("192.0.2.20", 80))),
    ("A", "AAAA", (socket.AF_INET6, ("2001:db8::20", 80, 0, 0))),
])
async def test_one_failing_record_type_leaves_the_other_family(
    served: Served, broken: str, working: str, expected: object
) -> None:
    # glibc's getaddrinfo(AF_UNSPEC) returns the A records when AAAA fails: so do we.
    records, resolver = served.zone, served.resolver
    answers = {"A": ["192.0.2.20"], "AAAA": ["2001:db8::20"]}
    records.records["half.test"] = {working: answers[working], broken: SERVFAIL}
    assert await resolver.resolve("half.test", 80) == [expected]
    # A half answer is not cached: the next lookup asks again and sees a repair.
    records.records["half.test"] = answers  # type: ignore[assignment]
    assert len(await resolver.resolve("half.test", 80)) == 2
    assert records.queries[("half.test", working)] == 2


async def test_an_unanswered_aaaa_query_does_not_hold_up_the_a_records(
    served: Served, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0.2  # real UDP first; then virtual time may jump
    records, resolver = served.zone, served.resolver
    records.records["dropped.test"] = {"A": ["192.0.2.30"], "AAAA": NO_ANSWER}
    start = trio.current_time()
    assert await resolver.resolve("dropped.test", 80) == [(socket.AF_INET, ("192.0.2.30", 80))]
    assert trio.current_time() - start == pytest.approx(OTHER_FAMILY_GRACE_S)


async def test_both_record_types_failing_is_a_dns_failure(served: Served) -> None:
    records, resolver = served.zone, served.resolver
    records.records["down.test"] = {"A": SERVFAIL, "AAAA": SERVFAIL}
    with pytest.raises(ResolutionFailed, match=r"down\.test: every DNS server failed"):
        await resolver.resolve("down.test", 80)
    records.records["v4fail.test"] = {"A": SERVFAIL, "AAAA": ["2001:db8::1"]}
    with pytest.raises(ResolutionFailed, match=r"v4fail\.test: every DNS server failed"):
        await resolver.resolve("v4fail.test", 80, "ipv4")


async def test_resolv_conf_is_read_again_when_it_changes(
    nursery: trio.Nursery, tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    old = Zone(records={"db.test": {"A": ["192.0.2.1"]}})
    new = Zone(records={"db.test": {"A": ["192.0.2.2"]}})
    _, port = await nursery.start(serve_dns, old, "127.0.0.1")
    await nursery.start(serve_dns, new, "127.0.0.2", port)
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("nameserver 127.0.0.1\n")
    resolver = Resolver(resolv_conf_path=resolv_conf, dns_port=port,
                        hosts_path=tmp_path / "none", timeout_s=2.0)
    assert await resolver.resolve("db.test", 80, "ipv4") == [(socket.AF_INET, ("192.0.2.1", 80))]

    # Replaced the way resolvconf and NetworkManager do it: a new file renamed over.
    (tmp_path / "resolv.conf.new").write_text("nameserver 127.0.0.2\n")
    (tmp_path / "resolv.conf.new").rename(resolv_conf)
    mock_clock.jump(RESOLV_CONF_RECHECK_S + 0.5)
    # The cached answer came from the old servers: the new ones are asked at once.
    assert await resolver.resolve("db.test", 80, "ipv4") == [(socket.AF_INET, ("192.0.2.2", 80))]
    assert (old.queries[("db.test", "A")], new.queries[("db.test", "A")]) == (1, 1)


async def test_an_unusable_resolv_conf_falls_back_to_the_system_resolver(
    tmp_path: Path,
) -> None:
    resolv_conf = tmp_path / "resolv.conf"
    resolv_conf.write_text("# no nameserver lines\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    resolver = Resolver(resolv_conf_path=resolv_conf, hosts_path=hosts)
    # getaddrinfo answers "localhost" from the system's own hosts file.
    assert await resolver.resolve("localhost", 80, "ipv4") == [(socket.AF_INET, ("127.0.0.1", 80))]
