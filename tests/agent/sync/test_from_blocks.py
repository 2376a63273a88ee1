"""Summaries and retraining files made from reading blocks: values, gaps, object keys."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from sqlalchemy import insert, select

from agent import outbox
from agent import schema as t
from agent.domain import Accepted, Alert, AlertKind, AssetState, AssetStatus, Reading, Severity
from agent.sqlite import open_engine
from agent.storage.writer import Writer
from agent.sync.retraining import HOUR_MS, RetrainingConfig, RetrainingExporter
from agent.sync.summaries import Summarizer, SummaryConfig
from tests.agent.sync.conftest import AGENT, SITE

T0 = 1_763_856_000_000  # an hour boundary


def test_a_summary_is_the_asset_s_readings_and_keyed_by_the_asset(migrated_db: Path) -> None:
    engine = open_engine(migrated_db, create=False)
    writer = Writer(engine, site=SITE, agent=AGENT)
    # Two transactions (two blocks), the second without flow_m3_h in one reading.
    first = tuple(
        Reading(SITE, "pump-7", T0 + i * 1000, {"temp_c": 40.0 + i, "flow_m3_h": 10.5})
        for i in range(3)
    )
    second = (
        Reading(SITE, "pump-7", T0 + 3000, {"temp_c": 43.0}),
        Reading(SITE, "pump-7", T0 + 4000, {"temp_c": 44.0, "flow_m3_h": 12.5}),
    )
    writer.write([Accepted(None, T0, readings=first)], T0)
    writer.write([Accepted(None, T0, readings=second)], T0)
    Summarizer(engine, SummaryConfig(SITE, AGENT, 60, grace_s=0)).run_once(T0 + 60_000)
    with engine.connect() as conn:
        row = conn.execute(select(t.summaries)).one()
        key = conn.execute(
            select(t.outbox.c.object_key).where(t.outbox.c.kind == outbox.SUMMARY)
        ).scalar_one()
    engine.dispose()
    stats = orjson.loads(row.stats_json)
    assert row.samples == 5
    assert stats["temp_c"]["mean"] == 42.0 and stats["temp_c"]["max"] == 44.0
    assert stats["flow_m3_h"]["min"] == 10.5 and stats["flow_m3_h"]["max"] == 12.5
    assert stats["flow_m3_h"]["mean"] == (3 * 10.5 + 12.5) / 4  # over the readings carrying it
    assert "/pump-7/" in key


def test_a_retraining_file_holds_the_readings_around_an_alert(
    migrated_db: Path, tmp_path: Path
) -> None:
    engine = open_engine(migrated_db, create=False)
    with engine.begin() as conn:
        conn.execute(
            insert(t.assets).values(
                site=SITE, name="pump-7", first_seen_ms=T0, last_seen_ms=T0, state="healthy"
            )
        )
    writer = Writer(engine, site=SITE, agent=AGENT)
    readings = tuple(
        Reading(SITE, "pump-7", T0 + i * 60_000, {"temp_c": 40.0 + i, "vib": 0.25})
        if i % 2
        else Reading(SITE, "pump-7", T0 + i * 60_000, {"temp_c": 40.0 + i})
        for i in range(60)
    )
    alert = Alert(
        "pump-7",
        AlertKind.ANOMALY,
        Severity.WARNING,
        T0 + 30 * 60_000,
        3.0,
        3.0,
        closed_ms=T0 + 31 * 60_000,
        last_update_ms=T0 + 31 * 60_000,
    )
    writer.write([Accepted(None, T0, readings=readings), alert], T0)
    exporter = RetrainingExporter(
        engine, tmp_path, RetrainingConfig(SITE, AGENT, before_s=300, after_s=300, sample_rate=0)
    )
    assert exporter.run_once(T0 + 3 * HOUR_MS) == 1
    with engine.connect() as conn:
        path = conn.execute(select(t.outbox.c.path).where(t.outbox.c.kind == "retraining"))
        rel = path.scalar_one()
    engine.dispose()
    table = pq.read_table(io.BytesIO((tmp_path / outbox.OUTBOX_DIR / rel).read_bytes()))
    ts = [int(x.timestamp() * 1000) for x in table.column("ts").to_pylist()]
    assert ts == [T0 + i * 60_000 for i in range(25, 37)]  # 5 min before to 5 min after
    assert table.column("temp_c").to_pylist() == [40.0 + i for i in range(25, 37)]
    assert table.column("vib").to_pylist() == [0.25 if i % 2 else None for i in range(25, 37)]


def test_baseline_rows_are_the_readings_the_baseline_was_learnt_from(
    migrated_db: Path, tmp_path: Path
) -> None:
    # A replay with its original timestamps: two hours of readings from long ago, the
    # baseline learnt from the first 30 minutes of them, commissioned today. Only those
    # 30 minutes are baseline ("normal"); the rest, a fault among it, is not.
    engine = open_engine(migrated_db, create=False)
    writer = Writer(engine, site=SITE, agent=AGENT)
    readings = tuple(
        Reading(SITE, "rig-3", T0 + i * 60_000, {"temp_c": 40.0 + i}) for i in range(120)
    )
    today = T0 + 400 * 24 * HOUR_MS
    learnt = AssetStatus("rig-3", AssetState.HEALTHY, today, "v1", (T0, T0 + 29 * 60_000))
    writer.write([Accepted(None, today, readings=readings), learnt], today)
    exporter = RetrainingExporter(
        engine, tmp_path, RetrainingConfig(SITE, AGENT, before_s=300, after_s=300, sample_rate=0)
    )
    assert exporter.run_once(today) == 1
    with engine.connect() as conn:
        rel = conn.execute(select(t.outbox.c.path).where(t.outbox.c.kind == "retraining"))
        table = pq.read_table(
            io.BytesIO((tmp_path / outbox.OUTBOX_DIR / rel.scalar_one()).read_bytes())
        )
    engine.dispose()
    ts = [int(x.timestamp() * 1000) for x in table.column("ts").to_pylist()]
    assert ts == [T0 + i * 60_000 for i in range(30)]
    assert set(table.column("label").to_pylist()) == {"normal"}
