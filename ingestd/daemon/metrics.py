"""Prometheus metrics of the daemon, in a private registry.

Counters count what this process did (polls, articles stored, duplicates
merged); gauges about the whole database (feeds by status, articles, last
success per feed) come from a ``Snapshot`` the daemon refreshes after each
tick, so a scrape never waits on the database.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ingestd import __version__
from ingestd.models import IngestResult
from ingestd.store.stats import Snapshot
from ingestd.store.tables import FEED_STATUSES

OUTCOMES = ("new", "not_modified", "error", "gone", "deferred")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _SnapshotCollector(Collector):
    """Yields database gauges from the last snapshot; removed feeds vanish with it."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snap = self.snapshot
        if snap is None:
            return
        feeds = GaugeMetricFamily("ingestd_feeds", "Subscribed feeds by status.", labels=["status"])
        for status in sorted({*FEED_STATUSES, *snap.feeds_by_status}):
            feeds.add_metric([status], snap.feeds_by_status.get(status, 0))
        yield feeds
        yield GaugeMetricFamily("ingestd_feeds_due", "Feeds due for a poll now.", value=snap.due)
        yield GaugeMetricFamily(
            "ingestd_articles",
            "Stories in the database (SELECT COUNT(*) FROM articles).",
            value=snap.articles,
        )
        yield GaugeMetricFamily(
            "ingestd_schedule_lag_seconds",
            "How long the most overdue feed has been waiting for its poll.",
            value=snap.schedule_lag,
        )
        last = GaugeMetricFamily(
            "ingestd_feed_last_success_timestamp_seconds",
            "Unix time of each feed's last successful poll (labelled by feed id only, at most 5000 feeds).",
            labels=["feed_id"],
        )
        for feed_id, when in sorted(snap.last_success.items()):
            last.add_metric([str(feed_id)], when.timestamp())
        yield last
        yield GaugeMetricFamily(
            "ingestd_snapshot_timestamp_seconds",
            "When these database gauges were read.",
            value=snap.taken_at.timestamp(),
        )


class Metrics:
    """Everything /metrics shows; one instance per daemon, never global."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.polls = Counter("ingestd_polls", "Feed polls by outcome.", ["outcome"], registry=r)
        for outcome in OUTCOMES:
            self.polls.labels(outcome)
        self.poll_duration = Histogram(
            "ingestd_poll_duration_seconds",
            "Time of one poll: the fetch, plus parsing and saving when the feed changed.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.fetch_bytes = Histogram(
            "ingestd_fetch_bytes",
            "Body size of fetched feeds (after decompression; 0 for 304).",
            buckets=(0, 1_000, 10_000, 100_000, 1_000_000, 5_000_000, 15_000_000),
            registry=r,
        )
        self.articles_stored = Counter("ingestd_articles_stored", "New stories stored.", registry=r)
        self.articles_updated = Counter(
            "ingestd_articles_updated", "Stored stories changed by a poll.", registry=r
        )
        self.duplicates_merged = Counter(
            "ingestd_duplicates_merged",
            "Entries attached to an existing story as another source.",
            registry=r,
        )
        self.not_modified_ratio = Gauge(
            "ingestd_not_modified_ratio",
            "Share of completed fetches answered 304 Not Modified since start.",
            registry=r,
        )
        self.tick_lag = Gauge(
            "ingestd_tick_lag_seconds",
            "How late the last tick started compared with its schedule.",
            registry=r,
        )
        self.last_tick = Gauge(
            "ingestd_last_tick_timestamp_seconds", "Unix time of the last good tick.", registry=r
        )
        self.inflight = Gauge(
            "ingestd_polls_in_flight", "Feeds claimed by this process and not yet done.", registry=r
        )
        self.healthy = Gauge(
            "ingestd_healthy",
            "1 when the tick is alive, the database answers and workers can run.",
            registry=r,
        )
        info = Gauge("ingestd_build_info", "The running version.", ["version"], registry=r)
        info.labels(__version__).set(1)
        self._completed = self._not_modified = 0
        self._snapshot = _SnapshotCollector()
        r.register(self._snapshot)

    def observe(self, result: IngestResult) -> None:
        """Count one poll's result."""
        self.polls.labels(result.outcome).inc()
        self.poll_duration.observe(result.elapsed)
        if result.outcome in ("new", "not_modified"):
            self.fetch_bytes.observe(result.bytes)
        self.articles_stored.inc(result.new)
        self.articles_updated.inc(result.updated)
        self.duplicates_merged.inc(result.merged)
        if result.outcome in ("new", "not_modified"):
            self._completed += 1
            self._not_modified += result.outcome == "not_modified"
            self.not_modified_ratio.set(self._not_modified / self._completed)

    def update_snapshot(self, snap: Snapshot) -> None:
        self._snapshot.snapshot = snap

    def render(self) -> bytes:
        return generate_latest(self.registry)
