"""operator labels on alerts (fault, false alarm, maintenance)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 11:20:00

``alert_labels`` keeps every label an operator gave an alert, newest last: the
newest row (by ``created_ms``, then ``id``) is the alert's label, the older ones are
its history. A label row goes with its alert (ON DELETE CASCADE): retention and the
disk budget remove closed alerts, and the label was synced with its own outbox item.
Acknowledgement uses the ``acknowledged``, ``acknowledged_ms`` and
``acknowledged_by`` columns ``alerts`` has had since 0001.

``v_alerts`` gains the alert's id, who acknowledged it and when, and its current
label; ``v_alert_labels`` shows the history. The SQL is frozen here, as in 0004.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _iso(column: str) -> str:
    return f"strftime('%Y-%m-%dT%H:%M:%fZ', {column} / 1000.0, 'unixepoch')"


# 0004's view, restored by the downgrade.
_V_ALERTS_0004 = f"""
        SELECT a.site, a.name AS asset, x.kind, x.severity,
               CASE WHEN x.closed_ms IS NULL THEN 'open' ELSE 'closed' END AS status,
               {_iso("x.opened_ms")} AS opened_utc, {_iso("x.closed_ms")} AS closed_utc,
               round((coalesce(x.closed_ms, CAST(strftime('%s', 'now') AS INTEGER) * 1000)
                      - x.opened_ms) / 1000.0, 1) AS duration_s,
               x.peak_score, x.last_score, x.rul_at_open, x.model_version,
               x.acknowledged, x.detail, x.opened_ms
          FROM alerts x JOIN assets a ON a.id = x.asset_id"""

# The same columns in the same order, then the new ones (queries written against 0004
# keep working).
_V_ALERTS = f"""
        SELECT a.site, a.name AS asset, x.kind, x.severity,
               CASE WHEN x.closed_ms IS NULL THEN 'open' ELSE 'closed' END AS status,
               {_iso("x.opened_ms")} AS opened_utc, {_iso("x.closed_ms")} AS closed_utc,
               round((coalesce(x.closed_ms, CAST(strftime('%s', 'now') AS INTEGER) * 1000)
                      - x.opened_ms) / 1000.0, 1) AS duration_s,
               x.peak_score, x.last_score, x.rul_at_open, x.model_version,
               x.acknowledged, x.detail, x.opened_ms,
               x.id AS alert_id, {_iso("x.acknowledged_ms")} AS acknowledged_utc,
               x.acknowledged_by, l.label, l.note AS label_note, l.by AS labelled_by,
               {_iso("l.created_ms")} AS labelled_utc
          FROM alerts x JOIN assets a ON a.id = x.asset_id
          LEFT JOIN alert_labels l ON l.id = (
               SELECT n.id FROM alert_labels n WHERE n.alert_id = x.id
                ORDER BY n.created_ms DESC, n.id DESC LIMIT 1)"""

_V_ALERT_LABELS = f"""
        SELECT a.site, a.name AS asset, l.alert_id, x.kind, {_iso("x.opened_ms")} AS opened_utc,
               l.label, l.note, l.by, {_iso("l.created_ms")} AS labelled_utc, l.created_ms
          FROM alert_labels l JOIN alerts x ON x.id = l.alert_id
          JOIN assets a ON a.id = x.asset_id"""


def upgrade() -> None:
    op.create_table(
        "alert_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("by", sa.String(length=128), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "label IN ('fault', 'false_alarm', 'maintenance')",
            name=op.f("ck_alert_labels_label"),
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["alerts.id"],
            name=op.f("fk_alert_labels_alert_id_alerts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_labels")),
    )
    op.create_index(
        "ix_alert_labels_alert_time", "alert_labels", ["alert_id", "created_ms"], unique=False
    )
    op.execute("DROP VIEW IF EXISTS v_alerts")
    op.execute(f"CREATE VIEW v_alerts AS {_V_ALERTS}")
    op.execute(f"CREATE VIEW v_alert_labels AS {_V_ALERT_LABELS}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_alert_labels")
    op.execute("DROP VIEW IF EXISTS v_alerts")
    op.execute(f"CREATE VIEW v_alerts AS {_V_ALERTS_0004}")
    op.drop_index("ix_alert_labels_alert_time", table_name="alert_labels")
    op.drop_table("alert_labels")
