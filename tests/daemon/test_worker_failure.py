"""The daemon outlives a worker pool that cannot run, and blames no feed for it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ingestd.config import Settings, load_settings
from ingestd.daemon.metrics import Metrics
from ingestd.daemon.scheduler import Ticker
from ingestd.daemon.systemd import Notifier
from ingestd.models import FeedToPoll
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.pipeline.ingest import Ingestor, PollPolicy
from ingestd.store import open_store
from tests.feedserver import FeedServer, serve
from tests.workerpools import WorkersThatCannotStart

RSS = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>http://127.0.0.1/</link>'
    b"<item><title>One</title><link>http://127.0.0.1/p/1</link><guid>g1</guid></item></channel></rss>"
)


def test_a_poll_on_a_broken_worker_pool_is_logged_and_the_feed_left_as_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with serve(FeedServer()) as server:
        server.files["f.xml"] = RSS
        policy = FetchPolicy(allowed_hosts=(f"127.0.0.1:{server.port}",), timeout=10)
        fid = 0

        async def run() -> None:
            nonlocal fid
            pool = WorkersThatCannotStart(1)
            async with Fetcher(policy) as fetcher:
                ing = Ingestor(store, fetcher, pool, PollPolicy())
                ticker = Ticker(Settings(), store, ing, Notifier(environ={}), Metrics())
                try:
                    await ticker.tick()  # nothing due yet
                    assert ticker.healthy()
                    fid, _ = store.add_feed(server.url("f.xml"))
                    await ticker._poll(FeedToPoll(id=fid, url=server.url("f.xml")), asyncio.Semaphore(1))
                    # Until the pool's retry time: unhealthy (no watchdog ping), and a tick claims
                    # nothing, so the due feed is not fetched only to fail.
                    assert not pool.usable
                    hits = len(server.hits)
                    await ticker.tick()
                    await asyncio.sleep(0.2)
                    assert not ticker.inflight
                    assert len(server.hits) == hits
                    assert not ticker.healthy()
                finally:
                    ing.close()
                    pool.close()

        with caplog.at_level(logging.ERROR, logger="ingestd.scheduler"):
            asyncio.run(run())
    messages = [r.getMessage() for r in caplog.records]
    assert any("poll not done" in m and "cannot run any task" in m for m in messages), messages
    info = store.find_feed(fid)
    assert info is not None
    assert (info.status, info.error_count, info.last_error) == ("active", 0, None)
    assert [f.id for f in store.claim(limit=10, lease_seconds=60)] == [fid]  # no lease was taken
    store.close()


def test_poll_once_stops_at_a_broken_worker_pool_with_one_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ingestd poll` on workers that cannot start: one WorkerError, no feed blamed, no traceback
    per feed from asyncio's shutdown, and the other feeds are not tried one by one."""
    from ingestd.daemon import service
    from ingestd.exceptions import WorkerError

    monkeypatch.setattr(service, "WorkerPool", lambda: WorkersThatCannotStart(1))
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with serve(FeedServer()) as server:
        ids = []
        for i in range(8):
            server.files[f"f{i}.xml"] = RSS
            ids.append(store.add_feed(server.url(f"f{i}.xml"))[0])
        settings = load_settings(
            None,
            environ={
                "INGESTD_FETCH_ALLOWED_HOSTS": f"127.0.0.1:{server.port}",
                "INGESTD_FETCH_CONCURRENCY": "4",
            },
        )
        with caplog.at_level(logging.ERROR), pytest.raises(WorkerError, match="cannot run any task"):
            service.poll_once(settings, store, all_feeds=True)
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "unhandled exception" in m or "never retrieved" in m], messages
    probes = [m for m in messages if "cannot run a trivial task" in m]
    assert len(probes) == 1, messages  # one probe: the other polls fail fast, or are stopped
    for fid in ids:
        info = store.find_feed(fid)
        assert info is not None
        assert (info.status, info.error_count, info.last_error) == ("active", 0, None)
    store.close()
