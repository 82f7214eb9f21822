"""The SSRF guard's decisions, tested without ever sending a packet.

Every non-loopback address below is only ever handed to pure functions or to a
stub network backend that records the target and never connects. A broken
guard makes these tests fail; it cannot make them reach the network.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx
import pytest

from ingestd.exceptions import FetchError
from ingestd.pipeline.fetch import Fetcher, FetchPolicy, build_transport
from ingestd.pipeline.netguard import (
    AllowList,
    Guard,
    GuardedBackend,
    GuardRefusal,
    check_address,
    parse_host_ip,
)

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
    ("0.1.2.3", "this network"),
    ("255.255.255.255", "broadcast"),
    ("224.0.0.251", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("192.0.0.8", "IETF"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, a loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped form of 10.0.0.1, a private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254, a link-local"),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("2002:7f00:1::1", "6to4 form of 127.0.0.1"),
    ("2002:a00:1::1", "6to4 form of 10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo form of 127.0.0.1"),
    ("::7f00:1", "IPv4-compatible"),
]
PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "::ffff:93.184.216.34",
    "64:ff9b::5db8:d822",
    "2002:5db8:d822::1",
]
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.0.0.1.",
    "2130706433",
    "0x7f000001",
    "0X7F000001",
    "0177.0.0.1",
    "0177.0000.0000.0001",
    "127.1",
    "127.0.1",
    "0x7f.1",
    "0x7f.0.0.1",
    "017700000001",
    "[::ffff:127.0.0.1]",
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
]


@pytest.mark.parametrize(("ip", "why"), REFUSED)
def test_non_public_addresses_are_refused(ip: str, why: str) -> None:
    reason = check_address(ip, "feed.example", 443, False, ())
    assert reason is not None
    assert why in reason
    assert reason.startswith("feed.example resolves to ")


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_are_allowed(ip: str) -> None:
    assert check_address(ip, "feed.example", 443, False, ()) is None


@pytest.mark.parametrize(("ip", "why"), REFUSED)
def test_allow_private_networks_disables_the_range_check(ip: str, why: str) -> None:
    assert check_address(ip, "feed.example", 443, True, ()) is None


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_numeric_spelling_is_recognised(host: str) -> None:
    ip = parse_host_ip(host)
    assert ip is not None
    assert ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None)
    assert check_address(str(ip), host, 80, False, ()) is not None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.1", "10.0.0.1"),
        ("0xa.0x1", "10.0.0.1"),
        ("167772161", "10.0.0.1"),
        ("012.0.0.1", "10.0.0.1"),
        ("0", "0.0.0.0"),  # noqa: S104 - an address under test, not a bind
        ("169.254.43518", "169.254.169.254"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
    ],
)
def test_parse_host_ip_spellings(host: str, expected: str) -> None:
    assert parse_host_ip(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host", ["example.com", "127.0.0.1.example.com", "1.2.3.4.5", "256.0.0.1", "08.0.0.1", "0x1g", "", "[::1"]
)
def test_names_are_not_ip_literals(host: str) -> None:
    assert parse_host_ip(host) is None


def test_reasons_name_the_spelling_and_the_address() -> None:
    assert check_address("127.0.0.1", "127.0.0.1", 80, False, ()) == "127.0.0.1 is a loopback address"
    assert check_address("127.0.0.1", "0x7f000001", 80, False, ()) == (
        "0x7f000001 means 127.0.0.1, a loopback address"
    )
    assert check_address("127.0.0.1", "localhost", 80, False, ()) == (
        "localhost resolves to 127.0.0.1, a loopback address"
    )


def test_allowed_hosts_by_name_port_and_cidr() -> None:
    allow = AllowList.parse(
        ["Intranet.Example.", "127.0.0.1:8765", "[::1]:8080", "10.1.2.0/24", "192.168.7.7"]
    )
    assert check_address("10.9.9.9", "intranet.example", 80, False, allow) is None
    assert check_address("10.9.9.9", "INTRANET.example.", 8443, False, allow) is None
    assert check_address("10.9.9.9", "other.example", 80, False, allow) is not None
    assert check_address("127.0.0.1", "127.0.0.1", 8765, False, allow) is None
    assert check_address("127.0.0.1", "127.0.0.1", 8766, False, allow) is not None
    assert check_address("::1", "::1", 8080, False, allow) is None
    assert check_address("::1", "::1", 8081, False, allow) is not None
    assert check_address("10.1.2.77", "svc.internal", 80, False, allow) is None
    assert check_address("10.1.3.77", "svc.internal", 80, False, allow) is not None
    assert check_address("192.168.7.7", "nas.internal", 5000, False, allow) is None
    # raw strings work too
    assert check_address("10.1.2.3", "x", 1, False, ["10.1.2.0/24"]) is None


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "host:port", "host:0", "host:70000", ":80", "[::1]x"])
def test_invalid_allowlist_entries_are_named(entry: str) -> None:
    with pytest.raises(ValueError, match="allowed_hosts"):
        AllowList.parse([entry])


class RecordingStream(httpcore.AsyncMockStream):
    """A canned server answer that also keeps what the client wrote."""

    def __init__(self, answer: bytes, written: list[bytes]) -> None:
        super().__init__([answer])
        self.written = written

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written.append(buffer)


class RecordingBackend(httpcore.AsyncNetworkBackend):
    """Records connect targets; never connects. Optionally serves a canned response."""

    def __init__(self, responses: dict[str, bytes] | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.responses = responses or {}
        self.written: list[bytes] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.calls.append((host, port))
        if host in self.responses:
            return RecordingStream(self.responses[host], self.written)
        raise httpcore.ConnectError(f"stub backend: no connection to {host}")


class StubResolver:
    """Answers from a script: one list of addresses per call, the last one repeated."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _backend(resolver: StubResolver, inner: RecordingBackend, **kw: Any) -> GuardedBackend:
    guard = Guard(
        allow_private=kw.get("allow_private", False), allowed_hosts=kw.get("allowed", ()), resolver=resolver
    )
    return GuardedBackend(guard, inner)


