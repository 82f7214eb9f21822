"""The fetch stage: unit tests over ``httpx.MockTransport``, integration tests over a real
``http.server`` on 127.0.0.1 (allow-listed by host:port; nothing else is ever dialled)."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import threading
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, TypeVar

import httpx
import pytest

from ingestd import __version__
from ingestd.exceptions import FetchError, HTTPStatusError
from ingestd.models import FetchResult
from ingestd.pipeline.fetch import (
    MAX_RETRY_AFTER,
    BoundedDecoder,
    Fetcher,
    FetchPolicy,
    host_key,
    parse_max_age,
    parse_retry_after,
)
from ingestd.pipeline.netguard import GuardRefusal

T = TypeVar("T")
FEED = b"<?xml version='1.0'?><rss version='2.0'><channel><title>t</title></channel></rss>"
Handler = (
    Callable[[httpx.Request], httpx.Response]
    | Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]
)


class _Body(httpx.AsyncByteStream):
    """A streamed body: ``httpx.Response(content=...)`` would be read (and decoded) eagerly."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for i in range(0, len(self.data), 4096):
            yield self.data[i : i + 4096]


def resp(status: int, headers: dict[str, str] | None = None, content: bytes = b"") -> httpx.Response:
    return httpx.Response(status, headers=headers, stream=_Body(content))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def fetch_mock(
    handler: Handler, url: str = "http://feed.example/rss", policy: FetchPolicy | None = None, **kw: Any
) -> FetchResult:
    async with Fetcher(policy or FetchPolicy(), transport=httpx.MockTransport(handler)) as f:
        return await f.get(url, **kw)


# --- pure helpers -------------------------------------------------------------------------------


NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("99999999999", float(MAX_RETRY_AFTER)),
        ("9" * 5000, float(MAX_RETRY_AFTER)),
        (format_datetime(NOW + timedelta(seconds=300), usegmt=True), 300.0),
        (format_datetime(NOW - timedelta(days=1), usegmt=True), 0.0),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
        ("Fri, 31 Dec 9999 23:59:59 GMT", float(MAX_RETRY_AFTER)),
        ("soon-ish", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        ("²", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_max_age() -> None:
    assert parse_max_age("public, max-age=600", None) == 600.0
    assert parse_max_age('max-age="60", s-maxage=5', "garbage") == 60.0
    assert parse_max_age("no-cache", None) is None
    assert parse_max_age(None, "Wed, 01 May 2024 13:00:00 GMT", "Wed, 01 May 2024 12:00:00 GMT") == 3600.0
    assert parse_max_age(None, "0") == 0.0
    assert parse_max_age("max-age=" + "9" * 100, None) == 365 * 86400


def test_host_key_groups_substack() -> None:
    assert host_key("Foo.Substack.com.") == "substack.com"
    assert host_key("substack.com") == "substack.com"
    assert host_key("notsubstack.com") == "notsubstack.com"
    assert host_key("Example.ORG") == "example.org"


def test_bounded_decoder_output_per_step_is_bounded() -> None:
    bomb = gzip.compress(b"\0" * 20_000_000, compresslevel=9)
    decoder = BoundedDecoder(["gzip"], step=4096)
    pieces = list(decoder.decode(bomb))
    assert max(map(len, pieces)) <= 4096
    assert sum(map(len, pieces)) == 20_000_000
    assert decoder.complete


@pytest.mark.parametrize(
    ("encodings", "encode"),
    [
        (["gzip"], gzip.compress),
        (["x-gzip"], gzip.compress),
        (["deflate"], zlib.compress),
        (["deflate"], lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as IIS sends it
        (["gzip", "gzip"], lambda b: gzip.compress(gzip.compress(b))),
        (["deflate", "gzip"], lambda b: gzip.compress(zlib.compress(b))),
        (["identity"], lambda b: b),
        ([], lambda b: b),
    ],
)
def test_bounded_decoder_roundtrip(encodings: list[str], encode: Callable[[bytes], bytes]) -> None:
    data = FEED * 500
    wire = encode(data)
    decoder = BoundedDecoder(encodings, step=1000)
    out = b"".join(piece for i in range(0, len(wire), 7) for piece in decoder.decode(wire[i : i + 7]))
    assert out == data
    assert decoder.complete


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "gzip, br"])
def test_bounded_decoder_refuses_unbounded_encodings(encoding: str) -> None:
    with pytest.raises(ValueError, match=r"br|zstd|compress"):
        BoundedDecoder([e.strip() for e in encoding.split(",")])


# --- MockTransport: one behaviour each ------------------------------------------------------------


def test_200_result_and_request_headers() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return resp(
            200,
            headers={
                "ETag": '"v1"',
                "Last-Modified": "Wed, 01 May 2024 12:00:00 GMT",
                "Cache-Control": "max-age=900",
                "Content-Type": "application/rss+xml",
            },
            content=FEED,
        )

    result = run(fetch_mock(handler))
    assert result.status == 200
    assert result.content == FEED
    assert result.final_url == result.url == "http://feed.example/rss"
    assert result.etag == '"v1"'
    assert result.last_modified == "Wed, 01 May 2024 12:00:00 GMT"
    assert result.max_age == 900.0
    assert result.permanent_redirect is None
    assert result.header("Content-Type") == "application/rss+xml"
    assert all(name == name.lower() for name, _ in result.headers)
    assert result.elapsed >= 0
    request = seen[0]
    assert request.headers["accept-encoding"] == "gzip, deflate"
    assert request.headers["user-agent"] == f"ingestd/{__version__} (+https://github.com/ingestd/ingestd)"
    assert "application/rss+xml" in request.headers["accept"]
    assert "if-none-match" not in request.headers
    assert "if-modified-since" not in request.headers


def test_conditional_get_304_keeps_validators() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return resp(304)

    result = run(fetch_mock(handler, etag='"v1"', last_modified="Wed, 01 May 2024 12:00:00 GMT"))
    assert result.not_modified
    assert result.content == b""
    assert result.etag == '"v1"'
    assert result.last_modified == "Wed, 01 May 2024 12:00:00 GMT"
    assert seen[0].headers["if-none-match"] == '"v1"'
    assert seen[0].headers["if-modified-since"] == "Wed, 01 May 2024 12:00:00 GMT"


def test_no_cookies_are_kept_between_requests() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return resp(200, headers={"Set-Cookie": "session=abc; Path=/"}, content=FEED)

    async def go() -> None:
        async with Fetcher(FetchPolicy(), transport=httpx.MockTransport(handler)) as f:
            await f.get("http://feed.example/a")
            await f.get("http://feed.example/b")

    run(go())
    assert sent == [None, None]


def test_custom_accept() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["accept"])
        return resp(200, content=b"<html/>")

    run(fetch_mock(handler, accept="text/html"))
    assert seen == ["text/html"]


