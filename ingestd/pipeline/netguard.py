"""The SSRF guard: which addresses a fetch may connect to.

A feed URL is untrusted input, and so is every redirect and every DNS answer.
The guard therefore decides on the address that is actually dialled: the
``GuardedBackend`` below sits under httpcore's connection pool, resolves the
host itself, refuses the whole host if *any* answer is non-public and then
connects to the checked IP literal. Redirect hops and DNS rebinding go through
the same door. TLS SNI and the ``Host`` header still carry the host name,
because httpcore takes those from the request, not from the socket.

The decisions are pure functions (``parse_host_ip``, ``check_address``) so they
can be unit-tested for every range without sending a packet anywhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import string
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore

from ingestd.exceptions import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]


class GuardRefusal(FetchError):
    """The SSRF guard refused a target; retrying will not help."""


# Checked in order, so the specific names (broadcast, unspecified) win over the
# ranges that contain them. Embedded IPv4 forms are handled in ``_classify``.
_V4_RANGES: tuple[tuple[str, str], ...] = (
    ("255.255.255.255/32", "the broadcast address"),
    ("0.0.0.0/32", "the unspecified address"),
    ("0.0.0.0/8", "a 'this network' address"),
    ("127.0.0.0/8", "a loopback address"),
    ("10.0.0.0/8", "a private address"),
    ("172.16.0.0/12", "a private address"),
    ("192.168.0.0/16", "a private address"),
    ("100.64.0.0/10", "a shared (CGNAT) address"),
    ("169.254.0.0/16", "a link-local address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.0.2.0/24", "a documentation address"),
    ("198.51.100.0/24", "a documentation address"),
    ("203.0.113.0/24", "a documentation address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("192.88.99.0/24", "a 6to4 relay address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
)
_V6_RANGES: tuple[tuple[str, str], ...] = (
    ("::/128", "the unspecified address"),
    ("::1/128", "a loopback address"),
    ("64:ff9b:1::/48", "a local-use NAT64 address"),
    ("100::/64", "a discard-only address"),
    ("2001:db8::/32", "a documentation address"),
    ("3fff::/20", "a documentation address"),
    ("2001:2::/48", "a benchmarking address"),
    ("fc00::/7", "a unique-local address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)
_V4_TABLE = tuple((ipaddress.IPv4Network(net), why) for net, why in _V4_RANGES)
_V6_TABLE = tuple((ipaddress.IPv6Network(net), why) for net, why in _V6_RANGES)
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPAT = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _parse_ipv4_part(part: str) -> int | None:
    """One dotted part the way ``inet_aton`` reads it: 0x hex, leading-0 octal, decimal."""
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base, alphabet = lowered[2:], 16, string.hexdigits
    elif len(part) > 1 and part.startswith("0"):
        digits, base, alphabet = part[1:], 8, string.octdigits
    else:
        digits, base, alphabet = part, 10, string.digits
    if not digits:
        return 0 if base == 16 else None
    if not all(c in alphabet for c in digits) or len(digits) > 32:
        return None
    return int(digits, base)


def _parse_ipv4_loose(text: str) -> ipaddress.IPv4Address | None:
    """Every numeric IPv4 spelling a resolver accepts: 2130706433, 0x7f.1, 0177.0.0.1, 127.1."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = [_parse_ipv4_part(p) for p in parts]
    if any(n is None for n in numbers):
        return None
    *head, last = [n for n in numbers if n is not None]
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for index, n in enumerate(head):
        value += n << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def parse_host_ip(host: str) -> IPAddress | None:
    """The IP address a URL host denotes literally, in any spelling; None for a name."""
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.replace("%25", "%", 1))
        except ValueError:
            return None
    if text.endswith("."):
        text = text[:-1]
    return _parse_ipv4_loose(text) if text else None


