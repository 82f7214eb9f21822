"""`ingestd feeds ...`: subscriptions."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import click

from ingestd.cli import _find, _fmt_time, _handle_errors, _Progress, _state, fail, main
from ingestd.config import parse_duration

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
    """List subscriptions with their health and last polls (with --json: the fetch log).

    \b
    Example:
      ingestd feeds list --json | jq .
    """
    from ingestd.daemon.report import outcome_marks
    from ingestd.store import stats

    store = _state().store
    rows = store.list_feeds()
    history = stats.fetch_history(store)
    if as_json:
        for f in rows:
            data = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in vars(f).items()}
            data["fetch_log"] = [
                {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in h.items()}
                for h in history.get(f.id, [])
            ]
            click.echo(json.dumps(data, ensure_ascii=False))
        return
    for f in rows:
        error = f"  error: {f.last_error}" if f.last_error and f.status != "active" else ""
        click.echo(
            f"{f.id:>5}  {f.status:<8} {f.articles:>6} articles  last {_fmt_time(f.last_polled_at)}  "
            f"polls {outcome_marks(history.get(f.id, [])) or '-':<10}  {f.title or '-'}  {f.url}{error}"
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
