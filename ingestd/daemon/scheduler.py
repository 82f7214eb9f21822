"""APScheduler jobs: the tick (claim due feeds, start their polls), statistics, housekeeping, watchdog.

The schedule of each feed lives in the database (``feeds.next_poll_at``);
APScheduler only runs a few jobs, so thousands of feeds cost no jobs. The
tick never waits for polls: it claims as many due feeds as there are free
slots and starts one task per feed, so one slow feed never holds back the
next batch, and "the tick ran recently" stays a meaningful health signal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ingestd.config import Settings
from ingestd.daemon.metrics import Metrics
from ingestd.daemon.systemd import Notifier
from ingestd.exceptions import StorageError, WorkerError
from ingestd.models import FeedToPoll, IngestResult
from ingestd.store import Store, stats

if TYPE_CHECKING:  # the pipeline is handed in; importing it here would only cost start-up time
    from ingestd.pipeline.ingest import Ingestor

log = logging.getLogger("ingestd.scheduler")
T = TypeVar("T")


class Ticker:
    """Owns the scheduler and the polls in flight, so health and shutdown can see them."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        ing: Ingestor,
        notifier: Notifier,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ing = ing
        self.notifier = notifier
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.stopping = False
        self.db_ok = True
        self.last_tick_ok: float | None = None
        self._last_tick_started: float | None = None
        self.polls = 0
        self.snapshot: stats.Snapshot | None = None
        self.inflight: dict[asyncio.Task[None], FeedToPoll] = {}
        self._started: set[int] = set()
        self._claiming: asyncio.Task[Any] | None = None
        self._backlog = False  # the last claim filled every slot: more feeds are probably due
        self._refills: set[asyncio.Task[None]] = set()
        self._drained: set[int] = set()  # polls completed after shutdown began
        self._sem = asyncio.Semaphore(settings.fetch.concurrency)
        # Health checks and statistics get their own thread: a queue of saves
        # on the ingestor's database thread must not delay a watchdog ping.
        self._aux = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingestd-health")
        self.scheduler: AsyncIOScheduler | None = None

    # -- jobs ----------------------------------------------------------------

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.scheduler = AsyncIOScheduler(event_loop=loop, timezone=UTC)
        self._add_jobs()
        self.scheduler.start()

    @property
    def stats_interval(self) -> float:
        return min(max(self.settings.daemon.tick, 5.0), 60.0)

    def _add_jobs(self) -> None:
        if self.scheduler is None:
            return
        now = datetime.now(UTC)
        common: dict[str, Any] = {"replace_existing": True, "coalesce": True, "max_instances": 1}
        self.scheduler.add_job(
            self.tick,
            "interval",
            seconds=self.settings.daemon.tick,
            id="tick",
            next_run_time=now,
            misfire_grace_time=None,
            **common,
        )
        self.scheduler.add_job(
            self.refresh_stats,
            "interval",
            seconds=self.stats_interval,
            id="statistics",
            next_run_time=now,
            **common,
        )
        self.scheduler.add_job(
            self.housekeeping,
            "interval",
            hours=1,
            id="housekeeping",
            next_run_time=now + timedelta(minutes=5),
            **common,
        )
        if self.notifier.watchdog_seconds:
            self.scheduler.add_job(
                self.watchdog,
                "interval",
                seconds=self.notifier.watchdog_seconds / 2,
                id="watchdog",
                next_run_time=now,
                **common,
            )

    def reconfigure(self, settings: Settings) -> None:
        """Apply reloaded settings: new polls use the new concurrency and lease, jobs the new tick."""
        if settings.fetch.concurrency != self.settings.fetch.concurrency:
            self._sem = asyncio.Semaphore(settings.fetch.concurrency)
        self.settings = settings
        if self.scheduler is not None and not self.stopping:
            self._add_jobs()

    async def _aux_call(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> T:
        future = asyncio.get_running_loop().run_in_executor(self._aux, fn, *args)
        return await asyncio.wait_for(future, timeout)

    @property
    def capacity(self) -> int:
        """Feeds claimed at once: the ones being polled plus as many waiting, so leases stay short."""
        return 2 * self.settings.fetch.concurrency

    async def tick(self) -> None:
        """Claim due feeds for the free slots and start their polls; never waits for them."""
        started = self.clock()
        if self._last_tick_started is not None:
            late = started - self._last_tick_started - self.settings.daemon.tick
            self.metrics.tick_lag.set(max(0.0, late))
        self._last_tick_started = started
        await self._claim_and_start()

    async def _claim_and_start(self) -> None:
        if self.stopping or self._claiming is not None:
            return
        if not self.ing.pool.usable:
            # Workers cannot run (logged by the pool): a claim would only fetch feeds to fail them.
            # The tick itself is fine; healthy() reports the pool until it recovers.
            self.last_tick_ok = self.clock()
            return
        free = self.capacity - len(self.inflight)
        feeds: list[FeedToPoll] = []
        if free > 0:
            self._claiming = asyncio.current_task()
            try:
                feeds = await self.ing._db_call(self._claim, free)
            except StorageError as e:
                self._db_failed("tick skipped", e)
                return
            finally:
                self._claiming = None
        if self.stopping:  # shutdown began while we were claiming: give the feeds straight back
            await self._release([f.id for f in feeds])
            return
        # A full claim means more feeds are due: claim again as soon as half the slots are free,
        # not at the next tick (at 16 feeds at once and a 10 s tick that capped a backlog, such
        # as all feeds after a restart, at 3.2 feeds/s however fast they answered).
        self._backlog = free > 0 and len(feeds) == free
        for feed in feeds:
            task = asyncio.create_task(self._poll(feed, self._sem), name=f"poll-{feed.id}")
            self.inflight[task] = feed
            task.add_done_callback(self._done)
        self.db_ok = True
        self.last_tick_ok = self.clock()
        self.metrics.last_tick.set(time.time())
        self.metrics.inflight.set(len(self.inflight))

    def _claim(self, limit: int) -> list[FeedToPoll]:
        return self.store.claim(limit=limit, lease_seconds=self.settings.daemon.lease, due_only=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        feed = self.inflight.pop(task, None)
        if feed is not None:
            self._started.discard(feed.id)
        self.metrics.inflight.set(len(self.inflight))
        if self._backlog and not self.stopping and len(self.inflight) <= self.capacity // 2:
            self._backlog = False
            refill = asyncio.get_running_loop().create_task(self._claim_and_start(), name="refill")
            self._refills.add(refill)
            refill.add_done_callback(self._refills.discard)
        if not task.cancelled() and task.exception() is not None:
            log.error("poll task failed", exc_info=task.exception())

    async def _poll(self, feed: FeedToPoll, sem: asyncio.Semaphore) -> None:
        extra = {"feed_id": feed.id, "feed_url": feed.url}
        async with sem:
            if self.stopping:
                return  # never started: stop() gives its lease back
            self._started.add(feed.id)
            try:
                results = await self.ing.poll([feed], 1)
                if self.stopping:
                    self._drained.add(feed.id)
            except StorageError as e:
                # The poll's transaction rolled back; the lease expires and the feed is polled again.
                self._db_failed(f"feed {feed.url}: poll not saved", e, extra)
                return
            except WorkerError as e:
                # Nothing is recorded on the feed: the lease expires and it is polled again.
                log.error("feed %s: poll not done: %s", feed.url, e, extra=extra)
                return
        self._observe(results[0], extra)
        self.metrics.observe(results[0])

    def _observe(self, result: IngestResult, extra: dict[str, Any]) -> None:
        self.polls += 1
        if result.outcome == "new":
            log.info(
                "feed %s: %d new, %d updated, %d merged in %.2f s",
                result.url,
                result.new,
                result.updated,
                result.merged,
                result.elapsed,
                extra=extra,
            )
        else:
            log.debug("feed %s: %s in %.2f s", result.url, result.outcome, result.elapsed, extra=extra)

    def _db_failed(self, what: str, error: StorageError, extra: dict[str, Any] | None = None) -> None:
        self.db_ok = False
        self.metrics.healthy.set(0)
        log.error("%s: %s", what, error, extra=extra)

    async def refresh_stats(self) -> None:
        """Read the database gauges and tell systemd how we are doing (STATUS=)."""
        try:
            snap = await self._aux_call(stats.snapshot, self.store, timeout=60)
        except (StorageError, TimeoutError) as e:
            self.notifier.notify("STATUS=database unavailable")
            log.warning("statistics not refreshed: %s", e or "database timeout")
            return
        self.snapshot = snap
        self.metrics.update_snapshot(snap)
        self.notifier.notify(f"STATUS={self.status_line()}")

    def status_line(self) -> str:
        if self.snapshot is None:
            return "starting"
        return self.snapshot.status_line() + f"; {len(self.inflight)} polls in flight"

    async def housekeeping(self) -> None:
        """Retention, then SQLite statistics (PRAGMA optimize) and a WAL checkpoint."""
        try:
            daemon = self.settings.daemon
            removed = await self.ing._db_call(
                self.store.housekeeping, daemon.retention_days, daemon.retention_per_feed
            )
        except StorageError as e:
            log.error("housekeeping failed: %s", e)
            return
        if removed:
            log.info("housekeeping: retention removed %d articles", removed)

    # -- health --------------------------------------------------------------

    @property
    def tick_budget(self) -> float:
        """How long without a good tick before we call ourselves stalled."""
        return max(3 * self.settings.daemon.tick, 30.0)

    def healthy(self) -> bool:
        """The tick ran recently, the database answers and worker processes can run.

        Unhealthy withholds systemd's watchdog ping, so a service whose workers
        cannot start (a package replaced under the running daemon, say) is restarted.
        """
        if self.stopping or not self.db_ok or self.last_tick_ok is None or not self.ing.pool.usable:
            return False
        return self.clock() - self.last_tick_ok < self.tick_budget

    async def watchdog(self) -> None:
        """WATCHDOG=1, but only after the database answered a ping and while the tick is alive."""
        timeout = (self.notifier.watchdog_seconds or 60.0) / 2
        try:
            await self._aux_call(self.store.ping, timeout=timeout)
            self.db_ok = True
        except (StorageError, TimeoutError) as e:
            self._db_failed(
                "database ping failed; withholding the watchdog ping", StorageError(str(e) or "timeout")
            )
        ok = self.healthy()
        self.metrics.healthy.set(1 if ok else 0)
        if ok:
            self.notifier.notify("WATCHDOG=1")

    # -- shutdown ------------------------------------------------------------

    async def stop(self, grace: float, force: asyncio.Event) -> None:
        """Stop claiming; give started polls ``grace`` seconds, cancel the rest, release their leases."""
        self.stopping = True
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        if self._claiming is not None:  # let a claim in progress finish and hand its feeds back
            await asyncio.wait({self._claiming}, timeout=grace)
        for task, feed in list(self.inflight.items()):
            if feed.id not in self._started:
                task.cancel()
        pending = dict(self.inflight)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        forced = asyncio.ensure_future(force.wait())
        while not forced.done():
            left = [t for t in pending if not t.done()]
            remaining = deadline - loop.time()
            if not left or remaining <= 0:
                break
            await asyncio.wait({*left, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        forced.cancel()
        left = [t for t in pending if not t.done()]
        for task in left:
            task.cancel()
        if left:
            log.warning(
                "cancelled %d poll(s) after the grace period; they roll back and are polled again", len(left)
            )
            await asyncio.wait(left, timeout=5)
        # Whatever did not complete (cancelled, never started, failed) gets its lease back.
        await self._release([feed.id for feed in pending.values() if feed.id not in self._drained])

    async def _release(self, feed_ids: list[int]) -> None:
        """Give back leases of feeds we will not poll, on the ingestor's database thread (after any save)."""
        if not feed_ids:
            return
        try:
            await asyncio.wait_for(self.ing._db_call(self.store.release, feed_ids), timeout=10)
        except (StorageError, TimeoutError) as e:
            log.warning("leases of %d feeds not released (they expire): %s", len(feed_ids), e)

    def close(self) -> None:
        self._aux.shutdown(wait=False, cancel_futures=True)
