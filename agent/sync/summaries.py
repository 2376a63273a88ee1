"""Per-asset, per-period summaries, each written once with its outbox item.

A period ``[start, start + period_s)`` is summarised once it is past, plus a grace
for readings still on their way through the pipeline. The ``summaries`` row and its
outbox item commit together with the asset's cursor, so a crash repeats at most the
period in progress, and the unique constraint plus the deterministic key make that
repetition a no-op.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent import blocks, outbox
from agent import schema as t

log = logging.getLogger(__name__)

#: A period is closed this long after its end: readings in flight have been recorded.
GRACE_S = 30.0
#: Periods summarised per transaction (a catch-up after days offline stays responsive).
PERIODS_PER_COMMIT = 50


@dataclass(frozen=True, slots=True)
class SummaryConfig:
    site: str
    agent: str
    period_s: int
    grace_s: float = GRACE_S


def sensor_stats(values: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """min/mean/max/std/p95 per sensor over the readings that carry it."""
    by_sensor: dict[str, list[float]] = {}
    for v in values:
        for name, x in v.items():
            by_sensor.setdefault(name, []).append(float(x))
    return column_stats({k: np.asarray(v, dtype=np.float64) for k, v in by_sensor.items()})


def column_stats(by_sensor: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """min/mean/max/std/p95 of each sensor's values (none: the sensor is left out)."""
    stats: dict[str, dict[str, float]] = {}
    for name in sorted(by_sensor):
        arr = np.asarray(by_sensor[name], dtype=np.float64)
        if arr.size == 0:
            continue
        stats[name] = {
            "min": float(arr.min()),
            "mean": float(arr.mean()),
            "max": float(arr.max()),
            "std": float(arr.std()),
            "p95": float(np.percentile(arr, 95)),
        }
    return stats


class Summarizer:
    """Closes past periods of every asset (its own connection; run in a thread)."""

    def __init__(self, engine: Engine, config: SummaryConfig) -> None:
        self.engine = engine
        self.config = config

    def _cursor_key(self, asset_id: int) -> str:
        return f"summary_cursor:{self.config.period_s}:{asset_id}"

    def run_once(self, now_ms: int | None = None) -> int:
        """Summarise every closed period not yet summarised; returns how many."""
        now = now_ms if now_ms is not None else outbox.now_ms()
        period_ms = self.config.period_s * 1000
        # Periods ending at or before this are closed.
        closed_until = ((now - int(self.config.grace_s * 1000)) // period_ms) * period_ms
        with self.engine.connect() as conn:
            assets = conn.execute(
                select(t.assets.c.id, t.assets.c.name, t.assets.c.state).where(
                    t.assets.c.site == self.config.site
                )
            ).all()
        written = 0
        for asset in assets:
            written += self._asset(int(asset.id), str(asset.name), closed_until, period_ms)
        return written

    def _next_ts(self, conn: Connection, asset_id: int, start: int, end: int) -> int | None:
        p = t.predictions
        first_reading = blocks.first_ts(conn, asset_id, start, end)
        first_prediction = conn.execute(
            select(func.min(p.c.window_end_ms)).where(
                p.c.asset_id == asset_id, p.c.window_end_ms >= start, p.c.window_end_ms < end
            )
        ).scalar_one_or_none()
        found = [int(x) for x in (first_reading, first_prediction) if x is not None]
        return min(found) if found else None

    def _asset(self, asset_id: int, name: str, closed_until: int, period_ms: int) -> int:
        written = 0
        while True:
            with self.engine.begin() as conn:
                cursor = outbox.get_state(conn, self._cursor_key(asset_id))
                start = int(cursor) if cursor is not None else 0
                batch = 0
                while batch < PERIODS_PER_COMMIT:
                    ts = self._next_ts(conn, asset_id, start, closed_until)
                    if ts is None:
                        start = max(start, closed_until)
                        break
                    period_start = (ts // period_ms) * period_ms
                    self._summarise(conn, asset_id, name, period_start, period_ms)
                    start = period_start + period_ms
                    batch += 1
                outbox.put_state(conn, self._cursor_key(asset_id), start)
            written += batch
            if batch < PERIODS_PER_COMMIT:
                return written

    def _summarise(
        self, conn: Connection, asset_id: int, name: str, start: int, period_ms: int
    ) -> None:
        end = start + period_ms
        p, a = t.predictions, t.alerts
        columns: dict[str, list[np.ndarray]] = {}
        samples = 0
        for block in blocks.read_blocks(conn, asset_id, start, end):
            samples += len(block)
            for sensor in block.sensors:
                column = block.column(sensor)
                if column is not None:
                    columns.setdefault(sensor, []).append(column[~np.isnan(column)])
        stats = column_stats({k: np.concatenate(v) for k, v in columns.items()})
        preds = conn.execute(
            select(p.c.anomaly_score, p.c.is_anomaly, p.c.rul, p.c.model_version)
            .where(p.c.asset_id == asset_id, p.c.window_end_ms >= start, p.c.window_end_ms < end)
            .order_by(p.c.window_end_ms)
        ).all()
        opened = conn.execute(
            select(func.count()).where(
                a.c.asset_id == asset_id, a.c.opened_ms >= start, a.c.opened_ms < end
            )
        ).scalar_one()
        closed = conn.execute(
            select(func.count()).where(
                a.c.asset_id == asset_id, a.c.closed_ms >= start, a.c.closed_ms < end
            )
        ).scalar_one()
        state = conn.execute(
            select(t.assets.c.state).where(t.assets.c.id == asset_id)
        ).scalar_one_or_none()
        ruls = [row.rul for row in preds if row.rul is not None]
        row: dict[str, Any] = {
            "asset_id": asset_id,
            "period_start_ms": start,
            "period_s": period_ms // 1000,
            "samples": samples,
            "stats_json": orjson.dumps(stats).decode(),
            "anomaly_rate": (sum(int(x.is_anomaly) for x in preds) / len(preds)) if preds else None,
            "max_score": max(float(x.anomaly_score) for x in preds) if preds else None,
            "latest_rul": float(ruls[-1]) if ruls else None,
            "alerts_opened": int(opened),
            "alerts_closed": int(closed),
            "asset_state": state,
            "model_version": str(preds[-1].model_version) if preds else None,
        }
        conn.execute(
            sqlite_insert(t.summaries)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["asset_id", "period_start_ms", "period_s"])
        )
        body = {
            "site": self.config.site,
            "agent": self.config.agent,
            "asset": name,
            **{k: v for k, v in row.items() if k not in {"asset_id", "stats_json"}},
            "period_start": outbox.iso_ms(start),
            "sensors": orjson.loads(row["stats_json"]),
        }
        outbox.enqueue_json(
            conn,
            site=self.config.site,
            agent=self.config.agent,
            kind=outbox.SUMMARY,
            ts_ms=start,
            asset=name,
            name=f"{outbox.iso_ms(start)}-{period_ms // 1000}s.json",
            obj=body,
        )
