"""Name resolution for the probes, with a cache that honours DNS TTLs.

``getaddrinfo`` reports no TTL, so a cache in front of it would have to invent one.
Instead a name is answered, in the order glibc's default ``hosts: files dns`` uses:

1. the hosts file (``/etc/hosts``): its addresses, re-read when the file changes;
2. DNS, asked directly with dnspython (servers and search list from
   ``/etc/resolv.conf``, re-read when it changes): A and/or AAAA records, cached
   for the smallest TTL of the answer (CNAME chain included), at most
   :data:`MAX_TTL_S`.

With ``family = "any"`` both types are asked at once and, as glibc's
``getaddrinfo(AF_UNSPEC)`` does, one family answering is enough: a SERVFAIL or an
unanswered AAAA query (broken middleboxes drop them) leaves the A records, and the
other way round. Once one type has given addresses, the other gets
:data:`OTHER_FAMILY_GRACE_S` more, so a query that is never answered does not use
up the check's timeout. Such a half answer is used but not cached.

Failures are never cached and never hidden:

* a failed lookup (NXDOMAIN, no address records, SERVFAIL, no server answering,
  for every type asked) raises :class:`ResolutionFailed` every time it happens,
  and drops whatever the cache held for that name;
* an expired entry is not served while it is refreshed ("serve-stale", RFC 8767,
  is deliberately not done): the check that finds it expired waits for a fresh
  answer, so a DNS outage shows as ``dns`` failures at once.

Lookups of the same name that overlap share one query, so a thousand checks of one
host cost one DNS round trip when its TTL expires. Without a usable
``/etc/resolv.conf``, or when a custom resolver is installed with trio's
``set_custom_hostname_resolver``, lookups go to ``getaddrinfo`` (trio's, so the
custom resolver answers) and nothing is cached.

Expiry runs on trio's clock (``trio.current_time()``), so tests drive it with
:class:`trio.testing.MockClock`.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

# dnspython (3-4 MiB) is imported on the first DNS lookup, not with this module:
# an agent that checks only IP addresses never needs it.
if TYPE_CHECKING:
    import dns.asyncresolver
    import dns.resolver

DEFAULT_HOSTS_PATH = Path("/etc/hosts")
DEFAULT_RESOLV_CONF_PATH = Path("/etc/resolv.conf")
# Answers are kept at most this long whatever their TTL says: a record published
# with a week-long TTL by mistake should not pin a moved service for a week.
MAX_TTL_S = 3600.0
# The hosts file is checked for changes at most this often (a stat per check costs
# more than the cache lookup itself at thousands of checks per second).
HOSTS_RECHECK_S = 1.0
# ... and so is /etc/resolv.conf (DHCP, VPNs and NetworkManager rewrite it).
RESOLV_CONF_RECHECK_S = 1.0
# With family "any": how long the other record type may still take once one type
# has answered with addresses. RFC 8305 waits 50 ms for AAAA after A; a little more
# here, since the probe then connects to what it got and the rest is only lost
# for this one run.
OTHER_FAMILY_GRACE_S = 0.25
# Cached names beyond this are dropped, expired ones first, then the oldest.
MAX_ENTRIES = 100_000

SockAddr = tuple[str, int] | tuple[str, int, int, int]
Address = tuple[int, SockAddr]

_FAMILY = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
# AAAA first: RFC 6724 prefers IPv6, and happy eyeballs falls back to IPv4 quickly.
_RECORD_TYPES = {
    "any": ("AAAA", "A"),
    "ipv4": ("A",),
    "ipv6": ("AAAA",),
}


class ResolutionFailed(Exception):
    """A name could not be resolved; the probe turns it into a ``dns`` observation.

    It never leaves a probe, so it is not a :class:`~agent.errors.HeartwireError`.
    """


def sockaddr_for(address: str, port: int) -> Address:
    """The (family, sockaddr) pair ``socket.connect`` takes for an IP address."""
    if ":" in address:
        return socket.AF_INET6, (address, port, 0, 0)
    return socket.AF_INET, (address, port)


@functools.lru_cache(maxsize=65536)
def literal_address(host: str) -> str | None:
    """``host`` as a normalised IP address, or None for a name.

    Cached: parsing raises and catches two exceptions for every name, which shows
    at thousands of checks per second.
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


