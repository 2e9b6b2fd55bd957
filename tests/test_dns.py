"""The caching resolver against a real DNS server on loopback, with time mocked.

The clock is a MockClock without autojump: real UDP round trips happen while
virtual time stands still, and only ``clock.jump`` ages the cache.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.dns import MAX_TTL_S, ResolutionFailed, Resolver, parse_hosts
from tests.support.dns_server import SERVFAIL, Zone, serve_dns


@pytest.fixture
async def zone(nursery: trio.Nursery) -> AsyncIterator[tuple[Zone, tuple[str, int]]]:
    zone = Zone(records={"db.test": {"A": ["192.0.2.10"], "AAAA": ["2001:db8::10"]}})
    address = await nursery.start(serve_dns, zone)
    yield zone, address


def make_resolver(address: tuple[str, int], tmp_path: Path, hosts: str = "") -> Resolver:
    hosts_path = tmp_path / "hosts"
    hosts_path.write_text(hosts)
    return Resolver(nameservers=[address], hosts_path=hosts_path, timeout_s=2.0)


async def test_answer_is_cached_for_its_ttl_then_asked_again(
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    records.ttl_s = 30
    resolver = make_resolver(address, tmp_path)

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


async def test_any_family_asks_both_types_ipv6_first(
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    resolver = make_resolver(address, tmp_path)
    assert await resolver.resolve("DB.test.", 80) == [
        (socket.AF_INET6, ("2001:db8::10", 80, 0, 0)),
        (socket.AF_INET, ("192.0.2.10", 80)),
    ]
    assert records.queries[("db.test", "A")] == records.queries[("db.test", "AAAA")] == 1


async def test_a_failure_after_expiry_is_reported_not_the_stale_answer(
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    resolver = make_resolver(address, tmp_path)
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


async def test_servfail_and_names_without_addresses_fail(
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    records.records["broken.test"] = SERVFAIL
    records.records["v6only.test"] = {"AAAA": ["2001:db8::1"]}
    resolver = make_resolver(address, tmp_path)
    with pytest.raises(ResolutionFailed, match=r"broken\.test: every DNS server failed"):
        await resolver.resolve("broken.test", 80)
    with pytest.raises(ResolutionFailed, match=r"v6only\.test: the name has no address records"):
        await resolver.resolve("v6only.test", 80, "ipv4")
    for _ in range(2):
        with pytest.raises(ResolutionFailed):
            await resolver.resolve("v6only.test", 80, "ipv4")
    assert records.queries[("v6only.test", "A")] == 3


async def test_ttl_zero_is_never_cached_and_huge_ttls_are_capped(
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    resolver = make_resolver(address, tmp_path)
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


async def test_overlapping_lookups_share_one_query(
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    resolver = make_resolver(address, tmp_path)
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
    zone: tuple[Zone, tuple[str, int]], tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    records, address = zone
    resolver = make_resolver(address, tmp_path, "192.0.2.99 db.test db # the primary\n")
    assert await resolver.resolve("db.test", 80) == [(socket.AF_INET, ("192.0.2.99", 80))]
    assert await resolver.resolve("db", 80) == [(socket.AF_INET, ("192.0.2.99", 80))]
    assert sum(records.queries.values()) == 0

    (tmp_path / "hosts").write_text("::1 other\n")
    # Make sure the new mtime differs even on coarse-timestamp file systems.
    hosts_path = tmp_path / "hosts"
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