@pytest.mark.parametrize(("ip", "why"), REFUSED)
def test_connect_refuses_before_dialling(ip: str, why: str) -> None:
    inner = RecordingBackend()
    backend = _backend(StubResolver([ip]), inner)
    with pytest.raises(GuardRefusal, match=r"refused: feed\.example resolves to"):
        asyncio.run(backend.connect_tcp("feed.example", 443))
    assert inner.calls == []


def test_connect_refuses_if_any_answer_is_private() -> None:
    inner = RecordingBackend()
    backend = _backend(StubResolver(["93.184.216.34", "10.0.0.1"]), inner)
    with pytest.raises(GuardRefusal, match=r"10\.0\.0\.1, a private address"):
        asyncio.run(backend.connect_tcp("feed.example", 80))
    assert inner.calls == []


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_connect_refuses_literal_spellings_without_resolving(host: str) -> None:
    inner, resolver = RecordingBackend(), StubResolver(["93.184.216.34"])
    backend = _backend(resolver, inner)
    with pytest.raises(GuardRefusal):
        asyncio.run(backend.connect_tcp(host.strip("[]"), 80))
    assert inner.calls == []
    assert resolver.calls == []


def test_connect_dials_the_checked_ip_literal() -> None:
    inner = RecordingBackend()
    backend = _backend(StubResolver(["93.184.216.34", "2606:2800:220:1::1"]), inner)
    with pytest.raises(httpcore.ConnectError, match="stub backend"):
        asyncio.run(backend.connect_tcp("feed.example", 443))
    assert inner.calls == [("93.184.216.34", 443), ("2606:2800:220:1::1", 443)]


def test_connect_allowed_by_name_and_cidr() -> None:
    inner = RecordingBackend()
    by_name = _backend(StubResolver(["10.9.9.9"]), inner, allowed=("intranet.example",))
    by_cidr = _backend(StubResolver(["10.1.2.3"]), inner, allowed=("10.1.2.0/24",))
    with pytest.raises(httpcore.ConnectError):
        asyncio.run(by_name.connect_tcp("intranet.example", 80))
    with pytest.raises(httpcore.ConnectError):
        asyncio.run(by_cidr.connect_tcp("svc.internal", 80))
    assert inner.calls == [("10.9.9.9", 80), ("10.1.2.3", 80)]


def test_dns_rebinding_is_refused_on_the_second_connect() -> None:
    inner = RecordingBackend()
    backend = _backend(StubResolver(["93.184.216.34"], ["127.0.0.1"]), inner)

    async def twice() -> None:
        with pytest.raises(httpcore.ConnectError):
            await backend.connect_tcp("rebind.example", 80)
        with pytest.raises(GuardRefusal, match=r"rebind\.example resolves to 127\.0\.0\.1, a loopback"):
            await backend.connect_tcp("rebind.example", 80)

    asyncio.run(twice())
    assert inner.calls == [("93.184.216.34", 80)]


