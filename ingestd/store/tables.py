"""The database tables: the schema consumers query (documented in README.md).

These are the only SQLModel classes. Times are stored as naive UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

FEED_STATUSES = ("active", "paused", "failing", "gone")


class Feed(SQLModel, table=True):
    __tablename__ = "feeds"

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(sa_column=Column(Text, nullable=False, unique=True))
    site_url: str | None = Field(default=None, sa_column=Column(Text))
    title: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    generator: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    language: str | None = Field(default=None, max_length=35)
    etag: str | None = Field(default=None, sa_column=Column(Text))
    last_modified: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime
    last_polled_at: datetime | None = None
    last_success_at: datetime | None = None
    next_poll_at: datetime = Field(index=True)
    status: str = Field(default="active", max_length=16, index=True)
    error_count: int = 0
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    http_status: int | None = None
    interval_seconds: int | None = None
    full_text: bool = False
    #: "guid", or "link" once its guids proved unstable (reused or changing): entries keyed by link
    guid_mode: str = Field(default="guid", sa_column=Column(String(8), nullable=False, server_default="guid"))
    lease_until: datetime | None = None
    lease_owner: str | None = Field(default=None, max_length=64)


class Article(SQLModel, table=True):
    __tablename__ = "articles"
    __table_args__ = (
        Index("ix_articles_canonical_url", "canonical_url"),
        Index("ix_articles_url_key", "url_key"),
        Index("ix_articles_content_hash", "content_hash"),
        Index("ix_articles_published_at", "published_at"),
        Index("ix_articles_feed_id", "feed_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("feeds.id", ondelete="SET NULL"))
    )
    guid: str | None = Field(default=None, sa_column=Column(Text))
    url: str | None = Field(default=None, sa_column=Column(Text))
    canonical_url: str | None = Field(default=None, sa_column=Column(Text))
    url_key: str | None = Field(default=None, sa_column=Column(Text))
    title: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    author: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    published_at: datetime | None = None
    updated_at: datetime | None = None
    created_at: datetime
    summary: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    subtitle: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    content_html: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    content_text: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    content_markdown: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    word_count: int = 0
    reading_time: int = 0
    image_url: str | None = Field(default=None, sa_column=Column(Text))
    images: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    categories: str = Field(default="[]", sa_column=Column(Text, nullable=False, server_default="[]"))
    language: str | None = Field(default=None, max_length=16)
    content_hash: str = Field(max_length=64)
    is_paywalled: bool = False
    body_source: str = Field(default="feed", max_length=8)
    cleaner_version: int = 0
    raw_html: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    seq: int = Field(unique=True)
    near_duplicate_of: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("articles.id", ondelete="SET NULL"))
    )


class ArticleSource(SQLModel, table=True):
    __tablename__ = "article_sources"
    __table_args__ = (
        UniqueConstraint("feed_id", "guid_key", name="uq_article_sources_feed_guid"),
        Index("ix_article_sources_article_id", "article_id"),
        Index("ix_article_sources_feed_url_key", "feed_id", "url_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int = Field(
        sa_column=Column(Integer, ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False)
    )
    guid_key: str = Field(sa_column=Column(Text, nullable=False))
    article_id: int = Field(
        sa_column=Column(Integer, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False)
    )
    url: str | None = Field(default=None, sa_column=Column(Text))
    url_key: str | None = Field(default=None, sa_column=Column(Text))
    entry_hash: str = Field(max_length=64)
    first_seen_at: datetime


class FetchLog(SQLModel, table=True):
    __tablename__ = "fetch_log"
    __table_args__ = (Index("ix_fetch_log_feed_at", "feed_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int = Field(
        sa_column=Column(Integer, ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False)
    )
    at: datetime
    outcome: str = Field(max_length=16)
    http_status: int | None = None
    bytes: int = 0
    duration: float = 0.0
    new: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))


class Counter(SQLModel, table=True):
    """Named counters; ``seq`` is the consumers' cursor, taken under a row lock."""

    __tablename__ = "counters"

    name: str = Field(primary_key=True, max_length=32)
    value: int = 0


class ArticleRevision(SQLModel, table=True):
    """A previous version of an article, kept when an update changed its title or text."""

    __tablename__ = "article_revisions"
    __table_args__ = (Index("ix_article_revisions_article_seq", "article_id", "seq"),)

    id: int | None = Field(default=None, primary_key=True)
    article_id: int = Field(
        sa_column=Column(Integer, ForeignKey("articles.id", ondelete="CASCADE"), nullable=False)
    )
    seq: int  # the seq the article had while this version was current
    revised_at: datetime  # when it stopped being current
    title: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    content_text: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    content_html: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    content_hash: str = Field(max_length=64)


class Tombstone(SQLModel, table=True):
    """A deleted story: its sources and URL are never ingested again."""

    __tablename__ = "tombstones"
    __table_args__ = (
        Index("ix_tombstones_feed_guid", "feed_id", "guid_key"),
        Index("ix_tombstones_url_key", "url_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    feed_id: int | None = Field(
        default=None, sa_column=Column(Integer, ForeignKey("feeds.id", ondelete="CASCADE"))
    )
    guid_key: str | None = Field(default=None, sa_column=Column(Text))
    entry_hash: str | None = Field(default=None, max_length=64)
    url_key: str | None = Field(default=None, sa_column=Column(Text))
    deleted_at: datetime
    reason: str = Field(max_length=16)  # "user" or "retention"


class NearDupSketch(SQLModel, table=True):
    """An article's MinHash sketch, compared with the candidates its bands find."""

    __tablename__ = "near_dup_sketches"

    article_id: int = Field(
        sa_column=Column(Integer, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)
    )
    sketch: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class NearDupBand(SQLModel, table=True):
    """The LSH index: (band, hash) -> article; one lookup per band, never a scan."""

    __tablename__ = "near_dup_bands"
    __table_args__ = (Index("ix_near_dup_bands_article_id", "article_id"), {"sqlite_with_rowid": False})

    # The primary key leads with the hash: a lookup is one index search per band hash.
    value: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    band: int = Field(sa_column=Column(Integer, primary_key=True, autoincrement=False))
    article_id: int = Field(
        sa_column=Column(
            Integer, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        )
    )
