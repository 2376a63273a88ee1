"""What a report shows, read from the database and bounded in size.

Long ranges are bucketed (mean of each sensor, in Python one compressed block at a
time; max anomaly score and min RUL in SQL), so a month of one-second readings becomes at most
:data:`MAX_POINTS` points per series before it reaches Python.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, Integer, cast, func, or_, select

from agent import blocks
from agent import schema as t
from agent.errors import EdgewatchError
from agent.storage import records

#: Points per series at most: more than a slide's width in pixels needs.
MAX_POINTS = 1500


@dataclass
class Series:
    ts_ms: list[int] = field(default_factory=list)
    values: list[float | None] = field(default_factory=list)


@dataclass
class AlertSpan:
    kind: str
    severity: str
    opened_ms: int
    closed_ms: int | None
    peak_score: float


@dataclass
class AssetData:
    asset: str
    state: str
    since_ms: int
    until_ms: int
    bucket_ms: int
    sensors: dict[str, Series]
    score: Series
    threshold: Series
    rul: Series
    alerts: list[AlertSpan]
    model_version: str | None
    rul_unit: str
    rul_alert_below: float | None = None
    #: The newest window was not judged: the machine stands still, its RUL is held.
    stopped: bool = False
    #: The RUL interval per point (lowest bound and highest bound in the bucket).
    rul_low: Series = field(default_factory=Series)
    rul_high: Series = field(default_factory=Series)


@dataclass
class FleetRow:
    asset: str
    state: str
    score: float | None
    threshold: float | None
    rul: float | None
    open_alerts: int
    last_seen_ms: int | None
    stopped: bool = False

    @property
    def ratio(self) -> float | None:
        """Latest score over its threshold: above 1 is anomalous."""
        if self.score is None or not self.threshold:
            return None
        return self.score / self.threshold


@dataclass
class FleetData:
    rows: list[FleetRow]
    rul_unit: str
    generated_ms: int


def _bucket_ms(since_ms: int, until_ms: int) -> int:
    return max(1, -(-(until_ms - since_ms) // MAX_POINTS))


def load_asset(
    engine: Engine, asset: str, since_ms: int, until_ms: int, *, rul_alert_below: float | None
) -> AssetData:
    """The asset's sensors, scores, RUL and alerts in ``[since_ms, until_ms)``."""
    with engine.connect() as conn:
        row = conn.execute(
            select(t.assets.c.id, t.assets.c.state).where(t.assets.c.name == asset)
        ).first()
        if row is None:
            known = [n for (n,) in conn.execute(select(t.assets.c.name).order_by(t.assets.c.name))]
            raise EdgewatchError(
                f"no asset named {asset!r}",
                hint=f"known assets: {', '.join(known[:20]) or 'none yet'}",
            )
        asset_id, state = row
        sensors = records.sensors_of(engine, asset)
        bucket = _bucket_ms(since_ms, until_ms)
        series = _sensor_series(conn, asset_id, sensors, since_ms, until_ms, bucket)
        score, threshold, rul, low, high = _prediction_series(
            conn, asset_id, since_ms, until_ms, bucket
        )
        x = t.alerts
        spans = [
            AlertSpan(kind, severity, opened, closed, peak)
            for kind, severity, opened, closed, peak in conn.execute(
                select(x.c.kind, x.c.severity, x.c.opened_ms, x.c.closed_ms, x.c.peak_score)
                .where(
                    x.c.asset_id == asset_id,
                    x.c.opened_ms < until_ms,
                    or_(x.c.closed_ms.is_(None), x.c.closed_ms >= since_ms),
                )
                .order_by(x.c.opened_ms)
            )
        ]
        newest = conn.execute(
            select(t.predictions.c.model_version, t.predictions.c.judged)
            .where(t.predictions.c.asset_id == asset_id)
            .order_by(t.predictions.c.window_end_ms.desc())
            .limit(1)
        ).first()
        model, judged = newest if newest is not None else (None, None)
    return AssetData(
        asset=asset,
        state=state,
        since_ms=since_ms,
        until_ms=until_ms,
        bucket_ms=bucket,
        sensors=series,
        score=score,
        threshold=threshold,
        rul=rul,
        alerts=spans,
        model_version=model,
        rul_unit=records.rul_unit(engine),
        rul_alert_below=rul_alert_below,
        stopped=judged == 0,
        rul_low=low,
        rul_high=high,
    )