def test_resolver_failure_is_a_connect_error() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise OSError(-2, "Name or service not known")

    guard = Guard(allow_private=False, allowed_hosts=(), resolver=broken)
    with pytest.raises(httpcore.ConnectError, match=r"cannot resolve nowhere\.example"):
        asyncio.run(GuardedBackend(guard, RecordingBackend()).connect_tcp("nowhere.example", 80))


REDIRECT_TO_SAME_HOST = (
    b"HTTP/1.1 302 Found\r\nLocation: http://rebind.example/feed.xml\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


def test_fetcher_refuses_rebinding_on_a_redirect_hop() -> None:
    """The first answer is public (a stub serves a redirect), the second is loopback."""
    resolver = StubResolver(["93.184.216.34"], ["127.0.0.1"])
    inner = RecordingBackend({"93.184.216.34": REDIRECT_TO_SAME_HOST})
    policy = FetchPolicy(timeout=5)
    guard = Guard(allow_private=False, allowed_hosts=(), resolver=resolver)

    async def go() -> None:
        async with Fetcher(policy, transport=build_transport(policy, guard, inner), resolver=resolver) as f:
            await f.get("http://rebind.example/")

    with pytest.raises(GuardRefusal, match=r"refused: rebind\.example resolves to 127\.0\.0\.1") as info:
        asyncio.run(go())
    assert info.value.url == "http://rebind.example/"
    assert inner.calls == [("93.184.216.34", 80)]
    assert resolver.calls == ["rebind.example", "rebind.example"]


def test_fetcher_dials_the_ip_but_sends_the_host_name() -> None:
    answer = b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "e"\r\n\r\n<rss>'
    resolver = StubResolver(["93.184.216.34"])
    inner = RecordingBackend({"93.184.216.34": answer})
    policy = FetchPolicy(timeout=5)
    guard = Guard(allow_private=False, allowed_hosts=(), resolver=resolver)

    async def go() -> bytes:
        async with Fetcher(policy, transport=build_transport(policy, guard, inner), resolver=resolver) as f:
            return (await f.get("http://feed.example:8080/rss")).content

    assert asyncio.run(go()) == b"<rss>"
    assert inner.calls == [("93.184.216.34", 8080)]
    request = b"".join(inner.written)
    assert request.startswith(b"GET /rss HTTP/1.1\r\n")
    assert b"\r\nHost: feed.example:8080\r\n" in request
    assert b"\r\nAccept-Encoding: gzip, deflate\r\n" in request


def _refusing_transport(seen: list[str]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(500)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://user:pw@127.0.0.1/",
        "http://public.example.com@127.0.0.1:8080/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "https://[fd00::1]/",
        "http://0.0.0.0/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/_x",
        "ftp://example.com/feed.xml",
    ],
)
def test_fetcher_refuses_before_any_request(url: str) -> None:
    seen: list[str] = []

    async def go() -> None:
        async with Fetcher(FetchPolicy(), transport=_refusing_transport(seen)) as f:
            await f.get(url)

    with pytest.raises(GuardRefusal, match=r"^refused: ") as info:
        asyncio.run(go())
    assert isinstance(info.value, FetchError)
    assert info.value.url == url
    assert seen == []


def test_fetcher_refuses_a_redirect_to_a_private_address() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(302, headers={"Location": "http://10.0.0.1/admin"})

    async def go() -> None:
        async with Fetcher(FetchPolicy(), transport=httpx.MockTransport(handler)) as f:
            await f.get("http://feed.example/rss")

    with pytest.raises(GuardRefusal, match=r"refused: 10\.0\.0\.1 is a private address"):
        asyncio.run(go())
    assert seen == ["http://feed.example/rss"]


def test_allow_private_networks_keeps_the_scheme_check() -> None:
    seen: list[str] = []

    async def go(url: str) -> None:
        policy = FetchPolicy(allow_private_networks=True)
        async with Fetcher(policy, transport=_refusing_transport(seen)) as f:
            await f.get(url)

    with pytest.raises(GuardRefusal, match="file URLs are not fetched"):
        asyncio.run(go("file:///etc/passwd"))
    with pytest.raises(FetchError, match="HTTP 500"):
        asyncio.run(go("http://10.0.0.1/"))  # MockTransport: nothing leaves the process
    assert seen == ["http://10.0.0.1/"]
