"""run(settings): open the store, start the scheduler, say READY, wait, drain.

``poll_once`` is the same pipeline for ``ingestd poll``: one pass, then exit.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from ingestd.config import Settings, load_settings
from ingestd.daemon import signals
from ingestd.exceptions import ConfigError
from ingestd.models import FeedToPoll, IngestResult
from ingestd.pipeline.fetch import Fetcher, FetchPolicy
from ingestd.pipeline.ingest import Ingestor, PollPolicy
from ingestd.pipeline.worker import WorkerPool
from ingestd.store import Store, open_store

if TYPE_CHECKING:
    from ingestd.daemon.http import MetricsServer
    from ingestd.daemon.scheduler import Ticker

log = logging.getLogger("ingestd.daemon")


def fetch_policy(settings: Settings) -> FetchPolicy:
    f = settings.fetch
    return FetchPolicy(
        timeout=f.timeout,
        connect_timeout=f.connect_timeout,
        max_body_bytes=f.max_body_bytes,
        max_redirects=f.max_redirects,
        user_agent=f.user_agent,
        allow_private_networks=f.allow_private_networks,
        allowed_hosts=tuple(f.allowed_hosts),
        concurrency=f.concurrency,
        per_host_concurrency=f.per_host_concurrency,
        per_host_delay=f.per_host_delay,
    )


def poll_policy(settings: Settings) -> PollPolicy:
    s = settings.schedule
    return PollPolicy(
        default_interval=s.default_interval,
        min_interval=s.min_interval,
        max_interval=s.max_interval,
        jitter=s.jitter,
        max_entries=settings.fetch.max_entries,
    )


def new_fetcher(settings: Settings) -> Fetcher:
    try:
        return Fetcher(fetch_policy(settings))
    except ValueError as e:  # an allowed_hosts entry that is no host, host:port or CIDR
        raise ConfigError(f"fetch.allowed_hosts: {e}") from e


@asynccontextmanager
async def ingestor(settings: Settings, store: Store) -> AsyncIterator[Ingestor]:
    """The fetcher, the worker pool and the DB thread, closed together."""
    # The DB thread gives up the GIL around every SQLite call and then waits for the event loop
    # to hand it back, by default up to 5 ms later; 0.5 ms keeps the store, the narrowest stage,
    # busy (a cold poll of the 500-feed bench farm: 4 % less wall time).
    sys.setswitchinterval(0.0005)
    # Everything imported so far lives as long as the process: out of the collector's sight,
    # the collections that the poll's allocations trigger stop walking it (warm bench cycle: -0.3 s).
    gc.freeze()
    fetcher = new_fetcher(settings)
    pool = WorkerPool()
    pool.start()
    ing = Ingestor(store, fetcher, pool, poll_policy(settings))
    try:
        yield ing
    finally:
        await fetcher.aclose()
        ing.close()
        pool.close()


async def _poll_once(
    settings: Settings,
    store: Store,
    feeds: Sequence[FeedToPoll],
    on_result: Callable[[IngestResult], None] | None,
) -> list[IngestResult]:
    async with ingestor(settings, store) as ing:
        sem = asyncio.Semaphore(max(1, settings.fetch.concurrency))

        async def one(feed: FeedToPoll) -> IngestResult:
            async with sem:
                (result,) = await ing.poll([feed], 1)
            if on_result:  # as each feed finishes, so a progress bar moves smoothly
                on_result(result)
            return result

        tasks = [asyncio.ensure_future(one(f)) for f in feeds]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # A poll only raises when it cannot be done at all (WorkerError, StorageError): the same
            # would stop every other feed. Stop them now, and collect their outcomes, so that
            # asyncio does not print each one's traceback at shutdown after the one clear error.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise


def poll_once(
    settings: Settings,
    store: Store,
    *,
    all_feeds: bool = False,
    ids: Sequence[int] | None = None,
    on_result: Callable[[IngestResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> list[IngestResult]:
    """One pass over due feeds (or all, or the given ids); returns what happened to each.

    ``on_start`` learns how many feeds were claimed (for a progress bar), then
    ``on_result`` hears of each feed as it finishes.
    """
    feeds = store.claim(
        limit=1_000_000,
        lease_seconds=max(settings.daemon.lease, 3600.0),
        due_only=not all_feeds,
        ids=ids,
    )
    if on_start:
        on_start(len(feeds))
    if not feeds:
        return []
    try:
        return asyncio.run(_poll_once(settings, store, feeds, on_result))
    finally:
        store.release([f.id for f in feeds])


def _route_library_logs() -> None:
    """APScheduler's records go through our handler (text or JSON), warnings and up only."""
    ours = logging.getLogger("ingestd")
    aps = logging.getLogger("apscheduler")
    aps.handlers[:] = ours.handlers
    aps.propagate = False
    # "skipped: maximum number of running instances reached" is normal for a busy tick.
    aps.setLevel(logging.ERROR)


