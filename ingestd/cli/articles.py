"""`ingestd articles ...` and `ingestd export`: reading what is stored."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from ingestd.cli import (
    _find,
    _fmt_time,
    _handle_errors,
    _jsonable,
    _parse_since,
    _state,
    fail,
    main,
)

# -- articles ---------------------------------------------------------------


@main.group()
def articles() -> None:
    """Read stored articles."""


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