@pytest.mark.parametrize(
    ("codes", "permanent"),
    [
        ((301,), True),
        ((308,), True),
        ((301, 308), True),
        ((301, 302), False),
        ((307,), False),
        ((303,), False),
    ],
)
def test_redirects_and_permanence(codes: tuple[int, ...], permanent: bool) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        hop = int(request.url.params.get("hop", "0"))
        if hop < len(codes):
            return resp(codes[hop], headers={"Location": f"/next?hop={hop + 1}"})
        return resp(200, content=FEED)

    result = run(fetch_mock(handler))
    final = f"http://feed.example/next?hop={len(codes)}"
    assert result.final_url == final
    assert result.url == "http://feed.example/rss"
    assert result.permanent_redirect == (final if permanent else None)


def test_too_many_redirects() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return resp(302, headers={"Location": "/again"})

    with pytest.raises(FetchError, match=r"too many redirects \(more than 2\)"):
        run(fetch_mock(handler, policy=FetchPolicy(max_redirects=2)))


def test_redirect_without_location_is_a_status_error() -> None:
    with pytest.raises(HTTPStatusError) as info:
        run(fetch_mock(lambda r: resp(302)))
    assert info.value.status == 302


@pytest.mark.parametrize(
    ("status", "headers", "retry_after", "message"),
    [
        (404, {}, None, "HTTP 404 Not Found"),
        (410, {}, None, "HTTP 410 Gone"),
        (429, {"Retry-After": "120"}, 120.0, "HTTP 429 Too Many Requests (retry after 120 s)"),
        (503, {"Retry-After": "99999999999"}, float(MAX_RETRY_AFTER), "HTTP 503 Service Unavailable"),
        (429, {"Retry-After": "soon-ish"}, None, "HTTP 429 Too Many Requests"),
        (500, {}, None, "HTTP 500 Internal Server Error"),
        (204, {}, None, "HTTP 204 No Content"),
        (599, {}, None, "HTTP 599"),
    ],
)
def test_status_errors(status: int, headers: dict[str, str], retry_after: float | None, message: str) -> None:
    with pytest.raises(HTTPStatusError) as info:
        run(fetch_mock(lambda r: resp(status, headers=headers, content=b"nope")))
    assert info.value.status == status
    assert info.value.retry_after == retry_after
    assert str(info.value).startswith(message)
    assert info.value.url == "http://feed.example/rss"


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
    with pytest.raises(HTTPStatusError) as info:
        run(fetch_mock(lambda r: resp(503, headers={"Retry-After": when})))
    assert info.value.retry_after is not None
    assert 280 <= info.value.retry_after <= 300


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", gzip.compress(FEED)),
        ("deflate", zlib.compress(FEED)),
        ("deflate", zlib.compress(FEED)[2:-4]),
        ("gzip, gzip", gzip.compress(gzip.compress(FEED))),
        ("GZIP", gzip.compress(FEED)),
    ],
)
def test_body_is_decoded(encoding: str, body: bytes) -> None:
    result = run(fetch_mock(lambda r: resp(200, headers={"Content-Encoding": encoding}, content=body)))
    assert result.content == FEED


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("br", b"\x1b\xff", "unsupported content encoding br"),
        ("zstd", b"(\xb5/\xfd", "unsupported content encoding zstd"),
        ("gzip", b"this is not gzip", "corrupt compressed body"),
        ("gzip", gzip.compress(FEED)[:-20], "truncated compressed body"),
    ],
)
def test_bad_encodings(encoding: str, body: bytes, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        run(fetch_mock(lambda r: resp(200, headers={"Content-Encoding": encoding}, content=body)))


def test_body_cap_counts_decoded_bytes() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)

    def handler(request: httpx.Request) -> httpx.Response:
        return resp(200, headers={"Content-Encoding": "gzip"}, content=bomb)

    with pytest.raises(FetchError, match="more than 100,000 bytes after decompression"):
        run(fetch_mock(handler, policy=FetchPolicy(max_body_bytes=100_000)))


