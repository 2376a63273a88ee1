"""Deleting what is past its retention, in small transactions that never stall writers."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, Table, delete, select, tuple_

from agent import blocks
from agent import schema as t

#: Rows deleted per transaction: short enough that the recorder never waits long.
CHUNK_ROWS = 5000
#: Reading blocks removed or trimmed per transaction (each up to 4,096 readings).
CHUNK_BLOCKS = 50
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    readings_days: float
    records_days: float


def _purge(engine: Engine, table: Table, expired: ColumnElement[bool]) -> int:
    key = tuple_(*table.primary_key.columns)
    doomed = select(*table.primary_key.columns).where(expired).limit(CHUNK_ROWS)
    removed = 0
    while True:
        with engine.begin() as conn:
            count = conn.execute(delete(table).where(key.in_(doomed))).rowcount
        removed += count
        if count < CHUNK_ROWS:
            return removed


def _purge_readings(engine: Engine, cutoff_ms: int) -> int:
    """Readings older than the cutoff: whole blocks, and the older part of a block that
    straddles it (rewritten), so that retention is exact to the reading."""
    removed = 0
    while True:
        with engine.begin() as conn:
            touched, count = blocks.trim_before(conn, cutoff_ms, CHUNK_BLOCKS)
        removed += count
        if touched < CHUNK_BLOCKS:
            return removed


def compact_readings(engine: Engine) -> int:
    """Merge small reading blocks (agent.blocks.compact); returns blocks merged away."""
    merged = 0
    while True:
        with engine.begin() as conn:
            removed, _ = blocks.compact(conn, CHUNK_BLOCKS * 20)
        merged += removed
        if removed == 0:
            return merged


def apply_retention(engine: Engine, policy: RetentionPolicy, now_ms: int) -> dict[str, int]:
    """Delete expired rows; returns how many per table (and how many small reading
    blocks were merged into larger ones). Open alerts are never deleted."""
    raw_cutoff = now_ms - int(policy.readings_days * DAY_MS)
    cutoff = now_ms - int(policy.records_days * DAY_MS)
    return {
        "readings": _purge_readings(engine, raw_cutoff),
        "dead_letters": _purge(engine, t.dead_letters, t.dead_letters.c.received_ms < raw_cutoff),
        "predictions": _purge(engine, t.predictions, t.predictions.c.window_end_ms < cutoff),
        "alerts": _purge(
            engine, t.alerts, t.alerts.c.closed_ms.is_not(None) & (t.alerts.c.closed_ms < cutoff)
        ),
        "events": _purge(engine, t.events, t.events.c.ts_ms < cutoff),
        "reading_blocks_merged": compact_readings(engine),
    }
