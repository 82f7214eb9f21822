"""The store: the only part of ingestd that touches the database.

``open_store(url)`` gives a ``Store`` for SQLite (default, WAL) or PostgreSQL.
Every poll is one transaction: the feed's new validators commit together with
its articles, so a crash can never leave a 304-answering feed whose articles
were lost. (Polls that store no article may share one: ``save_feed_states``.)
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ingestd.exceptions import StorageError
from ingestd.models import CleanArticle, FeedToPoll, FeedUpdate, IdentityKeys, SaveStats
from ingestd.store import consumers, identity, sql
from ingestd.store import search as fulltext
from ingestd.store.sql import aware, naive

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class FeedInfo:
    id: int
    url: str
    title: str
    site_url: str | None
    status: str
    error_count: int
    last_error: str | None
    last_polled_at: datetime | None
    last_success_at: datetime | None
    next_poll_at: datetime | None
    interval_seconds: int | None
    full_text: bool
    etag: str | None
    last_modified: str | None
    articles: int


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # isolation_level=None lets us issue BEGIN IMMEDIATE ourselves: a write
    # transaction takes the write lock at once instead of failing to upgrade.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    # Checkpoint every ~32 MB of WAL rather than 4 MB: fewer fsyncs of the database during a
    # poll of many feeds (housekeeping truncates the WAL hourly). Durability is unchanged.
    cur.execute("PRAGMA wal_autocheckpoint=8192")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # Readers take no write lock: WAL lets them run beside the one writer.
    read_only = conn.get_execution_options().get("ingestd_read_only", False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StorageError(f"cannot create the database directory for {path}: {e.strerror}") from e
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return create_engine(url, pool_pre_ping=True)


def head_revision() -> str:
    """The newest migration, by file name (``NNNN_*.py``, revision ``NNNN``)."""
    return max(p.name.split("_", 1)[0] for p in (MIGRATIONS / "versions").glob("[0-9]*_*.py"))


def _at_head(engine: Engine) -> bool:
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == head_revision()
    except SQLAlchemyError:  # no such table yet: a new database
        return False


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates a fresh database).

    A database already at the newest revision is left alone without loading
    alembic (and mako): ~12 MB less in every process that opens the store.
    """
    if _at_head(engine):
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