@functools.lru_cache(maxsize=65536)
def normalise_name(host: str) -> str:
    """The form names are compared in: lower case, no final dot."""
    return host.lower().rstrip(".")


def parse_hosts(text: str) -> dict[str, list[str]]:
    """Hosts-file text → lower-case name → its addresses in file order.

    Lines that do not start with a valid IP address are skipped, as glibc does.
    """
    names: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = str(ipaddress.ip_address(fields[0]))
        except ValueError:
            continue
        for name in fields[1:]:
            known = names.setdefault(normalise_name(name), [])
            if address not in known:
                known.append(address)
    return names


@dataclass
class _Entry:
    addresses: list[Address]
    expires_at: float


@dataclass
class _Pending:
    """A lookup in progress that later callers wait for instead of asking again."""

    done: trio.Event = field(default_factory=trio.Event)
    addresses: list[Address] | None = None
    failure: str | None = None


@dataclass
class CacheStats:
    """Counters since start (never reset).

    Attributes:
        hits: lookups answered from the cache.
        queries: lookups that asked DNS (or getaddrinfo).
        failures: lookups that failed.
        shared: lookups that waited for another caller's query.
    """

    hits: int = 0
    queries: int = 0
    failures: int = 0
    shared: int = 0


class Resolver:
    """Resolves names to connectable addresses, caching DNS answers for their TTL.

    Args:
        nameservers: (address, port) pairs to ask; None: those of ``resolv_conf_path``.
        search: search domains for short names (used only with ``nameservers``).
        hosts_path: the hosts file consulted before DNS.
        timeout_s: the longest one DNS lookup may take (the caller's deadline
            usually ends it sooner).
        resolv_conf_path: where the servers are listed (when ``nameservers`` is
            None); read again when it changes.
        dns_port: the port of the servers listed there (resolv.conf has none).
    """

    def __init__(
        self,
        *,
        nameservers: Sequence[tuple[str, int]] | None = None,
        search: Sequence[str] = (),
        hosts_path: Path = DEFAULT_HOSTS_PATH,
        timeout_s: float = 5.0,
        resolv_conf_path: Path = DEFAULT_RESOLV_CONF_PATH,
        dns_port: int = 53,
    ) -> None:
        self._resolv_conf: _ResolvConf | None = None
        if nameservers is None:
            self._resolv_conf = _ResolvConf(resolv_conf_path, dns_port)
            self._dns = self._resolv_conf.read()
        else:
            self._dns = _make_dns_resolver(nameservers, search)
        self._timeout_s = timeout_s
        self._hosts_path = hosts_path
        self._hosts: dict[str, list[str]] = {}
        self._hosts_mtime: float | None = None
        self._hosts_checked_at = -float("inf")
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.stats = CacheStats()

    async def resolve(self, host: str, port: int, family: str = "any") -> list[Address]:
        """The addresses of ``host`` to try, in preference order.

        Args:
            host: a name or an IP literal.
            port: the port to put in each address.
            family: "any", "ipv4" or "ipv6".

        Returns:
            (family, sockaddr) pairs; never empty.

        Raises:
            ResolutionFailed: the name has no usable address, or the lookup failed.
        """
        known = self.resolve_known(host, port, family)
        if known is not None:
            await trio.lowlevel.checkpoint()
            return known
        if trio_resolver_replaced():
            addresses = await _system_lookup(normalise_name(host), family)
        else:
            addresses = await self._lookup_shared((normalise_name(host), family))
        return [sockaddr_for(sockaddr[0], port) for _, sockaddr in addresses]

    def resolve_known(self, host: str, port: int, family: str = "any") -> list[Address] | None:
        """What :meth:`resolve` returns when no query is needed (a literal, a name
        in the hosts file, a fresh cache entry), without waiting; else None.

        The probe tries this first so that a cache hit costs no cancel scope.
        """
        literal = literal_address(host)
        if literal is not None:
            return [sockaddr_for(literal, port)]
        name = normalise_name(host)
        self._reload_resolv_conf()
        from_hosts = self._hosts_addresses(name, family)
        if from_hosts:
            return [sockaddr_for(address, port) for address in from_hosts]
        entry = self._cache.get((name, family))
        if entry is not None and trio.current_time() < entry.expires_at:
            self.stats.hits += 1
            return [sockaddr_for(sockaddr[0], port) for _, sockaddr in entry.addresses]
        return None

    def _hosts_addresses(self, name: str, family: str) -> list[str]:
        now = trio.current_time()
        if now - self._hosts_checked_at >= HOSTS_RECHECK_S:
            self._hosts_checked_at = now
            self._reload_hosts()
        addresses = self._hosts.get(name, [])
        if family == "ipv4":
            return [address for address in addresses if ":" not in address]
        if family == "ipv6":
            return [address for address in addresses if ":" in address]
        return addresses

    def _reload_resolv_conf(self) -> None:
        """Uses the servers of a changed resolv.conf, and forgets the old ones' answers."""
        if self._resolv_conf is None or not self._resolv_conf.due():
            return
        if self._resolv_conf.changed():
            self._dns = self._resolv_conf.read()
            self._cache.clear()

    def _reload_hosts(self) -> None:
        try:
            mtime = os.stat(self._hosts_path).st_mtime
        except OSError:
            self._hosts, self._hosts_mtime = {}, None
            return
        if mtime == self._hosts_mtime:
            return
        try:
            text = self._hosts_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            text = ""
        self._hosts, self._hosts_mtime = parse_hosts(text), mtime

    async def _lookup_shared(self, key: tuple[str, str]) -> list[Address]:
        # A caller whose own deadline cancelled the shared query leaves no result;
        # the callers that waited for it then ask themselves (bounded by their
        # own deadlines, which the probe sets around this call).
        while (pending := self._pending.get(key)) is not None:
            self.stats.shared += 1
            await pending.done.wait()
            if pending.failure is not None:
                raise ResolutionFailed(pending.failure)
            if pending.addresses is not None:
                return pending.addresses
        pending = _Pending()
        self._pending[key] = pending
        try:
            pending.addresses = await self._lookup(key)
        except ResolutionFailed as exc:
            pending.failure = str(exc)
            raise
        finally:
            del self._pending[key]
            pending.done.set()
        return pending.addresses

    async def _lookup(self, key: tuple[str, str]) -> list[Address]:
        name, family = key
        self.stats.queries += 1
        # Whatever happens next, the old answer is not served again.
        self._cache.pop(key, None)
        try:
            if self._dns is None:
                return await _system_lookup(name, family)
            addresses, ttl_s = await self._dns_lookup(name, family)
        except ResolutionFailed:
            self.stats.failures += 1
            raise
        if ttl_s > 0:
            self._store(key, _Entry(addresses, trio.current_time() + min(ttl_s, MAX_TTL_S)))
        return addresses

    async def _dns_lookup(self, name: str, family: str) -> tuple[list[Address], float]:
        """Asks every record type of ``family`` at once.

        Returns:
            The addresses in preference order, and how long they may be cached
            (0 for a half answer: one type failed or was cut short).
        """
        assert self._dns is not None
        rdtypes = _RECORD_TYPES[family]
        outcomes = await self._query_all(name, rdtypes)
        addresses: list[Address] = []
        ttls: list[float] = []
        for rdtype in rdtypes:
            answer = outcomes.get(rdtype)
            if isinstance(answer, BaseException) or answer is None or answer.rrset is None:
                continue
            ttls.append(answer.chaining_result.minimum_ttl)
            addresses += [sockaddr_for(str(rdata), 0) for rdata in answer.rrset]
        if not addresses:
            failures = [o for o in outcomes.values() if isinstance(o, BaseException)]
            if failures:
                raise ResolutionFailed(_describe(name, failures[0]))
            raise ResolutionFailed(f"{name}: the name has no address records")
        complete = all(
            rdtype in outcomes and not isinstance(outcomes[rdtype], BaseException)
            for rdtype in rdtypes
        )
        return addresses, min(ttls) if complete else 0.0

    async def _query_all(
        self, name: str, rdtypes: Sequence[str]
    ) -> dict[str, dns.resolver.Answer | BaseException]:
        """Each type's answer or error; a type cut short by the grace is absent."""
        import dns.exception

        assert self._dns is not None
        resolver = self._dns
        outcomes: dict[str, dns.resolver.Answer | BaseException] = {}

        async with trio.open_nursery() as nursery:

            async def query(rdtype: str) -> None:
                try:
                    answer = await resolver.resolve(
                        name, rdtype, raise_on_no_answer=False, lifetime=self._timeout_s,
                        search=True,
                    )
                except (dns.exception.DNSException, OSError) as exc:
                    outcomes[rdtype] = exc
                    return
                outcomes[rdtype] = answer
                if answer.rrset is not None and len(outcomes) < len(rdtypes):
                    # Addresses in hand: the other type gets a little longer, no more.
                    nursery.cancel_scope.deadline = min(
                        nursery.cancel_scope.deadline,
                        trio.current_time() + OTHER_FAMILY_GRACE_S,
                    )

            for rdtype in rdtypes:
                nursery.start_soon(query, rdtype)
        return outcomes

    def _store(self, key: tuple[str, str], entry: _Entry) -> None:
        if len(self._cache) >= MAX_ENTRIES:
            now = trio.current_time()
            for stale in [k for k, e in self._cache.items() if e.expires_at <= now]:
                del self._cache[stale]
            while len(self._cache) >= MAX_ENTRIES:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = entry


