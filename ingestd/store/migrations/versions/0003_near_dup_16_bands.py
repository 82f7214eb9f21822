"""near-duplicate index: 16 bands of 3 bins instead of 32 bands of 4

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:00:00

Half the band rows for the same recall on the labelled set (see
``ingestd.pipeline.dedupe.BANDS``): the band index was the store's costliest
part. The sketches stay as they are; the band rows are rebuilt from them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from ingestd.store.migrations.bands import rebuild

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    rebuild(op.get_bind(), rows=3, bands=16)


def downgrade() -> None:
    rebuild(op.get_bind(), rows=4, bands=32)
