"""Reads the runtime needs at start: what to resume, which alerts are open."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent import blocks
from agent import schema as t
from agent.domain import Alert, AlertKind, AssetState, Reading, Severity
from agent.settings import Settings

#: Stored readings newer than an asset's newest scored window that a restart scores
#: (see recent_readings); older unscored ones than that are left unscored.
RECOVER_MAX_READINGS = 20_000


def recent_readings(
    engine: Engine, site: str, asset: str, limit: int
) -> tuple[list[Reading], int | None]:
    """The asset's stored readings to refill its buffer after a restart (oldest
    first), and the end of its newest scored window: ``limit`` readings up to that
    end, and every reading after it (at most RECOVER_MAX_READINGS), whose windows a
    stop or a crash left unscored after they were stored."""
    with engine.connect() as conn:
        aid = conn.execute(
            select(t.assets.c.id).where(t.assets.c.site == site, t.assets.c.name == asset)
        ).scalar_one_or_none()
        if aid is None:
            return [], None
        last_end = conn.execute(
            select(func.max(t.predictions.c.window_end_ms)).where(t.predictions.c.asset_id == aid)
        ).scalar_one_or_none()
        newest = blocks.iter_readings(conn, aid, newest_first=True)
        rows = []
        if last_end is not None:
            for row in newest:
                rows.append(row)
                if row[0] <= last_end or len(rows) > RECOVER_MAX_READINGS:
                    break
        rows.extend(islice(newest, limit - 1 if rows else limit))
    readings = [Reading(site, asset, ts, values) for ts, _, values in reversed(rows)]
    return readings, last_end


def open_alerts(engine: Engine, site: str) -> list[Alert]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.alerts, t.assets.c.name)
            .join(t.assets, t.assets.c.id == t.alerts.c.asset_id)
            .where(t.alerts.c.closed_ms.is_(None), t.assets.c.site == site)
        ).all()
    return [
        Alert(
            asset=row.name,
            kind=AlertKind(row.kind),
            severity=Severity(row.severity),
            opened_ms=row.opened_ms,
            peak_score=row.peak_score,
            last_score=row.last_score,
            rul_cycles=row.rul_at_open,
            model_version=row.model_version,
            detail=row.detail,
            last_update_ms=row.opened_ms,
        )
        for row in rows
    ]


def asset_states(engine: Engine, site: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.assets.c.name, t.assets.c.state).where(t.assets.c.site == site)
        ).all()
    return {name: state for name, state in rows}


def set_asset_state(engine: Engine, site: str, asset: str, state: AssetState) -> bool:
    with engine.begin() as conn:
        result = conn.execute(
            update(t.assets)
            .where(t.assets.c.site == site, t.assets.c.name == asset)
            .values(state=str(state), baseline_version=None)
        )
    return result.rowcount > 0


def register_model(
    engine: Engine, *, version: str, kind: str, path: Path, manifest: Mapping[str, Any]
) -> str:
    """Record the bundle the agent runs (active) and retire the others; returns sha256."""
    body = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()
    now_ms = time.time_ns() // 1_000_000
    with engine.begin() as conn:
        conn.execute(update(t.models).where(t.models.c.sha256 != digest).values(status="retired"))
        stmt = sqlite_insert(t.models).values(
            version=version,
            sha256=digest,
            kind=kind,
            path=str(path),
            installed_ms=now_ms,
            status="active",
            manifest_json=body.decode(),
        )
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["sha256"], set_={"status": "active"})
        )
    return digest


def fleet_overview(engine: Engine, site: str) -> list[dict[str, Any]]:
    """Each asset's state with its newest prediction and open alerts (live views)."""
    latest = (
        select(
            t.predictions.c.asset_id,
            func.max(t.predictions.c.window_end_ms).label("end_ms"),
        )
        .group_by(t.predictions.c.asset_id)
        .subquery()
    )
    open_count = (
        select(t.alerts.c.asset_id, func.count().label("n"))
        .where(t.alerts.c.closed_ms.is_(None))
        .group_by(t.alerts.c.asset_id)
        .subquery()
    )
    p = t.predictions
    query = (
        select(
            t.assets.c.name,
            t.assets.c.state,
            t.assets.c.last_seen_ms,
            p.c.anomaly_score,
            p.c.anomaly_threshold,
            p.c.rul,
            p.c.window_end_ms,
            func.coalesce(open_count.c.n, 0).label("open_alerts"),
        )
        .select_from(t.assets)
        .outerjoin(latest, latest.c.asset_id == t.assets.c.id)
        .outerjoin(p, (p.c.asset_id == t.assets.c.id) & (p.c.window_end_ms == latest.c.end_ms))
        .outerjoin(open_count, open_count.c.asset_id == t.assets.c.id)
        .where(t.assets.c.site == site)
        .order_by(t.assets.c.name)
    )
    with engine.connect() as conn:
        return [
            {str(key): value for key, value in row._mapping.items()} for row in conn.execute(query)
        ]


def asset_baselines(engine: Engine, site: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                t.assets.c.name.label("asset"),
                t.assets.c.state,
                t.assets.c.baseline_version,
                t.assets.c.commissioned_ms,
                t.assets.c.baseline_first_ms,
                t.assets.c.baseline_last_ms,
                t.assets.c.last_seen_ms,
            )
            .where(t.assets.c.site == site)
            .order_by(t.assets.c.name)
        ).all()
    return [{str(key): value for key, value in row._mapping.items()} for row in rows]


#: A heartbeat older than this many health intervals (plus its commit's wait) means
#: the agent is down.
STALE_INTERVALS = 3


def heartbeat_max_age_ms(settings: Settings) -> float:
    """How old the newest heartbeat of a running agent can be: a few health intervals,
    plus the time its write batch may wait at low rates (storage.commit_max_wait_ms)."""
    health_ms = settings.mqtt.health_interval_s * 1000
    return STALE_INTERVALS * health_ms + settings.storage.commit_max_wait_ms


def latest_heartbeat(engine: Engine, agent: str) -> dict[str, Any] | None:
    """The agent's newest heartbeat: pid, version, start and beat times, health."""
    with engine.connect() as conn:
        row = conn.execute(select(t.heartbeats).where(t.heartbeats.c.agent == agent)).first()
    if row is None:
        return None
    return {
        "agent": row.agent,
        "pid": row.pid,
        "version": row.version,
        "started_ms": row.started_ms,
        "ts_ms": row.ts_ms,
        "health": orjson.loads(row.health_json),
    }


def outbox_backlog(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        items, size = conn.execute(
            select(func.count(), func.coalesce(func.sum(t.outbox.c.size_bytes), 0)).where(
                t.outbox.c.state == "pending"
            )
        ).one()
    return {"items": int(items), "bytes": int(size)}
