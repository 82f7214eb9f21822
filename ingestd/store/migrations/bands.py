"""Rebuilding the near-duplicate band index from the stored sketches, for the migrations
that change its banding (0003, 0004).

``band_hashes`` is ``dedupe.bands`` with its banding as a parameter, frozen here as
migration code must be (a test keeps it equal to ``dedupe.bands``). The sketches never
change, so any banding can be rebuilt from them, upwards and downwards.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import sqlalchemy as sa

_MASK63 = (1 << 63) - 1
_PAGE = 2000


def band_hashes(sketch: bytes, rows: int, bands: int) -> list[int]:
    """The hashes of a sketch's first ``bands`` bands of ``rows`` 8-byte bins each."""
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


def rebuild(conn: sa.Connection, rows: int, bands: int) -> None:
    """Replace every band row with those of ``bands`` bands of ``rows`` bins."""
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
