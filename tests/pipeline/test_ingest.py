"""The orchestrator: scheduling decisions (pure) and one feed through a real local server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from ingestd.exceptions import StorageError, WorkerError
from ingestd.models import FeedToPoll, FeedUpdate, IngestResult
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.pipeline.ingest import Ingestor, PollPolicy, next_poll_after_error, next_poll_after_success
from ingestd.pipeline.process import posting_gap, process_document
from ingestd.pipeline.worker import WorkerPool
from ingestd.store import Store, open_store
from tests.feedserver import FeedServer, serve
from tests.workerpools import WorkersThatCannotStart

POLICY = PollPolicy(default_interval=1800, min_interval=300, max_interval=86400, jitter=0.0)
RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>T</title><link>http://127.0.0.1/</link>
{items}</channel></rss>"""
ITEM = (
    "<item><title>Post {n}</title><link>http://127.0.0.1/p/{n}</link><guid>g{n}</guid>"
    "<pubDate>{date}</pubDate><description>&lt;p&gt;Body {n}&lt;/p&gt;</description></item>"
)


def _rss(n: int, hours_apart: float = 24.0) -> bytes:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    items = "".join(
        ITEM.format(
            n=i, date=(start + timedelta(hours=hours_apart * i)).strftime("%a, %d %b %Y %H:%M:%S +0000")
        )
        for i in range(n)
    )
    return RSS.format(items=items).encode()


def test_interval_follows_feed_setting_then_posting_gap_then_default() -> None:
    feed = FeedToPoll(id=1, url="http://x/")
    assert next_poll_after_success(feed, POLICY) == 1800
    assert next_poll_after_success(feed, POLICY, gap=7 * 86400) == 86400  # capped by max_interval
    assert next_poll_after_success(feed, POLICY, gap=120) == 300  # floored by min_interval
    assert next_poll_after_success(feed, POLICY, gap=4 * 3600) == 2 * 3600
    assert next_poll_after_success(feed, POLICY, ttl=7200) == 7200
    assert next_poll_after_success(feed, POLICY, max_age=3600) == 3600
    own = FeedToPoll(id=1, url="http://x/", interval_seconds=600)
    assert next_poll_after_success(own, POLICY, gap=7 * 86400) == 600


def test_backoff_is_exponential_capped_and_honours_retry_after() -> None:
    delays = [next_poll_after_error(n, POLICY) for n in range(12)]
    assert delays[0] == 300
    assert delays[1] == 600
    assert delays == sorted(delays)
    assert max(delays) == 86400  # a broken feed is still retried daily
    assert next_poll_after_error(0, POLICY, retry_after=7200) == 7200
    assert next_poll_after_error(0, POLICY, retry_after=10**11) == 86400


def test_posting_gap_is_the_median_of_the_newest() -> None:
    t = datetime(2024, 1, 1, tzinfo=UTC)
    assert posting_gap([t, t + timedelta(hours=1)]) is None
    assert posting_gap([t + timedelta(hours=h) for h in (0, 1, 2, 10)]) == 3600


def test_process_document_skips_known_entries_and_repeated_guids() -> None:
    doc = _rss(3)
    first = process_document(doc, url="http://127.0.0.1/f", headers={}, known={}, max_entries=100)
    assert [a.title for a, _k in first.items] == ["Post 0", "Post 1", "Post 2"]
    known = {k.guid_key: k.entry_hash for _a, k in first.items}
    again = process_document(doc, url="http://127.0.0.1/f", headers={}, known=known, max_entries=100)
    assert again.items == ()
    assert again.unchanged == 3
    assert first.posting_gap == 86400
    # The same entry twice in a document is processed once; a guid reused for another
    # link goes on to the store, which recognises reused guids.
    twice = doc.replace(
        b"</channel>",
        _rss(1).split(b"<link>http://127.0.0.1/</link>")[1].split(b"</channel>")[0] + b"</channel>",
    )
    assert len(process_document(twice, url="http://x/", headers={}, known={}, max_entries=100).items) == 3
    reused = doc.replace(b"<guid>g1</guid>", b"<guid>g0</guid>")
    assert len(process_document(reused, url="http://x/", headers={}, known={}, max_entries=100).items) == 3