def _sensor_series(
    conn: Any, asset_id: int, sensors: list[str], since_ms: int, until_ms: int, bucket: int
) -> dict[str, Series]:
    # Readings are compressed blocks: bucketed here, one block at a time.
    first: dict[int, int] = {}
    sums: dict[str, defaultdict[int, float]] = {name: defaultdict(float) for name in sensors}
    counts: dict[str, defaultdict[int, int]] = {name: defaultdict(int) for name in sensors}
    for block in blocks.read_blocks(conn, asset_id, since_ms, until_ms):
        slots, start, inverse = np.unique(
            block.ts_ms // bucket, return_index=True, return_inverse=True
        )
        for slot, i in zip(slots.tolist(), start.tolist(), strict=True):
            first.setdefault(slot, int(block.ts_ms[i]))
        for name in sensors:
            column = block.column(name)
            if column is None:
                continue
            present = ~np.isnan(column)
            kept = np.where(present, column, 0.0)
            total = np.bincount(inverse, weights=kept, minlength=len(slots))
            n = np.bincount(inverse, weights=present, minlength=len(slots))
            for slot, x, k in zip(slots.tolist(), total.tolist(), n.tolist(), strict=True):
                if k:
                    sums[name][slot] += x
                    counts[name][slot] += int(k)
    out = {name: Series() for name in sensors}
    for slot in sorted(first):
        for name in sensors:
            k = counts[name].get(slot, 0)
            out[name].ts_ms.append(first[slot])
            out[name].values.append(sums[name][slot] / k if k else None)
    return out


def _prediction_series(
    conn: Any, asset_id: int, since_ms: int, until_ms: int, bucket: int
) -> tuple[Series, Series, Series, Series, Series]:
    p = t.predictions
    slot = cast(p.c.window_end_ms / bucket, Integer).label("slot")
    query = (
        select(
            slot,
            func.min(p.c.window_end_ms),
            func.max(p.c.anomaly_score),
            func.max(p.c.anomaly_threshold),
            func.min(p.c.rul),
            func.min(p.c.rul_low),
            func.max(p.c.rul_high),
        )
        .where(p.c.asset_id == asset_id, p.c.window_end_ms >= since_ms)
        .where(p.c.window_end_ms < until_ms)
        .group_by(slot)
        .order_by(slot)
    )
    score, threshold, rul, low, high = Series(), Series(), Series(), Series(), Series()
    for _, ts, peak, limit, least, bottom, top in conn.execute(query):
        pairs = ((score, peak), (threshold, limit), (rul, least), (low, bottom), (high, top))
        for target, value in pairs:
            target.ts_ms.append(int(ts))
            target.values.append(value)
    return score, threshold, rul, low, high


def load_fleet(engine: Engine, now_ms: int) -> FleetData:
    """Every asset's current health, worst first."""
    rows: list[FleetRow] = []
    with records.open_records(engine, "assets", records.Filters(newest_first=False)) as result:
        names = [f.name for f in result.fields]
        for raw in result.rows:
            doc = dict(zip(names, raw, strict=True))
            rows.append(
                FleetRow(
                    asset=doc["asset"],
                    state=doc["state"],
                    score=doc["anomaly_score"],
                    threshold=doc["anomaly_threshold"],
                    rul=doc["rul"],
                    open_alerts=int(doc["open_alerts"] or 0),
                    last_seen_ms=doc["last_seen"],
                    stopped=bool(doc["stopped"]),
                )
            )
    rows.sort(key=_severity_key)
    return FleetData(rows=rows, rul_unit=records.rul_unit(engine), generated_ms=now_ms)


def _severity_key(row: FleetRow) -> tuple[int, float, str]:
    rank = {"alerting": 0, "healthy": 1, "commissioning": 2}.get(row.state, 3)
    return (rank, -(row.ratio or 0.0), row.asset)
