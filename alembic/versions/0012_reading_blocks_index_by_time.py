"""ix_reading_blocks_asset_time -> ix_reading_blocks_last: the blocks' index by (last
time, asset) instead of (asset, last time)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 21:00:00

Every commit adds a block per asset it has readings of. In an index ordered by asset
those entries land in as many places as there are assets, and each place is a page
the commit rewrites in the write-ahead log (and again at the checkpoint): at plant
rates (a commit every 10 s, 50 pumps) 46 of the 177 pages a commit wrote. Ordered by
time, the new entries of a commit sit side by side at the end. Blocks are few (one
per asset and commit, merged hourly), so the queries by asset walk the time range
over every asset's blocks, asset in the index, without opening a row of another's.
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_reading_blocks_last", "reading_blocks", ["last_ts_ms", "asset_id"], unique=False
    )
    op.drop_index("ix_reading_blocks_asset_time", table_name="reading_blocks")


def downgrade() -> None:
    op.create_index(
        "ix_reading_blocks_asset_time",
        "reading_blocks",
        ["asset_id", "last_ts_ms"],
        unique=False,
    )
    op.drop_index("ix_reading_blocks_last", table_name="reading_blocks")
