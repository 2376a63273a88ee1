from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from agent import blocks
from agent import schema as t
from agent.domain import Accepted, Alert, AlertKind, Event, Prediction, Reading, Severity
from agent.sqlite import open_engine
from agent.storage import retention
from agent.storage.writer import Writer

DAY = retention.DAY_MS
NOW = 1000 * DAY


def test_expired_rows_go_and_recent_ones_stay(
    migrated_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(migrated_db)
    writer = Writer(engine, site="s")
    old, new = NOW - 10 * DAY, NOW - DAY
    readings = tuple(Reading("s", "p", old + i, {"x": 1.0}) for i in range(12))
    writer.write(
        [
            Accepted(None, old, readings=(*readings, Reading("s", "p", new, {"x": 1.0}))),
            Prediction("p", old, "m", 1, 2, False, None),
            Prediction("p", new, "m", 1, 2, False, None),
            Alert("p", AlertKind.ANOMALY, Severity.WARNING, old, 3, 3, closed_ms=old + 1),
            Alert("p", AlertKind.RUL, Severity.WARNING, old, 3, 3),  # still open
            Event(old, "x", "old"),
        ],
        NOW,
    )
    monkeypatch.setattr(retention, "CHUNK_ROWS", 5)  # several chunks
    monkeypatch.setattr(retention, "CHUNK_BLOCKS", 1)
    removed = retention.apply_retention(engine, retention.RetentionPolicy(7, 5), NOW)
    assert removed == {
        "readings": 12,
        "dead_letters": 0,
        "predictions": 1,
        "alerts": 1,
        "events": 1,
        "reading_blocks_merged": 0,
    }
    with engine.connect() as conn:
        assert [ts for ts, _, _ in blocks.iter_readings(conn, 1)] == [new]
        assert conn.execute(select(t.alerts.c.kind)).scalars().all() == ["rul"]
    engine.dispose()