async def _serve_metrics(
    settings: Settings, ticker: Ticker, current: MetricsServer | None
) -> MetricsServer | None:
    """Start, keep, move or stop the /metrics endpoint to match ``daemon.metrics_listen``."""
    listen = settings.daemon.metrics_listen.strip()
    if current is not None and current.listen == listen:
        return current
    if current is not None:
        await current.close()
    if not listen:
        return None
    from ingestd.daemon.http import MetricsServer

    server = MetricsServer(listen, ticker.metrics, ticker.healthy)
    await server.start()
    return server


def _reload(path: str | None, running: Settings) -> tuple[Settings, Fetcher] | None:
    """The new settings and a fetcher built from them, or None (logged) when they are invalid."""
    try:
        settings = load_settings(path, overrides={"database.url": running.database_url})
        return settings, new_fetcher(settings)
    except ConfigError as e:
        log.error("reload failed, keeping the running configuration: %s", e)
        return None


async def _run(settings: Settings) -> int:
    # The daemon's own machinery (scheduler, Prometheus metrics) is loaded here, not for a one-off `poll`.
    from ingestd.daemon.metrics import Metrics
    from ingestd.daemon.scheduler import Ticker
    from ingestd.daemon.systemd import Notifier

    loop = asyncio.get_running_loop()
    flags = signals.Flags()
    signals.install(loop, flags)
    notifier = Notifier()
    _route_library_logs()
    store: Store | None = None
    ticker: Ticker | None = None
    server: MetricsServer | None = None
    old_fetchers: list[Fetcher] = []
    try:
        store = open_store(settings.database_url)
        store.ping()
        async with ingestor(settings, store) as ing:
            ticker = Ticker(settings, store, ing, notifier, Metrics())
            server = await _serve_metrics(settings, ticker, None)
            # Statistics first: once the tick runs, the DB thread is busy with polls, and READY
            # must not wait behind a first pass over hundreds of feeds.
            await ticker.refresh_stats()
            ticker.start()
            notifier.notify("READY=1", f"STATUS={ticker.status_line()}")
            log.info(
                "ingestd running: %s, database %s, tick every %g s",
                ticker.status_line(),
                settings.database_url,
                settings.daemon.tick,
            )
            while not flags.stop.is_set():
                reload_wait = asyncio.ensure_future(flags.reload.wait())
                stop_wait = asyncio.ensure_future(flags.stop.wait())
                await asyncio.wait({reload_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                reload_wait.cancel()
                stop_wait.cancel()
                if flags.reload.is_set() and not flags.stop.is_set():
                    flags.reload.clear()
                    notifier.notify("RELOADING=1")
                    reloaded = _reload(settings.config_path, settings)
                    if reloaded is not None:
                        settings, fetcher = reloaded
                        ticker.reconfigure(settings)
                        ing.policy = poll_policy(settings)
                        # Polls in flight keep the fetcher they started with; it closes at exit.
                        old_fetchers.append(ing.fetcher)
                        ing.fetcher = fetcher
                        try:
                            server = await _serve_metrics(settings, ticker, server)
                        except ConfigError as e:
                            log.error("%s", e)
                            server = None
                        log.info(
                            "configuration reloaded; the feed list is read from the database at every tick"
                        )
                    notifier.notify("READY=1", f"STATUS={ticker.status_line()}")
            notifier.notify("STOPPING=1", "STATUS=stopping: draining in-flight polls")
            log.info(
                "stopping: draining %d in-flight polls (grace %g s)",
                len(ticker.inflight),
                settings.daemon.grace,
            )
            await ticker.stop(settings.daemon.grace, flags.force)
            for fetcher in old_fetchers:
                await fetcher.aclose()
    finally:
        if server is not None:
            await server.close()
        if ticker is not None:
            ticker.close()
        signals.uninstall(loop)
        if store is not None:
            store.close()
    log.info("stopped")
    return 0


def run(settings: Settings) -> int:
    """The daemon, in the foreground until SIGTERM/SIGINT: returns the exit code."""
    return asyncio.run(_run(settings))
