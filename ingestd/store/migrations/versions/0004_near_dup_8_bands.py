"""near-duplicate index: 8 bands of 2 bins instead of 16 bands of 3

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 00:00:00

Half the band rows again, for the same recall on the labelled set and
nearly the same odds at the threshold (see ``ingestd.pipeline.dedupe.BANDS``):
the band index was still the store's costliest part. The sketches stay as
they are; the band rows are rebuilt from them.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from ingestd.store.migrations.bands import rebuild

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    rebuild(op.get_bind(), rows=2, bands=8)


def downgrade() -> None:
    rebuild(op.get_bind(), rows=3, bands=16)
