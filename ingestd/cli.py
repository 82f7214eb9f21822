"""The command line: parse arguments, call the library, print.

Errors are one clear line on stderr (a traceback only with ``-v``); exit
status 1 for an error ingestd understood, 2 for a usage error.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ingestd import __version__
from ingestd.config import Settings, load_settings, parse_duration
from ingestd.exceptions import ConfigError, IngestdError
from ingestd.log import setup_logging
from ingestd.models import IngestResult
from ingestd.store import FeedInfo, Store, open_store

F = TypeVar("F", bound=Callable[..., Any])


class State:
    def __init__(self, config: str | None, db: str | None, log_format: str, verbosity: int) -> None:
        self.config = config
        self.db = db
        self.log_format = log_format
        self.verbosity = verbosity
        self._settings: Settings | None = None
        self._store: Store | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, overrides={"database.url": self.db})
        return self._settings

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.database_url)
        return self._store


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"ingestd: error: {message}", err=True)
    sys.exit(code)


def _handle_errors(fn: F) -> F:
    """Turn ingestd's errors into one line on stderr; tracebacks only with -v."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IngestdError as e:
            state = click.get_current_context().find_object(State)
            if state is not None and state.verbosity > 0:
                traceback.print_exc()
            fail(str(e))

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def _state() -> State:
    return click.get_current_context().ensure_object(State)


def _find(store: Store, ref: str) -> FeedInfo:
    feed = store.find_feed(ref)
    if feed is None:
        fail(f"no feed with id or URL {ref!r} (see `ingestd feeds list`)")
    return feed


def _fmt_time(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M") if dt else "-"


def _parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        try:
            return datetime.now(UTC) - timedelta(seconds=parse_duration(value, "--since"))
        except ConfigError:
            fail(f"--since: expected a date (2026-01-31) or a duration (7d), got {value!r}", 2)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--db", help="Database URL, e.g. sqlite:///ingestd.db or postgresql://user@host/db.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("-v", "--verbose", count=True, help="More output (-vv for HTTP details); tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.version_option(__version__, prog_name="ingestd")
@click.pass_context
def main(
    ctx: click.Context, config: str | None, db: str | None, log_format: str, verbose: int, quiet: bool
) -> None:
    """ingestd keeps a database of clean, deduplicated articles from feeds.

    \b
    Example:
      ingestd feeds add https://example.substack.com/feed
      ingestd poll --all
      ingestd articles list
    """
    verbosity = -1 if quiet else verbose
    ctx.obj = State(config, db, log_format, verbosity)
    setup_logging(log_format, verbosity)


# -- feeds ------------------------------------------------------------------


@main.group()
def feeds() -> None:
    """Manage subscriptions."""


@feeds.command("add")
@click.argument("urls", nargs=-1, required=True)
@click.option("--interval", help="Poll interval for these feeds, e.g. 30m, 2h.")
@click.option("--full-text", is_flag=True, help="Fetch the article page for summary-only feeds.")
@click.option(
    "--discover/--no-discover",
    default=True,
    show_default=True,
    help="Fetch each URL once: a site or Substack home is replaced by the feed it announces.",
)
@_handle_errors
def feeds_add(urls: tuple[str, ...], interval: str | None, full_text: bool, discover: bool) -> None:
    """Subscribe to one or more feeds (a site or Substack URL is autodiscovered).

    \b
    Example:
      ingestd feeds add https://example.substack.com https://example.com/feed.xml --interval 1h
    """
    state = _state()
    seconds = int(parse_duration(interval, "--interval")) if interval else None
    for url in urls:
        if not url.startswith(("http://", "https://")):
            fail(f"not an http(s) URL: {url!r}", 2)
    resolved = [(url, "") for url in urls]
    if discover:
        from ingestd.daemon.service import fetch_policy
        from ingestd.sources.discover import resolve_feed_urls

        resolved = resolve_feed_urls(urls, fetch_policy(state.settings))
    failed = 0
    for asked, (url, note) in zip(urls, resolved, strict=True):
        if not url:
            click.echo(f"ingestd: error: {note}", err=True)
            failed += 1
            continue
        feed_id, created = state.store.add_feed(url, interval=seconds, full_text=full_text)
        how = f" ({note})" if (note and url != asked) or note.startswith("not checked") else ""
        click.echo(f"{'added' if created else 'already subscribed'}: {feed_id} {url}{how}")
    if failed:
        sys.exit(1)


@feeds.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@_handle_errors
def feeds_import(file: str) -> None:
    """Subscribe to every feed of an OPML file.

    \b
    Example:
      ingestd feeds import subscriptions.opml
    """
    from ingestd.sources.opml import read_opml

    data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    outlines = read_opml(data)
    state = _state()
    store = state.store
    added = 0
    with _Progress("importing", state.verbosity) as progress:
        progress.start(len(outlines))
        for o in outlines:
            progress.advance()
            if not o.url.startswith(("http://", "https://")):
                click.echo(f"skipped (not http/https): {o.url}", err=True)
                continue
            _id, created = store.add_feed(o.url, title=o.title)
            added += created
    click.echo(f"imported {len(outlines)} feeds ({added} new)")


@feeds.command("export")
@_handle_errors
def feeds_export() -> None:
    """Print every subscription as OPML.

    \b
    Example:
      ingestd feeds export > subscriptions.opml
    """
    from ingestd.sources.opml import Outline, write_opml

    rows = _state().store.list_feeds()
    click.echo(write_opml(Outline(f.url, f.title, f.site_url) for f in rows), nl=False)


@feeds.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per feed.")
@_handle_errors
def feeds_list(as_json: bool) -> None:
    """List subscriptions with their health.

    \b
    Example:
      ingestd feeds list --json | jq .
    """
    rows = _state().store.list_feeds()
    if as_json:
        for f in rows:
            data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(f).items()}
            click.echo(json.dumps(data, ensure_ascii=False))
        return
    for f in rows:
        error = f"  error: {f.last_error}" if f.last_error and f.status != "active" else ""
        click.echo(
            f"{f.id:>5}  {f.status:<8} {f.articles:>6} articles  last {_fmt_time(f.last_polled_at)}  "
            f"{f.title or '-'}  {f.url}{error}"
        )


