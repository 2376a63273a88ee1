"""A small database with known rows for the operator tools' tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from agent import blocks
from agent import schema as t
from agent.sqlite import open_engine

NOW = time.time_ns() // 1_000_000
MIN = 60_000
HOUR = 60 * MIN


@pytest.fixture
def seeded(migrated_db: Path) -> Iterator[Path]:
    engine = open_engine(migrated_db)
    with engine.begin() as conn:
        conn.execute(
            insert(t.assets),
            [
                {
                    "id": 1,
                    "site": "s",
                    "name": "pump-a",
                    "first_seen_ms": NOW - 5 * HOUR,
                    "last_seen_ms": NOW - MIN,
                    "state": "alerting",
                    "sensors": '["temp_c", "vib_mm_s"]',
                },
                {
                    "id": 2,
                    "site": "s",
                    "name": "pump-b",
                    "first_seen_ms": NOW - 5 * HOUR,
                    "last_seen_ms": NOW - 3 * HOUR,
                    "state": "healthy",
                    "sensors": '["temp_c", "flow_m3_h"]',
                },
            ],
        )
        conn.execute(
            insert(t.predictions),
            [
                # pump-a: normal 3 h ago, anomalous 2 h and 10 min ago
                _prediction(1, NOW - 3 * HOUR, 1.0, False, 900.0),
                _prediction(1, NOW - 2 * HOUR, 5.0, True, 400.0),
                _prediction(1, NOW - 10 * MIN, 7.5, True, 120.0),
                _prediction(2, NOW - 3 * HOUR - MIN, 0.9, False, 1000.0),
            ],
        )
        conn.execute(
            insert(t.alerts),
            [
                _alert(1, NOW - 4 * HOUR, NOW - 3 * HOUR - 30 * MIN, "warning"),
                _alert(1, NOW - 2 * HOUR, None, "critical"),
                _alert(2, NOW - 5 * HOUR, NOW - 4 * HOUR - 30 * MIN, "warning"),
            ],
        )
        conn.execute(
            insert(t.dead_letters),
            [
                _dead(NOW - 30 * MIN, "invalid_json", "pump-a", b"{not json"),
                _dead(NOW - 20 * MIN, "ts_future", "pump-b", b'{"ts": 9e12}'),
                _dead(NOW - 5 * MIN, "invalid_utf8", None, b"\xff\xfe"),
            ],
        )
        conn.execute(
            insert(t.events),
            [
                {
                    "ts_ms": NOW - 4 * HOUR,
                    "kind": "agent_started",
                    "level": "info",
                    "asset_id": None,
                    "message": "started",
                },
                {
                    "ts_ms": NOW - HOUR,
                    "kind": "window_restart",
                    "level": "warning",
                    "asset_id": 1,
                    "message": "gap",
                },
            ],
        )
        blocks.insert_readings(
            conn,
            1,
            [
                (NOW - 2 * MIN, NOW - 2 * MIN, {"temp_c": 41.5, "vib_mm_s": 2.25}),
                (NOW - MIN, NOW - MIN, {"temp_c": 42.0, "vib_mm_s": 2.5}),
            ],
        )
        blocks.insert_readings(
            conn, 2, [(NOW - 3 * HOUR, NOW - 3 * HOUR, {"temp_c": 30.0, "flow_m3_h": 55.0})]
        )
    engine.dispose()
    yield migrated_db


def _prediction(asset: int, end: int, score: float, bad: bool, rul: float) -> dict[str, Any]:
    return {
        "asset_id": asset,
        "window_end_ms": end,
        "model_version": "m1",
        "anomaly_score": score,
        "anomaly_threshold": 3.0,
        "is_anomaly": int(bad),
        "rul": rul,
        "created_ms": end + 50,
    }


def _alert(asset: int, opened: int, closed: int | None, severity: str) -> dict[str, Any]:
    return {
        "asset_id": asset,
        "kind": "anomaly",
        "severity": severity,
        "opened_ms": opened,
        "closed_ms": closed,
        "peak_score": 9.0,
        "last_score": 4.0,
        "model_version": "m1",
    }


def _dead(received: int, reason: str, asset: str | None, payload: bytes) -> dict[str, Any]:
    return {
        "received_ms": received,
        "topic": "edgewatch/s/x/telemetry",
        "payload": payload,
        "payload_size": len(payload),
        "reason": reason,
        "asset": asset,
    }