class _ResolvConf:
    """resolv.conf, and whether it changed since it was last read."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.port = port
        self._signature: tuple[int, int, int] | None = None
        self._checked_at = -float("inf")

    def due(self) -> bool:
        """Whether it is time to look at the file again (at most once a second)."""
        now = trio.current_time()
        if now - self._checked_at < RESOLV_CONF_RECHECK_S:
            return False
        self._checked_at = now
        return True

    def changed(self) -> bool:
        """Whether the file differs from the one last read (also when replaced by rename)."""
        return self._stat() != self._signature

    def read(self) -> dns.asyncresolver.Resolver | None:
        """A dnspython resolver for the file's servers; None without usable ones."""
        import dns.asyncresolver
        import dns.exception

        self._signature = self._stat()
        try:
            resolver = dns.asyncresolver.Resolver(filename=str(self.path))
        except (dns.exception.DNSException, OSError, ValueError):  # missing or no servers
            return None
        resolver.port = self.port
        resolver.nameservers = [str(server) for server in resolver.nameservers]
        return resolver

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size


def _make_dns_resolver(
    nameservers: Sequence[tuple[str, int]], search: Sequence[str]
) -> dns.asyncresolver.Resolver:
    import dns.asyncresolver
    import dns.name

    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [address for address, _ in nameservers]
    resolver.nameserver_ports = dict(nameservers)
    resolver.search = [dns.name.from_text(domain) for domain in search]
    return resolver