@feeds.command("remove")
@click.argument("ref")
@_handle_errors
def feeds_remove(ref: str) -> None:
    """Unsubscribe (ID or URL); stories no other feed carries are deleted.

    \b
    Example:
      ingestd feeds remove 3
    """
    store = _state().store
    feed = _find(store, ref)
    removed = store.remove_feed(feed.id)
    click.echo(f"removed feed {feed.id} {feed.url} and {removed} articles")


@feeds.command("pause")
@click.argument("ref")
@_handle_errors
def feeds_pause(ref: str) -> None:
    """Stop polling a feed (ID or URL); its articles stay.

    \b
    Example:
      ingestd feeds pause https://example.com/feed.xml
    """
    store = _state().store
    feed = _find(store, ref)
    store.set_paused(feed.id, True)
    click.echo(f"paused feed {feed.id} {feed.url}")


@feeds.command("resume")
@click.argument("ref")
@_handle_errors
def feeds_resume(ref: str) -> None:
    """Poll a paused or gone feed again, starting now.

    \b
    Example:
      ingestd feeds resume 3
    """
    store = _state().store
    feed = _find(store, ref)
    store.set_paused(feed.id, False)
    click.echo(f"resumed feed {feed.id} {feed.url}")


# -- polling ----------------------------------------------------------------


class _Progress:
    """A progress bar on stderr when it is a terminal (and not -q); nothing at all otherwise."""

    def __init__(self, label: str, verbosity: int) -> None:
        self.label = label
        self.enabled = verbosity >= 0 and sys.stderr.isatty()
        self._bar: Any = None

    def start(self, total: int) -> None:
        if self.enabled and total > 1 and self._bar is None:
            self._bar = click.progressbar(length=total, label=self.label, file=sys.stderr, show_pos=True)
            self._bar.__enter__()

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


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


# -- articles ---------------------------------------------------------------


@main.group()
def articles() -> None:
    """Read stored articles."""


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


@articles.command("list")
@click.option("--feed", "feed_ref", help="Only this feed (ID or URL).")
@click.option("--since", help="Published on or after a date (2026-01-31) or within a duration (7d).")
@click.option("--after-seq", type=int, help="Only articles changed after this sequence number.")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines, every column but the bodies.")
@_handle_errors
def articles_list(
    feed_ref: str | None, since: str | None, after_seq: int | None, limit: int, as_json: bool
) -> None:
    """List articles, newest first.

    \b
    Example:
      ingestd articles list --since 7d --limit 20
    """
    store = _state().store
    feed_id = _find(store, feed_ref).id if feed_ref else None
    rows = store.list_articles(feed_id=feed_id, since=_parse_since(since), after_seq=after_seq, limit=limit)
    for a in rows:
        if as_json:
            data = {k: v for k, v in a.items() if k not in ("content_html", "content_markdown", "raw_html")}
            click.echo(json.dumps(_jsonable(data), ensure_ascii=False))
        else:
            title = a["title"] or "(no title)"
            click.echo(f"{a['id']:>6}  {_fmt_time(a['published_at'])}  {title}  {a['url'] or ''}")


