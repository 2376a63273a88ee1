"""What the dashboard shows, read from the database in a few bounded queries.

Nothing here knows about HTTP: plain functions of a connection that return plain
dicts (the JSON API returns them as they are; the pages render them). Series are
downsampled before they reach Python where SQL can do it (predictions: one row per
time bucket, the highest score and the lowest RUL in it, as agent/reporting does);
readings are compressed blocks SQL cannot open, so their bucket means are taken
one block at a time. Either way a series has at most ``MAX_POINTS`` points, however
long the range.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Final

import numpy as np
import orjson
from sqlalchemy import Connection, Integer, and_, cast, func, literal, or_, select

from agent import blocks, outbox
from agent import schema as t
from agent.storage import labels, records

#: Points per series at most: about a chart's width in pixels.
MAX_POINTS: Final = 600
#: What an asset page shows unless told: the last day of the asset's data.
DEFAULT_SPAN_MS: Final = 86_400_000
#: The narrowest range a zoom may ask for (below it, buckets hold single readings).
MIN_SPAN_MS: Final = 60_000
#: Alerts listed per page at most.
ALERTS_LIMIT: Final = 200
SEVERITY_RANK: Final = {"info": 0, "warning": 1, "critical": 2}


class NotFoundError(LookupError):
    """The asset or alert asked for is not in the database."""


def _float(value: Any) -> float | None:
    if value is None:
        return None
    x = float(value)
    return x if np.isfinite(x) else None


# -------------------------------------------------------------------------- fleet


def fleet(conn: Connection, now_ms: int) -> dict[str, Any]:
    """Every asset's health (worst first), the model, sync and agent status."""
    a, p, x = t.assets, t.predictions, t.alerts
    newest = (
        select(p.c.id)
        .where(p.c.asset_id == a.c.id)
        .order_by(p.c.window_end_ms.desc())
        .limit(1)
        .correlate(a)
        .scalar_subquery()
    )
    rows = conn.execute(
        select(
            a.c.id,
            a.c.name,
            a.c.state,
            a.c.last_seen_ms,
            p.c.window_end_ms,
            p.c.anomaly_score,
            p.c.anomaly_threshold,
            p.c.is_anomaly,
            p.c.rul,
            p.c.rul_low,
            p.c.rul_high,
            p.c.model_version,
            p.c.judged,
        )
        .select_from(a)
        .outerjoin(p, p.c.id == newest)
    ).all()
    incidents: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for alert in conn.execute(
        select(x.c.id, x.c.asset_id, x.c.kind, x.c.severity, x.c.opened_ms, x.c.acknowledged)
        .where(x.c.closed_ms.is_(None))
        .order_by(x.c.opened_ms)
    ):
        incidents[int(alert.asset_id)].append(
            {
                "id": int(alert.id),
                "kind": alert.kind,
                "severity": alert.severity,
                "opened_ms": int(alert.opened_ms),
                "acknowledged": bool(alert.acknowledged),
            }
        )
    assets = []
    for row in rows:
        score, limit = _float(row.anomaly_score), _float(row.anomaly_threshold)
        assets.append(
            {
                "asset": row.name,
                "state": row.state,
                "last_seen_ms": row.last_seen_ms,
                "window_end_ms": row.window_end_ms,
                "score": score,
                "threshold": limit,
                "ratio": None if score is None or not limit else score / limit,
                "anomalous": bool(row.is_anomaly),
                "rul": _float(row.rul),
                "rul_low": _float(row.rul_low),
                "rul_high": _float(row.rul_high),
                "stopped": row.judged == 0,
                "model_version": row.model_version,
                "open_incidents": incidents.get(int(row.id), []),
            }
        )
    assets.sort(key=_worst_first)
    return {
        "generated_ms": now_ms,
        "assets": assets,
        "rul_unit": records.rul_unit_of(conn),
        "model": active_model(conn),
        "sync": sync_status(conn, now_ms),
        "agents": agents(conn),
    }