def _classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is."""
    if isinstance(ip, ipaddress.IPv4Address):
        for net, why in _V4_TABLE:
            if ip in net:
                return why
        return None if ip.is_global else "a non-public address"
    plain = ipaddress.IPv6Address(int(ip))  # drop any %zone for the range tests
    for net6, why in _V6_TABLE:
        if plain in net6:
            return why
    embedded: list[tuple[str, ipaddress.IPv4Address]] = []
    if plain in _MAPPED:
        embedded.append(("an IPv4-mapped form of", ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)))
    elif plain in _COMPAT:
        return "a deprecated IPv4-compatible address"
    elif plain in _NAT64:
        embedded.append(("a NAT64 form of", ipaddress.IPv4Address(int(plain) & 0xFFFFFFFF)))
    elif plain.sixtofour is not None:
        embedded.append(("a 6to4 form of", plain.sixtofour))
    elif plain.teredo is not None:
        server, client = plain.teredo
        embedded += [("a Teredo form of", client), ("a Teredo form of", server)]
    for kind, v4 in embedded:
        inner = _classify(v4)
        if inner is not None:
            return f"{kind} {v4}, {inner}"
    if embedded:
        return None
    if plain.is_multicast or not plain.is_global:
        return "a non-public address"
    return None


def _norm_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class AllowList:
    """Parsed ``allowed_hosts``: host names, (host, port) pairs and networks."""

    names: frozenset[str] = frozenset()
    pairs: frozenset[tuple[str, int]] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """Read "host", "host:port", "[v6]:port", an IP or a CIDR; ValueError names a bad entry."""
        names: set[str] = set()
        pairs: set[tuple[str, int]] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                if "/" in entry:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                    continue
                literal = parse_host_ip(entry) if entry.count(":") != 1 else None
                if literal is not None:
                    networks.append(ipaddress.ip_network(literal))
                    continue
                host, port = _split_host_port(entry)
            except ValueError:
                raise ValueError(f"allowed_hosts: invalid entry {raw!r}") from None
            if port is None:
                names.add(_norm_host(host))
            else:
                ip = parse_host_ip(host)
                pairs.add((ip.compressed if ip else _norm_host(host), port))
        return cls(frozenset(names), frozenset(pairs), tuple(networks))

    def exempts(self, host: str, port: int, ip: IPAddress) -> bool:
        """True if the host name, the host:port pair or the address is allowed."""
        name = _norm_host(host)
        plain = ipaddress.IPv6Address(int(ip)) if isinstance(ip, ipaddress.IPv6Address) else ip
        return (
            name in self.names
            or (name, port) in self.pairs
            or (plain.compressed, port) in self.pairs
            or any(plain.version == net.version and plain in net for net in self.networks)
        )


def _split_host_port(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            raise ValueError(entry)
    elif ":" in entry:
        host, _, port_text = entry.partition(":")
    else:
        return entry, None
    if not host:
        raise ValueError(entry)
    if not port_text:
        return host, None
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(entry)
    return host, port


def check_address(
    ip: str,
    host: str,
    port: int,
    allow_private: bool,
    allowed_hosts: AllowList | Iterable[str] = (),
) -> str | None:
    """Why connecting to ``ip`` (for ``host``:``port``) is refused, or None if it is allowed."""
    allow = allowed_hosts if isinstance(allowed_hosts, AllowList) else AllowList.parse(allowed_hosts)
    address = ipaddress.ip_address(ip)
    if allow_private or allow.exempts(host, port, address):
        return None
    why = _classify(address)
    if why is None:
        return None
    shown = _norm_host(host)
    if parse_host_ip(host) is None:
        return f"{shown} resolves to {address}, {why}"
    try:
        canonical = ipaddress.ip_address(shown.replace("%25", "%", 1)) == address
    except ValueError:
        canonical = False
    return f"{shown} is {why}" if canonical else f"{shown} means {address}, {why}"


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system's resolver gives for ``host``."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Guard:
    """The policy, bound: decides on URLs before connecting and on addresses when connecting."""

    def __init__(self, *, allow_private: bool, allowed_hosts: Iterable[str], resolver: Resolver) -> None:
        self.allow_private = allow_private
        self.allowed = AllowList.parse(allowed_hosts)
        self.resolver = resolver

    def check_literal(self, host: str, port: int) -> None:
        """Refuse a literal IP host (any spelling) without touching the network."""
        ip = parse_host_ip(host)
        if ip is not None:
            reason = check_address(str(ip), host, port, self.allow_private, self.allowed)
            if reason is not None:
                raise GuardRefusal(f"refused: {reason}")

    async def resolve(self, host: str, port: int) -> list[str]:
        """Checked addresses for ``host``; refuses if any answer is not allowed."""
        literal = parse_host_ip(host)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await self.resolver(host, port)
            except OSError as e:
                raise httpcore.ConnectError(f"cannot resolve {host}: {e.strerror or e}") from e
            if not addresses:
                raise httpcore.ConnectError(f"cannot resolve {host}: no addresses")
        for address in addresses:
            try:
                reason = check_address(address, host, port, self.allow_private, self.allowed)
            except ValueError:
                reason = f"{host} resolves to an invalid address {address!r}"
            if reason is not None:
                raise GuardRefusal(f"refused: {reason}")
        return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that dials only addresses the guard has checked."""

    def __init__(self, guard: Guard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._guard = guard
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._guard.resolve(host, port)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from e
        error: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        raise error if error is not None else httpcore.ConnectError(f"no address to connect to for {host}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise GuardRefusal("refused: unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
