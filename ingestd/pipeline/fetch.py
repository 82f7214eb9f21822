"""The fetch stage: one conditional GET of an untrusted URL, within limits.

``Fetcher.get`` returns a ``FetchResult`` for 200 and 304 and raises
``FetchError`` (or its ``HTTPStatusError``) for everything else. What it
guards against, and how:

* slow servers: one ``asyncio.timeout`` around the whole exchange (every
  redirect hop, the headers and the body); httpx's own timeouts are per read;
* big and compressed bodies: httpx never decodes. We advertise only gzip and
  deflate, stream the raw bytes and inflate them with a bounded step, counting
  the *decoded* size, so a 1 GiB bomb costs the cap plus one step of memory;
* SSRF: redirects are followed here, every hop's URL is checked, and the
  connection pool dials only addresses that ``netguard`` has checked, so
  redirects and DNS rebinding meet the same guard;
* impoliteness: a global and a per-host concurrency limit plus a minimum
  spacing between requests to one host.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http
import io
import logging
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy
from types import TracebackType

import httpcore
import httpx

from ingestd import __version__
from ingestd.exceptions import FetchError, HTTPStatusError
from ingestd.models import FetchResult
from ingestd.pipeline.netguard import Guard, GuardedBackend, GuardRefusal, Resolver, system_resolver

__all__ = [
    "DEFAULT_USER_AGENT",
    "FEED_ACCEPT",
    "MAX_RETRY_AFTER",
    "BoundedDecoder",
    "FetchPolicy",
    "Fetcher",
    "build_transport",
    "host_key",
    "parse_max_age",
    "parse_retry_after",
]

log = logging.getLogger("ingestd.fetch")

DEFAULT_USER_AGENT = f"ingestd/{__version__} (+https://github.com/ingestd/ingestd)"
FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
# br and zstd are never offered: their decoders have no bounded-output API in the stdlib.
ACCEPT_ENCODING = "gzip, deflate"
MAX_RETRY_AFTER = 7 * 86400
MAX_AGE_CAP = 365 * 86400
DECODE_STEP = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and guard settings for one ``Fetcher`` (the ``[fetch]`` settings, as plain values)."""

    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_body_bytes: int = 15_000_000
    max_redirects: int = 5
    user_agent: str = DEFAULT_USER_AGENT
    allow_private_networks: bool = False
    allowed_hosts: tuple[str, ...] = ()
    concurrency: int = 16
    per_host_concurrency: int = 2
    per_host_delay: float = 0.0


def host_key(host: str) -> str:
    """The politeness key of a host: Substack publications share one platform."""
    name = host.strip("[]").rstrip(".").lower()
    return "substack.com" if name == "substack.com" or name.endswith(".substack.com") else name


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or HTTP-date), clamped to 7 days."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(MAX_RETRY_AFTER if len(text) > 7 else min(int(text), MAX_RETRY_AFTER))
    when = _http_date(text)
    if when is None:
        return None
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return float(min(max(delta, 0.0), MAX_RETRY_AFTER))


def parse_max_age(
    cache_control: str | None, expires: str | None, date: str | None = None, now: datetime | None = None
) -> float | None:
    """Freshness lifetime in seconds from Cache-Control max-age, else Expires (relative to Date)."""
    for directive in (cache_control or "").split(","):
        name, _, value = directive.strip().partition("=")
        value = value.strip().strip('"')
        if name.strip().lower() == "max-age" and value.isascii() and value.isdigit():
            return float(MAX_AGE_CAP if len(value) > 8 else min(int(value), MAX_AGE_CAP))
    if expires is None:
        return None
    when = _http_date(expires)
    if when is None:
        return 0.0  # RFC 9111: an invalid Expires (e.g. "0") means already expired
    base = _http_date(date) or now or datetime.now(UTC)
    return float(min(max((when - base).total_seconds(), 0.0), MAX_AGE_CAP))


