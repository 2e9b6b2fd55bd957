"""The ``[central]`` and ``[destinations.<name>]`` config tables.

Parsed once into frozen dataclasses, strictly (unknown keys are errors with their
key path). Secrets are not read here: a destination holds :class:`SecretSource`\\ s,
and :func:`load_signing_keys` / :func:`load_secret` read them when the agent starts
(and in ``heartwire validate``), so ``heartwire check`` works without them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from agent.common.keyfiles import SecretSource, read_secret, read_sources, single_source
from agent.common.names import is_uuid
from agent.common.redact import secrets_in_url
from agent.common.tables import Table
from agent.errors import ConfigError, SecretFileError, SigningKeyError

if TYPE_CHECKING:
    from agent.common.signing import SigningKey

KINDS: Final = ("native", "healthchecks", "uptime-kuma", "gatus", "betterstack")
SEND_MODES: Final = ("changes", "all")

DEFAULT_HEARTBEAT_INTERVAL_S: Final = 30.0
DEFAULT_MAX_OUTBOX_MESSAGES: Final = 10_000
# An hour of results from 1,000 checks every 10 s takes about 67 MB: the default
# rides out roughly four hours of outage at that load before results are dropped.
DEFAULT_MAX_OUTBOX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_RESULTS_BATCH_INTERVAL_S: Final = 10.0
DEFAULT_TIMEOUT_S: Final = 15.0  # the spec's recommended 15-30 s request timeout
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_MAX_BACKOFF_S: Final = 300.0
DEFAULT_HEALTHCHECKS_URL: Final = "https://hc-ping.com"

_NO_NAMES: Mapping[str, str] = MappingProxyType({})
# Healthchecks slugs: a-z, 0-9, hyphens and underscores.
_SLUG: Final = re.compile(r"[a-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class CentralSettings:
    """The ``[central]`` table: what the agent reports and how much it keeps.

    Attributes:
        heartbeat_interval_s: time between two heartbeats.
        results_batch_interval_s: how long observations gather before one ``results``
            message is queued (only when a destination has ``send = "all"``).
        max_outbox_messages: the outbox holds at most this many messages.
        max_outbox_bytes: ... and at most this many bytes of message bodies.
        max_backoff_s: the cap of the exponential retry delay.
    """

    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    results_batch_interval_s: float = DEFAULT_RESULTS_BATCH_INTERVAL_S
    max_outbox_messages: int = DEFAULT_MAX_OUTBOX_MESSAGES
    max_outbox_bytes: int = DEFAULT_MAX_OUTBOX_BYTES
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """One ``[destinations.<name>]`` table.

    Attributes:
        name: the table's key; also the outbox cursor's name.
        kind: native, healthchecks, uptime-kuma, gatus or betterstack.
        url: the endpoint (native), base URL (healthchecks, uptime-kuma, gatus) or
            the agent's heartbeat URL (betterstack).
        failover_urls: native only: further receivers, tried in order when ``url``
            does not answer (``url = [first, second, ...]``).
        send: "changes" (heartbeats and state changes) or "all" (also every result).
        timeout_s: the whole request's deadline.
        connect_timeout_s: the TCP + TLS connect deadline.
        ca_file: a CA bundle to trust instead of the system's, or None.
        client_cert: a PEM client certificate for mTLS, or None.
        client_key: its private key (a private file), or None when in client_cert.
        proxy: an HTTP(S) proxy URL; None uses the standard proxy variables.
        signing_keys: where the ``whsk_``/``whsec_`` keys are (native only).
        token: a bearer token (gatus) or ping key (healthchecks), or None.
        monitor_token: the agent's own monitor: Healthchecks UUID or slug, Uptime
            Kuma push token, Gatus endpoint key; None when the agent itself is not
            reported. Named a token because most of them are: whoever knows one can
            ping that monitor (``heartwire config show`` redacts it).
        check_monitor_tokens: per heartwire check, its monitor at the destination
            (Healthchecks UUID or slug, Kuma push token, Gatus key, Better Stack URL).
        create: healthchecks only: ``?create=1`` on slug pings.
        config_file: the file the table is in, for messages.
    """

    name: str
    kind: str
    url: str
    failover_urls: tuple[str, ...] = ()
    send: str = "changes"
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    proxy: str | None = None
    signing_keys: tuple[SecretSource, ...] = ()
    token: SecretSource | None = None
    monitor_token: str | None = None
    check_monitor_tokens: Mapping[str, str] = field(default_factory=lambda: _NO_NAMES)
    create: bool = False
    config_file: str = ""

    @property
    def wants_results(self) -> bool:
        """Whether every observation goes to this destination."""
        return self.send == "all"


def read_central(table: Table) -> CentralSettings:
    """Reads ``[central]``."""
    settings = CentralSettings(
        heartbeat_interval_s=table.duration("heartbeat_interval", DEFAULT_HEARTBEAT_INTERVAL_S),
        results_batch_interval_s=table.duration(
            "results_batch_interval", DEFAULT_RESULTS_BATCH_INTERVAL_S
        ),
        max_outbox_messages=table.integer(
            "max_outbox_messages", DEFAULT_MAX_OUTBOX_MESSAGES, minimum=10, maximum=10_000_000
        ),
        max_outbox_bytes=table.integer(
            "max_outbox_bytes", DEFAULT_MAX_OUTBOX_BYTES, minimum=64 * 1024
        ),
        max_backoff_s=table.duration("max_backoff", DEFAULT_MAX_BACKOFF_S),
    )
    if settings.heartbeat_interval_s < 1:
        raise table.error("heartbeat_interval", "must be at least 1s")
    table.finish()
    return settings


def _url(table: Table, key: str, default: str | None = None) -> str:
    value = table.nonempty_string(key) if default is None else table.string(key, default)
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise table.error(key, f"expected an http(s):// URL, got {value!r}")
    return value.rstrip("/")


def _native_urls(table: Table) -> tuple[str, ...]:
    """``url``: one receiver, or an array of receivers tried in order."""
    if not (table.has("url") and isinstance(table.raw["url"], list)):
        return (_url(table, "url"),)
    urls = table.string_list("url")
    if not urls:
        raise table.error("url", "must name at least one receiver")
    checked = []
    for index, value in enumerate(urls):
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise table.error(f"url[{index}]", f"expected an http(s):// URL, got {value!r}")
        checked.append(value.rstrip("/"))
    if len(set(checked)) != len(checked):
        raise table.error("url", "names the same receiver twice")
    return tuple(checked)


def _path(table: Table, key: str) -> Path | None:
    value = table.optional_string(key)
    return Path(value) if value else None


def _names(table: Table, key: str) -> Mapping[str, str]:
    sub = table.table(key)
    names = {name: sub.nonempty_string(name) for name in sub}
    sub.finish()
    return MappingProxyType(names)


def read_destination(table: Table) -> DestinationConfig:
    """Reads one ``[destinations.<name>]`` table, with its kind's own keys."""
    name = table.path.split(".", 1)[1]
    kind = table.choice("kind", KINDS)
    base = DestinationConfig(
        name=name,
        kind=kind,
        url="",
        send=table.choice("send", SEND_MODES, "changes"),
        timeout_s=table.duration("timeout", DEFAULT_TIMEOUT_S),
        connect_timeout_s=table.duration("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S),
        ca_file=_path(table, "ca_file"),
        client_cert=_path(table, "client_cert"),
        client_key=_path(table, "client_key"),
        proxy=table.optional_string("proxy"),
        config_file=table.file,
    )
    if base.client_key and not base.client_cert:
        raise table.error("client_key", "needs client_cert")
    if base.wants_results and kind != "native":
        raise table.error("send", f'"all" needs kind = "native" ({kind} only takes statuses)')
    if base.proxy is not None:
        _url(table, "proxy")
    destination: DestinationConfig
    if kind == "native":
        sources = read_sources(table, "signing_key") + read_sources(table, "secret")
        if not sources:
            raise table.error(None, "a native destination needs signing_key_file "
                              "(or signing_key_env, signing_key_credential, secret_file, ...)")
        receivers = _native_urls(table)
        destination = replace(base, url=receivers[0], failover_urls=receivers[1:],
                              signing_keys=sources)
    elif kind == "healthchecks":
        token = single_source(table, "ping_key", required=False)
        check = table.optional_string("check")
        per_check = _names(table, "checks")
        for key, slug in [("check", check), *((f"checks.{k}", v) for k, v in per_check.items())]:
            if slug is None or is_uuid(slug):
                continue  # a UUID needs no ping key
            if not _SLUG.fullmatch(slug):
                raise table.error(key, f"a slug holds only a-z, 0-9, '-' and '_', got {slug!r}")
            if token is None:
                raise table.error(key, f"slug {slug!r} needs ping_key_file, ping_key_env or "
                                  "ping_key_credential")
        destination = replace(
            base, url=_url(table, "url", DEFAULT_HEALTHCHECKS_URL), token=token,
            monitor_token=check, check_monitor_tokens=per_check,
            create=table.boolean("create", False))
    elif kind == "uptime-kuma":
        destination = replace(
            base, url=_url(table, "url"), monitor_token=table.optional_string("push_token"),
            check_monitor_tokens=_names(table, "push_tokens"))
    elif kind == "gatus":
        destination = replace(
            base, url=_url(table, "url"), token=single_source(table, "token", required=True),
            monitor_token=table.optional_string("key"), check_monitor_tokens=_names(table, "keys"))
    else:  # betterstack
        urls_table = table.table("check_urls")
        urls = MappingProxyType({check: _url(urls_table, check) for check in urls_table})
        urls_table.finish()
        destination = replace(base, url=_url(table, "url"), check_monitor_tokens=urls)
    table.finish()
    return destination


def read_destinations(table: Table) -> tuple[DestinationConfig, ...]:
    """Reads every ``[destinations.<name>]`` table, in file order."""
    destinations = tuple(read_destination(table.table(name)) for name in table)
    table.finish()
    return destinations


def load_signing_keys(destination: DestinationConfig) -> list[SigningKey]:
    """Reads and parses a native destination's signing keys (files must be private).

    Raises:
        ConfigError: naming the config file, the key path and what is wrong with
            the key (missing, readable by others with the chmod fix, malformed).
    """
    from agent.common.signing import read_signing_key  # hmac, and for Ed25519 PyNaCl

    keys: list[SigningKey] = []
    for source in destination.signing_keys:
        try:
            text = read_secret(source)
        except SecretFileError as exc:
            raise ConfigError(destination.config_file, source.key, str(exc)) from None
        try:
            keys.append(read_signing_key(text))
        except SigningKeyError as exc:
            raise ConfigError(destination.config_file, source.key,
                              f"{source.describe()}: {exc}") from None
    return keys


def load_secret(destination: DestinationConfig) -> str | None:
    """Reads a destination's bearer token or ping key, if it has one.

    Raises:
        ConfigError: naming the config file, the key path and the problem.
    """
    if destination.token is None:
        return None
    try:
        return read_secret(destination.token)
    except SecretFileError as exc:
        raise ConfigError(destination.config_file, destination.token.key, str(exc)) from None


def check_secrets(destinations: tuple[DestinationConfig, ...]) -> None:
    """Reads every destination's keys and tokens once, as the agent will at start.

    Raises:
        ConfigError: the first key or secret that cannot be used.
    """
    for destination in destinations:
        load_signing_keys(destination)
        load_secret(destination)


def secrets_of(destination: DestinationConfig, secret: str | None) -> tuple[str, ...]:
    """The secret strings a destination's requests carry, for redacting printed text.

    Args:
        destination: the destination.
        secret: its loaded bearer token or ping key, if any.

    Returns:
        The ping key or token, push tokens, Gatus keys, Healthchecks UUIDs, Better
        Stack heartbeat tokens, URL passwords and secret query values (of every
        receiver of a failover list). Healthchecks slugs are names, not secrets
        (whoever lacks the ping key cannot use them).
    """
    found = [secret] if secret else []
    for url in (destination.url, *destination.failover_urls):
        found += secrets_in_url(url, destination.kind)
        parts = urlsplit(url)
        if parts.password:  # as the Authorization header sends it
            found.append(base64.b64encode(
                f"{parts.username}:{parts.password}".encode()).decode())
    for monitor in (destination.monitor_token, *destination.check_monitor_tokens.values()):
        if monitor is None or (destination.kind == "healthchecks" and not is_uuid(monitor)):
            continue
        if destination.kind == "betterstack":  # the monitors are heartbeat URLs
            found += secrets_in_url(monitor, destination.kind)
        else:
            found.append(monitor)
    return tuple(dict.fromkeys(s for s in found if s))
