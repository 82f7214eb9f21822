"""The daemon outlives a worker pool that cannot run, and blames no feed for it."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from ingestd.config import Settings
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
        fid, _ = store.add_feed(server.url("f.xml"))
        policy = FetchPolicy(allowed_hosts=(f"127.0.0.1:{server.port}",), timeout=10)

        async def run() -> None:
            pool = WorkersThatCannotStart(1)
            async with Fetcher(policy) as fetcher:
                ing = Ingestor(store, fetcher, pool, PollPolicy())
                ticker = Ticker(Settings(), store, ing, Notifier(environ={}), Metrics())
                try:
                    await ticker._poll(FeedToPoll(id=fid, url=server.url("f.xml")), asyncio.Semaphore(1))
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
    store.close()