def _describe(name: str, exc: BaseException) -> str:
    import dns.resolver

    if isinstance(exc, dns.resolver.NXDOMAIN):
        return f"{name}: no such name (NXDOMAIN)"
    if isinstance(exc, dns.resolver.LifetimeTimeout):
        return f"{name}: no DNS server answered in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        return f"{name}: every DNS server failed (SERVFAIL or refused)"
    return f"{name}: {exc}"


async def _system_lookup(name: str, family: str) -> list[Address]:
    try:
        infos = await trio.socket.getaddrinfo(name, 0, _FAMILY[family], socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ResolutionFailed(f"{name}: {exc.strerror or exc}") from None
    except UnicodeError as exc:  # a name IDNA cannot encode
        raise ResolutionFailed(f"{name}: {exc}") from None
    return [sockaddr_for(str(sockaddr[0]), 0) for _, _, _, _, sockaddr in infos]


def trio_resolver_replaced() -> bool:
    """Whether name resolution was replaced with ``trio.socket.set_custom_hostname_resolver``.

    That is trio's own seam for it (tests use it to invent names): while it is in
    use, the names that the hosts file and the cache do not answer go to it, and
    nothing it answers is cached. (Asking costs microseconds, so cache hits do not.)
    """
    installed = trio.socket.set_custom_hostname_resolver(None)
    trio.socket.set_custom_hostname_resolver(installed)
    return installed is not None


_default: Resolver | None = None


def default_resolver() -> Resolver:
    """The process-wide resolver the probes share (made on first use)."""
    global _default
    if _default is None:
        _default = Resolver()
    return _default
