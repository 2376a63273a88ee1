"""Batched, idempotent writes of everything the agent keeps (one thread, one connection).

Every write is keyed so that repeating it changes nothing: readings by (asset, ts)
(:func:`agent.blocks.insert_readings` skips a timestamp already stored),
predictions by (asset, window end, model version), alerts by (asset, kind, opened),
dead letters by their content (:func:`dead_letter_digest`). That is what lets the
agent acknowledge MQTT messages only after commit: a message redelivered after a
crash meets its own rows and leaves no trace.

A redelivery cannot be told from the same bytes published again (message ids are
reused, the DUP flag is not kept across sessions), so identical bad messages on the
same topic are one dead letter, the first one received, as identical readings are
one reading; the ``dead_letters`` metric still counts every delivery.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import OperationalError

from agent import blocks, outbox
from agent import schema as t
from agent.domain import (
    Accepted,
    Alert,
    AssetStatus,
    Batch,
    DeadLetter,
    Event,
    Prediction,
    Reading,
    RejectReason,
)
from agent.errors import DiskFullError, StorageError

log = logging.getLogger(__name__)

#: Asset ids remembered between transactions. Far above ingest.max_assets' default
#: so that live assets stay cached, bounded so that a flood of names does not grow it.
ASSET_ID_CACHE_MAX = 8192


def dead_letter_digest(topic: str, reason: str, payload: bytes, payload_size: int) -> str:
    """sha256 (hex) of what identifies a refused message: its topic, why it was refused,
    the payload as stored and its size as received. ``received_ms`` is left out: a
    redelivery arrives later. alembic/versions/0005 holds a frozen copy for old rows."""
    h = hashlib.sha256()
    # Length-prefixed, so that no two different field splits hash alike.
    for part in (topic.encode(), reason.encode(), str(payload_size).encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    h.update(payload)
    return h.hexdigest()


def values_json(values: dict[str, float]) -> str:
    # Sorted keys make equal readings byte-equal, which is how a redelivery is told
    # from a genuine duplicate timestamp.
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS).decode()


def as_stored(values: dict[str, float]) -> dict[str, float]:
    """``values`` as a block gives them back (float32, by their shortest decimal form;
    -0.0 as 0.0, as a decimal column gives it back)."""
    names = list(values)
    as_float32 = np.asarray([values[n] for n in names], dtype=np.float32)
    kept = (blocks.exact(as_float32) + 0.0).tolist()
    return dict(zip(names, kept, strict=True))


@dataclass(frozen=True, slots=True)
class Heartbeat:
    agent: str
    pid: int
    version: str
    started_ms: int
    ts_ms: int
    health: dict[str, object]


Item = Accepted | Prediction | Alert | AssetStatus | Event | Heartbeat


@dataclass
class WriteStats:
    rows: int = 0
    redelivered: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)


class Writer:
    """Writes batches of items in one transaction; used from a single thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        site: str,
        agent: str = "gateway",
        keep_readings: bool = True,
        dead_letter_max_bytes: int = 4096,
        topic_for: Callable[[str], str] | None = None,
        outbox_enabled: bool = True,
    ) -> None:
        self.engine = engine
        # Without sync nothing drains the outbox, so nothing is put in it.
        self.outbox_enabled = outbox_enabled
        self.topic_for = topic_for or (lambda asset: asset)
        self.site = site
        self.agent = agent
        self.keep_readings = keep_readings
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self._asset_ids: dict[str, int] = {}
        self._sensor_sets = blocks.SensorSets()
        # This writer is the only one that adds new readings (see NewestStored).
        self._newest = blocks.NewestStored()

    def write(self, items: Sequence[Item], now_ms: int) -> WriteStats:
        """Write ``items`` in one transaction; raises StorageError/DiskFullError."""
        stats = WriteStats()
        if len(self._asset_ids) > ASSET_ID_CACHE_MAX:
            # Between transactions only: _write relies on ids it cached in this one.
            self._asset_ids.clear()
            self._newest = blocks.NewestStored()
        try:
            with self.engine.begin() as conn:
                self._write(conn, items, now_ms, stats)
        except OperationalError as exc:
            self._asset_ids.clear()  # ids inserted in the failed transaction are gone
            self._sensor_sets.forget()
            raise _storage_error(exc) from None
        return stats

    def asset_id(self, conn: Connection, name: str, seen_ms: int) -> int:
        found = self._asset_ids.get(name)
        if found is not None:
            return found
        conn.execute(
            sqlite_insert(t.assets)
            .values(site=self.site, name=name, first_seen_ms=seen_ms, last_seen_ms=seen_ms)
            .on_conflict_do_nothing()
        )
        asset_id: int = conn.execute(
            select(t.assets.c.id).where(t.assets.c.site == self.site, t.assets.c.name == name)
        ).scalar_one()
        self._asset_ids[name] = asset_id
        return asset_id

    def _seen(
        self, conn: Connection, asset: str, first_ms: int, newest_ms: int, last_seen: dict[str, int]
    ) -> int:
        """The asset's id (made on its first reading), noting its newest reading of
        this transaction for ``assets.last_seen_ms``."""
        if newest_ms > last_seen.get(asset, 0):
            last_seen[asset] = newest_ms
        return self._asset_ids.get(asset) or self.asset_id(conn, asset, first_ms)

    def _write(
        self, conn: Connection, items: Sequence[Item], now_ms: int, stats: WriteStats
    ) -> None:
        # Per asset id, in arrival order: blocks of batches and runs of single readings
        # (times, received times and values) to become blocks.
        readings: dict[int, list[blocks.Block | _Rows]] = {}
        late: list[tuple[Reading, RejectReason, int, str | None]] = []
        dead: list[DeadLetter] = []
        predictions: list[tuple[object, ...]] = []
        last_seen: dict[str, int] = {}
        for item in items:
            if isinstance(item, Accepted):
                received_ms = item.received_ms
                batch = item.readings
                if isinstance(batch, Batch):
                    if len(batch):
                        ts = batch.ts_ms
                        aid = self._seen(conn, batch.asset, int(ts[0]), int(ts.max()), last_seen)
                        if self.keep_readings:
                            block = blocks.from_batch(batch, received_ms)
                            readings.setdefault(aid, []).append(block)
                elif len(batch) == 1:
                    # The single-reading message, the most common item by far.
                    r = batch[0]
                    aid = self._seen(conn, r.asset, r.ts_ms, r.ts_ms, last_seen)
                    if self.keep_readings:
                        times, received, values = _rows(readings.setdefault(aid, []))
                        times.append(r.ts_ms)
                        received.append(received_ms)
                        values.append(r.values)
                else:
                    for asset, group in _by_asset(batch):
                        newest = max(r.ts_ms for r in group)
                        aid = self._seen(conn, asset, group[0].ts_ms, newest, last_seen)
                        if self.keep_readings:
                            times, received, values = _rows(readings.setdefault(aid, []))
                            times.extend(r.ts_ms for r in group)
                            received.extend([received_ms] * len(group))
                            values.extend(r.values for r in group)
                for r, reason in item.late:
                    late.append((r, reason, item.received_ms, None))
                if item.rejected is not None:
                    dead.append(item.rejected)
            elif isinstance(item, Prediction):
                predictions.append(
                    (
                        self.asset_id(conn, item.asset, item.window_end_ms),
                        item.window_end_ms,
                        item.model_version,
                        item.anomaly_score,
                        item.anomaly_threshold,
                        int(item.is_anomaly),
                        item.rul_cycles,
                        item.rul_low,
                        item.rul_high,
                        int(item.judged),
                        item.scored_ms or now_ms,
                    )
                )
            elif isinstance(item, Alert):
                self._alert(conn, item)
            elif isinstance(item, AssetStatus):
                self._status(conn, item)
            elif isinstance(item, Event):
                self._event(conn, item)
            else:
                self._heartbeat(conn, item)
            stats.rows += 1
        for aid, parts in readings.items():
            block = blocks.concat(
                [p if isinstance(p, blocks.Block) else blocks.from_columns(*p) for p in parts]
            )
            blocks.insert_block(conn, aid, block, self._sensor_sets, self._newest)
            stats.rows += len(block)
        if predictions:
            # Plain SQL, as for the blocks: at hop 1 under load this is thousands of
            # rows a second, and the statement's per-row parameter handling cost more
            # than SQLite's insert.
            conn.exec_driver_sql(_INSERT_PREDICTIONS, predictions)
        for r, reason, received_ms, _ in late:
            verdict = self._judge_late(conn, r, reason)
            if verdict is None:
                stats.redelivered += 1
            else:
                dead.append(_late_letter(r, verdict, received_ms, self.topic_for(r.asset)))
        if dead:
            conn.execute(insert(t.dead_letters).prefix_with("OR IGNORE"), self._letters(dead))
            for d in dead:
                stats.dead_letters[str(d.reason)] = stats.dead_letters.get(str(d.reason), 0) + 1
        if last_seen:
            # Plain SQL, one statement for every asset: building an UPDATE per asset
            # per commit cost more than the rest of a batched commit's bookkeeping.
            conn.exec_driver_sql(
                _TOUCH_ASSET,
                [(ts, self._asset_ids[name], ts) for name, ts in last_seen.items()],
            )

    def _letters(self, dead: list[DeadLetter]) -> list[dict[str, object]]:
        rows = []
        for d in dead:
            payload = d.payload[: self.dead_letter_max_bytes]
            reason = str(d.reason)
            rows.append(
                {
                    "received_ms": d.received_ms,
                    "topic": d.topic,
                    "payload": payload,
                    "payload_size": d.payload_size,
                    "reason": reason,
                    "detail": d.detail,
                    "asset": d.asset,
                    "digest": dead_letter_digest(d.topic, reason, payload, d.payload_size),
                }
            )
        return rows

    def _judge_late(
        self, conn: Connection, r: Reading, reason: RejectReason
    ) -> RejectReason | None:
        """None for a redelivery of a stored reading, else the dead-letter reason."""
        if not self.keep_readings:
            return reason
        stored = blocks.stored_values(conn, self._asset_ids.get(r.asset, -1), r.ts_ms)
        if stored is None:
            return RejectReason.OUT_OF_ORDER
        # Compared as stored (float32): a redelivery is the same message again.
        if values_json(as_stored(stored)) == values_json(as_stored(r.values)):
            return None
        return RejectReason.DUPLICATE

    def _alert(self, conn: Connection, a: Alert) -> None:
        aid = self.asset_id(conn, a.asset, a.opened_ms)
        before = conn.execute(
            select(t.alerts.c.severity, t.alerts.c.closed_ms).where(
                t.alerts.c.asset_id == aid,
                t.alerts.c.kind == str(a.kind),
                t.alerts.c.opened_ms == a.opened_ms,
            )
        ).one_or_none()
        stmt = sqlite_insert(t.alerts).values(
            asset_id=aid,
            kind=str(a.kind),
            severity=str(a.severity),
            opened_ms=a.opened_ms,
            closed_ms=a.closed_ms,
            peak_score=a.peak_score,
            last_score=a.last_score,
            rul_at_open=a.rul_cycles,
            model_version=a.model_version,
            detail=a.detail,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["asset_id", "kind", "opened_ms"],
                set_={
                    "closed_ms": stmt.excluded.closed_ms,
                    "severity": stmt.excluded.severity,
                    "peak_score": stmt.excluded.peak_score,
                    "last_score": stmt.excluded.last_score,
                },
            )
        )
        state = "alerting" if a.is_open else "healthy"
        conn.execute(
            update(t.assets)
            .where(t.assets.c.id == self._asset_ids[a.asset], t.assets.c.state != "commissioning")
            .values(state=state)
        )
        # Only state changes go to the cloud (score updates would flood the outbox);
        # the alert row and its outbox item commit together.
        transition = outbox.alert_transition(
            None if before is None else before.severity,
            before is not None and before.closed_ms is not None,
            str(a.severity),
            not a.is_open,
        )
        if transition is not None and self.outbox_enabled:
            alert_id = conn.execute(
                select(t.alerts.c.id).where(
                    t.alerts.c.asset_id == aid,
                    t.alerts.c.kind == str(a.kind),
                    t.alerts.c.opened_ms == a.opened_ms,
                )
            ).scalar_one()
            outbox.enqueue_json(
                conn,
                site=self.site,
                agent=self.agent,
                kind=outbox.ALERT,
                ts_ms=a.opened_ms,
                asset=a.asset,
                name=f"{outbox.iso_ms(a.opened_ms)}-{a.kind}-{transition}-{a.severity}.json",
                obj={
                    "site": self.site,
                    "agent": self.agent,
                    "asset": a.asset,
                    "alert_id": alert_id,
                    "transition": transition,
                    "kind": str(a.kind),
                    "severity": str(a.severity),
                    "opened_ms": a.opened_ms,
                    "closed_ms": a.closed_ms,
                    "peak_score": a.peak_score,
                    "last_score": a.last_score,
                    "rul": a.rul_cycles,
                    "model_version": a.model_version,
                    "detail": a.detail,
                },
            )

    def _status(self, conn: Connection, s: AssetStatus) -> None:
        aid = self.asset_id(conn, s.asset, s.ts_ms)
        values: dict[str, object] = {"state": str(s.state)}
        if s.baseline_version is not None:
            values.update(baseline_version=s.baseline_version, commissioned_ms=s.ts_ms)
        if s.baseline_span is not None:
            values.update(baseline_first_ms=s.baseline_span[0], baseline_last_ms=s.baseline_span[1])
        conn.execute(update(t.assets).where(t.assets.c.id == aid).values(**values))

    def _event(self, conn: Connection, e: Event) -> None:
        detail_json = orjson.dumps(e.detail, default=str).decode() if e.detail else None
        conn.execute(
            insert(t.events).values(
                ts_ms=e.ts_ms,
                kind=e.kind,
                level=e.level,
                asset_id=self.asset_id(conn, e.asset, e.ts_ms) if e.asset else None,
                message=e.message,
                detail_json=detail_json,
            )
        )
        if not self.outbox_enabled:
            return
        body = {
            "site": self.site,
            "agent": self.agent,
            "asset": e.asset,
            "ts_ms": e.ts_ms,
            "kind": e.kind,
            "level": e.level,
            "message": e.message,
            "detail": orjson.loads(detail_json) if detail_json else None,
        }
        # Keyed by content: the same event written twice is one object.
        digest = outbox.sha256(outbox.json_body(body))[:12]
        outbox.enqueue_json(
            conn,
            site=self.site,
            agent=self.agent,
            kind=outbox.EVENT,
            ts_ms=e.ts_ms,
            asset=e.asset,
            name=f"{outbox.iso_ms(e.ts_ms)}-{e.kind}-{digest}.json",
            obj=body,
        )

    def _heartbeat(self, conn: Connection, h: Heartbeat) -> None:
        stmt = sqlite_insert(t.heartbeats).values(
            agent=h.agent,
            pid=h.pid,
            version=h.version,
            started_ms=h.started_ms,
            ts_ms=h.ts_ms,
            health_json=orjson.dumps(h.health, default=str).decode(),
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["agent"],
                set_={
                    "pid": stmt.excluded.pid,
                    "version": stmt.excluded.version,
                    "started_ms": stmt.excluded.started_ms,
                    "ts_ms": stmt.excluded.ts_ms,
                    "health_json": stmt.excluded.health_json,
                },
            )
        )


