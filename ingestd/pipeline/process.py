"""The worker's side of a poll: parse -> clean -> dedupe keys, for one feed document.

It runs in worker processes (``WorkerPool``) and is named there by its import
path (``PROCESS_DOCUMENT``), so the daemon itself never imports the parser and
cleaner libraries (feedparser, lxml, nh3, language detection): ~20 MB less in
the process that holds the database, and a faster start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import pairwise

from ingestd.exceptions import CleanError
from ingestd.models import CleanArticle, FeedContext, IdentityKeys, Processed
from ingestd.pipeline import dedupe
from ingestd.pipeline.clean import clean_entry
from ingestd.pipeline.parse import parse_feed

__all__ = ["Processed", "posting_gap", "process_document"]


def posting_gap(dates: Sequence[datetime], sample: int = 10) -> float | None:
    """Median seconds between the newest posts; None with fewer than three dated posts."""
    newest = sorted(dates, reverse=True)[:sample]
    if len(newest) < 3:
        return None
    gaps = sorted((a - b).total_seconds() for a, b in pairwise(newest))
    return max(gaps[len(gaps) // 2], 0.0)


def process_document(
    content: bytes,
    *,
    url: str,
    headers: Mapping[str, str],
    known: Mapping[str, str],
    max_entries: int,
    substack_header: bool = False,
) -> Processed:
    """Parse and clean one feed document; runs in a worker process.

    Entries whose raw hash is already stored are skipped before cleaning:
    re-polling a changed feed costs only its changed entries.
    """
    parsed = parse_feed(content, url=url, headers=headers, max_entries=max_entries)
    ctx = FeedContext(
        url=url,
        site_url=parsed.site_url,
        title=parsed.title,
        language=parsed.language,
        generator=parsed.generator,
        substack_header=substack_header,
    )
    items: list[tuple[CleanArticle, IdentityKeys]] = []
    errors: list[str] = []
    unchanged = 0
    seen: set[tuple[str, str | None]] = set()
    for entry in parsed.entries:
        key = dedupe.guid_key(entry)
        # The same entry twice in one document: the first wins. A guid reused for another
        # link goes on to the store, which recognises reused guids.
        if (key, entry.link) in seen:
            continue
        seen.add((key, entry.link))
        ehash = dedupe.entry_hash(entry)
        if known.get(key) == ehash:
            unchanged += 1
            continue
        try:
            article = clean_entry(entry, ctx)
        except CleanError as e:
            errors.append(f"entry {key[:80]}: {e}")
            continue
        items.append((article, dedupe.identity_keys(key, article, ehash)))
    feed_meta = dataclasses.replace(parsed, entries=())  # the entries travel back cleaned
    dates = [d for e in parsed.entries if (d := e.published_at or e.updated_at) is not None]
    return Processed(
        feed=feed_meta,
        items=tuple(items),
        unchanged=unchanged,
        errors=tuple(errors),
        posting_gap=posting_gap(dates),
    )
