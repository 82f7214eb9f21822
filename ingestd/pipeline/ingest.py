"""The one place where the stages meet: fetch -> parse -> clean -> dedupe -> store.

``ingest_feed`` polls one feed and returns an ``IngestResult``; every failure
that belongs to the feed is recorded on it, never raised past it. The daemon
and ``ingestd poll`` both call ``poll_feeds``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from ingestd.exceptions import (
    CleanError,
    FeedError,
    HTTPStatusError,
    IngestdError,
    ParseError,
    StorageError,
    WorkerError,
)
from ingestd.models import (
    CleanArticle,
    FeedContext,
    FeedToPoll,
    FeedUpdate,
    FetchResult,
    IdentityKeys,
    IngestResult,
    Processed,
    SaveStats,
)
from ingestd.pipeline.fetch import Fetcher, host_key
from ingestd.pipeline.worker import ByName, WorkerPool

log = logging.getLogger("ingestd.ingest")
#: Parse, clean and key one document; imported in the workers only (see ``pipeline.process``).
PROCESS_DOCUMENT = ByName("ingestd.pipeline.process:process_document")
T = TypeVar("T")


class StoreLike(Protocol):
    """What ingest needs from the store (see ``ingestd.store.Store``)."""

    def entry_hashes(self, feed_id: int) -> dict[str, str]: ...

    def save_poll(
        self, feed_id: int, update_: FeedUpdate, items: Sequence[tuple[CleanArticle, IdentityKeys]] = ()
    ) -> SaveStats: ...

    def save_feed_states(self, updates: Sequence[tuple[int, FeedUpdate]]) -> None: ...

    def defer_feeds(self, matches: Callable[[str], bool], until: datetime) -> int: ...


@dataclass(frozen=True)
class PollPolicy:
    """Scheduling and processing limits, as plain values (the CLI maps settings to it)."""

    default_interval: float = 1800.0
    min_interval: float = 300.0
    max_interval: float = 86400.0
    jitter: float = 0.1
    max_entries: int = 500


def _now() -> datetime:
    return datetime.now(UTC)


def _host_of(url: str) -> str:
    """The politeness key of a feed's URL (host and port; Substack publications are one host)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    return host_key(parts.hostname or "") + (f":{port}" if port else "")


def _on_host(host: str, url: str) -> bool:
    return _host_of(url) == host


def _jittered(seconds: float, jitter: float) -> float:
    return seconds * (1 + random.uniform(0, jitter))  # noqa: S311 - spreading load, not security


def next_poll_after_success(
    feed: FeedToPoll,
    policy: PollPolicy,
    *,
    ttl: float | None = None,
    max_age: float | None = None,
    gap: float | None = None,
) -> float:
    """Seconds until the next poll.

    A feed's own ``--interval`` wins; else half its observed posting gap
    (a monthly blog is not polled every 30 minutes), else the default; the
    publisher's ``<ttl>`` and Cache-Control are floors; all within
    ``[min_interval, max_interval]``.
    """
    if feed.interval_seconds:
        interval = float(feed.interval_seconds)
    elif gap is not None:
        interval = gap / 2
    else:
        interval = policy.default_interval
    for floor in (ttl, max_age):
        if floor is not None:
            interval = max(interval, floor)
    interval = min(max(interval, policy.min_interval), policy.max_interval)
    return _jittered(interval, policy.jitter)


def next_poll_after_error(error_count: int, policy: PollPolicy, retry_after: float | None = None) -> float:
    """Capped exponential backoff with jitter; never more than ``max_interval`` (so at least daily)."""
    backoff = policy.min_interval * (2 ** min(error_count, 20))
    backoff = min(max(backoff, policy.min_interval), policy.max_interval)
    if retry_after is not None:
        backoff = min(max(backoff, retry_after), policy.max_interval)
    return _jittered(backoff, policy.jitter) if retry_after is None else backoff


