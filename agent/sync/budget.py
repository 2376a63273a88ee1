"""What the gateway gives up when it must: TTL per kind and the disk budget.

The budget (``storage.disk_budget_mb``) bounds the database file's used pages, its
WAL and shared-memory files, and the outbox files. It runs as its own periodic duty
of the runtime (:class:`BudgetDuty`), whether sync is enabled or not and whatever the
exporter does. When usage is over, it drops one class after the other, oldest first
within a class, until usage is back under (docs/sync.md, "Disk budget"):

1. uploaded outbox rows (bookkeeping for ``sync status``; their bodies are in the
   cloud, so this is no loss and gets no ledger entry),
2. outbox items the target refused for good (quarantined),
3. dead letters beyond the newest ``DEAD_LETTER_FLOOR``,
4. readings already summarised and exported (behind the sync cursors),
5. retraining files waiting in the outbox,
6. predictions, local event and summary rows older than ``RECENT_MS``,
7. the remaining readings, then dead letters, predictions, local events and
   summary rows,
8. closed alerts (local rows; their outbox items stay),
9. events waiting in the outbox, then summaries waiting in the outbox.

Open alerts, alert, label and ledger outbox items, assets and models are never
dropped for space (a closed alert's label rows go with it: they were synced). Every
other drop writes a loss-ledger row (what, how much, time range, per asset where
there is one) and that row is synced like any other item. Freed pages go back to the
file system (incremental vacuum, WAL checkpoint), so the files on disk shrink, not
only the used pages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    Connection,
    Engine,
    String,
    Table,
    and_,
    cast,
    delete,
    exists,
    false,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy import Integer as SqlInteger

from agent import outbox
from agent import schema as t
from agent.logs import fields
from agent.settings import Settings
from agent.sqlite import open_engine
from agent.sync.failures import FailureLog

log = logging.getLogger(__name__)

MB = 1024 * 1024
DAY_MS = 86_400_000
#: Done items are kept this long for `sync status`, then forgotten (not a loss).
DONE_KEEP_MS = 7 * DAY_MS
#: Outbox files no pending row points at are removed once this old (a younger one may
#: belong to an exporter between its rename and its commit).
ORPHAN_AGE_S = 3600.0
#: Rows of one drop round: small transactions keep the recorder from waiting.
ROUND_ITEMS = 2000
ROUND_READINGS = 20_000
#: Bytes a stored row takes beyond its variable columns (key, record header, index share).
BLOCK_OVERHEAD_BYTES = 64
ROW_OVERHEAD_BYTES = 48
#: Reading blocks looked at per drop round (each up to 4,096 readings).
ROUND_BLOCKS = 500
#: The newest dead letters kept until the last resort: enough to diagnose a bad
#: publisher, never enough for a flood of them to push out good readings.
DEAD_LETTER_FLOOR = 1000
#: Predictions, local events and summary rows younger than this go only in the last
#: resort: the operator's view of the last day stays.
RECENT_MS = DAY_MS
#: Pages given back to the file system per transaction (4 MiB of 4 KiB pages).
VACUUM_PAGES = 1024
#: Drop rounds in a row that free nothing before the pass gives up (a reader holding
#: the WAL, pages only partly emptied): never delete on and on for no gain.
MAX_IDLE_ROUNDS = 3
#: Above this the one-time VACUUM of :func:`prepare` could outlast a service start
#: timeout on an SD card; such a database keeps the used-pages budget only.
PREPARE_MAX_BYTES = 256 * MB
#: How often the runtime's budget duty runs.
BUDGET_INTERVAL_S = 60.0
#: Outbox kinds never dropped for space (labels: a few hundred bytes each, and what
#: an operator said cannot be asked again).
NEVER_DROPPED = (outbox.ALERT, outbox.LABEL, outbox.LEDGER)


@dataclass
class BudgetReport:
    budget_bytes: int
    used_before: int = 0
    used_after: int = 0
    dropped_items: dict[str, int] = field(default_factory=dict)
    dropped_bytes: dict[str, int] = field(default_factory=dict)
    ledger_ids: list[int] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.used_after > self.budget_bytes


def _files_bytes(outbox_dir: Path) -> int:
    if not outbox_dir.exists():
        return 0
    total = 0
    for path in outbox_dir.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue  # removed while we looked (an upload confirmed)
    return total


def db_used_bytes(conn: Connection) -> int:
    """Bytes of database pages in use (free pages are reused before the file grows)."""
    page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
    pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    return (pages - free) * page_size


def _side_files_bytes(engine: Engine) -> int:
    # The WAL grows with every write until a checkpoint truncates it; it is disk the
    # gateway spends like any other.
    database = engine.url.database
    if not database:
        return 0
    total = 0
    for suffix in ("-wal", "-shm"):
        try:
            total += Path(database + suffix).stat().st_size
        except OSError:
            continue
    return total


def disk_usage(engine: Engine, data_dir: Path) -> int:
    """What the budget counts: used database pages, the WAL, and the outbox files."""
    with engine.connect() as conn:
        used = db_used_bytes(conn)
    return used + _side_files_bytes(engine) + _files_bytes(data_dir / outbox.OUTBOX_DIR)


def _script(engine: Engine, sql: str) -> None:
    # executescript steps a statement to its end: PRAGMA incremental_vacuum frees one
    # page per step, and VACUUM may not run inside a transaction.
    raw = engine.raw_connection()
    try:
        raw.driver_connection.executescript(sql)  # type: ignore[union-attr]
    finally:
        raw.close()


def prepare(engine: Engine) -> bool:
    """Switch the database to incremental vacuum once, so that freed pages can go back
    to the file system. Rewrites the file (VACUUM): run it before the recorder starts.
    Returns True when it converted the database; a failure is logged, not raised."""
    with engine.connect() as conn:
        mode = int(conn.exec_driver_sql("PRAGMA auto_vacuum").scalar_one())
    if mode == 2:
        return False
    size = Path(engine.url.database or "").stat().st_size if engine.url.database else 0
    if size > PREPARE_MAX_BYTES:
        log.warning(
            "database too large to switch to incremental vacuum at start; the budget "
            "holds its used pages, the file does not shrink (run VACUUM once by hand)",
            extra=fields(bytes=size),
        )
        return False
    t0 = time.monotonic()
    try:
        _script(engine, "PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
    except Exception as exc:
        # VACUUM needs free space about the size of the database. Without it the
        # budget still holds the used pages; the files just do not shrink.
        log.warning(
            "cannot switch the database to incremental vacuum; tried again next start",
            extra=fields(error=str(exc)[:500]),
        )
        return False
    log.info(
        "database switched to incremental vacuum (once)",
        extra=fields(seconds=round(time.monotonic() - t0, 3)),
    )
    return True


def reclaim(engine: Engine) -> None:
    """Give free pages back to the file system and truncate the WAL (best effort:
    a reader in the middle of a transaction keeps its part of the WAL for now)."""
    with engine.connect() as conn:
        mode = int(conn.exec_driver_sql("PRAGMA auto_vacuum").scalar_one())
        free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    while mode == 2 and free > 0:
        _script(engine, f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        with engine.connect() as conn:
            left = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
        if left >= free:
            break
        free = left
    _script(engine, "PRAGMA wal_checkpoint(TRUNCATE);")


@dataclass(frozen=True, slots=True)
class _Rows:
    """A class of table rows the budget may drop, oldest first."""

    name: str
    table: Table
    time: Column[Any]
    size: ColumnElement[Any]
    where: Callable[[int], ColumnElement[bool]]
    asset: Column[Any] | None = None
    #: A column counted per value in the ledger entry's detail (dead letters' reason).
    tag: Column[Any] | None = None
    round_rows: int = ROUND_READINGS
    #: Items a row holds (reading blocks: their count; else one) and the time of its
    #: newest item (else ``time``).
    items: Column[Any] | None = None
    end: Column[Any] | None = None


@dataclass(frozen=True, slots=True)
class _Items:
    """A class of outbox items the budget may drop, oldest first."""

    name: str
    kinds: tuple[str, ...]
    states: tuple[str, ...]
    ledger: bool = True


class Housekeeper:
    """Applies TTLs and the disk budget; writes the loss ledger."""

    def __init__(
        self,
        engine: Engine,
        data_dir: Path,
        *,
        site: str,
        agent: str,
        budget_bytes: int,
        ttl_days: dict[str, float],
        exported_cursors: tuple[str, ...] = (),
    ) -> None:
        """``exported_cursors``: ``sync_state`` key prefixes (followed by the asset id)
        whose value is the time up to which an asset's readings are exported; a
        reading counts as exported once it is behind all of them (none: never)."""
        self.engine = engine
        self.data_dir = data_dir
        self.outbox_dir = data_dir / outbox.OUTBOX_DIR
        self.site = site
        self.agent = agent
        self.budget_bytes = budget_bytes
        self.ttl_days = dict(ttl_days)
        self.exported_cursors = exported_cursors

    # -- TTL ---------------------------------------------------------------------------

    def apply_ttl(self, now_ms: int | None = None) -> dict[str, int]:
        """Drop pending (and quarantined) items older than their kind's TTL; forget
        old done items."""
        now = now_ms if now_ms is not None else outbox.now_ms()
        dropped: dict[str, int] = {}
        for kind, days in self.ttl_days.items():
            cutoff = now - int(days * DAY_MS)
            items = _Items(kind, (kind,), (outbox.PENDING, outbox.QUARANTINED))
            while True:
                n = self._drop_items(
                    items, reason="ttl", extra=t.outbox.c.created_ms < cutoff, need=None
                )
                dropped[kind] = dropped.get(kind, 0) + n[0]
                if n[0] < ROUND_ITEMS:
                    break
        with self.engine.begin() as conn:
            conn.execute(
                delete(t.outbox).where(
                    t.outbox.c.state.in_([outbox.DONE, outbox.DROPPED]),
                    func.coalesce(t.outbox.c.done_ms, t.outbox.c.created_ms) < now - DONE_KEEP_MS,
                )
            )
        return {k: v for k, v in dropped.items() if v}

    # -- disk budget -------------------------------------------------------------------

    def usage(self) -> int:
        return disk_usage(self.engine, self.data_dir)

    def _classes(self) -> list[_Rows | _Items]:
        r, d, p, e, s, a = (
            t.reading_blocks,
            t.dead_letters,
            t.predictions,
            t.events,
            t.summaries,
            t.alerts,
        )
        pending = (outbox.PENDING,)
        reading_size = func.length(r.c.data) + BLOCK_OVERHEAD_BYTES

        def blocks_of(name: str, where: Callable[[int], ColumnElement[bool]]) -> _Rows:
            return _Rows(
                name,
                r,
                r.c.first_ts_ms,
                reading_size,
                where,
                r.c.asset_id,
                round_rows=ROUND_BLOCKS,
                items=r.c.count,
                end=r.c.last_ts_ms,
            )

        letter_size = (
            func.length(d.c.payload)
            + func.length(d.c.topic)
            + func.length(d.c.detail)
            + ROW_OVERHEAD_BYTES
        )
        prediction_size = func.length(p.c.model_version) + 4 * 8 + ROW_OVERHEAD_BYTES
        event_size = (
            func.length(e.c.message)
            + func.coalesce(func.length(e.c.detail_json), 0)
            + ROW_OVERHEAD_BYTES
        )
        summary_size = func.length(s.c.stats_json) + ROW_OVERHEAD_BYTES
        alert_size = func.length(a.c.detail) + 8 * 8 + ROW_OVERHEAD_BYTES

        def everything(_now: int) -> ColumnElement[bool]:
            return literal(True)

        def recent_cut(col: Column[Any]) -> Callable[[int], ColumnElement[bool]]:
            return lambda now: col < now - RECENT_MS

        def beyond_floor(_now: int) -> ColumnElement[bool]:
            newest = select(func.max(d.c.id)).scalar_subquery()
            return d.c.id <= newest - DEAD_LETTER_FLOOR

        return [
            _Items("uploaded", outbox.KINDS, (outbox.DONE, outbox.DROPPED), ledger=False),
            _Items(
                "quarantined",
                tuple(k for k in outbox.KINDS if k not in NEVER_DROPPED),
                (outbox.QUARANTINED,),
            ),
            _Rows("dead_letters", d, d.c.received_ms, letter_size, beyond_floor, tag=d.c.reason),
            blocks_of("readings", self._exported),
            _Items(outbox.RETRAINING, (outbox.RETRAINING,), pending),
            _Rows(
                "predictions",
                p,
                p.c.window_end_ms,
                prediction_size,
                recent_cut(p.c.window_end_ms),
                p.c.asset_id,
            ),
            _Rows("events", e, e.c.ts_ms, event_size, recent_cut(e.c.ts_ms), e.c.asset_id),
            _Rows(
                "summaries",
                s,
                s.c.period_start_ms,
                summary_size,
                recent_cut(s.c.period_start_ms),
                s.c.asset_id,
            ),
            blocks_of("readings", everything),
            _Rows("dead_letters", d, d.c.received_ms, letter_size, everything, tag=d.c.reason),
            _Rows("predictions", p, p.c.window_end_ms, prediction_size, everything, p.c.asset_id),
            _Rows("events", e, e.c.ts_ms, event_size, everything, e.c.asset_id),
            _Rows("summaries", s, s.c.period_start_ms, summary_size, everything, s.c.asset_id),
            _Rows(
                "alerts",
                a,
                a.c.opened_ms,
                alert_size,
                lambda _now: a.c.closed_ms.is_not(None),
                a.c.asset_id,
            ),
            _Items(outbox.EVENT, (outbox.EVENT,), pending),
            _Items(outbox.SUMMARY, (outbox.SUMMARY,), pending),
        ]

    def _exported(self, _now: int) -> ColumnElement[bool]:
        if not self.exported_cursors:
            return false()
        r, st = t.reading_blocks, t.sync_state
        # A block counts as exported once its newest reading is.
        return and_(
            *(
                exists().where(
                    st.c.key == literal(prefix) + cast(r.c.asset_id, String),
                    cast(st.c.value_json, SqlInteger) > r.c.last_ts_ms,
                )
                for prefix in self.exported_cursors
            )
        )

    def enforce_budget(self, now_ms: int | None = None) -> BudgetReport:
        """Drop by the policy until usage is within the budget (or nothing droppable is left)."""
        now = now_ms if now_ms is not None else outbox.now_ms()
        report = BudgetReport(self.budget_bytes)
        used = self.usage()
        report.used_before = used
        if used > self.budget_bytes:
            reclaim(self.engine)
            used = self.usage()
        idle = 0
        for cls in self._classes():
            while used > self.budget_bytes and idle < MAX_IDLE_ROUNDS:
                need = used - self.budget_bytes
                if isinstance(cls, _Rows):
                    count, size, ledger = self._drop_rows(cls, now, need)
                else:
                    count, size, ledger = self._drop_items(
                        cls, reason="disk_budget", extra=None, need=need
                    )
                if count == 0:
                    break
                report.dropped_items[cls.name] = report.dropped_items.get(cls.name, 0) + count
                report.dropped_bytes[cls.name] = report.dropped_bytes.get(cls.name, 0) + size
                report.ledger_ids += ledger
                reclaim(self.engine)
                after = self.usage()
                idle = idle + 1 if after >= used else 0
                used = after
        report.used_after = used
        if report.dropped_items:
            log.warning(
                "disk budget reached: data dropped (see the loss ledger)",
                extra=fields(
                    budget_bytes=self.budget_bytes,
                    used_before=report.used_before,
                    used_after=report.used_after,
                    **{f"dropped_{k}": v for k, v in report.dropped_items.items()},
                ),
            )
        if report.over:
            log.warning(
                "disk budget exceeded by data that is never dropped",
                extra=fields(budget_bytes=self.budget_bytes, used=used),
            )
        return report

    def _drop_items(
        self, items: _Items, *, reason: str, extra: Any, need: int | None
    ) -> tuple[int, int, list[int]]:
        """Drop one round of outbox items of a class, oldest first.

        With ``need``, stop once the dropped sizes add up to it. Returns (items,
        bytes, ledger ids).
        """
        o = t.outbox
        query = (
            select(
                o.c.id,
                o.c.kind,
                o.c.state,
                o.c.object_key,
                o.c.path,
                o.c.size_bytes,
                o.c.created_ms,
                o.c.last_error,
                # Uploaded rows hold no body: what they take is their key.
                func.coalesce(func.length(o.c.payload), 0).label("stored"),
            )
            .where(o.c.state.in_(items.states), o.c.kind.in_(items.kinds))
            .order_by(o.c.created_ms, o.c.id)
            .limit(ROUND_ITEMS)
        )
        if extra is not None:
            query = query.where(extra)
        ledger_ids: list[int] = []
        total_items = total_bytes = 0
        with self.engine.begin() as conn:
            rows = conn.execute(query).all()
            chosen = []
            size = 0
            for row in rows:
                if need is not None and size >= need:
                    break
                chosen.append(row)
                size += (
                    int(row.size_bytes)
                    if items.ledger
                    else int(row.stored) + len(str(row.object_key)) + ROW_OVERHEAD_BYTES
                )
            if not chosen:
                return 0, 0, []
            by_kind: dict[str, list[Any]] = defaultdict(list)
            for row in chosen:
                by_kind[str(row.kind)].append(row)
            ids = [row.id for row in chosen]
            for start in range(0, len(ids), 500):
                conn.execute(delete(o).where(o.c.id.in_(ids[start : start + 500])))
            for kind, group in by_kind.items():
                group_bytes = sum(int(r.size_bytes) for r in group)
                total_items += len(group)
                total_bytes += group_bytes
                if not items.ledger:
                    continue
                detail: dict[str, Any] = {"keys": [r.object_key for r in group]}
                refused = {
                    str(r.object_key): r.last_error for r in group if r.state == outbox.QUARANTINED
                }
                if refused:
                    detail["refused"] = refused
                ledger_ids.append(
                    outbox.record_loss(
                        conn,
                        site=self.site,
                        agent=self.agent,
                        kind=kind,
                        reason=reason,
                        items=len(group),
                        size_bytes=group_bytes,
                        first_ms=min(int(r.created_ms) for r in group),
                        last_ms=max(int(r.created_ms) for r in group),
                        detail=detail,
                    )
                )
            files = [self.outbox_dir / r.path for r in chosen if r.path is not None]
        # Files go after the commit: a crash before it keeps rows and files together;
        # one after it leaves orphans that the sweep removes.
        for path in files:
            path.unlink(missing_ok=True)
        return total_items, total_bytes, ledger_ids

    def _drop_rows(self, rows: _Rows, now_ms: int, need: int) -> tuple[int, int, list[int]]:
        """Drop one round of table rows of a class, oldest first, with one ledger row."""
        table = rows.table
        key = list(table.primary_key.columns)
        extra = [] if rows.asset is None else [rows.asset.label("owner")]
        if rows.tag is not None:
            extra.append(rows.tag.label("tag"))
        extra.append((rows.items if rows.items is not None else literal(1)).label("items"))
        extra.append((rows.end if rows.end is not None else rows.time).label("stamp_end"))
        query = (
            select(*key, rows.time.label("stamp"), rows.size.label("size"), *extra)
            .where(rows.where(now_ms))
            .order_by(rows.time, *key)
            .limit(rows.round_rows)
        )
        with self.engine.begin() as conn:
            found = conn.execute(query).all()
            chosen = []
            size = 0
            for row in found:
                if size >= need:
                    break
                chosen.append(row)
                size += int(row.size or 0)
            if not chosen:
                return 0, 0, []
            width = len(key)
            keys = [tuple(row[:width]) for row in chosen]
            # The rows were chosen before this transaction held the write lock (the
            # first DELETE takes it): one may be gone since, merged into a new block
            # by compaction or trimmed by retention. Only what this DELETE removed is
            # dropped, and only that goes into the ledger.
            gone: set[tuple[Any, ...]] = set()
            for start in range(0, len(keys), 400):
                part = keys[start : start + 400]
                if width == 1:
                    stmt = delete(table).where(key[0].in_([k[0] for k in part]))
                else:
                    stmt = delete(table).where(tuple_(*key).in_(part))
                gone.update(tuple(r) for r in conn.execute(stmt.returning(*key)))
            chosen = [row for row, k in zip(chosen, keys, strict=True) if k in gone]
            if not chosen:
                return 0, 0, []
            size = sum(int(row.size or 0) for row in chosen)
            first = min(int(row.stamp) for row in chosen)
            last = max(int(row.stamp_end) for row in chosen)
            items = sum(int(row.items) for row in chosen)
            detail: dict[str, Any] = {
                "table": table.name,
                "ts_ms_range": [first, last],
            }
            if rows.asset is not None:
                detail["assets"] = self._per_asset(conn, chosen)
            if rows.tag is not None:
                tags: dict[str, int] = defaultdict(int)
                for row in chosen:
                    tags[str(row.tag)] += 1
                detail["reasons"] = dict(tags)
            ledger_id = outbox.record_loss(
                conn,
                site=self.site,
                agent=self.agent,
                kind=rows.name,
                reason="disk_budget",
                items=items,
                size_bytes=size,
                first_ms=first,
                last_ms=last,
                detail=detail,
            )
        return items, size, [ledger_id]

    def _per_asset(self, conn: Connection, chosen: list[Any]) -> dict[str, Any]:
        spans: dict[int | None, list[int]] = {}
        for row in chosen:
            aid = None if row.owner is None else int(row.owner)
            ts, end = int(row.stamp), int(row.stamp_end)
            span = spans.setdefault(aid, [ts, end, 0])
            span[0], span[1] = min(span[0], ts), max(span[1], end)
            span[2] += int(row.items)
        ids = [aid for aid in spans if aid is not None]
        names = dict(
            conn.execute(select(t.assets.c.id, t.assets.c.name).where(t.assets.c.id.in_(ids))).all()
        )
        return {
            (outbox.AGENT_SCOPE if aid is None else str(names.get(aid, aid))): {
                "items": n,
                "ts_ms_range": [first, last],
            }
            for aid, (first, last, n) in spans.items()
        }

    # -- orphans -------------------------------------------------------------------------

    def sweep_orphans(self, min_age_s: float = ORPHAN_AGE_S) -> int:
        """Remove outbox files no pending row refers to (left by a crash)."""
        if not self.outbox_dir.exists():
            return 0
        with self.engine.connect() as conn:
            wanted = set(
                conn.execute(
                    select(t.outbox.c.path).where(
                        t.outbox.c.state == outbox.PENDING, t.outbox.c.path.is_not(None)
                    )
                ).scalars()
            )
        removed = 0
        cutoff = time.time() - min_age_s
        for path in self.outbox_dir.rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(self.outbox_dir).as_posix()
            if rel not in wanted and path.stat().st_mtime <= cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def exported_cursors(settings: Settings) -> tuple[str, ...]:
    """The sync cursors a reading must be behind to count as exported (none while
    sync is off: then nothing has left the gateway)."""
    s = settings.sync
    if not s.enabled:
        return ()
    cursors = [f"summary_cursor:{s.summary_period_s}:"]
    if s.retraining:
        cursors.append("retraining_cursor:")
    return tuple(cursors)


def housekeeper(settings: Settings, engine: Engine) -> Housekeeper:
    s = settings
    return Housekeeper(
        engine,
        s.storage.data_dir,
        site=s.identity.site,
        agent=s.identity.agent,
        budget_bytes=s.storage.disk_budget_mb * MB,
        ttl_days=s.sync.ttl_days,
        exported_cursors=exported_cursors(s),
    )


class BudgetDuty:
    """The runtime's periodic TTL, disk budget and orphan sweep, on its own connection.

    It runs whether sync is enabled or not, and apart from the summariser and the
    exporter: nothing they do can stop it. Each step is isolated; a failing step is
    logged once per kind of failure and tried again next pass.
    """

    def __init__(self, settings: Settings, *, interval_s: float = BUDGET_INTERVAL_S) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.passes = 0
        #: Set after every pass (tests and tools wait on it; clear it to wait again).
        self.passed = asyncio.Event()
        self.failures = FailureLog(log)
        self.last_report: BudgetReport | None = None

    async def run(self) -> None:
        engine = await asyncio.to_thread(
            open_engine, self.settings.storage.database_path, create=False
        )
        keeper = housekeeper(self.settings, engine)
        try:
            while True:
                await asyncio.to_thread(self.run_once, keeper)
                self.passes += 1
                self.passed.set()
                await asyncio.sleep(self.interval_s)  # a period, not synchronisation
        finally:
            engine.dispose()

    def run_once(self, keeper: Housekeeper) -> None:
        """Blocking: TTL, budget and orphan sweep, each on its own."""
        try:
            dropped = keeper.apply_ttl()
            if dropped:
                log.info("outbox TTL applied", extra=fields(**dropped))
            self.failures.succeeded("outbox TTL")
        except Exception as exc:
            self.failures.failed("outbox TTL", exc)
        try:
            self.last_report = keeper.enforce_budget()
            self.failures.succeeded("disk budget")
        except Exception as exc:
            self.failures.failed("disk budget", exc)
        try:
            swept = keeper.sweep_orphans()
            if swept:
                log.info("removed orphan outbox files", extra=fields(files=swept))
            self.failures.succeeded("orphan sweep")
        except Exception as exc:
            self.failures.failed("orphan sweep", exc)
