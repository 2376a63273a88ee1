"""The records an operator reads (``edgewatch records``): one spec per kind, streamed.

Every kind is a typed column list plus a query with the same filters (asset, time
range, limit, and the kind's own flags). Rows come out as plain tuples, times as
epoch milliseconds, straight from a cursor: a million readings never sit in
memory (readings are decoded one block at a time, agent/blocks.py). The reading
connection is ``query_only`` and WAL lets it run beside the agent's writer without
blocking it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from sqlalchemy import (
    Boolean,
    Connection,
    Engine,
    Select,
    and_,
    case,
    func,
    or_,
    select,
    type_coerce,
)

from agent import blocks
from agent import schema as t
from agent.errors import StorageError
from agent.storage import labels

#: Rows fetched from SQLite at a time while streaming.
FETCH_ROWS = 2000


class Kind(enum.StrEnum):
    TIME = "time"
    FLOAT = "float"
    INT = "int"
    TEXT = "text"
    BOOL = "bool"


@dataclass(frozen=True)
class Field:
    name: str
    kind: Kind
    unit: str = ""
    #: Shown in terminal tables (every field goes to JSON, CSV and Parquet).
    table: bool = True


@dataclass(frozen=True)
class Filters:
    asset: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int | None = None
    newest_first: bool = True
    anomalies_only: bool = False
    open_only: bool = False
    reason: str | None = None
    level: str | None = None


@dataclass
class RecordSet:
    kind: str
    fields: list[Field]
    rows: Iterator[tuple[Any, ...]]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Spec:
    fields: Sequence[Field]
    query: Callable[[Filters], Select[Any]]
    #: The time column filters and ordering use.
    time: Any
    #: Flags of Filters this kind understands (others are refused by the CLI).
    flags: frozenset[str] = frozenset()
    #: The column ``--asset`` compares with.
    asset: Any = t.assets.c.name


def _asset_name() -> Any:
    return t.assets.c.name.label("asset")


def _range(column: Any, f: Filters) -> list[Any]:
    out = []
    if f.since_ms is not None:
        out.append(column >= f.since_ms)
    if f.until_ms is not None:
        out.append(column < f.until_ms)
    return out


def _stopped(p: Any) -> Any:
    """1 where the window was not judged (the machine stood still), else 0 (NULL rows
    written before the flag existed count as running)."""
    return type_coerce(case((p.c.judged == 0, 1), else_=0), Boolean).label("stopped")


def _assets(f: Filters) -> Select[Any]:
    a = t.assets
    open_alerts = (
        select(func.count())
        .where(t.alerts.c.asset_id == a.c.id, t.alerts.c.closed_ms.is_(None))
        .scalar_subquery()
    )
    newest = t.predictions.alias("newest")
    latest = (
        select(newest.c.window_end_ms)
        .where(newest.c.asset_id == a.c.id)
        .order_by(newest.c.window_end_ms.desc())
        .limit(1)
        .correlate(a)
        .scalar_subquery()
    )
    p = t.predictions
    query = (
        select(
            a.c.name.label("asset"),
            a.c.state,
            a.c.last_seen_ms,
            p.c.anomaly_score,
            p.c.anomaly_threshold,
            p.c.rul,
            _stopped(p),
            open_alerts.label("open_alerts"),
            a.c.commissioned_ms,
            a.c.first_seen_ms,
        )
        .select_from(a)
        .outerjoin(p, and_(p.c.asset_id == a.c.id, p.c.window_end_ms == latest))
    )
    return query.where(*_range(a.c.last_seen_ms, f))


def _predictions(f: Filters) -> Select[Any]:
    p = t.predictions
    query = (
        select(
            p.c.window_end_ms,
            _asset_name(),
            p.c.anomaly_score,
            p.c.anomaly_threshold,
            p.c.is_anomaly,
            p.c.rul,
            p.c.rul_low,
            p.c.rul_high,
            _stopped(p),
            p.c.model_version,
        )
        .select_from(p)
        .join(t.assets, t.assets.c.id == p.c.asset_id)
        .where(*_range(p.c.window_end_ms, f))
    )
    if f.anomalies_only:
        query = query.where(p.c.is_anomaly == 1)
    return query


def _alerts(f: Filters) -> Select[Any]:
    x = t.alerts
    label = labels.newest_labels().subquery("label")
    query = (
        select(
            x.c.id,
            x.c.opened_ms,
            x.c.closed_ms,
            _asset_name(),
            x.c.kind,
            x.c.severity,
            case((x.c.closed_ms.is_(None), "open"), else_="closed").label("status"),
            x.c.peak_score,
            x.c.last_score,
            x.c.rul_at_open,
            x.c.model_version,
            type_coerce(x.c.acknowledged, Boolean).label("acknowledged"),
            x.c.acknowledged_ms,
            x.c.acknowledged_by,
            label.c.label,
            label.c.note.label("label_note"),
            label.c.by.label("labelled_by"),
            label.c.created_ms.label("labelled_ms"),
        )
        .select_from(x)
        .join(t.assets, t.assets.c.id == x.c.asset_id)
        .outerjoin(label, label.c.alert_id == x.c.id)
    )
    # An alert belongs to a range when it was active at some point in it.
    if f.since_ms is not None:
        query = query.where(or_(x.c.closed_ms.is_(None), x.c.closed_ms >= f.since_ms))
    if f.until_ms is not None:
        query = query.where(x.c.opened_ms < f.until_ms)
    if f.open_only:
        query = query.where(x.c.closed_ms.is_(None))
    return query


def _dead_letters(f: Filters) -> Select[Any]:
    d = t.dead_letters
    query = select(
        d.c.received_ms,
        d.c.asset,
        d.c.reason,
        d.c.detail,
        d.c.topic,
        d.c.payload_size,
        d.c.payload,
    ).where(*_range(d.c.received_ms, f))
    if f.reason is not None:
        query = query.where(d.c.reason == f.reason)
    return query


def _events(f: Filters) -> Select[Any]:
    e = t.events
    query = (
        select(e.c.ts_ms, e.c.level, e.c.kind, _asset_name(), e.c.message)
        .select_from(e)
        .outerjoin(t.assets, t.assets.c.id == e.c.asset_id)
        .where(*_range(e.c.ts_ms, f))
    )
    if f.level is not None:
        query = query.where(e.c.level == f.level)
    return query


def _summaries(f: Filters) -> Select[Any]:
    s = t.summaries
    return (
        select(
            s.c.period_start_ms,
            _asset_name(),
            s.c.period_s,
            s.c.samples,
            s.c.anomaly_rate,
            s.c.max_score,
            s.c.latest_rul,
            s.c.alerts_opened,
            s.c.alerts_closed,
            s.c.asset_state,
        )
        .select_from(s)
        .join(t.assets, t.assets.c.id == s.c.asset_id)
        .where(*_range(s.c.period_start_ms, f))
    )


def _readings(f: Filters) -> Select[Any]:
    # Readings are compressed blocks that SQL cannot open: open_records and
    # count_beyond read them through agent.blocks; this only names the blocks.
    b = t.reading_blocks
    return select(b.c.first_ts_ms).where(*_range(b.c.first_ts_ms, f))


def _specs(rul_unit: str) -> dict[str, _Spec]:
    score = Field("anomaly_score", Kind.FLOAT)
    threshold = Field("anomaly_threshold", Kind.FLOAT)
    return {
        "assets": _Spec(
            [
                Field("asset", Kind.TEXT),
                Field("state", Kind.TEXT),
                Field("last_seen", Kind.TIME),
                score,
                threshold,
                Field("rul", Kind.FLOAT, rul_unit),
                Field("stopped", Kind.BOOL),
                Field("open_alerts", Kind.INT),
                Field("commissioned", Kind.TIME, table=False),
                Field("first_seen", Kind.TIME, table=False),
            ],
            _assets,
            t.assets.c.name,
        ),
        "predictions": _Spec(
            [
                Field("window_end", Kind.TIME),
                Field("asset", Kind.TEXT),
                score,
                threshold,
                Field("is_anomaly", Kind.BOOL),
                Field("rul", Kind.FLOAT, rul_unit),
                Field("rul_low", Kind.FLOAT, rul_unit),
                Field("rul_high", Kind.FLOAT, rul_unit),
                Field("stopped", Kind.BOOL),
                Field("model_version", Kind.TEXT, table=False),
            ],
            _predictions,
            t.predictions.c.window_end_ms,
            frozenset({"anomalies_only"}),
        ),
        "alerts": _Spec(
            [
                Field("id", Kind.INT),
                Field("opened", Kind.TIME),
                Field("closed", Kind.TIME),
                Field("asset", Kind.TEXT),
                Field("kind", Kind.TEXT),
                Field("severity", Kind.TEXT),
                Field("status", Kind.TEXT, table=False),
                Field("peak_score", Kind.FLOAT),
                Field("last_score", Kind.FLOAT, table=False),
                # Not in the 80-column table, which shows the label instead (JSON,
                # CSV and Parquet have every field).
                Field("rul_at_open", Kind.FLOAT, rul_unit, table=False),
                Field("model_version", Kind.TEXT, table=False),
                Field("acknowledged", Kind.BOOL, table=False),
                Field("acknowledged_at", Kind.TIME, table=False),
                Field("acknowledged_by", Kind.TEXT, table=False),
                Field("label", Kind.TEXT),
                Field("label_note", Kind.TEXT, table=False),
                Field("labelled_by", Kind.TEXT, table=False),
                Field("labelled_at", Kind.TIME, table=False),
            ],
            _alerts,
            t.alerts.c.opened_ms,
            frozenset({"open_only"}),
        ),
        "dead-letters": _Spec(
            [
                Field("received", Kind.TIME),
                Field("asset", Kind.TEXT),
                Field("reason", Kind.TEXT),
                Field("detail", Kind.TEXT),
                Field("topic", Kind.TEXT, table=False),
                Field("payload_size", Kind.INT, "B"),
                Field("payload", Kind.TEXT),
            ],
            _dead_letters,
            t.dead_letters.c.received_ms,
            frozenset({"reason"}),
            t.dead_letters.c.asset,
        ),
        "events": _Spec(
            [
                Field("ts", Kind.TIME),
                Field("level", Kind.TEXT),
                Field("kind", Kind.TEXT),
                Field("asset", Kind.TEXT),
                Field("message", Kind.TEXT),
            ],
            _events,
            t.events.c.ts_ms,
            frozenset({"level"}),
        ),
        "summaries": _Spec(
            [
                Field("period_start", Kind.TIME),
                Field("asset", Kind.TEXT),
                Field("period", Kind.INT, "s", table=False),
                Field("samples", Kind.INT),
                Field("anomaly_rate", Kind.FLOAT),
                Field("max_score", Kind.FLOAT),
                Field("latest_rul", Kind.FLOAT, rul_unit),
                Field("alerts_opened", Kind.INT),
                Field("alerts_closed", Kind.INT),
                Field("asset_state", Kind.TEXT, table=False),
            ],
            _summaries,
            t.summaries.c.period_start_ms,
        ),
        "readings": _Spec(
            [
                Field("ts", Kind.TIME),
                Field("asset", Kind.TEXT),
                Field("received", Kind.TIME, table=False),
            ],
            _readings,
            t.reading_blocks.c.first_ts_ms,
        ),
    }


KINDS = tuple(_specs(""))
#: Which kinds accept which optional filter (for clear usage errors).
FLAGS = {name: spec.flags for name, spec in _specs("").items()}


def rul_unit(engine: Engine) -> str:
    """The RUL unit of the newest registered model ("" when unknown)."""
    with engine.connect() as conn:
        return rul_unit_of(conn)


def rul_unit_of(conn: Connection) -> str:
    """:func:`rul_unit` on an open connection."""
    manifest = conn.execute(
        select(t.models.c.manifest_json).order_by(t.models.c.installed_ms.desc()).limit(1)
    ).scalar()
    if not manifest:
        return ""
    try:
        rul = orjson.loads(manifest).get("rul") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    return str(rul.get("unit", "")) if isinstance(rul, dict) else ""


def sensors_of(engine: Engine, asset: str | None) -> list[str]:
    """Sensor columns of the readings: what the selected assets declare and what their
    newest blocks hold (one index lookup per asset, however many readings are kept)."""
    query = select(t.assets.c.id, t.assets.c.sensors).order_by(t.assets.c.name)
    if asset is not None:
        query = query.where(t.assets.c.name == asset)
    names: dict[str, None] = {}
    with engine.connect() as conn:
        for asset_id, declared in conn.execute(query).all():
            try:
                found = [str(x) for x in orjson.loads(declared or "[]")]
            except orjson.JSONDecodeError:
                found = []
            found.extend(blocks.newest_sensors(conn, int(asset_id)))
            names.update(dict.fromkeys(found))
    return list(names)


def asset_exists(engine: Engine, asset: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(select(t.assets.c.id).where(t.assets.c.name == asset)).first()
    return found is not None


@contextmanager
def open_records(engine: Engine, kind: str, filters: Filters) -> Iterator[RecordSet]:
    """Stream the ``kind`` records that match ``filters``; rows are read lazily."""
    specs = _specs(rul_unit(engine))
    if kind not in specs:
        raise StorageError(f"unknown record kind {kind!r}; one of {', '.join(specs)}")
    spec = specs[kind]
    if kind == "readings":
        sensors = sensors_of(engine, filters.asset)
        fields = [*spec.fields, *(Field(name, Kind.FLOAT) for name in sensors)]
        with engine.connect() as conn:
            found = _reading_rows(conn, filters, sensors)
            if filters.limit is not None:
                found = islice(found, filters.limit)
            yield RecordSet(kind, fields, found)
        return
    query = _filtered(spec, filters)
    order = spec.time.desc() if filters.newest_first else spec.time.asc()
    if kind == "assets":
        order = spec.time.asc()
    query = query.order_by(order)
    if filters.limit is not None:
        query = query.limit(filters.limit)
    fields = list(spec.fields)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(query)
        rows: Iterator[tuple[Any, ...]]
        if kind == "dead-letters":
            rows = ((*row[:-1], bytes(row[-1]).decode("utf-8", errors="replace")) for row in result)
        elif kind == "predictions":
            rows = ((*row[:4], bool(row[4]), *row[5:]) for row in result)
        else:
            rows = (tuple(row) for row in result)
        try:
            yield RecordSet(kind, fields, rows)
        finally:
            result.close()


def _filtered(spec: _Spec, filters: Filters) -> Select[Any]:
    query = spec.query(filters)
    if filters.asset is not None:
        query = query.where(spec.asset == filters.asset)
    return query


def _asset_id(conn: Connection, name: str) -> int | None:
    found = conn.execute(select(t.assets.c.id).where(t.assets.c.name == name)).first()
    return None if found is None else int(found[0])


def _reading_rows(conn: Connection, f: Filters, sensors: list[str]) -> Iterator[tuple[Any, ...]]:
    """(ts, asset, received, *one value per sensor or None) in time order."""
    names = {int(i): str(n) for i, n in conn.execute(select(t.assets.c.id, t.assets.c.name))}
    stream: Iterator[tuple[NDArray[np.int64], blocks.Block]]
    if f.asset is not None:
        aid = _asset_id(conn, f.asset)
        if aid is None:
            return
        stream = (
            (np.full(len(b), aid, dtype=np.int64), b)
            for b in blocks.read_blocks(
                conn, aid, f.since_ms, f.until_ms, newest_first=f.newest_first
            )
        )
    else:
        stream = blocks.read_all_blocks(conn, f.since_ms, f.until_ms, newest_first=f.newest_first)
    for owners, block in stream:
        columns = [block.column(name) for name in sensors]
        values = [
            [None] * len(block) if c is None else [None if x != x else x for x in c.tolist()]
            for c in columns
        ]
        ts, received = block.ts_ms.tolist(), block.received_ms.tolist()
        for i, owner in enumerate(owners.tolist()):
            yield (ts[i], names.get(owner), received[i], *(v[i] for v in values))


def count_beyond(engine: Engine, kind: str, filters: Filters) -> int:
    """How many matching rows there are in all (to say that ``--limit`` cut some)."""
    if kind == "readings":
        with engine.connect() as conn:
            if filters.asset is None:
                return blocks.count_readings(conn, None, filters.since_ms, filters.until_ms)
            aid = _asset_id(conn, filters.asset)
            if aid is None:
                return 0
            return blocks.count_readings(conn, [aid], filters.since_ms, filters.until_ms)
    query = _filtered(_specs("")[kind], filters)
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())
