"""SQLAlchemy Core tables of the local database.

This module describes the schema for queries; Alembic revisions in ``alembic/versions``
create and change it (never ``metadata.create_all``). A test compares the two so
they cannot drift apart.

Times are UTC epoch milliseconds in INTEGER columns named ``*_ms``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Stable constraint names let Alembic's batch mode (SQLite table rebuilds) find them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

assets = Table(
    "assets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("site", String(128), nullable=False),
    Column("name", String(128), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    # commissioning | healthy | alerting | retired
    Column("state", String(32), nullable=False, server_default="commissioning"),
    Column("sensors", Text, nullable=True, comment="JSON list of sensor names seen"),
    Column("baseline_version", String(64), nullable=True),
    Column("commissioned_ms", BigInteger, nullable=True),
    # Data times of the readings the baseline was learnt from (0011); none for a
    # plan without a baseline (RUL only).
    Column("baseline_first_ms", BigInteger, nullable=True),
    Column("baseline_last_ms", BigInteger, nullable=True),
    UniqueConstraint("site", "name"),
)

# Raw samples kept for retraining and context around alerts, bounded by retention:
# one row per asset per transaction (at most agent.blocks.MAX_BLOCK_READINGS
# readings), columnar and compressed (format in agent/blocks.py). The time range and
# count are plain columns so that blocks are chosen in SQL without being opened.
# (asset, ts) stays the natural key of a reading: agent.blocks.insert_readings skips
# one already stored, which makes a redelivered MQTT message harmless.
reading_blocks = Table(
    "reading_blocks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("asset_id", Integer, ForeignKey("assets.id"), nullable=False),
    Column("first_ts_ms", BigInteger, nullable=False),
    Column("last_ts_ms", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("sensor_set_id", Integer, ForeignKey("sensor_sets.id"), nullable=False),
    Column("data", LargeBinary, nullable=False, comment="compressed columns, agent/blocks.py"),
)

# The sensor names of a block, in its column order: stored once, not in every block.
sensor_sets = Table(
    "sensor_sets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("names_json", Text, nullable=False, unique=True, comment="JSON list of names"),
)

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("asset_id", Integer, ForeignKey("assets.id"), nullable=False),
    Column("window_end_ms", BigInteger, nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("anomaly_score", Float, nullable=False),
    Column("anomaly_threshold", Float, nullable=False),
    Column("is_anomaly", Integer, nullable=False),
    Column("rul", Float, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    # 1: the machine ran (window judged), 0: stopped (RUL held); NULL before 0006.
    Column("judged", Integer, nullable=True),
    # The RUL estimate's 80 % interval (NULL: no RUL or a model without one).
    Column("rul_low", Float, nullable=True),
    Column("rul_high", Float, nullable=True),
    UniqueConstraint("asset_id", "window_end_ms", "model_version"),
)

alerts = Table(
    "alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("asset_id", Integer, ForeignKey("assets.id"), nullable=False),
    Column("kind", String(32), nullable=False),  # anomaly | rul
    Column("severity", String(16), nullable=False),  # info | warning | critical
    Column("opened_ms", BigInteger, nullable=False),
    Column("closed_ms", BigInteger, nullable=True),
    Column("peak_score", Float, nullable=False),
    Column("last_score", Float, nullable=False),
    Column("rul_at_open", Float, nullable=True),
    Column("model_version", String(64), nullable=False, server_default=""),
    Column("acknowledged", Integer, nullable=False, server_default="0"),
    Column("acknowledged_ms", BigInteger, nullable=True),
    Column("acknowledged_by", String(128), nullable=True),
    Column("detail", Text, nullable=False, server_default=""),
    UniqueConstraint("asset_id", "kind", "opened_ms"),
)

#: What an operator may say an alert was (agent.storage.labels).
ALERT_LABELS = ("fault", "false_alarm", "maintenance")

# Operator feedback on alerts: every label given, newest last. The newest row (by
# created_ms, then id) is the alert's label; older rows are its history. Rows go with
# their alert (retention, disk budget): each was synced as its own outbox item.
alert_labels = Table(
    "alert_labels",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("alert_id", Integer, ForeignKey("alerts.id", ondelete="CASCADE"), nullable=False),
    Column("label", String(32), nullable=False),
    Column("note", Text, nullable=True),
    Column("by", String(128), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    CheckConstraint("label IN ('fault', 'false_alarm', 'maintenance')", name="label"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_ms", BigInteger, nullable=False),
    Column("topic", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False, comment="raw bytes, truncated"),
    Column("payload_size", Integer, nullable=False, comment="size before truncation"),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    Column("asset", String(128), nullable=True),
    # What identifies a refused message (see agent.storage.writer.dead_letter_digest):
    # unique, so a redelivery is a no-op. Nullable only because rows are added with a
    # plain ALTER TABLE; the writer always sets it.
    Column("digest", String(64), nullable=True),
)

summaries = Table(
    "summaries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("asset_id", Integer, ForeignKey("assets.id"), nullable=False),
    Column("period_start_ms", BigInteger, nullable=False),
    Column("period_s", Integer, nullable=False),
    Column("samples", Integer, nullable=False),
    Column("stats_json", Text, nullable=False, comment="sensor -> min/mean/max/std/p95"),
    Column("anomaly_rate", Float, nullable=True),
    Column("max_score", Float, nullable=True),
    Column("latest_rul", Float, nullable=True),
    Column("alerts_opened", Integer, nullable=False, server_default="0"),
    Column("alerts_closed", Integer, nullable=False, server_default="0"),
    Column("asset_state", String(32), nullable=True),
    Column("model_version", String(64), nullable=True),
    UniqueConstraint("asset_id", "period_start_ms", "period_s"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # agent.outbox.KINDS
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("priority", Integer, nullable=False),  # lower drains first
    Column("state", String(16), nullable=False, server_default="pending"),  # pending|done|dropped
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_ms", BigInteger, nullable=False, server_default="0"),
    Column("created_ms", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=True),
    Column("size_bytes", Integer, nullable=False),
    Column("payload", LargeBinary, nullable=True, comment="inline body, or NULL if in a file"),
    Column("done_ms", BigInteger, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("object_key", String(512), nullable=True, comment="key below the target's prefix"),
    Column("path", Text, nullable=True, comment="body file below <data_dir>/outbox"),
    Column("sha256", String(64), nullable=True),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", String(64), nullable=False),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("kind", String(32), nullable=False),
    Column("path", Text, nullable=False),
    Column("installed_ms", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # active | retired | rejected
    Column("manifest_json", Text, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("level", String(16), nullable=False, server_default="info"),
    Column("asset_id", Integer, ForeignKey("assets.id"), nullable=True),
    Column("message", Text, nullable=False),
    Column("detail_json", Text, nullable=True),
)

# One row per agent process name: its latest heartbeat, so that `edgewatch status`
# can tell a running agent from a dead one without talking to it.
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("agent", String(128), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("version", String(64), nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("health_json", Text, nullable=False, server_default="{}"),
)

# The records CLI filters by asset and time range (predictions: through their unique
# key, whose first columns are asset and time); the uploader drains by state,
# priority and age.
Index("ix_predictions_time", predictions.c.window_end_ms)
Index("ix_alerts_asset_time", alerts.c.asset_id, alerts.c.opened_ms)
Index("ix_alerts_open", alerts.c.asset_id, sqlite_where=text("closed_ms IS NULL"))
Index("ix_alert_labels_alert_time", alert_labels.c.alert_id, alert_labels.c.created_ms)
Index("ix_dead_letters_time", dead_letters.c.received_ms)
Index("ix_dead_letters_reason", dead_letters.c.reason, dead_letters.c.received_ms)
Index("ix_dead_letters_digest", dead_letters.c.digest, unique=True)
# Blocks by last time, asset beside it: an asset's newest block (redelivery checks)
# and its blocks in a time range, found without opening another asset's rows; by
# time, not by asset, so that a commit's blocks of every asset are one place in the
# index, not a page per asset (migration 0012). Every asset's oldest blocks first
# (retention, disk budget) by first time.
Index("ix_reading_blocks_last", reading_blocks.c.last_ts_ms, reading_blocks.c.asset_id)
Index("ix_reading_blocks_time", reading_blocks.c.first_ts_ms)
Index("ix_summaries_time", summaries.c.period_start_ms)
Index(
    "ix_outbox_drain",
    outbox.c.state,
    outbox.c.priority,
    outbox.c.created_ms,
)
Index("ix_events_time", events.c.ts_ms)
Index("ix_events_asset_time", events.c.asset_id, events.c.ts_ms)

# What the uploader may not lose track of between processes: per-asset cursors of the
# summariser and the retraining exporter, the last upload success and error.
sync_state = Table(
    "sync_state",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("value_json", Text, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# Everything the agent dropped on purpose (TTL, disk budget): what, how much, why.
loss_ledger = Table(
    "loss_ledger",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),  # outbox kind or "readings"
    Column("reason", String(32), nullable=False),  # ttl | disk_budget
    Column("items", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("first_ms", BigInteger, nullable=True),
    Column("last_ms", BigInteger, nullable=True),
    Column("detail_json", Text, nullable=False, server_default="{}"),
)
Index("ix_loss_ledger_time", loss_ledger.c.ts_ms)