_INSERT_PREDICTIONS = (
    "INSERT OR IGNORE INTO predictions (asset_id, window_end_ms, model_version, "
    "anomaly_score, anomaly_threshold, is_anomaly, rul, rul_low, rul_high, judged, "
    "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_TOUCH_ASSET = "UPDATE assets SET last_seen_ms = ? WHERE id = ? AND last_seen_ms < ?"

#: Single readings of one asset as columns: times, received times, values.
_Rows = tuple[list[int], list[int], list[dict[str, float]]]


def _rows(parts: list[blocks.Block | _Rows]) -> _Rows:
    """The run of single readings that ``parts`` ends with, started if need be."""
    last = parts[-1] if parts else None
    if last is None or isinstance(last, blocks.Block):
        last = ([], [], [])
        parts.append(last)
    return last


def _by_asset(readings: Sequence[Reading]) -> list[tuple[str, Sequence[Reading]]]:
    """``readings`` by asset, in order: one group for the usual message of one asset."""
    if not readings:
        return []
    first = readings[0].asset
    if all(r.asset == first for r in readings):
        return [(first, readings)]
    groups: dict[str, list[Reading]] = {}
    for r in readings:
        groups.setdefault(r.asset, []).append(r)
    return list(groups.items())


def _late_letter(r: Reading, reason: RejectReason, received_ms: int, topic: str) -> DeadLetter:
    payload = orjson.dumps({"ts": r.ts_ms / 1000, "values": r.values})
    return DeadLetter(
        received_ms=received_ms,
        topic=topic,
        payload=payload,
        payload_size=len(payload),
        reason=reason,
        detail=(
            "timestamp already stored with other values"
            if reason is RejectReason.DUPLICATE
            else "older than the stream and outside the reorder window"
        ),
        asset=r.asset,
    )


def _storage_error(exc: OperationalError) -> StorageError:
    text = str(exc.orig if exc.orig is not None else exc)
    if isinstance(exc.orig, sqlite3.OperationalError) and "full" in text.lower():
        return DiskFullError(
            f"database write failed: {text}",
            hint="free disk space; unacknowledged messages stay with the broker",
        )
    return StorageError(f"database write failed: {text}")