class _Inflater:
    """One gzip or deflate layer whose output per call is bounded by ``limit``."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        gzip = encoding in ("gzip", "x-gzip")
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
        self._pending = b""

    def push(self, data: bytes) -> None:
        self._pending += data

    def pull(self, limit: int) -> bytes:
        if self._obj is None:
            # "deflate" is zlib-wrapped by the spec and raw in practice: sniff the header.
            if len(self._pending) < 2:
                return b""
            cmf, flg = self._pending[0], self._pending[1]
            wrapped = cmf & 0x0F == 8 and ((cmf << 8) | flg) % 31 == 0
            self._obj = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
        if self._obj.eof:
            self._pending = b""  # trailing bytes after the stream end are ignored
            return b""
        out = self._obj.decompress(self._pending, limit)
        self._pending = self._obj.unconsumed_tail
        return out

    @property
    def complete(self) -> bool:
        return self._obj is not None and self._obj.eof


class BoundedDecoder:
    """Undo a Content-Encoding list (e.g. "gzip, gzip") yielding at most ``step`` bytes at a time.

    Raises ``ValueError`` for an encoding it cannot decode with bounded output.
    """

    def __init__(self, encodings: Sequence[str], step: int = DECODE_STEP) -> None:
        self._step = step
        self._layers: list[_Inflater] = []
        for raw in reversed(encodings):  # applied in order, so undone in reverse
            encoding = raw.strip().lower()
            if encoding in ("", "identity"):
                continue
            if encoding not in ("gzip", "x-gzip", "deflate"):
                raise ValueError(encoding)
            self._layers.append(_Inflater(encoding))

    @property
    def encoded(self) -> bool:
        return bool(self._layers)

    @property
    def complete(self) -> bool:
        return all(layer.complete for layer in self._layers)

    def decode(self, data: bytes) -> Iterator[bytes]:
        """Decoded pieces of ``data``; raises ``zlib.error`` on a corrupt stream."""
        return self._run(0, data)

    def _run(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            if data:
                yield data
            return
        layer = self._layers[index]
        layer.push(data)
        while out := layer.pull(self._step):
            yield from self._run(index + 1, out)


@dataclass
class _HostState:
    gate: asyncio.Semaphore
    users: int = 0
    next_start: float = 0.0


@dataclass
class _Politeness:
    """Global and per-host concurrency plus a minimum spacing between starts to one host."""

    concurrency: int
    per_host: int
    delay: float
    _all: asyncio.Semaphore = field(init=False)
    _hosts: dict[str, _HostState] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._all = asyncio.Semaphore(self.concurrency)

    @asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        state = self._hosts.setdefault(key, _HostState(asyncio.Semaphore(self.per_host)))
        state.users += 1
        try:
            async with state.gate:
                # Reserve a start time before waiting (no await in between), so waiters queue up.
                start = max(loop.time(), state.next_start)
                state.next_start = start + self.delay
                if start > loop.time():
                    await asyncio.sleep(start - loop.time())
                async with self._all:
                    yield
        finally:
            state.users -= 1
            if state.users == 0 and state.next_start <= loop.time():
                del self._hosts[key]


def build_transport(
    policy: FetchPolicy, guard: Guard, network_backend: httpcore.AsyncNetworkBackend | None = None
) -> httpx.AsyncHTTPTransport:
    """An HTTP/1.1 transport whose connection pool dials only through ``guard``.

    httpx has no public hook for the network backend, so its pool is replaced by one
    built with the same arguments plus ``GuardedBackend``. ``network_backend`` is the
    backend that really connects (tests pass a stub that never sends a packet).
    """
    ssl_context = httpx.create_ssl_context(trust_env=False)
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, http1=True, http2=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("unsupported httpx version: AsyncHTTPTransport._pool not found")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=policy.concurrency,
        max_keepalive_connections=policy.concurrency,
        keepalive_expiry=30.0,
        http1=True,
        http2=False,
        retries=0,
        network_backend=GuardedBackend(guard, network_backend),
    )
    return transport


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


class Fetcher:
    """Fetches feed URLs over one shared keep-alive client; safe to use from many tasks."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.policy = policy
        self._guard = Guard(
            allow_private=policy.allow_private_networks,
            allowed_hosts=policy.allowed_hosts,
            resolver=resolver or system_resolver,
        )
        self._politeness = _Politeness(policy.concurrency, policy.per_host_concurrency, policy.per_host_delay)
        no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))  # feeds share no state
        self._client = httpx.AsyncClient(
            transport=transport or build_transport(policy, self._guard),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(policy.timeout, connect=policy.connect_timeout),
            headers={"User-Agent": policy.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            cookies=no_cookies,
        )

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        accept: str = FEED_ACCEPT,
    ) -> FetchResult:
        """GET ``url`` (conditionally when ``etag``/``last_modified`` are given).

        Returns the 200 or 304 result; raises ``HTTPStatusError`` for other statuses and
        ``FetchError`` for everything that went wrong on the way.
        """
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as e:
            raise FetchError(f"invalid URL: {_one_line(str(e))}", url) from e
        self._check_url(target, url)
        headers = {"Accept": accept}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        timeout = self.policy.timeout
        async with self._politeness.slot(host_key(target.host)):
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout):
                    result = await self._exchange(url, target, headers, started)
            except TimeoutError as e:
                raise FetchError(f"timed out after {timeout:g} s", url) from e
            except httpx.TimeoutException as e:
                if isinstance(e, httpx.ConnectTimeout):
                    message = f"connection timed out after {self.policy.connect_timeout:g} s"
                else:
                    message = f"timed out after {timeout:g} s"
                raise FetchError(message, url) from e
            except httpx.HTTPError as e:
                raise FetchError(self._describe(e), url) from e
            except GuardRefusal as e:
                if e.url:
                    raise
                raise GuardRefusal(str(e), url) from e
            except OSError as e:  # a socket error that escaped httpcore's mapping
                raise FetchError(f"network error: {_one_line(str(e))}", url) from e
        if result.status == 304:
            result = _with_validators(result, etag, last_modified)
        log.debug("fetched %s: %s, %d bytes, %.2f s", url, result.status, len(result.content), result.elapsed)
        return result

    def _check_url(self, target: httpx.URL, url: str) -> None:
        """Scheme and literal-address checks that need no connection."""
        if not target.scheme:
            raise FetchError("invalid URL: no scheme (expected http or https)", url)
        if target.scheme not in ("http", "https"):
            raise GuardRefusal(f"refused: {target.scheme} URLs are not fetched", url)
        if not target.host:
            raise FetchError("invalid URL: no host", url)
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            self._guard.check_literal(target.raw_host.decode("ascii"), port)  # what will be dialled
        except GuardRefusal as e:
            raise GuardRefusal(str(e), url) from None

    async def _exchange(
        self, url: str, target: httpx.URL, headers: dict[str, str], started: float
    ) -> FetchResult:
        """Follow redirects by hand so each hop is checked and we know if all were permanent."""
        permanent = True
        for hops in range(self.policy.max_redirects + 1):
            request = self._client.build_request("GET", target, headers=headers)
            response = await self._client.send(request, stream=True)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    permanent = permanent and response.status_code in _PERMANENT
                    target = self._redirect_target(response.url, location, url)
                    continue
                return await self._finish(url, response, hops > 0 and permanent, started)
            finally:
                await response.aclose()
        raise FetchError(f"too many redirects (more than {self.policy.max_redirects})", url)

    def _redirect_target(self, base: httpx.URL, location: str, url: str) -> httpx.URL:
        try:
            target = base.join(location.strip())
        except httpx.InvalidURL as e:
            raise FetchError(f"redirect to an invalid URL {_one_line(location, 120)!r}: {e}", url) from e
        self._check_url(target, url)
        return target

    async def _finish(
        self, url: str, response: httpx.Response, permanent: bool, started: float
    ) -> FetchResult:
        status = response.status_code
        if status == 200:
            content = await self._read_body(response, url)
        elif status == 304:
            # h11 gives a 304 no body whatever its headers say; reading that end of message lets
            # the connection go back to the pool (closed unread, it was dropped: one new TCP
            # connection per unchanged feed).
            await response.aread()
            content = b""
        else:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = _one_line(response.reason_phrase, 60)
            message = f"HTTP {status} {reason}".rstrip()
            if retry_after is not None:
                message += f" (retry after {retry_after:.0f} s)"
            raise HTTPStatusError(message, url, status=status, retry_after=retry_after)
        final_url = str(response.url)
        return FetchResult(
            url=url,
            final_url=final_url,
            status=status,
            content=content,
            headers=tuple(response.headers.multi_items()),
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            permanent_redirect=final_url if permanent else None,
            elapsed=time.monotonic() - started,
            max_age=parse_max_age(
                response.headers.get("cache-control"),
                response.headers.get("expires"),
                response.headers.get("date"),
            ),
        )

    async def _read_body(self, response: httpx.Response, url: str) -> bytes:
        """The decoded body, refused as soon as it is known to exceed the cap."""
        cap = self.policy.max_body_bytes
        declared = response.headers.get("content-length", "").strip()
        if declared.isascii() and declared.isdigit() and int(declared) > cap:
            raise FetchError(f"response too large: {int(declared):,} bytes declared, limit {cap:,}", url)
        try:
            decoder = BoundedDecoder(response.headers.get_list("content-encoding", split_commas=True))
        except ValueError as e:
            raise FetchError(f"unsupported content encoding {_one_line(str(e), 40)}", url) from e
        body = io.BytesIO()
        size = wire = 0
        try:
            async for raw in response.aiter_raw():
                wire += len(raw)
                for piece in decoder.decode(raw):
                    size += len(piece)
                    if size > cap:
                        after = " after decompression" if decoder.encoded else ""
                        raise FetchError(f"response too large: more than {cap:,} bytes{after}", url)
                    body.write(piece)
        except zlib.error as e:
            raise FetchError(f"corrupt compressed body: {e}", url) from e
        if wire and not decoder.complete:
            raise FetchError("truncated compressed body", url)
        if size == 0:
            raise FetchError("empty response", url)
        return body.getvalue()

    @staticmethod
    def _describe(e: httpx.HTTPError) -> str:
        """One line a user understands for an httpx error."""
        # httpx often wraps an OSError with an empty message: show the first cause that says something.
        detail = _one_line(next((str(c) for c in _chain(e) if str(c)), type(e).__name__))
        if isinstance(e, httpx.ConnectError):
            if any(isinstance(c, ssl.SSLError) for c in _chain(e)):
                return f"TLS error: {detail}"
            return f"cannot connect: {detail}"
        if isinstance(e, httpx.RemoteProtocolError):
            if "buffer" in detail.lower() and "too long" in detail.lower():
                return "invalid response from server: response headers too large"
            return f"invalid response from server: {detail}"
        if isinstance(e, httpx.ReadError):
            return f"connection lost while reading the response: {detail}"
        if isinstance(e, httpx.WriteError):
            return f"connection lost while sending the request: {detail}"
        if isinstance(e, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return f"invalid URL: {detail}"
        return f"request failed: {detail}"


def _with_validators(result: FetchResult, etag: str | None, last_modified: str | None) -> FetchResult:
    """A 304 may omit the validators; keep the ones we sent so callers do not lose them."""
    return dataclasses.replace(
        result, etag=result.etag or etag, last_modified=result.last_modified or last_modified
    )