class Store:
    """Feeds, articles and their sources, behind one interface."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.owner = f"{socket.gethostname()}:{os.getpid()}"[:64]

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction (on SQLite: BEGIN IMMEDIATE, the write lock at once)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as e:
            raise StorageError(f"database error: {e.__class__.__name__}: {str(e).splitlines()[0]}") from e

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read-only transaction: it never waits for, nor blocks, the writer."""
        try:
            with self.engine.connect().execution_options(ingestd_read_only=True) as conn, conn.begin():
                yield conn
        except SQLAlchemyError as e:
            raise StorageError(f"database error: {e.__class__.__name__}: {str(e).splitlines()[0]}") from e

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(text("SELECT 1"))

    # -- feeds ---------------------------------------------------------------

    def add_feed(
        self, url: str, *, interval: int | None = None, full_text: bool = False, title: str = ""
    ) -> tuple[int, bool]:
        """Subscribe; returns (id, created). Subscribing twice is not an error."""
        now = naive(_utcnow())
        with self._tx() as conn:
            existing = conn.execute(select(sql.feeds.c.id).where(sql.feeds.c.url == url)).scalar_one_or_none()
            if existing is not None:
                return int(existing), False
            try:
                new_id = conn.execute(
                    sql.feeds.insert()
                    .values(
                        url=url,
                        title=title,
                        created_at=now,
                        next_poll_at=now,
                        status="active",
                        error_count=0,
                        interval_seconds=interval,
                        full_text=full_text,
                    )
                    .returning(sql.feeds.c.id)
                ).scalar_one()
            except IntegrityError as e:
                raise StorageError(f"feed {url} could not be added: {e.orig}") from e
            return int(new_id), True

    def _feed_query(self) -> Any:
        count = (
            select(func.count(sql.sources.c.article_id.distinct()))
            .where(sql.sources.c.feed_id == sql.feeds.c.id)
            .scalar_subquery()
        )
        return select(sql.feeds, count.label("articles"))

    @staticmethod
    def _info(row: Any) -> FeedInfo:
        return FeedInfo(
            id=row.id,
            url=row.url,
            title=row.title or "",
            site_url=row.site_url,
            status=row.status,
            error_count=row.error_count,
            last_error=row.last_error,
            last_polled_at=aware(row.last_polled_at),
            last_success_at=aware(row.last_success_at),
            next_poll_at=aware(row.next_poll_at),
            interval_seconds=row.interval_seconds,
            full_text=bool(row.full_text),
            etag=row.etag,
            last_modified=row.last_modified,
            articles=int(row.articles or 0),
        )

    def list_feeds(self) -> list[FeedInfo]:
        with self._read() as conn:
            return [self._info(r) for r in conn.execute(self._feed_query().order_by(sql.feeds.c.id))]

    def find_feed(self, ref: str | int) -> FeedInfo | None:
        """A feed by id or by URL."""
        query = self._feed_query()
        if isinstance(ref, int) or str(ref).isdigit():
            query = query.where(sql.feeds.c.id == int(ref))
        else:
            query = query.where(sql.feeds.c.url == str(ref))
        with self._read() as conn:
            row = conn.execute(query).first()
        return self._info(row) if row is not None else None

    def remove_feed(self, feed_id: int) -> int:
        """Unsubscribe; stories no other feed carries go with it. Returns their count."""
        with self._tx() as conn:
            orphans = select(sql.sources.c.article_id).where(sql.sources.c.feed_id == feed_id)
            shared = select(sql.sources.c.article_id).where(sql.sources.c.feed_id != feed_id)
            ids = [
                r[0]
                for r in conn.execute(
                    select(sql.articles.c.id).where(
                        sql.articles.c.id.in_(orphans.scalar_subquery()),
                        sql.articles.c.id.not_in(shared.scalar_subquery()),
                    )
                )
            ]
            if ids:
                conn.execute(delete(sql.articles).where(sql.articles.c.id.in_(ids)))
            conn.execute(delete(sql.feeds).where(sql.feeds.c.id == feed_id))
            return len(ids)

    def set_paused(self, feed_id: int, paused: bool) -> None:
        with self._tx() as conn:
            values: dict[str, Any] = (
                {"status": "paused"}
                if paused
                else {
                    "status": "active",
                    "next_poll_at": naive(_utcnow()),
                    "error_count": 0,
                }
            )
            conn.execute(update(sql.feeds).where(sql.feeds.c.id == feed_id).values(**values))

    # -- polling -------------------------------------------------------------

    def claim(
        self,
        *,
        limit: int,
        lease_seconds: float,
        due_only: bool = True,
        ids: Sequence[int] | None = None,
        now: datetime | None = None,
    ) -> list[FeedToPoll]:
        now = now or _utcnow()
        with self._tx() as conn:
            return sql.claim(
                conn,
                now=now,
                lease_until=now + timedelta(seconds=lease_seconds),
                owner=self.owner,
                limit=limit,
                due_only=due_only,
                ids=ids,
                for_update_skip_locked=self.dialect == "postgresql",
            )

    def release(self, feed_ids: Sequence[int]) -> None:
        """Give back leases of feeds that were claimed but not polled."""
        if not feed_ids:
            return
        with self._tx() as conn:
            conn.execute(
                update(sql.feeds)
                .where(sql.feeds.c.id.in_(list(feed_ids)))
                .values(lease_until=None, lease_owner=None)
            )

    def entry_hashes(self, feed_id: int) -> dict[str, str]:
        with self._read() as conn:
            # Tombstoned sources count as known: a deleted story is not even re-cleaned.
            return {
                **identity.tombstoned_entry_hashes(conn, feed_id),
                **sql.known_entry_hashes(conn, feed_id),
            }

    def save_poll(
        self,
        feed_id: int,
        update_: FeedUpdate,
        items: Sequence[tuple[CleanArticle, IdentityKeys]] = (),
    ) -> SaveStats:
        """Store one poll's articles and the feed's new state in one transaction."""
        with self._tx() as conn:
            stats = identity.save_articles(conn, feed_id, items, update_.polled_at) if items else SaveStats()
            sql.apply_feed_update(conn, feed_id, update_, stats.new)
            return stats

    def save_feed_states(self, updates: Sequence[tuple[int, FeedUpdate]]) -> None:
        """Record polls that stored no article (304s, failures), all in one transaction.

        A cycle of unchanged feeds is mostly these; one commit for all that
        queued up while the writer was busy, instead of one each.
        """
        with self._tx() as conn:
            for feed_id, update_ in updates:
                sql.apply_feed_update(conn, feed_id, update_, 0)

    def defer_feeds(self, matches: Callable[[str], bool], until: datetime) -> int:
        """Make every feed whose URL ``matches`` due no sooner than ``until``; returns how many moved.

        A host that answers 429/503 with Retry-After asks for a pause of all
        its feeds; kept here, it holds across restarts and separate ``poll`` runs.
        """
        with self._tx() as conn:
            ids = [r.id for r in conn.execute(select(sql.feeds.c.id, sql.feeds.c.url)) if matches(r.url)]
            moved = 0
            for i in range(0, len(ids), 500):
                moved += conn.execute(
                    update(sql.feeds)
                    .where(sql.feeds.c.id.in_(ids[i : i + 500]), sql.feeds.c.next_poll_at < naive(until))
                    .values(next_poll_at=naive(until))
                ).rowcount
            return moved

    def add_articles(self, feed_id: int, items: Sequence[tuple[CleanArticle, IdentityKeys]]) -> SaveStats:
        """Store articles that did not come from a poll (archive backfill, full text)."""
        with self._tx() as conn:
            return identity.save_articles(conn, feed_id, items, _utcnow())

    # -- articles ------------------------------------------------------------

    def list_articles(
        self,
        *,
        feed_id: int | None = None,
        since: datetime | None = None,
        after_seq: int | None = None,
        limit: int | None = 50,
        newest_first: bool = True,
    ) -> list[dict[str, Any]]:
        a = sql.articles
        query = select(a)
        if feed_id is not None:
            query = query.where(
                a.c.id.in_(select(sql.sources.c.article_id).where(sql.sources.c.feed_id == feed_id))
            )
        if since is not None:
            query = query.where(func.coalesce(a.c.published_at, a.c.created_at) >= naive(since))
        if after_seq is not None:
            query = query.where(a.c.seq > after_seq).order_by(a.c.seq)
        elif newest_first:
            query = query.order_by(func.coalesce(a.c.published_at, a.c.created_at).desc(), a.c.id.desc())
        else:
            query = query.order_by(a.c.seq)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [self._article(r) for r in conn.execute(query)]

    def get_article(self, article_id: int) -> dict[str, Any] | None:
        with self._read() as conn:
            row = conn.execute(select(sql.articles).where(sql.articles.c.id == article_id)).first()
            if row is None:
                return None
            result = self._article(row)
            srcs = conn.execute(
                select(sql.sources.c.feed_id, sql.sources.c.guid_key, sql.sources.c.url).where(
                    sql.sources.c.article_id == article_id
                )
            )
            result["sources"] = [dict(s._mapping) for s in srcs]
            return result

    @staticmethod
    def _article(row: Any) -> dict[str, Any]:
        data = dict(row._mapping)
        for key in ("published_at", "updated_at", "created_at"):
            data[key] = aware(data[key])
        for key in ("images", "categories"):
            try:
                data[key] = json.loads(data[key] or "[]")
            except ValueError:
                data[key] = []
        data["is_paywalled"] = bool(data["is_paywalled"])
        return data

    def delete_article(self, article_id: int) -> bool:
        """Delete a story for good: a tombstone keeps every feed from bringing it back."""
        with self._tx() as conn:
            return identity.tombstone_articles(conn, [article_id], _utcnow(), "user") > 0

    def revisions(self, article_id: int) -> list[dict[str, Any]]:
        """Previous versions of an article, oldest first (each with the seq it had)."""
        r = identity.revisions
        with self._read() as conn:
            rows = conn.execute(select(r).where(r.c.article_id == article_id).order_by(r.c.seq))
            return [{**dict(x._mapping), "revised_at": aware(x.revised_at)} for x in rows]

    def max_seq(self) -> int:
        with self._read() as conn:
            return consumers.max_seq(conn)

    def changes(
        self,
        *,
        after_seq: int = 0,
        since: datetime | None = None,
        feed_id: int | None = None,
        page_size: int = 500,
    ) -> Iterator[dict[str, Any]]:
        """Rows of ``articles_public`` with ``seq > after_seq`` in seq order, streamed page by page."""
        cursor = after_seq
        while True:
            with self._read() as conn:
                rows = consumers.page(conn, after_seq=cursor, limit=page_size, since=since, feed_id=feed_id)
            yield from rows
            if len(rows) < page_size:
                return
            cursor = rows[-1]["seq"]

    def search(
        self, query: str, *, feed_id: int | None = None, since: datetime | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """Full-text search over title and text, best first, with snippets (see store/search.py)."""
        with self._read() as conn:
            return fulltext.search(conn, query, feed_id=feed_id, since=since, limit=limit)

    def count_articles(self) -> int:
        with self._read() as conn:
            return sql.count_articles(conn)

    def housekeeping(self, retention_days: int = 0, per_feed: int = 0) -> int:
        """Retention by age and by count, then let SQLite refresh statistics and fold the WAL back.

        ``per_feed`` keeps each feed's newest stories (those it first brought);
        retired stories are tombstoned, so a feed that still carries them does
        not bring them back.
        """
        removed = 0
        a = sql.articles
        newest = func.coalesce(a.c.published_at, a.c.created_at)
        if retention_days > 0:
            cutoff = _utcnow() - timedelta(days=retention_days)
            with self._tx() as conn:
                old = conn.execute(select(a.c.id).where(newest < naive(cutoff))).scalars()
                removed = identity.tombstone_articles(conn, list(old), _utcnow(), "retention")
        if per_feed > 0:
            with self._tx() as conn:
                over = conn.execute(
                    select(a.c.feed_id)
                    .where(a.c.feed_id.is_not(None))
                    .group_by(a.c.feed_id)
                    .having(func.count() > per_feed)
                ).scalars()
                for feed_id in list(over):
                    extra = conn.execute(
                        select(a.c.id)
                        .where(a.c.feed_id == feed_id)
                        .order_by(newest.desc(), a.c.id.desc())
                        .offset(per_feed)
                    ).scalars()
                    removed += identity.tombstone_articles(conn, list(extra), _utcnow(), "retention")
        if self.dialect == "sqlite":
            # Outside any transaction: a checkpoint cannot run inside one.
            raw = self.engine.raw_connection()
            try:
                cur = raw.cursor()
                cur.execute("PRAGMA optimize")
                cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                cur.close()
            except Exception as e:
                raise StorageError(f"housekeeping failed: {e}") from e
            finally:
                raw.close()
        return int(removed or 0)

    def integrity_ok(self) -> bool:
        if self.dialect != "sqlite":
            return True
        with self._read() as conn:
            return conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default create or upgrade) the database at ``url``."""
    try:
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
    except StorageError:
        raise
    except SQLAlchemyError as e:
        raise StorageError(f"cannot open database {url}: {str(e).splitlines()[0]}") from e
    except Exception as e:  # alembic wraps driver errors in its own types
        raise StorageError(f"cannot open database {url}: {e}") from e
    return Store(engine)