class Ingestor:
    """Polls feeds: one fetcher, one worker pool, one database thread."""

    def __init__(self, store: Any, fetcher: Fetcher, pool: WorkerPool, policy: PollPolicy) -> None:
        self.store = store
        self.fetcher = fetcher
        self.pool = pool
        self.policy = policy
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingestd-db")
        # host -> time before which no request goes there (429/503 Retry-After is per host).
        self._host_not_before: dict[str, datetime] = {}
        # Polls that stored no article, waiting for the DB thread (see _save_feed_state).
        self._feed_states: list[tuple[int, FeedUpdate, asyncio.Future[None]]] = []
        self._feed_state_writer: asyncio.Task[None] | None = None

    async def _db_call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def _save_feed_state(self, feed_id: int, update: FeedUpdate) -> None:
        """Record a poll that stored no article; those queued meanwhile share one transaction.

        Nothing waits on purpose: the first goes to the DB thread at once, and
        whatever queues while it (or a poll with articles) is written goes next,
        together. A warm cycle is mostly 304s: one commit and one hand-off to
        the DB thread per batch instead of per feed.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._feed_states.append((feed_id, update, done))
        if self._feed_state_writer is None or self._feed_state_writer.done():
            self._feed_state_writer = asyncio.ensure_future(self._write_feed_states())
        await done

    async def _write_feed_states(self) -> None:
        while self._feed_states:
            batch, self._feed_states = self._feed_states, []
            try:
                await self._db_call(self.store.save_feed_states, [(fid, upd) for fid, upd, _ in batch])
            except Exception as e:  # StorageError: every poll of the batch learns it
                for _fid, _upd, done in batch:
                    if not done.done():
                        done.set_exception(e)
            else:
                for _fid, _upd, done in batch:
                    if not done.done():
                        done.set_result(None)

    def close(self) -> None:
        self._db.shutdown(wait=True)

    async def ingest_feed(self, feed: FeedToPoll) -> IngestResult:
        """Poll one feed; its failures are recorded on it and returned, never raised."""
        started = time.monotonic()
        now = _now()
        policy = self.policy
        result: FetchResult | None = None
        host = _host_of(feed.url)
        not_before = self._host_not_before.get(host)
        if not_before is not None and not_before > now:
            wait = (not_before - now).total_seconds()
            deferral = HTTPStatusError(
                f"deferred: {host} asked for a pause until {not_before:%Y-%m-%d %H:%M:%S} UTC",
                feed.url,
                status=429,
                retry_after=wait,
            )
            return await self._record_failure(feed, now, started, deferral, None)
        try:
            result = await self.fetcher.get(feed.url, etag=feed.etag, last_modified=feed.last_modified)
            if result.not_modified:
                update = FeedUpdate(
                    outcome="not_modified",
                    polled_at=now,
                    next_poll_at=now
                    + timedelta(seconds=next_poll_after_success(feed, policy, max_age=result.max_age)),
                    etag=result.etag,
                    http_status=304,
                    duration=time.monotonic() - started,
                )
                await self._save_feed_state(feed.id, update)
                return IngestResult(
                    feed.id, feed.url, "not_modified", elapsed=update.duration, http_status=304
                )
            known = await self._db_call(self.store.entry_hashes, feed.id)
            processed: Processed = await self.pool.run(
                PROCESS_DOCUMENT,
                result.content,
                url=result.final_url,
                headers=dict(result.headers),
                known=known,
                max_entries=policy.max_entries,
                substack_header=result.header("x-sub") is not None,
            )
        except HTTPStatusError as e:
            if e.retry_after is not None and e.status in (429, 503):
                until = now + timedelta(seconds=min(e.retry_after, policy.max_interval))
                self._host_not_before[host] = until
                # Kept in the database too: the host's other feeds are not due before then, for
                # the daemon after a restart and for the next `ingestd poll` alike.
                await self._db_call(self.store.defer_feeds, functools.partial(_on_host, host), until)
            return await self._record_failure(feed, now, started, e, result)
        except ParseError as e:
            if result is not None and "html" in str(e).lower():
                from ingestd.sources.discover import discover_feed_links  # rare: not loaded up front

                links = discover_feed_links(result.content, result.final_url)
                if links:
                    e = ParseError(
                        f"{e}; the page links to the feed {links[0]} (subscribe to it instead)", feed.url
                    )
            return await self._record_failure(feed, now, started, e, result)
        except (FeedError, CleanError) as e:
            return await self._record_failure(feed, now, started, e, result)
        parsed = processed.feed
        items = processed.items
        if feed.full_text and items:
            from ingestd.sources.fulltext import fetch_full_text  # only for --full-text feeds

            items = tuple(
                await fetch_full_text(
                    items,
                    fetcher=self.fetcher,
                    run_in_worker=self.pool.run,
                    feed=FeedContext(
                        url=result.final_url,
                        site_url=parsed.site_url,
                        title=parsed.title,
                        language=parsed.language,
                        generator=parsed.generator,
                        substack_header=result.header("x-sub") is not None,
                    ),
                )
            )
        update = FeedUpdate(
            outcome="new",
            polled_at=now,
            next_poll_at=now
            + timedelta(
                seconds=next_poll_after_success(
                    feed, policy, ttl=parsed.ttl_seconds, max_age=result.max_age, gap=processed.posting_gap
                )
            ),
            etag=result.etag,
            last_modified=result.last_modified,
            new_url=result.permanent_redirect,
            title=parsed.title or None,
            site_url=parsed.site_url,
            generator=parsed.generator,
            language=parsed.language,
            http_status=result.status,
            bytes=len(result.content),
            duration=time.monotonic() - started,
        )
        stats: SaveStats = await self._db_call(self.store.save_poll, feed.id, update, items)
        warnings = tuple(processed.errors) + ((parsed.warning,) if parsed.warning else ())
        for warning in warnings:
            log.info("feed %s: %s", feed.url, warning, extra={"feed_id": feed.id, "feed_url": feed.url})
        return IngestResult(
            feed.id,
            feed.url,
            "new",
            new=stats.new,
            updated=stats.updated,
            unchanged=stats.unchanged + processed.unchanged,
            merged=stats.merged,
            elapsed=time.monotonic() - started,
            entries=len(items) + processed.unchanged,
            warnings=warnings,
            http_status=result.status,
            bytes=len(result.content),
        )

    async def _record_failure(
        self, feed: FeedToPoll, now: datetime, started: float, error: IngestdError, result: FetchResult | None
    ) -> IngestResult:
        policy = self.policy
        status = error.status if isinstance(error, HTTPStatusError) else (result.status if result else None)
        retry_after = error.retry_after if isinstance(error, HTTPStatusError) else None
        if status == 410:
            outcome = "gone"
            delay = policy.max_interval
        else:
            outcome = "deferred" if retry_after is not None else "error"
            delay = next_poll_after_error(feed.error_count, policy, retry_after)
        message = str(error) or error.__class__.__name__
        update = FeedUpdate(
            outcome=outcome,  # type: ignore[arg-type]
            polled_at=now,
            next_poll_at=now + timedelta(seconds=delay),
            error=message,
            http_status=status,
            bytes=len(result.content) if result else 0,
            duration=time.monotonic() - started,
        )
        log.warning("feed %s: %s", feed.url, message, extra={"feed_id": feed.id, "feed_url": feed.url})
        await self._save_feed_state(feed.id, update)
        return IngestResult(
            feed.id,
            feed.url,
            update.outcome,
            error=message,
            elapsed=update.duration,
            http_status=status,
            bytes=update.bytes,
        )

    async def poll(self, feeds: Sequence[FeedToPoll], concurrency: int) -> list[IngestResult]:
        """Poll feeds with bounded concurrency; one feed's failure never stops the others."""
        sem = asyncio.Semaphore(max(1, concurrency))

        async def one(feed: FeedToPoll) -> IngestResult:
            async with sem:
                try:
                    return await self.ingest_feed(feed)
                except (StorageError, WorkerError):  # not the feed's fault: nothing is recorded on it
                    raise
                except Exception as e:  # a bug: log it with its traceback, keep going
                    log.exception("bug while polling %s", feed.url, extra={"feed_id": feed.id})
                    return IngestResult(feed.id, feed.url, "error", error=f"internal error: {e!r}")

        return list(await asyncio.gather(*(one(f) for f in feeds)))
