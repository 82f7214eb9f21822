"""The fetch stage against ../shared/hostile/hostile_server.py (loopback only).

The Fetcher allow-lists only the main port; the SSRF canary on the second port
must never see a request. Host names are resolved by a stub (``localhost`` only),
so no DNS query leaves the machine either.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ingestd.exceptions import FetchError, HTTPStatusError
from ingestd.models import FetchResult
from ingestd.pipeline.fetch import MAX_RETRY_AFTER, Fetcher, FetchPolicy
from ingestd.pipeline.netguard import GuardRefusal
from tests.hostile import OFF_LIMITS_VARIANTS

pytestmark = [pytest.mark.integration, pytest.mark.shared, pytest.mark.slow]

T = TypeVar("T")
CAP = 2_000_000


@dataclass(frozen=True)
class Hostile:
    base: str
    port: int
    canary: str
    canary_port: int

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/__stats", timeout=5) as answer:
            data: dict[str, Any] = json.load(answer)
        return data


@pytest.fixture(scope="module")
def hostile(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    port_file = tmp_path_factory.mktemp("hostile") / "p.json"
    script = shared_dir / "hostile" / "hostile_server.py"
    args = [
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--max-seconds",
        "300",
        "--slow-cap",
        "30",
        "--quiet",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        info: dict[str, Any] | None = None
        while info is None:
            if proc.poll() is not None:
                pytest.fail(f"hostile_server exited early with status {proc.returncode}")
            if time.monotonic() > deadline:
                pytest.fail("hostile_server did not write its port file within 20 s")
            try:
                info = json.loads(port_file.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
        yield Hostile(info["base"], info["port"], info["canary"], info["canary_port"])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _localhost_only(host: str, port: int) -> list[str]:
    """A resolver that knows only localhost: nothing here may ask a real DNS server."""
    if host == "localhost":
        return ["127.0.0.1", "::1"]
    raise OSError(-2, "Name or service not known (test resolver)")


def _policy(h: Hostile, **kw: Any) -> FetchPolicy:
    kw.setdefault("timeout", 10)
    return FetchPolicy(
        allowed_hosts=(f"127.0.0.1:{h.port}",),
        max_body_bytes=CAP,
        per_host_concurrency=32,
        concurrency=32,
        **kw,
    )


async def _outcomes(h: Hostile, paths: list[str], policy: FetchPolicy) -> dict[str, FetchResult | FetchError]:
    """Fetch all paths concurrently through one Fetcher; errors are returned, not raised."""

    async def one(f: Fetcher, path: str) -> FetchResult | FetchError:
        try:
            return await f.get(path if "://" in path else h.base + path)
        except FetchError as e:
            return e

    async with Fetcher(policy, resolver=_localhost_only) as f:
        results = await asyncio.gather(*(one(f, p) for p in paths))
    return dict(zip(paths, results, strict=True))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _error(outcome: FetchResult | FetchError, pattern: str) -> FetchError:
    assert isinstance(outcome, FetchError), f"expected an error matching {pattern!r}, got {outcome!r}"
    assert re.search(pattern, str(outcome)), f"{str(outcome)!r} does not match {pattern!r}"
    assert "\n" not in str(outcome)
    return outcome


def test_network_faults(hostile: Hostile) -> None:
    slow = ["/slowloris", "/slow-headers", "/stall"]
    broken = ["/reset", "/truncated", "/truncated-chunked", "/garbage-response", "/huge-headers"]
    started = time.monotonic()
    out = run(_outcomes(hostile, slow + broken, _policy(hostile, timeout=3)))
    elapsed = time.monotonic() - started
    for path in slow:
        _error(out[path], r"^timed out after 3 s$")
    _error(out["/reset"], r"connection lost|invalid response|reset")
    _error(out["/truncated"], r"invalid response from server: .*complete message body")
    _error(out["/truncated-chunked"], r"invalid response from server: .*incomplete chunked read")
    _error(out["/garbage-response"], r"invalid response from server: illegal status line")
    _error(out["/huge-headers"], r"invalid response from server: response headers too large")
    assert elapsed < 10, f"the slow endpoints took {elapsed:.1f} s with a 3 s deadline"


def test_size_limits_and_compression_bombs(hostile: Hostile) -> None:
    paths = ["/huge", "/huge-content-length", "/gzip-bomb", "/deflate-bomb", "/gzip-bomb-nested"]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    try:
        for path in paths:  # one at a time, so the peak is one body's worth
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            out = run(_outcomes(hostile, [path], _policy(hostile)))
            peak = tracemalloc.get_traced_memory()[1] - base
            if path == "/huge-content-length":
                _error(out[path], r"response too large: 2,147,483,648 bytes declared, limit 2,000,000")
            elif path == "/huge":
                _error(out[path], r"^response too large: more than 2,000,000 bytes$")
            else:
                _error(out[path], r"^response too large: more than 2,000,000 bytes after decompression$")
            assert peak < CAP + 8 * 1024 * 1024, f"{path}: peak {peak:,} bytes traced"
    finally:
        tracemalloc.stop()
    rss_growth_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert rss_growth_mib < 100, f"peak RSS grew by {rss_growth_mib:.0f} MiB"
    out = run(_outcomes(hostile, ["/brotli-bomb", "/zstd-bomb"], _policy(hostile)))
    _error(out["/brotli-bomb"], r"^unsupported content encoding br$")
    _error(out["/zstd-bomb"], r"^unsupported content encoding zstd$")
    stats = hostile.stats()["paths"]
    assert stats["/huge-content-length"]["bytes_out"] < 64 * 1024 * 1024  # refused from the header


def test_redirects(hostile: Hostile) -> None:
    paths = [
        "/redirect-loop",
        "/redirect-chain?n=3",
        "/redirect-chain?n=10",
        "/301-permanent",
        "/302-temporary",
    ]
    out = run(_outcomes(hostile, paths, _policy(hostile)))
    _error(out["/redirect-loop"], r"^too many redirects \(more than 5\)$")
    _error(out["/redirect-chain?n=10"], r"^too many redirects")
    chain = out["/redirect-chain?n=3"]
    assert isinstance(chain, FetchResult)
    assert chain.final_url == f"{hostile.base}/ok/rss.xml"
    assert chain.permanent_redirect is None
    assert b"<rss" in chain.content
    permanent = out["/301-permanent"]
    assert isinstance(permanent, FetchResult)
    assert permanent.permanent_redirect == f"{hostile.base}/ok/rss.xml"
    temporary = out["/302-temporary"]
    assert isinstance(temporary, FetchResult)
    assert temporary.final_url == f"{hostile.base}/ok/rss.xml"
    assert temporary.permanent_redirect is None


def test_redirects_to_private_targets_are_refused(hostile: Hostile) -> None:
    paths = [f"/redirect-to-private/{v}" for v in OFF_LIMITS_VARIANTS]
    paths += [
        f"/redirect-to-private/{v}?code={c}" for v in ("loopback", "decimal") for c in (301, 303, 307, 308)
    ]
    direct = [f"{hostile.canary}/feed", f"http://localhost:{hostile.canary_port}/feed"]
    out = run(_outcomes(hostile, [*paths, *direct, "/redirect-to-private/same-port"], _policy(hostile)))
    for path in [*paths, *direct]:
        outcome = out[path]
        if path.endswith("/octal"):  # httpx cannot even parse http://0177.0.0.1/ as a URL
            _error(outcome, r"invalid|refused")
        else:
            assert isinstance(_error(outcome, r"^refused: "), GuardRefusal)
    _error(out["/redirect-to-private/ipv4-mapped"], r"IPv4-mapped form of 127\.0\.0\.1")
    _error(out["/redirect-to-private/file"], r"file URLs are not fetched")
    allowed = out["/redirect-to-private/same-port"]  # the harness allow-lists the main port
    assert isinstance(allowed, FetchResult)
    assert allowed.status == 200
    assert hostile.stats()["canary"]["total"] == 0

    # The same targets with the default policy (no allow-list): even the main port is refused.
    strict = run(_outcomes(hostile, ["/ok/rss.xml"], FetchPolicy(timeout=5)))
    _error(strict["/ok/rss.xml"], r"^refused: 127\.0\.0\.1 is a loopback address$")


def test_statuses(hostile: Hostile) -> None:
    paths = [
        "/empty-200",
        "/429",
        "/503-retry-after-date",
        "/retry-after-huge",
        "/retry-after-garbage",
        "/410",
    ]
    out = run(_outcomes(hostile, paths, _policy(hostile)))
    _error(out["/empty-200"], r"^empty response$")
    expected: dict[str, tuple[int, float | None]] = {
        "/429": (429, 120.0),
        "/retry-after-huge": (503, float(MAX_RETRY_AFTER)),
        "/retry-after-garbage": (429, None),
        "/410": (410, None),
    }
    for path, (status, retry_after) in expected.items():
        error = out[path]
        assert isinstance(error, HTTPStatusError), path
        assert (error.status, error.retry_after) == (status, retry_after), path
    dated = out["/503-retry-after-date"]
    assert isinstance(dated, HTTPStatusError)
    assert dated.status == 503
    assert dated.retry_after is not None
    assert 280 <= dated.retry_after <= 301


def test_caching(hostile: Hostile) -> None:
    async def go() -> tuple[FetchResult, FetchResult, FetchResult]:
        async with Fetcher(_policy(hostile), resolver=_localhost_only) as f:
            first = await f.get(f"{hostile.base}/etag")
            second = await f.get(f"{hostile.base}/etag", etag=first.etag, last_modified=first.last_modified)
            unconditional = await f.get(f"{hostile.base}/304-unconditional")
            return first, second, unconditional

    first, second, unconditional = run(go())
    assert first.status == 200
    assert first.etag == '"hostile-v1"'
    assert first.last_modified
    assert second.status == 304
    assert second.not_modified
    assert second.etag == '"hostile-v1"'
    assert unconditional.status == 304
    assert unconditional.content == b""
    assert hostile.stats()["paths"]["/etag"]["conditional"] >= 1


def test_canary_never_reached(hostile: Hostile) -> None:
    """Last in the module: nothing above reached the SSRF canary."""
    assert hostile.stats()["canary"]["total"] == 0