def test_empty_200() -> None:
    with pytest.raises(FetchError, match="empty response"):
        run(fetch_mock(lambda r: resp(200, content=b"")))


def test_network_errors_become_fetch_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(FetchError, match=r"cannot connect: \[Errno 111\] Connection refused") as info:
        run(fetch_mock(handler))
    assert isinstance(info.value.__cause__, httpx.ConnectError)


def test_invalid_url() -> None:
    with pytest.raises(FetchError, match="invalid URL"):
        run(fetch_mock(lambda r: resp(200, content=FEED), url="http:///no-host"))


def test_total_deadline_with_a_slow_transport() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        return resp(200, content=FEED)

    started = time.monotonic()
    with pytest.raises(FetchError, match=r"^timed out after 0\.3 s$"):
        run(fetch_mock(handler, policy=FetchPolicy(timeout=0.3)))
    assert time.monotonic() - started < 5


def test_politeness_limits_concurrency_per_host_and_overall() -> None:
    in_flight: dict[str, int] = {}
    peak: dict[str, int] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        for key in (host_key(request.url.host), "*"):
            in_flight[key] = in_flight.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), in_flight[key])
        await asyncio.sleep(0.02)
        for key in (host_key(request.url.host), "*"):
            in_flight[key] -= 1
        return resp(200, content=FEED)

    urls = [f"http://pub{i}.substack.com/feed" for i in range(8)]
    urls += [f"http://site{i % 4}.example/feed{i}" for i in range(12)]

    async def go() -> list[FetchResult]:
        policy = FetchPolicy(concurrency=5, per_host_concurrency=2)
        async with Fetcher(policy, transport=httpx.MockTransport(handler)) as f:
            return await asyncio.gather(*(f.get(u) for u in urls))

    results = run(go())
    assert [r.status for r in results] == [200] * len(urls)
    assert peak["substack.com"] == 2
    assert all(peak[f"site{i}.example"] <= 2 for i in range(4))
    assert peak["*"] <= 5
    assert in_flight["*"] == 0


def test_politeness_spacing_between_starts_to_one_host() -> None:
    starts: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        starts.append(time.monotonic())
        return resp(200, content=FEED)

    async def go() -> None:
        policy = FetchPolicy(per_host_concurrency=4, per_host_delay=0.1)
        async with Fetcher(policy, transport=httpx.MockTransport(handler)) as f:
            await asyncio.gather(*(f.get(f"http://a.substack.com/{i}") for i in range(3)))
            await f.get("http://b.substack.com/")

    run(go())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    assert all(gap >= 0.09 for gap in gaps)


