"""predictions: whether the machine was running, and the RUL estimate's interval

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 06:00:00

``judged`` is 1 when the window was judged (the machine ran by the bundle's or the
profile's run condition), 0 when it stood still; while it stands still the RUL
estimate holds its last running value. ``rul_low`` and ``rul_high`` bound the RUL
estimate's 80 % interval (the ensemble's spread, calibrated under cross-validation).
All three are NULL for rows written before, and the interval for models without one.
``v_predictions`` shows them; its SQL is frozen here as 0004's is.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_ISO_END = "strftime('%Y-%m-%dT%H:%M:%fZ', p.window_end_ms / 1000.0, 'unixepoch')"
_ISO_CREATED = "strftime('%Y-%m-%dT%H:%M:%fZ', p.created_ms / 1000.0, 'unixepoch')"

_VIEW_0004 = f"""
        SELECT a.site, a.name AS asset, {_ISO_END} AS window_end_utc,
               p.anomaly_score, p.anomaly_threshold, p.is_anomaly, p.rul,
               p.model_version, {_ISO_CREATED} AS scored_utc, p.window_end_ms
          FROM predictions p JOIN assets a ON a.id = p.asset_id"""

_VIEW_0006 = f"""
        SELECT a.site, a.name AS asset, {_ISO_END} AS window_end_utc,
               p.anomaly_score, p.anomaly_threshold, p.is_anomaly, p.rul,
               p.rul_low, p.rul_high, p.judged AS running,
               p.model_version, {_ISO_CREATED} AS scored_utc, p.window_end_ms
          FROM predictions p JOIN assets a ON a.id = p.asset_id"""


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch rebuild): the view is dropped and made again.
    op.execute("DROP VIEW IF EXISTS v_predictions")
    op.add_column("predictions", sa.Column("judged", sa.Integer(), nullable=True))
    op.add_column("predictions", sa.Column("rul_low", sa.Float(), nullable=True))
    op.add_column("predictions", sa.Column("rul_high", sa.Float(), nullable=True))
    op.execute(f"CREATE VIEW v_predictions AS {_VIEW_0006}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_predictions")
    for column in ("rul_high", "rul_low", "judged"):
        op.execute(f"ALTER TABLE predictions DROP COLUMN {column}")
    op.execute(f"CREATE VIEW v_predictions AS {_VIEW_0004}")
