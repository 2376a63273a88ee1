"""drop ix_predictions_asset_time: the unique key already indexes (asset, time)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 11:40:00

The unique constraint on (asset_id, window_end_ms, model_version) is an index whose
first two columns are exactly ``ix_predictions_asset_time``'s, so every query by asset
and time range can use it, and the second index only cost writes: at hop 1 a
prediction per reading, each touching one more B-tree at a random place per asset.
Dropping it took the bytes written per reading of ``edgewatch bench storage
--prediction-every 1`` from 544 to 350 (docs/performance.md).
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_predictions_asset_time", table_name="predictions")


def downgrade() -> None:
    op.create_index(
        "ix_predictions_asset_time", "predictions", ["asset_id", "window_end_ms"], unique=False
    )
