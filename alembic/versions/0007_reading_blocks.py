"""readings stored as compressed per-asset blocks

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 08:40:00

One ``reading_blocks`` row holds up to 4,096 readings of one asset (format in
agent/blocks.py), its sensor names in ``sensor_sets``. Upgrading moves every row of
``readings`` into blocks (values become float32) and drops the table and its view
``v_readings``, which pure SQL cannot make from compressed blocks: ``v_reading_blocks``
shows the blocks (asset, time range, count, sensors) and ``edgewatch records
readings`` one row per reading (docs/records.md). Downgrading puts every reading back
into a ``readings`` row (values by their shortest decimal form) and ``v_readings``.

The block codec is agent/blocks.py's, not a frozen copy: blocks carry a format
version, and the codec reads every version it ever wrote.
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from agent import blocks

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: Rows moved per statement in either direction.
_FETCH = 5000

_ISO = "strftime('%Y-%m-%dT%H:%M:%fZ', {} / 1000.0, 'unixepoch')"

_V_READINGS_0004 = f"""
        SELECT a.site, a.name AS asset, {_ISO.format("r.ts_ms")} AS ts_utc,
               {_ISO.format("r.received_ms")} AS received_utc, r.values_json, r.ts_ms
          FROM readings r JOIN assets a ON a.id = r.asset_id"""

_V_READING_BLOCKS = f"""
        SELECT a.site, a.name AS asset, {_ISO.format("b.first_ts_ms")} AS first_utc,
               {_ISO.format("b.last_ts_ms")} AS last_utc, b.count AS readings,
               s.names_json AS sensors_json, length(b.data) AS bytes,
               b.first_ts_ms, b.last_ts_ms
          FROM reading_blocks b JOIN assets a ON a.id = b.asset_id
          JOIN sensor_sets s ON s.id = b.sensor_set_id"""


def _create_readings_table() -> None:
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
    op.create_index("ix_readings_time", "readings", ["ts_ms"], unique=False)


def upgrade() -> None:
    op.create_table(
        "sensor_sets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("names_json", sa.Text(), nullable=False, comment="JSON list of names"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sensor_sets")),
        sa.UniqueConstraint("names_json", name=op.f("uq_sensor_sets_names_json")),
    )
    op.create_table(
        "reading_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.Integer(), nullable=False),
        sa.Column("first_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ts_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("sensor_set_id", sa.Integer(), nullable=False),
        sa.Column(
            "data", sa.LargeBinary(), nullable=False, comment="compressed columns, agent/blocks.py"
        ),
        sa.ForeignKeyConstraint(
            ["asset_id"], ["assets.id"], name=op.f("fk_reading_blocks_asset_id_assets")
        ),
        sa.ForeignKeyConstraint(
            ["sensor_set_id"],
            ["sensor_sets.id"],
            name=op.f("fk_reading_blocks_sensor_set_id_sensor_sets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_blocks")),
    )
    op.create_index(
        "ix_reading_blocks_asset_time", "reading_blocks", ["asset_id", "last_ts_ms"], unique=False
    )
    op.create_index("ix_reading_blocks_time", "reading_blocks", ["first_ts_ms"], unique=False)

    conn = op.get_bind()
    sets = blocks.SensorSets()
    asset: int | None = None
    rows: list[blocks.Row] = []

    def flush() -> None:
        if asset is not None and rows:
            blocks.write_blocks(conn, asset, blocks.from_rows(rows), sets)
        rows.clear()

    # The primary key's order: each asset's readings by time.
    result = conn.execution_options(stream_results=True, yield_per=_FETCH).exec_driver_sql(
        "SELECT asset_id, ts_ms, received_ms, values_json FROM readings ORDER BY asset_id, ts_ms"
    )
    for asset_id, ts_ms, received_ms, values_json in result:
        if asset_id != asset or len(rows) >= blocks.MAX_BLOCK_READINGS:
            flush()
            asset = int(asset_id)
        values: dict[str, Any] = orjson.loads(values_json)
        rows.append((int(ts_ms), int(received_ms), {k: float(v) for k, v in values.items()}))
    flush()

    op.execute("DROP VIEW IF EXISTS v_readings")
    op.drop_index("ix_readings_time", table_name="readings")
    op.drop_table("readings")
    op.execute(f"CREATE VIEW v_reading_blocks AS {_V_READING_BLOCKS}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS v_reading_blocks")
    _create_readings_table()
    conn = op.get_bind()
    insert = sa.text(
        "INSERT OR IGNORE INTO readings (asset_id, ts_ms, received_ms, values_json) "
        "VALUES (:a, :ts, :rec, :v)"
    )
    asset_ids = [
        int(x)
        for x in conn.exec_driver_sql("SELECT DISTINCT asset_id FROM reading_blocks")
        .scalars()
        .all()
    ]
    for asset_id in asset_ids:
        batch: list[dict[str, Any]] = []
        for ts_ms, received_ms, values in blocks.iter_readings(conn, asset_id):
            batch.append(
                {
                    "a": asset_id,
                    "ts": ts_ms,
                    "rec": received_ms,
                    "v": orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode(),
                }
            )
            if len(batch) >= _FETCH:
                conn.execute(insert, batch)
                batch = []
        if batch:
            conn.execute(insert, batch)
    op.drop_index("ix_reading_blocks_time", table_name="reading_blocks")
    op.drop_index("ix_reading_blocks_asset_time", table_name="reading_blocks")
    op.drop_table("reading_blocks")
    op.drop_table("sensor_sets")
    op.execute(f"CREATE VIEW v_readings AS {_V_READINGS_0004}")