def _worst_first(row: dict[str, Any]) -> tuple[int, int, float, str]:
    rank = {"alerting": 0, "healthy": 1, "commissioning": 2}.get(str(row["state"]), 3)
    worst = max((SEVERITY_RANK.get(i["severity"], 0) for i in row["open_incidents"]), default=-1)
    return (rank, -worst, -(row["ratio"] or 0.0), str(row["asset"]))


def active_model(conn: Connection) -> dict[str, Any] | None:
    m = t.models
    row = conn.execute(
        select(m.c.version, m.c.kind, m.c.installed_ms, m.c.status)
        .order_by((m.c.status == "active").desc(), m.c.installed_ms.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {
        "version": row.version,
        "kind": row.kind,
        "installed_ms": row.installed_ms,
        "status": row.status,
    }


def sync_status(conn: Connection, now_ms: int) -> dict[str, Any]:
    """The outbox backlog and the uploader's last success and error (no disk scan:
    that is ``edgewatch sync status``'s job, too slow for a page refreshed often)."""
    o = t.outbox
    rows = conn.execute(
        select(o.c.kind, func.count(), func.sum(o.c.size_bytes), func.min(o.c.created_ms))
        .where(o.c.state == outbox.PENDING)
        .group_by(o.c.kind)
    ).all()
    quarantined = conn.execute(
        select(func.count()).select_from(o).where(o.c.state == outbox.QUARANTINED)
    ).scalar_one()
    success = outbox.get_state(conn, "last_success")
    error = outbox.get_state(conn, "last_error")
    oldest = min((int(r[3]) for r in rows), default=None)
    healthy = error is None or (success is not None and success["ts_ms"] >= error["ts_ms"])
    return {
        "backlog": {str(kind): int(n) for kind, n, _, _ in rows},
        "backlog_items": sum(int(r[1]) for r in rows),
        "backlog_bytes": sum(int(r[2] or 0) for r in rows),
        "oldest_age_s": None if oldest is None else round((now_ms - oldest) / 1000, 1),
        "quarantined_items": int(quarantined),
        "last_success_ms": None if success is None else success["ts_ms"],
        "last_error": None if error is None else str(error["message"])[:300],
        "last_error_ms": None if error is None else error["ts_ms"],
        "healthy": healthy,
    }


def agents(conn: Connection) -> list[dict[str, Any]]:
    h = t.heartbeats
    return [
        {"agent": r.agent, "version": r.version, "started_ms": r.started_ms, "ts_ms": r.ts_ms}
        for r in conn.execute(select(h.c.agent, h.c.version, h.c.started_ms, h.c.ts_ms))
    ]


# -------------------------------------------------------------------------- asset


def asset_names(conn: Connection) -> list[str]:
    return [str(n) for n in conn.execute(select(t.assets.c.name).order_by(t.assets.c.name))]


def _asset_row(conn: Connection, name: str) -> Any:
    a = t.assets
    row = conn.execute(
        select(a.c.id, a.c.name, a.c.state, a.c.first_seen_ms, a.c.last_seen_ms, a.c.sensors)
        .where(a.c.name == name)
        .limit(1)
    ).first()
    if row is None:
        raise NotFoundError(f"no asset named {name!r}")
    return row


def time_range(
    conn: Connection, name: str, since_ms: int | None, until_ms: int | None
) -> tuple[int, int]:
    """The range an asset page shows: as asked, or the last day of the asset's data."""
    row = _asset_row(conn, name)
    end = until_ms if until_ms is not None else int(row.last_seen_ms) + 1
    start = since_ms if since_ms is not None else end - DEFAULT_SPAN_MS
    if end - start < MIN_SPAN_MS:
        middle = (start + end) // 2
        start, end = middle - MIN_SPAN_MS // 2, middle + MIN_SPAN_MS // 2
    return start, end


def bucket_ms(since_ms: int, until_ms: int) -> int:
    return max(1, -(-(until_ms - since_ms) // MAX_POINTS))


def asset(conn: Connection, name: str, since_ms: int, until_ms: int) -> dict[str, Any]:
    """One asset's sensors, score and threshold, RUL band and incidents in
    ``[since_ms, until_ms)``, each series at most ``MAX_POINTS`` points on one time axis."""
    row = _asset_row(conn, name)
    asset_id = int(row.id)
    bucket = bucket_ms(since_ms, until_ms)
    sensors = _sensor_names(conn, asset_id, row.sensors)
    return {
        "asset": row.name,
        "state": row.state,
        "first_seen_ms": row.first_seen_ms,
        "last_seen_ms": row.last_seen_ms,
        "since_ms": since_ms,
        "until_ms": until_ms,
        "bucket_ms": bucket,
        "rul_unit": records.rul_unit_of(conn),
        "predictions": _prediction_series(conn, asset_id, since_ms, until_ms, bucket),
        "sensors": _sensor_series(conn, asset_id, sensors, since_ms, until_ms, bucket),
        "incidents": alerts(
            conn,
            asset=row.name,
            active_since_ms=since_ms,
            active_until_ms=until_ms,
            newest_first=False,
        ),
    }


def _sensor_names(conn: Connection, asset_id: int, declared: str | None) -> list[str]:
    try:
        found = [str(x) for x in orjson.loads(declared or "[]")]
    except orjson.JSONDecodeError:
        found = []
    found.extend(blocks.newest_sensors(conn, asset_id))
    return list(dict.fromkeys(found))


def _prediction_series(
    conn: Connection, asset_id: int, since_ms: int, until_ms: int, bucket: int
) -> dict[str, list[Any]]:
    p = t.predictions
    slot = cast((p.c.window_end_ms - since_ms) / bucket, Integer).label("slot")
    query = (
        select(
            func.min(p.c.window_end_ms),
            func.max(p.c.anomaly_score),
            func.max(p.c.anomaly_threshold),
            func.min(p.c.rul),
            func.min(p.c.rul_low),
            func.max(p.c.rul_high),
        )
        .where(
            p.c.asset_id == asset_id,
            p.c.window_end_ms >= since_ms,
            p.c.window_end_ms < until_ms,
        )
        .group_by(slot)
        .order_by(slot)
    )
    out: dict[str, list[Any]] = {
        k: [] for k in ("ts_ms", "score", "threshold", "rul", "rul_low", "rul_high")
    }
    for ts, score, limit, rul, low, high in conn.execute(query):
        out["ts_ms"].append(int(ts))
        out["score"].append(_float(score))
        out["threshold"].append(_float(limit))
        out["rul"].append(_float(rul))
        out["rul_low"].append(_float(low))
        out["rul_high"].append(_float(high))
    return out


def _sensor_series(
    conn: Connection, asset_id: int, sensors: list[str], since_ms: int, until_ms: int, bucket: int
) -> dict[str, Any]:
    """Bucket means per sensor: one shared time axis (each bucket's first reading)."""
    first: dict[int, int] = {}
    sums = {name: np.zeros(MAX_POINTS + 1) for name in sensors}
    counts = {name: np.zeros(MAX_POINTS + 1) for name in sensors}
    for block in blocks.read_blocks(conn, asset_id, since_ms, until_ms):
        slots = ((block.ts_ms - since_ms) // bucket).clip(0, MAX_POINTS)
        unique, start = np.unique(slots, return_index=True)
        for slot, i in zip(unique.tolist(), start.tolist(), strict=True):
            first.setdefault(slot, int(block.ts_ms[i]))
        for name in sensors:
            if name not in block.sensors:
                continue
            # The stored float32 as it is: a chart's bucket mean needs no shortest
            # decimal form (Block.column's exact(), ten times the cost).
            column = block.values[:, block.sensors.index(name)].astype(np.float64)
            present = ~np.isnan(column)
            sums[name] += np.bincount(
                slots, weights=np.where(present, column, 0.0), minlength=MAX_POINTS + 1
            )
            counts[name] += np.bincount(slots, weights=present, minlength=MAX_POINTS + 1)
    order = sorted(first)
    values: dict[str, list[float | None]] = {}
    for name in sensors:
        s, n = sums[name][order], counts[name][order]
        means = np.divide(s, n, out=np.full(len(order), np.nan), where=n > 0)
        values[name] = [None if np.isnan(v) else round(float(v), 6) for v in means]
    return {"ts_ms": [first[k] for k in order], "values": values}


# ------------------------------------------------------------------------- alerts


def alerts(
    conn: Connection,
    *,
    asset: str | None = None,
    status: str | None = None,
    label: str | None = None,
    unacknowledged: bool = False,
    active_since_ms: int | None = None,
    active_until_ms: int | None = None,
    alert_id: int | None = None,
    newest_first: bool = True,
    limit: int = ALERTS_LIMIT,
) -> list[dict[str, Any]]:
    """Alerts with their acknowledgement and current label.

    ``status``: ``open`` or ``closed``; ``label``: one of the labels, or ``none`` for
    alerts nobody labelled yet.
    """
    x, a = t.alerts, t.assets
    newest = labels.newest_labels().subquery("label")
    query = (
        select(
            x.c.id,
            a.c.name.label("asset"),
            x.c.kind,
            x.c.severity,
            x.c.opened_ms,
            x.c.closed_ms,
            x.c.peak_score,
            x.c.rul_at_open,
            x.c.model_version,
            x.c.acknowledged,
            x.c.acknowledged_ms,
            x.c.acknowledged_by,
            newest.c.label,
            newest.c.note,
            newest.c.by,
            newest.c.created_ms,
        )
        .select_from(x)
        .join(a, a.c.id == x.c.asset_id)
        .outerjoin(newest, newest.c.alert_id == x.c.id)
    )
    conditions = []
    if alert_id is not None:
        conditions.append(x.c.id == alert_id)
    if asset is not None:
        conditions.append(a.c.name == asset)
    if status == "open":
        conditions.append(x.c.closed_ms.is_(None))
    elif status == "closed":
        conditions.append(x.c.closed_ms.is_not(None))
    if label == "none":
        conditions.append(newest.c.label.is_(None))
    elif label is not None:
        conditions.append(newest.c.label == label)
    if unacknowledged:
        conditions.append(x.c.acknowledged == 0)
    if active_since_ms is not None:
        conditions.append(or_(x.c.closed_ms.is_(None), x.c.closed_ms >= active_since_ms))
    if active_until_ms is not None:
        conditions.append(x.c.opened_ms < active_until_ms)
    query = query.where(and_(literal(True), *conditions))
    order = x.c.opened_ms.desc() if newest_first else x.c.opened_ms.asc()
    query = query.order_by(order, x.c.id.desc()).limit(limit)
    return [
        {
            "id": int(r.id),
            "asset": r.asset,
            "kind": r.kind,
            "severity": r.severity,
            "opened_ms": r.opened_ms,
            "closed_ms": r.closed_ms,
            "status": "open" if r.closed_ms is None else "closed",
            "peak_score": _float(r.peak_score),
            "rul_at_open": _float(r.rul_at_open),
            "model_version": r.model_version,
            "acknowledged": bool(r.acknowledged),
            "acknowledged_ms": r.acknowledged_ms,
            "acknowledged_by": r.acknowledged_by,
            "label": r.label,
            "label_note": r.note,
            "labelled_by": r.by,
            "labelled_ms": r.created_ms,
        }
        for r in conn.execute(query)
    ]


def alert(conn: Connection, alert_id: int) -> dict[str, Any]:
    found = alerts(conn, alert_id=alert_id, limit=1)
    if not found:
        raise NotFoundError(f"no alert with id {alert_id}")
    return found[0]
