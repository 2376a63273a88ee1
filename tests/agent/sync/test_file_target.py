"""The whole path to a file:// target: recorder writes, summaries, Parquet, drain."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson
import pyarrow.parquet as pq
from sqlalchemy import insert, select

from agent import blocks, outbox
from agent import schema as t
from agent.domain import (
    Accepted,
    Alert,
    AlertKind,
    AssetState,
    AssetStatus,
    Event,
    Prediction,
    Reading,
    Severity,
)
from agent.sqlite import open_engine
from agent.storage.writer import Writer
from agent.sync.service import SyncService, sync_status
from agent.sync.summaries import Summarizer, SummaryConfig
from agent.sync.targets import FileTarget
from tests.agent.sync.conftest import AGENT, SITE, make_settings

HOUR_MS = 3_600_000
T0 = 1_763_856_000_000  # 2025-11-23 00:00 UTC, an hour boundary
SENSORS = ("flow_m3_h", "temp_c")


def _readings(asset: str, start_ms: int, n: int, step_ms: int) -> list[Reading]:
    rng = np.random.default_rng(3)
    return [
        Reading(
            SITE,
            asset,
            start_ms + i * step_ms,
            {s: float(round(rng.normal(10, 1), 3)) for s in SENSORS},
        )
        for i in range(n)
    ]


def _pending_keys(db: Path) -> set[str]:
    engine = open_engine(db, create=False)
    with engine.connect() as conn:
        keys = set(
            conn.execute(
                select(t.outbox.c.object_key).where(t.outbox.c.state == outbox.PENDING)
            ).scalars()
        )
    engine.dispose()
    return keys


def test_alert_state_changes_enter_the_outbox_with_the_alert(migrated_db: Path) -> None:
    engine = open_engine(migrated_db, create=False)
    writer = Writer(engine, site=SITE, agent=AGENT)
    opened = Alert("pump-1", AlertKind.ANOMALY, Severity.WARNING, T0, 2.0, 2.0)
    writer.write([opened], T0)
    writer.write([opened], T0)  # a score update / a repeat: no state change
    writer.write([Alert("pump-1", AlertKind.ANOMALY, Severity.CRITICAL, T0, 5.0, 5.0)], T0)
    closed = Alert("pump-1", AlertKind.ANOMALY, Severity.CRITICAL, T0, 5.0, 0.5, T0 + 60_000)
    writer.write([closed, closed], T0)
    writer.write([Event(T0, "agent_started", "hello", detail={"pid": 1})], T0)
    writer.write([Event(T0, "agent_started", "hello", detail={"pid": 1})], T0)  # same fact
    engine.dispose()
    keys = sorted(_pending_keys(migrated_db))
    alerts = [k for k in keys if "/alert/" in k]
    assert [k.rsplit("-", 2)[-2:] for k in alerts] == [
        ["close", "critical.json"],
        ["escalate", "critical.json"],
        ["open", "warning.json"],
    ]
    assert all(k.startswith(f"{SITE}/{AGENT}/alert/2025/11/23/pump-1/") for k in alerts)
    assert len([k for k in keys if "/event/" in k]) == 1


def test_round_trip_to_a_file_target(migrated_db: Path, tmp_path: Path) -> None:
    data_dir = migrated_db.parent
    cloud = tmp_path / "cloud"
    settings = make_settings(
        data_dir,
        target=cloud.as_uri(),
        summary_period_s=300,
        retraining_before_s=60,
        retraining_after_s=60,
        retraining_sample_rate=0.0,
    )
    engine = open_engine(migrated_db, create=False)
    writer = Writer(engine, site=SITE, agent=AGENT)
    # 2 h of readings at 10 s for one asset, commissioned after 10 min, an alert in hour 2.
    readings = _readings("pump-1", T0, 720, 10_000)
    writer.write([Accepted(None, T0, tuple(readings))], T0)
    writer.write(
        [AssetStatus("pump-1", AssetState.HEALTHY, T0 + 600_000, baseline_version="b1")], T0
    )
    writer.write(
        [
            Prediction("pump-1", r.ts_ms, "m1", 0.5, 1.0, False, 100.0)
            for r in readings
            if r.ts_ms % 60_000 == 0
        ],
        T0,
    )
    opened = T0 + HOUR_MS + 1_800_000
    writer.write(
        [Alert("pump-1", AlertKind.ANOMALY, Severity.WARNING, opened, 3.0, 3.0, opened + 120_000)],
        T0,
    )
    service = SyncService(settings, engine)
    produced = service.produce(now_ms=T0 + 3 * HOUR_MS)
    assert produced["summaries"] == 24  # 2 h of 5 min periods
    assert produced["retraining_files"] == 2  # hour 1: baseline; hour 2: around the alert
    expected: dict[str, bytes] = {}
    with engine.connect() as conn:
        for row in conn.execute(select(t.outbox).where(t.outbox.c.state == outbox.PENDING)):
            body = (
                row.payload if row.path is None else (data_dir / "outbox" / row.path).read_bytes()
            )
            expected[row.object_key] = bytes(body)
    report = __import__("asyncio").run(service.drain())
    assert report.error is None and report.uploaded == len(expected)
    assert FileTarget(cloud).list_objects() == expected
    assert not any((data_dir / "outbox").rglob("*.parquet"))  # files go once uploaded

    # Parquet: documented columns, baseline rows labelled, alert rows carry the alert id.
    parquet = {k: v for k, v in expected.items() if k.endswith(".parquet")}
    tables = [pq.read_table(io.BytesIO(v)) for _, v in sorted(parquet.items())]
    cols = tables[0].column_names
    assert cols[:2] == ["asset", "ts"] and set(SENSORS) <= set(cols)
    for column in ("anomaly_score", "is_anomaly", "rul", "alert_id", "reason", "label"):
        assert column in cols
    first, second = (tbl.to_pandas() for tbl in tables)
    assert set(first["reason"]) == {"baseline"} and set(first["label"]) == {"normal"}
    assert len(first) == 61  # first reading up to commissioning, 10 s apart
    assert set(second["reason"]) == {"alert"} and second["alert_id"].notna().all()
    assert second["ts"].min().value // 1_000_000 == opened - 60_000

    # A summary body holds the statistics computed from the readings.
    summary_key = min(k for k in expected if "/summary/" in k)
    summary = orjson.loads(expected[summary_key])
    first_values = np.array([r.values["temp_c"] for r in readings[:30]])
    assert summary["samples"] == 30
    assert abs(summary["sensors"]["temp_c"]["mean"] - first_values.mean()) < 1e-9
    assert summary["sensors"]["temp_c"]["p95"] == float(np.percentile(first_values, 95))

    # Nothing is produced or uploaded twice.
    assert service.produce(now_ms=T0 + 3 * HOUR_MS)["summaries"] == 0
    again = __import__("asyncio").run(service.drain())
    assert again.uploaded == 0
    status = sync_status(engine, settings)
    assert status["backlog_items"] == 0 and status["last_error"] is None
    engine.dispose()


def test_summaries_close_each_period_once(migrated_db: Path) -> None:
    engine = open_engine(migrated_db, create=False)
    with engine.begin() as conn:
        aid = conn.execute(
            insert(t.assets)
            .values(site=SITE, name="p", first_seen_ms=T0, last_seen_ms=T0)
            .returning(t.assets.c.id)
        ).scalar_one()
        blocks.insert_readings(
            conn,
            aid,
            [(T0 + i * 20_000, 0, {"x": 1.0}) for i in range(45)],  # 15 min: three 5 min periods
        )
    summarizer = Summarizer(engine, SummaryConfig(SITE, AGENT, 300, grace_s=30))
    assert summarizer.run_once(T0 + 600_000 + 29_000) == 1  # second period still in grace
    assert summarizer.run_once(T0 + 600_000 + 30_000) == 1
    assert summarizer.run_once(T0 + 600_000 + 30_000) == 0
    assert summarizer.run_once(T0 + 10 * 600_000) == 1
    with engine.connect() as conn:
        starts = conn.execute(select(t.summaries.c.period_start_ms)).scalars().all()
    assert sorted(starts) == [T0, T0 + 300_000, T0 + 600_000]
    engine.dispose()
