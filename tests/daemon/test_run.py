"""`ingestd run` as a real subprocess: systemd protocol, metrics, logs, reload, graceful and forced stop."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.error import HTTPError, URLError

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon.helpers import (
    NotifySocket,
    count,
    daemon,
    free_port,
    ingestd,
    make_env,
    query,
    rss,
    wait_for,
)
from tests.feedserver import FeedServer, serve

pytestmark = pytest.mark.integration


def test_daemon_lifecycle_under_systemd_protocol(tmp_path: Path) -> None:
    with serve(FeedServer()) as server:
        server.files["a.xml"] = rss("a", 5)
        server.files["b.xml"] = rss("b", 3)
        env, db = make_env(tmp_path, server.port, 'tick = "0.5s"\ngrace = "10s"')
        ingestd(env, "feeds", "add", server.url("a.xml"), server.url("b.xml"))
        notify = NotifySocket(tmp_path / "notify.sock")
        env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
        log = tmp_path / "stderr.log"
        try:
            with daemon(env, log) as proc:
                wait_for(lambda: "READY=1" in notify.drain(), 60, "READY=1")
                wait_for(lambda: count(db, "SELECT COUNT(*) FROM articles") == 8, 60, "8 articles")
                wait_for(lambda: notify.count("WATCHDOG=1") >= 2, 10, "two WATCHDOG=1")
                assert any(m.startswith("STATUS=") and "articles" in m for m in notify.drain())
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(timeout=30)
                elapsed = time.monotonic() - started
            messages = notify.drain()
        finally:
            notify.close()
    stderr = log.read_text()
    assert code == 0, stderr
    assert elapsed < 10
    assert "STOPPING=1" in messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")
    assert "ingestd running" in stderr
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    assert count(db, "SELECT COUNT(*) FROM feeds WHERE lease_until IS NOT NULL") == 0


_NO_PROXY = urllib.request.build_opener(
    urllib.request.ProxyHandler({})
)  # 127.0.0.1 directly, whatever the env


def _get(url: str) -> tuple[int, str]:
    """(status, body); status 0 while nothing listens yet."""
    try:
        with _NO_PROXY.open(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except HTTPError as e:
        with e:
            return e.code, e.read().decode()
    except URLError:
        return 0, ""


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_metrics_agree_with_the_database_json_logs_and_reload(tmp_path: Path) -> None:
    port = free_port()
    with serve(FeedServer()) as server:
        for i in range(6):
            server.files[f"f{i}.xml"] = rss(f"f{i}", 4 + i)
        server.files["dup.xml"] = rss("f0", 2)  # the same two stories as f0: merged, not stored twice
        env, db = make_env(tmp_path, server.port, f'tick = "0.2s"\nmetrics_listen = "127.0.0.1:{port}"')
        ingestd(env, "feeds", "add", *[server.url(f"f{i}.xml") for i in range(6)], server.url("dup.xml"))
        ingestd(env, "feeds", "add", "http://127.0.0.1:1/refused.xml")  # outside allowed_hosts: an error
        expected = sum(4 + i for i in range(6))
        log = tmp_path / "stderr.log"
        with daemon(env, log, "--log-format", "json") as proc:
            wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, 60, "/healthz 200")
            wait_for(lambda: count(db, "SELECT COUNT(*) FROM fetch_log") >= 8, 60, "eight polls")
            # Gauges from the database refresh every 5 s; counters at once.
            wait_for(
                lambda: f"ingestd_articles {expected}.0" in _get(f"http://127.0.0.1:{port}/metrics")[1],
                30,
                "gauge",
            )
            status, text = _get(f"http://127.0.0.1:{port}/metrics")
            assert status == 200
            m = _samples(text)
            assert (
                m[("ingestd_articles_stored_total", ())]
                == count(db, "SELECT COUNT(*) FROM articles")
                == expected
            )
            assert m[("ingestd_duplicates_merged_total", ())] == 2
            polls = sum(v for (name, _l), v in m.items() if name == "ingestd_polls_total")
            assert polls == count(db, "SELECT COUNT(*) FROM fetch_log") == 8
            assert m[("ingestd_polls_total", (("outcome", "new"),))] == 7
            assert m[("ingestd_polls_total", (("outcome", "error"),))] == 1
            assert m[("ingestd_feeds", (("status", "active"),))] == 7
            assert m[("ingestd_feeds", (("status", "failing"),))] == 1
            assert m[("ingestd_fetch_bytes_count", ())] == 7
            assert m[("ingestd_fetch_bytes_sum", ())] == count(db, "SELECT SUM(bytes) FROM fetch_log")
            assert m[("ingestd_poll_duration_seconds_count", ())] == 8
            last = {k[1][0][1] for k in m if k[0] == "ingestd_feed_last_success_timestamp_seconds"}
            assert last == {str(i) for i in range(1, 8)}
            assert m[("ingestd_not_modified_ratio", ())] == 0.0
            assert ("ingestd_tick_lag_seconds", ()) in m
            assert _get(f"http://127.0.0.1:{port}/nope")[0] == 404

            # SIGHUP: a broken file is refused and the daemon keeps running; a good one moves /metrics.
            config = Path(env["INGESTD_CONFIG"])
            good = config.read_text()
            config.write_text(good + "bogus = 1\n")
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "reload failed" in log.read_text(), 10, "reload refused")
            assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
            port2 = free_port()
            config.write_text(good.replace(str(port), str(port2)))
            proc.send_signal(signal.SIGHUP)
            wait_for(lambda: "configuration reloaded" in log.read_text(), 10, "reload")
            wait_for(
                lambda: _get(f"http://127.0.0.1:{port2}/healthz")[0] == 200, 10, "/healthz on the new port"
            )
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
    records = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    about_feeds = [r for r in records if "feed_id" in r]
    assert {r["feed_id"] for r in about_feeds} >= set(range(1, 9))
    assert all(r["feed_url"].startswith("http://127.0.0.1:") for r in about_feeds)
    assert any(r["level"] == "warning" and r["feed_id"] == 8 for r in records)


def test_sigterm_drains_within_grace_and_second_sigint_forces(tmp_path: Path) -> None:
    armed = threading.Event()  # `feeds add` fetches the URL too (autodiscovery): answer it at once
    fetching = threading.Event()
    release = threading.Event()

    def slow(handler: BaseHTTPRequestHandler) -> None:
        if armed.is_set():
            fetching.set()
            release.wait(30)
        body = rss("slow", 1)
        handler.send_response(200)
        handler.send_header("Content-Type", "application/rss+xml")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with serve(FeedServer(handlers={"slow.xml": slow})) as server:
        env, db = make_env(tmp_path, server.port, 'tick = "0.2s"\ngrace = "1.5s"')
        ingestd(env, "feeds", "add", server.url("slow.xml"))
        armed.set()
        log = tmp_path / "stderr.log"
        try:
            # SIGTERM: the stuck poll gets the grace period, is cancelled, and its lease is given back.
            with daemon(env, log) as proc:
                assert fetching.wait(60)
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
                assert 1.4 < time.monotonic() - started < 8
            assert count(db, "SELECT COUNT(*) FROM feeds WHERE lease_until IS NOT NULL") == 0
            assert count(db, "SELECT COUNT(*) FROM fetch_log") == 0  # rolled back: nothing half-recorded

            # A long grace, but a second SIGINT forces the exit now.
            fetching.clear()
            Path(env["INGESTD_CONFIG"]).write_text(
                Path(env["INGESTD_CONFIG"]).read_text().replace('grace = "1.5s"', 'grace = "60s"')
            )
            with daemon(env, log) as proc:
                assert fetching.wait(60)
                proc.send_signal(signal.SIGINT)
                time.sleep(0.5)
                assert proc.poll() is None, "the first SIGINT drains"
                started = time.monotonic()
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=30) == 0
                assert time.monotonic() - started < 8
        finally:
            release.set()
    assert "cancelled 1 poll(s)" in log.read_text()
    assert count(db, "SELECT COUNT(*) FROM feeds WHERE lease_until IS NOT NULL") == 0


def test_a_backlog_is_claimed_as_slots_free_not_tick_by_tick(tmp_path: Path) -> None:
    """40 due feeds, 4 claimed at a time, a 60 s tick: all are polled long before the next tick."""
    with serve(FeedServer()) as server:
        names = [f"f{i}.xml" for i in range(40)]
        for name in names:
            server.files[name] = rss(name.removesuffix(".xml"), 1)
        env, db = make_env(tmp_path, server.port, 'tick = "60s"\ngrace = "10s"')
        env["INGESTD_FETCH_CONCURRENCY"] = "2"  # claims 2 x 2 feeds at a time
        ingestd(env, "feeds", "add", "--no-discover", *(server.url(n) for n in names))
        log = tmp_path / "stderr.log"
        with daemon(env, log) as proc:
            wait_for(
                lambda: count(db, "SELECT COUNT(DISTINCT feed_id) FROM fetch_log") == 40,
                45,
                "every feed polled once",
            )
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
    assert count(db, "SELECT COUNT(*) FROM articles") == 40
