"""identity keys, revisions, tombstones, near-duplicate index, search, consumers' view

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 15:00:00

Dialect-specific parts (FTS5 on SQLite, the view's aggregate) are chosen here
by the connection's dialect; everything else is portable.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The consumers' view: every article column but raw_html, plus where the story came from.
_VIEW_COLUMNS = (
    "a.id, a.seq, a.feed_id, f.url AS feed_url, {sources} AS source_feed_ids, a.guid, a.url, "
    "a.canonical_url, a.title, a.author, a.published_at, a.updated_at, a.created_at, a.summary, "
    "a.subtitle, a.content_html, a.content_text, a.content_markdown, a.word_count, a.reading_time, "
    "a.image_url, a.images, a.categories, a.language, a.content_hash, a.is_paywalled, a.body_source, "
    "a.cleaner_version, a.near_duplicate_of"
)
_SOURCES = {
    "sqlite": "(SELECT json_group_array(DISTINCT s.feed_id) FROM article_sources s "
    "WHERE s.article_id = a.id)",
    "postgresql": "(SELECT COALESCE(json_agg(DISTINCT s.feed_id), '[]')::text FROM article_sources s "
    "WHERE s.article_id = a.id)",
}

# FTS5 over title and text, external content (no second copy of the bodies), kept in sync by triggers.
_FTS = [
    "CREATE VIRTUAL TABLE articles_fts USING fts5(title, content_text, content='articles', "
    "content_rowid='id', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER articles_fts_ai AFTER INSERT ON articles BEGIN "
    "INSERT INTO articles_fts(rowid, title, content_text) VALUES (new.id, new.title, new.content_text); END",
    "CREATE TRIGGER articles_fts_ad AFTER DELETE ON articles BEGIN "
    "INSERT INTO articles_fts(articles_fts, rowid, title, content_text) "
    "VALUES ('delete', old.id, old.title, old.content_text); END",
    "CREATE TRIGGER articles_fts_au AFTER UPDATE OF title, content_text ON articles BEGIN "
    "INSERT INTO articles_fts(articles_fts, rowid, title, content_text) "
    "VALUES ('delete', old.id, old.title, old.content_text); "
    "INSERT INTO articles_fts(rowid, title, content_text) VALUES (new.id, new.title, new.content_text); END",
    "INSERT INTO articles_fts(articles_fts) VALUES ('rebuild')",
]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("guid_mode", sa.String(length=8), server_default="guid", nullable=False)
        )
    with op.batch_alter_table("articles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url_key", sa.Text(), nullable=True))
        batch_op.create_index("ix_articles_url_key", ["url_key"], unique=False)
    with op.batch_alter_table("article_sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("url_key", sa.Text(), nullable=True))
        batch_op.create_index("ix_article_sources_feed_url_key", ["feed_id", "url_key"], unique=False)

    op.create_table(
        "article_revisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("revised_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("content_text", sa.Text(), server_default="", nullable=False),
        sa.Column("content_html", sa.Text(), server_default="", nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_article_revisions_article_seq", "article_revisions", ["article_id", "seq"])
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("feed_id", sa.Integer(), nullable=True),
        sa.Column("guid_key", sa.Text(), nullable=True),
        sa.Column("entry_hash", sa.String(length=64), nullable=True),
        sa.Column("url_key", sa.Text(), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["feed_id"], ["feeds.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_tombstones_feed_guid", "tombstones", ["feed_id", "guid_key"])
    op.create_index("ix_tombstones_url_key", "tombstones", ["url_key"])
    op.create_table(
        "near_dup_sketches",
        sa.Column("article_id", sa.Integer(), nullable=False),
        sa.Column("sketch", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("article_id"),
    )
    op.create_table(
        "near_dup_bands",
        sa.Column("value", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("band", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("article_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(["article_id"], ["articles.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("value", "band", "article_id"),
        sqlite_with_rowid=False,  # the primary key is the table: one b-tree less per band row
    )
    op.create_index("ix_near_dup_bands_article_id", "near_dup_bands", ["article_id"])

    if dialect in _SOURCES:
        columns = _VIEW_COLUMNS.format(sources=_SOURCES[dialect])
        view = f"SELECT {columns} FROM articles a LEFT JOIN feeds f ON f.id = a.feed_id"  # noqa: S608 - constant
        op.execute(f"CREATE VIEW articles_public AS {view}")
    if dialect == "sqlite":
        for statement in _FTS:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("articles_fts_au", "articles_fts_ad", "articles_fts_ai"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
        op.execute("DROP TABLE IF EXISTS articles_fts")
    op.execute("DROP VIEW IF EXISTS articles_public")
    op.drop_index("ix_near_dup_bands_article_id", table_name="near_dup_bands")
    op.drop_table("near_dup_bands")
    op.drop_table("near_dup_sketches")
    op.drop_index("ix_tombstones_url_key", table_name="tombstones")
    op.drop_index("ix_tombstones_feed_guid", table_name="tombstones")
    op.drop_table("tombstones")
    op.drop_index("ix_article_revisions_article_seq", table_name="article_revisions")
    op.drop_table("article_revisions")
    with op.batch_alter_table("article_sources", schema=None) as batch_op:
        batch_op.drop_index("ix_article_sources_feed_url_key")
        batch_op.drop_column("url_key")
    with op.batch_alter_table("articles", schema=None) as batch_op:
        batch_op.drop_index("ix_articles_url_key")
        batch_op.drop_column("url_key")
    with op.batch_alter_table("feeds", schema=None) as batch_op:
        batch_op.drop_column("guid_mode")
