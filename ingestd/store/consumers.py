"""What consumers read: the ``articles_public`` view in ``seq`` order, in pages.

Pages are keyset-paginated on ``seq`` (``WHERE seq > last ORDER BY seq
LIMIT n``), each in its own short transaction: an export of a million rows
never holds them in memory nor keeps a read transaction open for its whole
length, and the same cursor serves ``articles tail``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from ingestd.store.sql import aware, naive

#: Columns of ``articles_public`` that are JSON text in the database.
_JSON_COLUMNS = ("images", "categories", "source_feed_ids")
_DATES = ("published_at", "updated_at", "created_at")


def _parse_date(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return aware(value)
    return aware(datetime.fromisoformat(str(value)))


def public_row(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    for key in _DATES:
        data[key] = _parse_date(data.get(key))
    for key in _JSON_COLUMNS:
        try:
            data[key] = json.loads(data.get(key) or "[]")
        except ValueError:
            data[key] = []
    data["is_paywalled"] = bool(data.get("is_paywalled"))
    return data


def page(
    conn: Connection,
    *,
    after_seq: int,
    limit: int,
    since: datetime | None = None,
    feed_id: int | None = None,
) -> list[dict[str, Any]]:
    """The next ``limit`` rows of the view after ``after_seq``, oldest change first."""
    where = ["seq > :after"]
    params: dict[str, Any] = {"after": after_seq, "limit": limit}
    if since is not None:
        where.append("COALESCE(published_at, created_at) >= :since")
        params["since"] = naive(since)
    if feed_id is not None:
        where.append("id IN (SELECT article_id FROM article_sources WHERE feed_id = :feed)")
        params["feed"] = feed_id
    query = f"SELECT * FROM articles_public WHERE {' AND '.join(where)} ORDER BY seq LIMIT :limit"  # noqa: S608 - fixed fragments
    return [public_row(r) for r in conn.execute(text(query), params)]


def max_seq(conn: Connection) -> int:
    return int(conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM articles")).scalar_one())


def stream(pages: Iterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    for batch in pages:
        yield from batch
