"""Full-text search behind one method, per dialect.

SQLite: an FTS5 external-content table over ``articles(title, content_text)``
(created by migration 0002, kept in sync by triggers; tokenizer ``unicode61
remove_diacritics 2``, so "caffe" finds "caffè"), ranked by bm25 with the
title weighted 5x, with a snippet of the text. PostgreSQL will get a
``tsvector`` implementation behind the same signature; other dialects are
refused with a clear error.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import OperationalError

from ingestd.exceptions import StorageError
from ingestd.store.sql import aware, naive

_TERMS = re.compile(r'"([^"]*)"|(\S+)')


def fts5_query(query: str) -> str:
    """User text as an FTS5 query: every word or "quoted phrase" must match, nothing is syntax.

    Quoting each term keeps FTS5's operators (``-``, ``:``, ``NEAR``, ``*``...)
    from turning a user's query into a syntax error.
    """
    terms = []
    for phrase, word in _TERMS.findall(query):
        term = (phrase or word).replace('"', "").strip()
        if term:
            terms.append('"' + term + '"')
    return " ".join(terms)


def search(
    conn: Connection,
    query: str,
    *,
    feed_id: int | None = None,
    since: datetime | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Articles matching every term of ``query``, best first, with a snippet."""
    dialect = conn.dialect.name
    if dialect != "sqlite":
        raise StorageError("search needs SQLite FTS5 or PostgreSQL")
    match = fts5_query(query)
    if not match:
        return []
    where = ["articles_fts MATCH :match"]
    params: dict[str, Any] = {"match": match, "limit": limit}
    if feed_id is not None:
        where.append("a.id IN (SELECT article_id FROM article_sources WHERE feed_id = :feed)")
        params["feed"] = feed_id
    if since is not None:
        where.append("COALESCE(a.published_at, a.created_at) >= :since")
        params["since"] = naive(since)
    sql = (
        "SELECT a.id, a.seq, a.title, a.url, a.published_at, "  # noqa: S608 - fixed fragments
        "snippet(articles_fts, 1, '[', ']', '…', 16) AS snippet, bm25(articles_fts, 5.0, 1.0) AS rank "
        "FROM articles_fts JOIN articles a ON a.id = articles_fts.rowid "
        f"WHERE {' AND '.join(where)} ORDER BY rank LIMIT :limit"
    )
    try:
        rows = conn.execute(text(sql), params).all()
    except OperationalError as e:
        if "no such table" in str(e) or "no such module" in str(e):
            raise StorageError("search needs SQLite FTS5 or PostgreSQL (this SQLite has no FTS5)") from e
        raise
    out = []
    for r in rows:
        data = dict(r._mapping)
        value = data["published_at"]
        data["published_at"] = aware(datetime.fromisoformat(value) if isinstance(value, str) else value)
        out.append(data)
    return out
