"""/healthz and /metrics served in-process on 127.0.0.1, with a fake health signal."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingestd.daemon.http import MetricsServer, parse_listen
from ingestd.daemon.metrics import Metrics
from ingestd.exceptions import ConfigError
from ingestd.models import IngestResult
from ingestd.store.stats import Snapshot
from tests.daemon.helpers import free_port


async def _request(port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_healthz_follows_health_and_metrics_parse() -> None:
    healthy = [True]
    metrics = Metrics()
    metrics.observe(IngestResult(1, "u", "new", new=3, merged=1, elapsed=0.2, http_status=200, bytes=1234))
    metrics.observe(IngestResult(2, "u", "not_modified", elapsed=0.1, http_status=304))
    metrics.observe(IngestResult(3, "u", "error", error="boom", elapsed=0.1, http_status=500, bytes=99))
    now = datetime.now(UTC)
    metrics.update_snapshot(Snapshot(now, {"active": 2, "failing": 1}, 1, 3, now, {1: now, 2: now}))
    port = free_port()

    async def scenario() -> dict[str, bytes | int]:
        server = MetricsServer(f"127.0.0.1:{port}", metrics, lambda: healthy[0])
        await server.start()
        try:
            out: dict[str, bytes | int] = {}
            out["ok"] = (await _request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))[0]
            healthy[0] = False
            out["bad"] = (await _request(port, b"GET /healthz HTTP/1.1\r\n\r\n"))[0]
            out["missing"] = (await _request(port, b"GET /other HTTP/1.1\r\n\r\n"))[0]
            out["post"] = (await _request(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0]
            out["garbage"] = (await _request(port, b"\x00\x01\r\n\r\n"))[0]
            out["head"] = len((await _request(port, b"HEAD /metrics HTTP/1.0\r\n\r\n"))[1])
            out["metrics"] = (await _request(port, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"))[1]
            return out
        finally:
            await server.close()

    out = asyncio.run(scenario())
    assert (out["ok"], out["bad"], out["missing"], out["post"], out["garbage"]) == (200, 503, 404, 405, 400)
    assert out["head"] == 0
    text = out["metrics"]
    assert isinstance(text, bytes)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }
    assert samples[("ingestd_polls_total", (("outcome", "new"),))] == 1
    assert (
        samples[("ingestd_polls_total", (("outcome", "gone"),))] == 0
    )  # every outcome exists from the start
    assert samples[("ingestd_articles_stored_total", ())] == 3
    assert samples[("ingestd_duplicates_merged_total", ())] == 1
    assert samples[("ingestd_not_modified_ratio", ())] == 0.5
    assert samples[("ingestd_fetch_bytes_count", ())] == 2
    assert samples[("ingestd_fetch_bytes_sum", ())] == 1234
    assert samples[("ingestd_feeds", (("status", "failing"),))] == 1
    assert samples[("ingestd_feeds", (("status", "gone"),))] == 0
    assert samples[("ingestd_articles", ())] == 3
    assert samples[("ingestd_feed_last_success_timestamp_seconds", (("feed_id", "2"),))] == now.timestamp()


def test_metrics_registries_are_private() -> None:
    a, b = Metrics(), Metrics()
    a.articles_stored.inc(5)
    assert b"ingestd_articles_stored_total 0.0" in b.render()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("[::1]:80", ("::1", 80)), ("localhost:1", ("localhost", 1))],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["9464", "host:", ":9464", "h:70000", "[::1:80", "h:x"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="metrics_listen"):
        parse_listen(value)


def test_a_taken_port_is_a_clear_error() -> None:
    port = free_port()

    async def scenario() -> None:
        first = MetricsServer(f"127.0.0.1:{port}", Metrics(), lambda: True)
        await first.start()
        try:
            second = MetricsServer(f"127.0.0.1:{port}", Metrics(), lambda: True)
            with pytest.raises(ConfigError, match="cannot listen"):
                await second.start()
        finally:
            await first.close()

    asyncio.run(scenario())
