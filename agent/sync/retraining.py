"""Curated retraining data as Parquet: one file per asset per hour (schema in docs/sync.md).

Kept rows: raw readings around every alert (``retraining_before_s`` before it opened
to ``retraining_after_s`` after it closed, or up to now while it is open), each asset's
commissioning baseline (the readings it was learnt from, ``baseline_first_ms`` to
``baseline_last_ms``), and a small random
sample of normal windows. The sample is a hash of (site, asset, window start), so a
repeated export picks the same windows.

An hour is exported once no later alert can reach back into it (``before_s`` plus a
grace past its end). The file is written to a temporary name, fsynced and renamed
into ``<data_dir>/outbox/``; the outbox row and the asset's cursor then commit
together. A crash in between leaves an orphan file (swept later) and the hour is
exported again to the same name and key.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from sqlalchemy import Connection, Engine, or_, select

# pyarrow is imported where Parquet is written (hourly), not when the agent starts:
# it would add its memory to every agent process for nothing in between.
if TYPE_CHECKING:
    import pyarrow as pa

from agent import blocks, outbox
from agent import schema as t
from agent.sync.failures import FailureLog

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
GRACE_S = 60.0
#: Version of the Parquet layout below; bump it when columns change meaning.
SCHEMA_VERSION = "1"
REASON_ALERT = "alert"
REASON_BASELINE = "baseline"
REASON_SAMPLE = "sample"
LABEL_NORMAL = "normal"


@dataclass(frozen=True, slots=True)
class RetrainingConfig:
    site: str
    agent: str
    before_s: float = 600.0
    after_s: float = 600.0
    sample_rate: float = 0.02
    sample_window_s: float = 60.0
    grace_s: float = GRACE_S


def sampled(site: str, asset: str, window_start_ms: int, rate: float) -> bool:
    """Deterministic Bernoulli(rate) per window."""
    if rate <= 0:
        return False
    digest = hashlib.blake2b(f"{site}/{asset}/{window_start_ms}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64 < rate


class RetrainingExporter:
    def __init__(self, engine: Engine, data_dir: Path, config: RetrainingConfig) -> None:
        self.engine = engine
        self.outbox_dir = data_dir / outbox.OUTBOX_DIR
        self.config = config
        self.failures = FailureLog(log)

    def run_once(self, now_ms: int | None = None) -> int:
        """Export every finished hour of every asset; returns files written."""
        now = now_ms if now_ms is not None else outbox.now_ms()
        reach_ms = int((self.config.before_s + self.config.grace_s) * 1000)
        closed_until = ((now - reach_ms) // HOUR_MS) * HOUR_MS
        with self.engine.connect() as conn:
            assets = conn.execute(select(t.assets).where(t.assets.c.site == self.config.site)).all()
        written = 0
        for asset in assets:
            limit = closed_until
            if asset.commissioned_ms is None and asset.state == "commissioning":
                # Its baseline is not known yet: hold its hours back until it is.
                limit = min(limit, (int(asset.first_seen_ms) // HOUR_MS) * HOUR_MS)
            try:
                written += self._asset(asset, limit)
            except Exception as exc:
                # One asset whose hour cannot be written must not hold back the others;
                # its cursor stays, so the hour is tried again next pass.
                self.failures.failed("retraining export", exc, subject=str(asset.name))
            else:
                self.failures.succeeded("retraining export", subject=str(asset.name))
        return written

    def _asset(self, asset: Any, closed_until: int) -> int:
        key = f"retraining_cursor:{asset.id}"
        written = 0
        while True:
            with self.engine.connect() as conn:
                cursor = outbox.get_state(conn, key)
                start = int(cursor) if cursor is not None else 0
                first = blocks.first_ts(conn, int(asset.id), start, closed_until)
            if first is None:
                if closed_until > start:
                    with self.engine.begin() as conn:
                        outbox.put_state(conn, key, closed_until)
                return written
            hour = (int(first) // HOUR_MS) * HOUR_MS
            table = self._hour_table(asset, hour)
            if table is not None:
                obj_key = outbox.item_key(
                    site=self.config.site,
                    agent=self.config.agent,
                    kind=outbox.RETRAINING,
                    ts_ms=hour,
                    asset=str(asset.name),
                    name=f"{outbox.iso_ms(hour)[:11]}.parquet",
                )
                body = _parquet_bytes(table)
                rel = obj_key  # mirrors the object layout, unique per item
                _write_durably(self.outbox_dir / rel, body)
                with self.engine.begin() as conn:
                    outbox.enqueue(
                        conn,
                        key=obj_key,
                        kind=outbox.RETRAINING,
                        created_ms=outbox.now_ms(),
                        path=rel,
                        size_bytes=len(body),
                        digest=outbox.sha256(body),
                    )
                    outbox.put_state(conn, key, hour + HOUR_MS)
                written += 1
            else:
                with self.engine.begin() as conn:
                    outbox.put_state(conn, key, hour + HOUR_MS)

    def _hour_table(self, asset: Any, hour: int) -> pa.Table | None:
        import pyarrow as pa

        cfg = self.config
        end = hour + HOUR_MS
        before_ms = int(cfg.before_s * 1000)
        after_ms = int(cfg.after_s * 1000)
        p, a = t.predictions, t.alerts
        with self.engine.connect() as conn:
            found = list(blocks.read_blocks(conn, int(asset.id), hour, end))
            alerts = conn.execute(
                select(a.c.id, a.c.opened_ms, a.c.closed_ms)
                .where(
                    a.c.asset_id == asset.id,
                    a.c.opened_ms - before_ms < end,
                    or_(a.c.closed_ms.is_(None), a.c.closed_ms + after_ms >= hour),
                )
                .order_by(a.c.opened_ms)
            ).all()
            # What operators said the alerts were, as of this export (a later label
            # reaches the cloud as its own `label` item, docs/sync.md).
            said = _labels_of(conn, [int(al.id) for al in alerts])
            preds = conn.execute(
                select(
                    p.c.window_end_ms,
                    p.c.anomaly_score,
                    p.c.anomaly_threshold,
                    p.c.is_anomaly,
                    p.c.rul,
                    p.c.model_version,
                )
                .where(p.c.asset_id == asset.id, p.c.window_end_ms < end)
                .where(p.c.window_end_ms >= hour - HOUR_MS)
                .order_by(p.c.window_end_ms)
            ).all()
        if not found:
            return None
        hour_data = blocks.concat(found)
        ts = hour_data.ts_ms
        alert_id = np.full(len(ts), -1, dtype=np.int64)
        for al in alerts:
            lo = int(al.opened_ms) - before_ms
            hi = np.iinfo(np.int64).max if al.closed_ms is None else int(al.closed_ms) + after_ms
            hit = (ts >= lo) & (ts <= hi) & (alert_id < 0)
            alert_id[hit] = int(al.id)
        baseline = np.zeros(len(ts), dtype=bool)
        if asset.baseline_last_ms is not None:
            # The readings the baseline was learnt from, by their own times (a replay's
            # or a backfill's are not the wall clock of commissioning).
            baseline = (ts >= int(asset.baseline_first_ms)) & (ts <= int(asset.baseline_last_ms))
        elif asset.commissioned_ms is not None:
            # Commissioned before 0011 recorded the span: from first seen to then.
            baseline = (ts >= int(asset.first_seen_ms)) & (ts <= int(asset.commissioned_ms))
        win_ms = int(cfg.sample_window_s * 1000)
        starts = (ts // win_ms) * win_ms
        chosen_windows = {
            int(s)
            for s in np.unique(starts)
            if sampled(cfg.site, asset.name, int(s), cfg.sample_rate)
        }
        sample = np.fromiter((int(s) in chosen_windows for s in starts), dtype=bool, count=len(ts))
        keep = (alert_id >= 0) | baseline | sample
        if not keep.any():
            return None
        idx = np.nonzero(keep)[0]
        kept = hour_data.take(idx)
        values = {name: kept.column(name) for name in kept.sensors}
        sensors = sorted(
            name for name, col in values.items() if col is not None and not np.isnan(col).all()
        )
        kept_ts = ts[idx]
        # The prediction in force at a reading: the latest window ending at or before it.
        pred_end = np.fromiter((int(x.window_end_ms) for x in preds), dtype=np.int64)
        pos = np.searchsorted(pred_end, kept_ts, side="right") - 1

        def pred_col(attr: str) -> list[Any]:
            return [getattr(preds[j], attr) if j >= 0 else None for j in pos]

        reasons = np.where(
            alert_id[idx] >= 0,
            REASON_ALERT,
            np.where(baseline[idx], REASON_BASELINE, REASON_SAMPLE),
        )
        columns: dict[str, pa.Array] = {
            "asset": pa.array([str(asset.name)] * len(idx), pa.string()),
            "ts": pa.array(kept_ts, pa.timestamp("ms", tz="UTC")),
        }
        for name in sensors:
            # NaN marks a reading without the sensor: null in the file, as before.
            columns[name] = pa.array(values[name], pa.float64(), from_pandas=True)
        anomalous = pred_col("is_anomaly")
        columns.update(
            anomaly_score=pa.array(pred_col("anomaly_score"), pa.float64()),
            anomaly_threshold=pa.array(pred_col("anomaly_threshold"), pa.float64()),
            is_anomaly=pa.array([None if x is None else bool(x) for x in anomalous], pa.bool_()),
            rul=pa.array(pred_col("rul"), pa.float64()),
            model_version=pa.array(pred_col("model_version"), pa.string()),
            alert_id=pa.array([None if x < 0 else int(x) for x in alert_id[idx]], pa.int64()),
            reason=pa.array([str(x) for x in reasons], pa.string()),
            label=pa.array(
                [
                    _row_label(str(reason), int(owner), said)
                    for reason, owner in zip(reasons, alert_id[idx], strict=True)
                ],
                pa.string(),
            ),
        )
        table = pa.table(columns)
        meta = {
            b"edgewatch.schema_version": SCHEMA_VERSION.encode(),
            b"edgewatch.site": cfg.site.encode(),
            b"edgewatch.agent": cfg.agent.encode(),
            b"edgewatch.sensors": orjson.dumps(sensors),
        }
        return table.replace_schema_metadata(meta)


def _labels_of(conn: Connection, alert_ids: list[int]) -> dict[int, str]:
    """The newest label (by ``created_ms``, then id) of each alert that has one: the
    rule of agent.storage.labels, which this stage may not import."""
    if not alert_ids:
        return {}
    lab = t.alert_labels
    rows = conn.execute(
        select(lab.c.alert_id, lab.c.label)
        .where(lab.c.alert_id.in_(alert_ids))
        .order_by(lab.c.alert_id, lab.c.created_ms, lab.c.id)
    ).all()
    # Oldest first per alert: the last one written into the dict is the newest.
    return {int(alert): str(label) for alert, label in rows}


def _row_label(reason: str, alert: int, said: dict[int, str]) -> str | None:
    """``normal`` for baseline rows, the operator's label for rows kept because of a
    labelled alert, else unknown."""
    if reason == REASON_BASELINE:
        return LABEL_NORMAL
    if reason == REASON_ALERT and alert in said:
        return said[alert]
    return None


def _parquet_bytes(table: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def _write_durably(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    with tmp.open("wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
