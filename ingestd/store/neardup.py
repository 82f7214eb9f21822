"""The near-duplicate index: sketches and their LSH band rows, and the queries on them.

``identity`` decides; this module reads and writes ``near_dup_sketches`` and
``near_dup_bands``. The statements run once or twice per new long story, on
the store's one writer thread, so they go to the driver precompiled (see
``_driver_sql``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ClauseElement, Connection, TextClause, bindparam, insert, text

from ingestd.store.tables import NearDupBand, NearDupSketch

sketches = NearDupSketch.__table__  # type: ignore[attr-defined]
bands_t = NearDupBand.__table__  # type: ignore[attr-defined]

PER_BAND = 5  # newest stories read per band hash


def similarities(sketch: bytes, others: Sequence[bytes]) -> list[float]:
    """The share of equal 8-byte bins of a sketch with each of ``others`` (dedupe.similarity).

    XOR of the two sketches as integers, then a count of the zero 64-bit
    words: C-speed without numpy, which the main process then need not load
    (~15 MB). All sketches have the same length, a multiple of 8.
    """
    size = len(sketch)
    bins = size // 8
    mine = int.from_bytes(sketch)
    return [
        memoryview((mine ^ int.from_bytes(other)).to_bytes(size)).cast("Q").tolist().count(0) / bins
        for other in others
    ]


@functools.cache
def band_query(bands: int) -> TextClause:
    """The newest stored stories under each of ``bands`` band hashes (``:v0``... for bands 0...).

    One index search per hash, each stopped after ``PER_BAND`` rows, newest
    first: the primary key (value, band, article_id) read backwards, no sort.
    """
    parts = [
        f"SELECT article_id FROM (SELECT article_id FROM near_dup_bands WHERE value = :v{i} AND band = {i}"  # noqa: S608 - placeholders and constants only
        f" ORDER BY value DESC, band DESC, article_id DESC LIMIT {PER_BAND}) AS b{i}"
        for i in range(bands)
    ]
    return text(" UNION ALL ".join(parts))


@functools.cache
def sketch_query(count: int) -> TextClause:
    return text(
        "SELECT article_id, sketch FROM near_dup_sketches WHERE article_id IN ("  # noqa: S608 - placeholders only
        + ", ".join(f":a{i}" for i in range(count))
        + ")"
    )


@functools.cache
def _driver_sql(dialect: Any, statement: ClauseElement) -> tuple[str, tuple[str, ...]]:
    """A constant statement compiled once for the dialect: the driver's SQL and, for a
    positional paramstyle (SQLite's qmark), the order of its parameters.

    The near-duplicate statements run once per new long story, where
    SQLAlchemy's per-execution work (cache key, parameter processing) would cost
    more than the index searches themselves.
    """
    compiled: Any = statement.compile(dialect=dialect)  # an SQLCompiler: it has positiontup
    return str(compiled), tuple(compiled.positiontup or ())


def _driver_statement(
    conn: Connection, statement: TextClause, prefix: str, values: Sequence[Any]
) -> tuple[str, Any]:
    sql_text, order = _driver_sql(conn.dialect, statement)
    named = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return sql_text, (tuple(named[name] for name in order) if order else named)


def band_statement(conn: Connection, band_hashes: Sequence[int]) -> tuple[str, Any]:
    """The driver-level SQL and parameters of ``band_query`` for these band hashes."""
    return _driver_statement(conn, band_query(len(band_hashes)), "v", band_hashes)


def _fetch(conn: Connection, statement: tuple[str, Any]) -> list[Any]:
    """Rows of a driver-level statement, on the driver's own cursor (run once or twice per new
    long story: SQLAlchemy's result object cost more per row than the index search)."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(*statement)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def band_matches(conn: Connection, band_hashes: Sequence[int]) -> list[int]:
    """Ids of stored stories sharing each band hash, once per band shared."""
    return [int(article_id) for (article_id,) in _fetch(conn, band_statement(conn, band_hashes))]


def stored_sketches(conn: Connection, article_ids: Sequence[int]) -> dict[int, bytes]:
    statement = _driver_statement(conn, sketch_query(len(article_ids)), "a", article_ids)
    return {int(article_id): bytes(sketch) for article_id, sketch in _fetch(conn, statement)}


_BAND_COLUMNS = ("value", "band", "article_id")
_INSERT_BAND = insert(bands_t).values({c: bindparam(c) for c in _BAND_COLUMNS})


def insert_bands(conn: Connection, rows: Sequence[tuple[int, int, int]]) -> None:
    """Insert (value, band, article_id) rows through the driver's ``executemany``."""
    sql_text, order = _driver_sql(conn.dialect, _INSERT_BAND)
    if order and order != _BAND_COLUMNS:  # an INSERT lists its columns as given: never happens
        raise RuntimeError(f"unexpected parameter order {order} for near_dup_bands")
    # Positional (SQLite): the tuples as they are, no per-row work; named (psycopg): dicts.
    params: Any = rows if order else [dict(zip(_BAND_COLUMNS, r, strict=True)) for r in rows]
    conn.exec_driver_sql(sql_text, params)
