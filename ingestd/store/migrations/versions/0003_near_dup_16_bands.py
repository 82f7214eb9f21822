"""near-duplicate index: 16 bands of 3 bins instead of 32 bands of 4

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:00:00

Half the band rows for the same recall on the labelled set (see
``ingestd.pipeline.dedupe.BANDS``): the band index was the store's costliest
part. The sketches stay as they are; the band rows are rebuilt from them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MASK63 = (1 << 63) - 1
_PAGE = 2000


def band_hashes(sketch: bytes, rows: int, bands: int) -> list[int]:
    """``dedupe.bands`` as of this revision (frozen here, as a migration must be; a test keeps them equal)."""
    size = 8 * rows
    return [
        int.from_bytes(hashlib.blake2b(sketch[i : i + size], digest_size=8).digest()) & _MASK63
        for i in range(0, size * bands, size)
    ]


def _sketches(conn: sa.Connection) -> Iterator[list[tuple[int, bytes]]]:
    """Every stored sketch, a page at a time (keyset paging: no offset scans, bounded memory)."""
    last = -1
    query = sa.text(
        "SELECT article_id, sketch FROM near_dup_sketches"
        " WHERE article_id > :last ORDER BY article_id LIMIT :n"
    )
    while True:
        page = [(int(a), bytes(s)) for a, s in conn.execute(query, {"last": last, "n": _PAGE})]
        if not page:
            return
        yield page
        last = page[-1][0]


def _rebuild(rows: int, bands: int) -> None:
    conn = op.get_bind()
    conn.execute(sa.text("DELETE FROM near_dup_bands"))
    insert = sa.text(
        "INSERT INTO near_dup_bands (value, band, article_id) VALUES (:value, :band, :article_id)"
    )
    for page in _sketches(conn):
        values = [
            {"value": value, "band": band, "article_id": article_id}
            for article_id, sketch in page
            if len(sketch) >= 8 * rows * bands
            for band, value in enumerate(band_hashes(sketch, rows, bands))
        ]
        if values:
            conn.execute(insert, values)


def upgrade() -> None:
    _rebuild(rows=3, bands=16)


def downgrade() -> None:
    _rebuild(rows=4, bands=32)
