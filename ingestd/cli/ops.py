"""Polling, the daemon, status, maintenance: `poll`, `run`, `status`, `db`, `reclean`, `substack`."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from ingestd.cli import _find, _handle_errors, _Progress, _state, fail, main
from ingestd.models import IngestResult
from ingestd.store import open_store

# -- polling ----------------------------------------------------------------


def _report(result: IngestResult) -> None:
    if result.outcome in ("error", "gone", "deferred"):
        click.echo(f"feed {result.feed_id} {result.url}: {result.outcome}: {result.error}", err=True)


@main.command()
@click.argument("refs", nargs=-1)
@click.option("--all", "all_feeds", is_flag=True, help="Poll every active feed, due or not.")
@_handle_errors
def poll(refs: tuple[str, ...], all_feeds: bool) -> None:
    """Poll due feeds (or all, or the given ones) once, then exit.

    Exits 0 when it ran, even if some feeds failed (they are reported).

    \b
    Example:
      ingestd poll --all
    """
    from ingestd.daemon.service import poll_once

    state = _state()
    store = state.store
    ids = [_find(store, r).id for r in refs] if refs else None
    with _Progress("polling", state.verbosity) as progress:

        def on_result(result: IngestResult) -> None:
            _report(result)
            progress.advance()

        results = poll_once(
            state.settings, store, all_feeds=all_feeds, ids=ids, on_result=on_result, on_start=progress.start
        )
    totals = {k: sum(getattr(r, k) for r in results) for k in ("new", "updated", "merged")}
    failed = sum(r.outcome in ("error", "gone", "deferred") for r in results)
    unchanged = sum(r.outcome == "not_modified" for r in results)
    if state.verbosity >= 0:
        click.echo(
            f"polled {len(results)} feeds: {totals['new']} new, {totals['updated']} updated, "
            f"{totals['merged']} duplicates merged; {unchanged} not modified, {failed} failed",
            err=True,
        )


@main.command()
@_handle_errors
def run() -> None:
    """Run the daemon in the foreground (systemd runs this).

    \b
    Example:
      ingestd --config /etc/ingestd/ingestd.toml run
    """
    from ingestd.daemon.service import run as run_daemon

    state = _state()
    if state.verbosity == 0:
        logging.getLogger("ingestd").setLevel(logging.INFO)
    settings = state.settings
    sys.exit(run_daemon(settings))


# -- substack and reclean -------------------------------------------------------


@main.group()
def substack() -> None:
    """Substack publications: older posts through the archive API."""


@substack.command("backfill")
@click.argument("url")
@click.option("--limit", type=click.IntRange(min=1), help="Look at the newest N posts of the archive only.")
@click.option(
    "--rate", type=click.FloatRange(min=0.01), default=2.0, show_default=True, help="Requests per second."
)
@_handle_errors
def substack_backfill(url: str, limit: int | None, rate: float) -> None:
    """Store a publication's older posts that its feed no longer carries.

    Pages through <publication>/api/v1/archive, fetches each missing post's
    body from /api/v1/posts/<slug> and stores it under the publication's
    /feed (subscribed if needed); posts already stored are skipped.

    \b
    Example:
      ingestd substack backfill https://example.substack.com --limit 100
    """
    import asyncio

    from ingestd.daemon.service import new_fetcher
    from ingestd.sources.substack import backfill

    if not url.startswith(("http://", "https://")):
        fail(f"not an http(s) URL: {url!r}", 2)
    state = _state()
    store = state.store

    async def go() -> Any:
        async with new_fetcher(state.settings) as fetcher:
            return await backfill(store, fetcher, url, limit=limit, rate=rate)

    result = asyncio.run(go())
    for error in result.errors:
        click.echo(f"failed: {error}", err=True)
    click.echo(
        f"feed {result.feed_id} {result.feed_url}: {result.listed} posts listed, "
        f"{result.already} already stored, {result.new} new, "
        f"{result.merged} merged into other feeds' stories, {len(result.errors)} failed"
    )


@main.command()
@click.option("--feed", "feed_ref", help="Only the articles of this feed (ID or URL).")
@click.option("--all", "everything", is_flag=True, help="Every article, not only older cleaner versions.")
@_handle_errors
def reclean(feed_ref: str | None, everything: bool) -> None:
    """Re-derive stored articles with the current cleaning rules, without refetching.

    Articles cleaned by an older cleaner_version (every article with --all)
    are cleaned again from their stored raw_html; only those whose rendering
    changed get a new seq.

    \b
    Example:
      ingestd reclean --feed 3
    """
    from ingestd.pipeline.clean import CLEANER_VERSION, clean_entry
    from ingestd.pipeline.dedupe import content_hash
    from ingestd.store.reclean import reclean as run_reclean

    store = _state().store
    feed_id = _find(store, feed_ref).id if feed_ref else None
    result = run_reclean(
        store,
        clean=clean_entry,
        version=CLEANER_VERSION,
        content_hash=content_hash,
        feed_id=feed_id,
        everything=everything,
    )
    for error in result.errors:
        click.echo(f"failed: {error}", err=True)
    click.echo(
        f"re-cleaned {result.examined} articles (cleaner version {CLEANER_VERSION}): "
        f"{result.changed} changed, {result.unchanged} unchanged, "
        f"{result.skipped} changed meanwhile by a poll, {len(result.errors)} failed"
    )


# -- database -----------------------------------------------------------------


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
@_handle_errors
def db_upgrade() -> None:
    """Apply pending migrations (a fresh database is created).

    \b
    Example:
      ingestd --db sqlite:////var/lib/ingestd/ingestd.db db upgrade
    """
    state = _state()
    open_store(state.settings.database_url).close()
    click.echo(f"database is up to date: {state.settings.database_url}")


@main.command()
@_handle_errors
def status() -> None:
    """Feed health at a glance: status, last and next poll, last error, articles, 30-day activity.

    The sparkline shows entries first seen per day (▁ = none), oldest day on the left.

    \b
    Example:
      ingestd status
    """
    from ingestd.daemon.report import DAYS, status_lines
    from ingestd.store import stats

    store = _state().store
    rows = store.list_feeds()
    activity = stats.daily_new_articles(store, days=DAYS)
    snap = stats.snapshot(store, per_feed_limit=0)
    history = stats.fetch_history(store)
    for line in status_lines(rows, activity, snap, leased=stats.leased_feeds(store), history=history):
        click.echo(line)