class _TooMany(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(429)
        self.send_header("Retry-After", "3600")
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextlib.asynccontextmanager
async def _ingestor(
    store: Store, server: FeedServer, pool: WorkerPool | None = None
) -> AsyncIterator[Ingestor]:
    """An Ingestor on ``store`` allowed to fetch from ``server``; closed, with its pool, on exit."""
    pool = pool or WorkerPool(1)
    async with Fetcher(FetchPolicy(allowed_hosts=(f"127.0.0.1:{server.port}",), timeout=10)) as fetcher:
        ing = Ingestor(store, fetcher, pool, POLICY)
        try:
            yield ing
        finally:
            ing.close()
            pool.close()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:///{tmp_path / 'db'}")
    yield s
    s.close()


def test_retry_after_pauses_every_feed_of_the_host(store: Store) -> None:
    with serve(FeedServer()) as server:
        server.handlers["busy.xml"] = lambda h: _TooMany.do_GET(h)  # type: ignore[arg-type]
        server.files["a.xml"] = _rss(2)
        server.files["gone.xml"] = b""
        busy, _ = store.add_feed(server.url("busy.xml"))
        other, _ = store.add_feed(server.url("a.xml"))

        async def run() -> list[str]:
            async with _ingestor(store, server) as ing:
                r1 = await ing.ingest_feed(FeedToPoll(id=busy, url=server.url("busy.xml")))
                r2 = await ing.ingest_feed(FeedToPoll(id=other, url=server.url("a.xml")))
            return [r1.outcome, r2.outcome, r2.error or ""]

        outcomes = asyncio.run(run())
    assert outcomes[:2] == ["deferred", "deferred"]
    assert "asked for a pause" in outcomes[2]
    assert [h.path for h in server.hits] == []  # a.xml was never requested
    feed = store.find_feed(other)
    assert feed is not None
    assert feed.next_poll_at is not None
    assert feed.next_poll_at >= datetime.now(UTC) + timedelta(minutes=59)


PAGE = """<!doctype html><html><head><title>Post {n}</title></head><body>
<nav><a href="/">Home</a> <a href="/about">About</a> <a href="/archive">Archive</a></nav>
<article><h1>Post {n}</h1>
<p>The full story number {n} begins here with a paragraph that is long enough to be the article body,
and it keeps going for a while so that an extractor sees real prose rather than navigation links.</p>
<p>A second paragraph of story {n} adds more detail about the subject, with several sentences of text.
It explains what happened, who was there and why it matters to the people who read this blog.</p>
<p>The third paragraph closes story {n} with a conclusion and a thank-you to the readers of the blog.</p>
</article>
<footer>Copyright 2024 - Subscribe to our newsletter - Share on social media</footer></body></html>"""


def test_full_text_feed_takes_the_article_page(store: Store) -> None:
    with serve(FeedServer()) as server:
        items = "".join(
            f"<item><title>Post {n}</title><link>{server.url(f'post/{n}.html')}</link><guid>g{n}</guid>"
            f"<description>Teaser {n} [&#8230;]</description></item>"
            for n in range(2)
        )
        server.files["feed.xml"] = RSS.format(items=items).encode()
        for n in range(2):
            server.files[f"post/{n}.html"] = PAGE.format(n=n).encode()
        feed_id, _ = store.add_feed(server.url("feed.xml"), full_text=True)

        async def run() -> None:
            async with _ingestor(store, server) as ing:
                (feed,) = store.claim(limit=1, lease_seconds=60, ids=[feed_id])
                await ing.ingest_feed(feed)

        asyncio.run(run())
    rows = store.list_articles(newest_first=False)
    assert [r["body_source"] for r in rows] == ["page", "page"]
    assert "second paragraph of story 1" in rows[1]["content_text"]
    assert "Subscribe to our newsletter" not in rows[1]["content_text"]
    assert rows[1]["summary"].startswith("Teaser 1")


def _unchanged_feeds(store: Store, server: FeedServer, count: int) -> list[FeedToPoll]:
    """Feeds polled once (articles stored), so that the next poll of each is answered 304."""
    names = [f"u{i}.xml" for i in range(count)]
    for name in names:
        server.files[name] = _rss(2)
    ids = [store.add_feed(server.url(name))[0] for name in names]
    first = [FeedToPoll(id=i, url=server.url(n)) for i, n in zip(ids, names, strict=True)]

    async def run() -> None:
        async with _ingestor(store, server) as ing:
            assert {r.outcome for r in await ing.poll(first, 4)} == {"new"}

    asyncio.run(run())
    feeds = []
    for feed in first:
        info = store.find_feed(feed.id)
        assert info is not None
        assert info.etag
        feeds.append(FeedToPoll(id=feed.id, url=feed.url, etag=info.etag, last_modified=info.last_modified))
    return feeds


def test_polls_without_articles_queued_behind_a_busy_writer_share_one_transaction(store: Store) -> None:
    with serve(FeedServer()) as server:
        feeds = _unchanged_feeds(store, server, 6)
        batches: list[list[int]] = []
        writer_free = threading.Event()
        save = store.save_feed_states

        def slow_first(updates: Sequence[tuple[int, FeedUpdate]]) -> None:
            batches.append([feed_id for feed_id, _ in updates])
            if len(batches) == 1:  # the writer is busy with this batch until the test says so
                writer_free.wait(30)
            save(updates)

        store.save_feed_states = slow_first  # type: ignore[method-assign]

        async def run() -> list[str]:
            async with _ingestor(store, server) as ing:
                try:
                    polls = asyncio.ensure_future(ing.poll(feeds, 6))
                    for _ in range(3000):  # until every 304 is either being written or queued
                        if batches and len(batches[0]) + len(ing._feed_states) == len(feeds):
                            break
                        await asyncio.sleep(0.01)
                    writer_free.set()
                    return [r.outcome for r in await polls]
                finally:
                    writer_free.set()

        outcomes = asyncio.run(run())
    assert outcomes == ["not_modified"] * len(feeds)
    # Whatever queued behind the busy writer went in one more transaction, not one each.
    assert len(batches) <= 2
    assert sorted(i for b in batches for i in b) == sorted(f.id for f in feeds)
    with store.engine.connect() as conn:
        logged = dict(
            conn.exec_driver_sql(
                "SELECT feed_id, count(*) FROM fetch_log WHERE outcome = 'not_modified' GROUP BY feed_id"
            ).all()
        )
    assert logged == {f.id: 1 for f in feeds}


def test_a_failed_batch_of_feed_states_fails_every_poll_in_it(store: Store) -> None:
    with serve(FeedServer()) as server:
        feeds = _unchanged_feeds(store, server, 3)

        def broken(updates: Sequence[tuple[int, FeedUpdate]]) -> None:
            raise StorageError("database error: disk I/O error")

        store.save_feed_states = broken  # type: ignore[method-assign]

        async def run() -> list[BaseException | IngestResult]:
            async with _ingestor(store, server) as ing:
                return list(
                    await asyncio.gather(*(ing.ingest_feed(f) for f in feeds), return_exceptions=True)
                )

        results = asyncio.run(run())
    assert len(results) == len(feeds)
    assert all(isinstance(r, StorageError) for r in results), results


def test_workers_that_cannot_run_stop_the_poll_and_blame_no_feed(store: Store) -> None:
    """A broken worker pool is the machine's fault: no feed gets an error, a backoff or a log row."""
    with serve(FeedServer()) as server:
        server.files["w.xml"] = _rss(2)
        fid, _ = store.add_feed(server.url("w.xml"))

        async def run() -> None:
            async with _ingestor(store, server, WorkersThatCannotStart(1)) as ing:
                await ing.poll([FeedToPoll(id=fid, url=server.url("w.xml"))], 1)

        with pytest.raises(WorkerError, match="cannot run any task"):
            asyncio.run(run())
    info = store.find_feed(fid)
    assert info is not None
    assert (info.status, info.error_count, info.last_error) == ("active", 0, None)
    assert store.count_articles() == 0
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM fetch_log").scalar() == 0


def test_results_carry_the_http_status_and_the_body_size(store: Store) -> None:
    with serve(FeedServer()) as server:
        body = _rss(2)
        server.files["n.xml"] = body
        new, _ = store.add_feed(server.url("n.xml"))
        missing, _ = store.add_feed(server.url("missing.xml"))

        async def run() -> list[IngestResult]:
            async with _ingestor(store, server) as ing:
                first = await ing.poll(
                    [
                        FeedToPoll(id=new, url=server.url("n.xml")),
                        FeedToPoll(id=missing, url=server.url("missing.xml")),
                    ],
                    2,
                )
                info = store.find_feed(new)
                assert info is not None
                again = FeedToPoll(
                    id=new, url=server.url("n.xml"), etag=info.etag, last_modified=info.last_modified
                )
                return [*first, *(await ing.poll([again], 1))]

        results = asyncio.run(run())
    assert [(r.outcome, r.http_status, r.bytes) for r in results] == [
        ("new", 200, len(body)),
        ("error", 404, 0),
        ("not_modified", 304, 0),
    ]


def test_a_hosts_pause_outlives_the_poll_that_learned_it(store: Store) -> None:
    """Retry-After holds for the host's feeds not polled yet, in the database: a later run (the
    daemon after a restart, the next `ingestd poll`) finds them not due; other hosts are untouched."""
    with serve(FeedServer()) as server:
        server.handlers["busy.xml"] = lambda h: _TooMany.do_GET(h)  # type: ignore[arg-type]
        server.files["later.xml"] = _rss(2)
        busy, _ = store.add_feed(server.url("busy.xml"))
        later, _ = store.add_feed(server.url("later.xml"))
        elsewhere, _ = store.add_feed(f"http://localhost:{server.port}/elsewhere.xml")

        async def run() -> IngestResult:
            async with _ingestor(store, server) as ing:
                return await ing.ingest_feed(FeedToPoll(id=busy, url=server.url("busy.xml")))

        started = datetime.now(UTC)
        result = asyncio.run(run())
    assert (result.outcome, result.http_status) == ("deferred", 429)
    due = {f.id for f in store.claim(limit=10, lease_seconds=60, due_only=True)}
    assert due == {elsewhere}  # the paused host's other feed is not due, the other host's is
    info = store.find_feed(later)
    assert info is not None
    assert info.next_poll_at is not None
    assert info.next_poll_at >= started + timedelta(minutes=59)