# --- integration: a real server on 127.0.0.1 ------------------------------------------------------

BOMB_SIZE = 200 * 1024 * 1024


def _gzip_bomb_chunks() -> list[bytes]:
    """200 MiB of zeros, gzip-compressed on the fly (about 200 KB on the wire)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1024 * 1024)
    chunks = [comp.compress(zeros) for _ in range(BOMB_SIZE // len(zeros))]
    chunks.append(comp.flush())
    return [c for c in chunks if c]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bomb: ClassVar[list[bytes]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self) -> None:
        path = self.path
        if path == "/feed":
            if self.headers.get("If-None-Match") == '"v1"' or self.headers.get("If-Modified-Since") == "LM":
                self._send(304, ETag='"v1"')
            else:
                self._send(200, FEED, ETag='"v1"', Last_Modified="LM", Content_Type="application/rss+xml")
        elif path == "/gzip":
            self._send(200, gzip.compress(FEED), Content_Encoding="gzip")
        elif path.startswith("/r/"):  # /r/<code>/<n>: n more hops of <code>, then the feed
            _, _, code, n = path.split("/")
            location = f"/r/{code}/{int(n) - 1}" if int(n) > 1 else "/feed"
            self._send(int(code), Location=location)
        elif path == "/loop":
            self._send(302, Location="/loop")
        elif path == "/429":
            self._send(429, b"slow down", Retry_After="120")
        elif path == "/503-date":
            when = format_datetime(datetime.now(UTC) + timedelta(seconds=300), usegmt=True)
            self._send(503, Retry_After=when)
        elif path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"<")
                self.wfile.flush()
                time.sleep(0.1)
            self.close_connection = True
        elif path == "/bomb":
            self.send_response(200)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(sum(map(len, self.bomb))))
            self.end_headers()
            for chunk in self.bomb:
                self.wfile.write(chunk)
        elif path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(2**31))
            self.end_headers()
            self.wfile.write(b"x" * 65536)
            self.close_connection = True
        elif path == "/empty":
            self._send(200, Content_Type="application/rss+xml")
        else:
            self._send(404, b"no")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: list[str]


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    _Handler.bomb = _gzip_bomb_chunks()
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.hits = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def _policy(server: _Server, **kw: Any) -> FetchPolicy:
    return FetchPolicy(allowed_hosts=(f"127.0.0.1:{server.server_address[1]}",), **kw)


async def _get(server: _Server, path: str, policy: FetchPolicy | None = None, **kw: Any) -> FetchResult:
    async with Fetcher(policy or _policy(server, timeout=10)) as f:
        return await f.get(f"http://127.0.0.1:{server.server_address[1]}{path}", **kw)


@pytest.mark.integration
def test_local_conditional_get(server: _Server) -> None:
    async def go() -> tuple[FetchResult, FetchResult, FetchResult]:
        async with Fetcher(_policy(server)) as f:
            base = f"http://127.0.0.1:{server.server_address[1]}/feed"
            first = await f.get(base)
            by_etag = await f.get(base, etag=first.etag)
            by_date = await f.get(base, last_modified=first.last_modified)
            return first, by_etag, by_date

    first, by_etag, by_date = run(go())
    assert (first.status, first.content, first.etag, first.last_modified) == (200, FEED, '"v1"', "LM")
    assert by_etag.status == 304
    assert by_etag.etag == '"v1"'
    assert by_date.status == 304
    assert by_date.last_modified == "LM"


@pytest.mark.integration
def test_local_gzip(server: _Server) -> None:
    result = run(_get(server, "/gzip"))
    assert result.content == FEED
    assert result.header("content-encoding") == "gzip"


@pytest.mark.integration
@pytest.mark.parametrize(("code", "permanent"), [(301, True), (308, True), (302, False)])
def test_local_redirects(server: _Server, code: int, permanent: bool) -> None:
    result = run(_get(server, f"/r/{code}/3"))
    assert result.content == FEED
    assert result.final_url.endswith("/feed")
    assert result.permanent_redirect == (result.final_url if permanent else None)


@pytest.mark.integration
def test_local_redirect_limits(server: _Server) -> None:
    with pytest.raises(FetchError, match="too many redirects"):
        run(_get(server, "/loop"))
    with pytest.raises(FetchError, match=r"too many redirects \(more than 2\)"):
        run(_get(server, "/r/301/3", _policy(server, max_redirects=2)))
    assert run(_get(server, "/r/301/2", _policy(server, max_redirects=2))).status == 200


@pytest.mark.integration
def test_local_retry_after(server: _Server) -> None:
    with pytest.raises(HTTPStatusError) as info:
        run(_get(server, "/429"))
    assert (info.value.status, info.value.retry_after) == (429, 120.0)
    with pytest.raises(HTTPStatusError) as info:
        run(_get(server, "/503-date"))
    assert info.value.status == 503
    assert info.value.retry_after is not None
    assert 280 <= info.value.retry_after <= 300


@pytest.mark.integration
def test_local_total_deadline_cuts_a_trickle(server: _Server) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"timed out after 1\.5 s"):
        run(_get(server, "/trickle", _policy(server, timeout=1.5)))
    assert time.monotonic() - started < 5  # per-read timeouts would never fire: a byte comes every 0.1 s


@pytest.mark.integration
def test_local_gzip_bomb_is_cut_with_bounded_memory(server: _Server) -> None:
    cap = 1_000_000
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(FetchError, match="more than 1,000,000 bytes after decompression"):
            run(_get(server, "/bomb", _policy(server, max_body_bytes=cap)))
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < cap + 4 * 1024 * 1024  # cap + a few decode steps and buffers, not 200 MiB


@pytest.mark.integration
def test_local_content_length_too_large(server: _Server) -> None:
    with pytest.raises(FetchError, match="2,147,483,648 bytes declared"):
        run(_get(server, "/declared-huge", _policy(server, max_body_bytes=1_000_000)))


@pytest.mark.integration
def test_local_empty_200(server: _Server) -> None:
    with pytest.raises(FetchError, match="empty response"):
        run(_get(server, "/empty"))


@pytest.mark.integration
def test_default_guard_refuses_the_local_server(server: _Server) -> None:
    port = server.server_address[1]
    hits = len(server.hits)

    async def localhost(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "localhost" else []

    async def go(url: str) -> None:
        async with Fetcher(FetchPolicy(), resolver=localhost) as f:
            await f.get(url)

    with pytest.raises(GuardRefusal, match=r"refused: 127\.0\.0\.1 is a loopback address"):
        run(go(f"http://127.0.0.1:{port}/feed"))
    with pytest.raises(GuardRefusal, match=r"refused: localhost resolves to 127\.0\.0\.1, a loopback"):
        run(go(f"http://localhost:{port}/feed"))
    with pytest.raises(GuardRefusal, match="refused: "):
        run(_get(server, "/feed", FetchPolicy(allowed_hosts=(f"127.0.0.1:{port + 1}",))))
    assert len(server.hits) == hits


@pytest.mark.integration
def test_one_fetcher_serves_many_tasks(server: _Server) -> None:
    async def go() -> list[FetchResult]:
        async with Fetcher(_policy(server, per_host_concurrency=4)) as f:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            return await asyncio.gather(*(f.get(base + p) for p in ["/feed", "/gzip", "/r/302/2"] * 5))

    assert [r.content for r in run(go())] == [FEED] * 15


def test_unchanged_feeds_reuse_one_connection() -> None:
    """A 304 ends its exchange cleanly, so the connection goes back to the pool (real server)."""
    from tests.feedserver import FeedServer, serve

    async def go(server: FeedServer) -> list[FetchResult]:
        policy = FetchPolicy(allowed_hosts=(f"127.0.0.1:{server.port}",), per_host_concurrency=1)
        async with Fetcher(policy) as fetcher:
            first = await fetcher.get(server.url("a.xml"))
            results = [first]
            for _ in range(5):
                results.append(await fetcher.get(server.url("a.xml"), etag=first.etag))
            return results

    with serve(FeedServer(files={"a.xml": b"<rss version='2.0'><channel/></rss>"})) as server:
        results = asyncio.run(go(server))
    assert [r.status for r in results] == [200, 304, 304, 304, 304, 304]
    assert [h.status for h in server.hits] == [200, 304, 304, 304, 304, 304]
    assert len({h.client_port for h in server.hits}) == 1, server.hits


def test_httpcore_finds_sniffio() -> None:
    """Without sniffio, httpcore retries a failing import on every lock it creates (a sys.path scan
    per request: encode/httpcore#1103); it is a declared dependency for that reason."""
    import importlib.util

    assert importlib.util.find_spec("sniffio") is not None