@articles.command("show")
@click.argument("article_id", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html", "json"]), default="text")
@_handle_errors
def articles_show(article_id: int, fmt: str) -> None:
    """Print one article as text, Markdown, HTML or JSON (every column).

    \b
    Example:
      ingestd articles show 42 --format markdown
    """
    a = _state().store.get_article(article_id)
    if a is None:
        fail(f"no article with id {article_id}")
    if fmt == "json":
        click.echo(json.dumps(_jsonable(a), ensure_ascii=False, indent=2))
        return
    if fmt == "html":
        click.echo(a["content_html"])
        return
    header = [a["title"] or "(no title)"]
    byline = " · ".join(
        x for x in (a["author"], _fmt_time(a["published_at"]) if a["published_at"] else "") if x
    )
    if byline:
        header.append(byline)
    if a["url"]:
        header.append(a["url"])
    if fmt == "markdown":
        click.echo(
            f"# {header[0]}\n\n" + "\n".join(f"_{h}_" for h in header[1:]) + "\n\n" + a["content_markdown"]
        )
    else:
        click.echo("\n".join(header) + "\n\n" + a["content_text"])


@articles.command("delete")
@click.argument("article_id", type=int)
@_handle_errors
def articles_delete(article_id: int) -> None:
    """Delete an article for good: no feed that still carries it brings it back.

    \b
    Example:
      ingestd articles delete 42
    """
    if not _state().store.delete_article(article_id):
        fail(f"no article with id {article_id}")
    click.echo(f"deleted article {article_id}")


def _consumer_json(row: dict[str, Any]) -> str:
    return json.dumps(_jsonable(row), ensure_ascii=False)


@articles.command("tail")
@click.option("--after-seq", type=int, default=0, show_default=True, help="Print changes after this seq.")
@click.option("--follow", is_flag=True, help="Keep waiting for new changes (every second) until stopped.")
@_handle_errors
def articles_tail(after_seq: int, follow: bool) -> None:
    """Print changed articles as JSON lines in seq order: the consumers' change feed.

    Each line is a row of the articles_public view (no raw_html) with its seq;
    keep the last seq you processed and pass it back as --after-seq.

    \b
    Example:
      ingestd articles tail --after-seq 1200 --follow | my-indexer
    """
    import signal
    import time

    store = _state().store
    stop = False

    def on_term(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    if follow:
        signal.signal(signal.SIGTERM, on_term)
    cursor = after_seq
    try:
        while True:
            for row in store.changes(after_seq=cursor):
                click.echo(_consumer_json(row))
                cursor = row["seq"]
            if not follow or stop:
                return
            sys.stdout.flush()
            for _ in range(10):
                if stop:
                    return
                time.sleep(0.1)
    except KeyboardInterrupt:
        return


@articles.command("search")
@click.argument("query")
@click.option("--feed", "feed_ref", help="Only this feed (ID or URL).")
@click.option("--since", help="Published on or after a date (2026-01-31) or within a duration (7d).")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines: id, seq, title, url, snippet, rank...")
@_handle_errors
def articles_search(query: str, feed_ref: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Full-text search over titles and text, best match first, with snippets.

    Every word must match ("quoted phrases" too); accents are ignored.

    \b
    Example:
      ingestd articles search "grain corridor" --since 30d
    """
    store = _state().store
    feed_id = _find(store, feed_ref).id if feed_ref else None
    for hit in store.search(query, feed_id=feed_id, since=_parse_since(since), limit=limit):
        if as_json:
            click.echo(json.dumps(_jsonable(hit), ensure_ascii=False))
        else:
            click.echo(f"{hit['id']:>6}  {_fmt_time(hit['published_at'])}  {hit['title'] or '(no title)'}")
            click.echo(f"        {hit['snippet']}")


_CSV_COLUMNS = (
    "id", "seq", "feed_id", "feed_url", "source_feed_ids", "guid", "url", "canonical_url", "title", "author",
    "published_at", "updated_at", "created_at", "summary", "content_text", "language", "word_count",
    "content_hash", "near_duplicate_of",
)  # fmt: skip


@main.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), required=True)
@click.option("--since", help="Published on or after a date (2026-01-31) or within a duration (7d).")
@click.option("--after-seq", type=int, default=0, show_default=True, help="Only changes after this seq.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@_handle_errors
def export(fmt: str, since: str | None, after_seq: int, out: str | None) -> None:
    """Export articles in seq order, streaming (JSON lines with every public column, or CSV).

    CSV leaves out the HTML and Markdown bodies; JSON lines carry the
    articles_public row.

    \b
    Example:
      ingestd export --format jsonl --since 7d --out week.jsonl
    """
    import csv
    from contextlib import ExitStack

    rows = _state().store.changes(after_seq=after_seq, since=_parse_since(since))
    count = 0
    with ExitStack() as stack:
        stream = stack.enter_context(Path(out).open("w", encoding="utf-8", newline="")) if out else sys.stdout
        if fmt == "jsonl":
            for row in rows:
                stream.write(_consumer_json(row) + "\n")
                count += 1
        else:
            writer = csv.writer(stream)
            writer.writerow(_CSV_COLUMNS)
            for row in rows:
                data = _jsonable(row)
                data["source_feed_ids"] = " ".join(str(i) for i in row["source_feed_ids"])
                writer.writerow([data.get(c) for c in _CSV_COLUMNS])
                count += 1
    if out:
        click.echo(f"exported {count} articles to {out}", err=True)


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
    for line in status_lines(rows, activity, snap, leased=stats.leased_feeds(store)):
        click.echo(line)
