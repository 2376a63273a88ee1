"""assets.baseline_first_ms / baseline_last_ms: the data times a baseline was learnt from

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 18:00:00

The retraining export labels an asset's baseline readings ``normal``. It took them to
be everything from the asset's first reading to ``commissioned_ms``, the wall-clock
time of commissioning: wrong for readings whose times are not the wall clock (a
replay with its original timestamps: every reading before today was "baseline",
faults included) and after ``edgewatch baseline reset`` (the readings before the
reset too). The two columns hold the first and last reading time of the samples the
baseline was learnt from; rows commissioned before this revision keep the old rule.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE: batch mode would copy the table, which its views and foreign
    # keys refuse.
    op.add_column("assets", sa.Column("baseline_first_ms", sa.BigInteger(), nullable=True))
    op.add_column("assets", sa.Column("baseline_last_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    # SQLite 3.35+ drops a column in place (Python 3.11 ships a newer one).
    op.drop_column("assets", "baseline_last_ms")
    op.drop_column("assets", "baseline_first_ms")
