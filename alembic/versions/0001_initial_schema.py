"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 20:18:22.897209
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=32), server_default="commissioning", nullable=False),
        sa.Column("sensors", sa.Text(), nullable=True, comment="JSON list of sensor names seen"),
        sa.Column("baseline_version", sa.String(length=64), nullable=True),
        sa.Column("commissioned_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assets")),
        sa.UniqueConstraint("site", "name", name=op.f("uq_assets_site")),
    )
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False, comment="raw bytes, truncated"),
        sa.Column("payload_size", sa.Integer(), nullable=False, comment="size before truncation"),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("asset", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.create_index("ix_dead_letters_reason", ["reason", "received_ms"], unique=False)
        batch_op.create_index("ix_dead_letters_time", ["received_ms"], unique=False)

    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("installed_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("manifest_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_models")),
        sa.UniqueConstraint("sha256", name=op.f("uq_models_sha256")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column(
            "payload", sa.LargeBinary(), nullable=True, comment="inline body, or NULL if in a file"
        ),
        sa.Column("done_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_outbox_idempotency_key")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_drain", ["state", "priority", "created_ms"], unique=False)

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("opened_ms", sa.BigInteger(), nullable=False),
        sa.Column("closed_ms", sa.BigInteger(), nullable=True),
        sa.Column("peak_score", sa.Float(), nullable=False),
        sa.Column("last_score", sa.Float(), nullable=False),
        sa.Column("rul_at_open", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(length=64), server_default="", nullable=False),
        sa.Column("acknowledged", sa.Integer(), server_default="0", nullable=False),
        sa.Column("acknowledged_ms", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_alerts_asset_id_assets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
        sa.UniqueConstraint("asset_id", "kind", "opened_ms", name=op.f("uq_alerts_asset_id")),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index("ix_alerts_asset_time", ["asset_id", "opened_ms"], unique=False)
        batch_op.create_index(
            "ix_alerts_open", ["asset_id"], unique=False, sqlite_where=sa.text("closed_ms IS NULL")
        )

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("level", sa.String(length=16), server_default="info", nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_events_asset_id_assets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_asset_time", ["asset_id", "ts_ms"], unique=False)
        batch_op.create_index("ix_events_time", ["ts_ms"], unique=False)

    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("window_end_ms", sa.BigInteger(), nullable=False),
        sa.Column("model_version", sa.String(length=64), nullable=False),
        sa.Column("anomaly_score", sa.Float(), nullable=False),
        sa.Column("anomaly_threshold", sa.Float(), nullable=False),
        sa.Column("is_anomaly", sa.Integer(), nullable=False),
        sa.Column("rul", sa.Float(), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_predictions_asset_id_assets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint(
            "asset_id", "window_end_ms", "model_version", name=op.f("uq_predictions_asset_id")
        ),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_predictions_asset_time", ["asset_id", "window_end_ms"], unique=False
        )
        batch_op.create_index("ix_predictions_time", ["window_end_ms"], unique=False)

    op.create_table(
        "readings",
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("received_ms", sa.BigInteger(), nullable=False),
        sa.Column("values_json", sa.Text(), nullable=False, comment="JSON object sensor -> value"),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_readings_asset_id_assets")
        ),
        sa.PrimaryKeyConstraint("asset_id", "ts_ms", name=op.f("pk_readings")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.create_index("ix_readings_time", ["ts_ms"], unique=False)

    op.create_table(
        "summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("period_start_ms", sa.BigInteger(), nullable=False),
        sa.Column("period_s", sa.Integer(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column(
            "stats_json", sa.Text(), nullable=False, comment="sensor -> min/mean/max/std/p95"
        ),
        sa.Column("anomaly_rate", sa.Float(), nullable=True),
        sa.Column("max_score", sa.Float(), nullable=True),
        sa.Column("latest_rul", sa.Float(), nullable=True),
        sa.Column("alerts_opened", sa.Integer(), server_default="0", nullable=False),
        sa.Column("alerts_closed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("asset_state", sa.String(length=32), nullable=True),
        sa.Column("model_version", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_summaries_asset_id_assets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_summaries")),
        sa.UniqueConstraint(
            "asset_id", "period_start_ms", "period_s", name=op.f("uq_summaries_asset_id")
        ),
    )
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.create_index("ix_summaries_time", ["period_start_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.drop_index("ix_summaries_time")

    op.drop_table("summaries")
    with op.batch_alter_table("readings", schema=None) as batch_op:
        batch_op.drop_index("ix_readings_time")

    op.drop_table("readings")
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.drop_index("ix_predictions_time")
        batch_op.drop_index("ix_predictions_asset_time")

    op.drop_table("predictions")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_time")
        batch_op.drop_index("ix_events_asset_time")

    op.drop_table("events")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index("ix_alerts_open", sqlite_where=sa.text("closed_ms IS NULL"))
        batch_op.drop_index("ix_alerts_asset_time")

    op.drop_table("alerts")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_drain")

    op.drop_table("outbox")
    op.drop_table("models")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_index("ix_dead_letters_time")
        batch_op.drop_index("ix_dead_letters_reason")

    op.drop_table("dead_letters")
    op.drop_table("assets")
