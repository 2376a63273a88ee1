"""What the gateway gives up when it must: TTL per kind and the disk budget.

Drop policy (docs/sync.md): when the database's used pages plus the outbox files
exceed ``storage.disk_budget_mb``, drop lowest priority first and, within a class,
oldest first:

1. retraining files waiting in the outbox,
2. raw readings (the oldest, across assets),
3. summaries waiting in the outbox,
4. events waiting in the outbox.

Alerts and loss-ledger items are never dropped for space (they are small and are
the record of what happened). Every drop writes a loss-ledger row naming exactly what
went (outbox keys, or per asset the count and time range of readings) and that row is
synced like any other item.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select

from agent import outbox
from agent import schema as t
from agent.logs import fields

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
#: Done items are kept this long for `sync status`, then forgotten (not a loss).
DONE_KEEP_MS = 7 * DAY_MS
#: Outbox files no pending row points at are removed once this old (a younger one may
#: belong to an exporter between its rename and its commit).
ORPHAN_AGE_S = 3600.0
#: Rows of one drop round: small transactions keep the recorder from waiting.
ROUND_ITEMS = 2000
ROUND_READINGS = 20_000
#: Bytes a stored reading takes beyond its JSON (key, record header, index share).
READING_OVERHEAD_BYTES = 32
#: Drop order for the budget; "readings" means raw readings in the readings table.
DROP_ORDER = (outbox.RETRAINING, "readings", outbox.SUMMARY, outbox.EVENT)


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
    return sum(p.stat().st_size for p in outbox_dir.rglob("*") if p.is_file())


def db_used_bytes(conn: Connection) -> int:
    """Bytes of database pages in use (free pages are reused before the file grows)."""
    page_size = int(conn.exec_driver_sql("PRAGMA page_size").scalar_one())
    pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
    free = int(conn.exec_driver_sql("PRAGMA freelist_count").scalar_one())
    return (pages - free) * page_size


def disk_usage(engine: Engine, data_dir: Path) -> int:
    """What the budget counts: used database pages plus the outbox files."""
    with engine.connect() as conn:
        used = db_used_bytes(conn)
    return used + _files_bytes(data_dir / outbox.OUTBOX_DIR)


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
    ) -> None:
        self.engine = engine
        self.data_dir = data_dir
        self.outbox_dir = data_dir / outbox.OUTBOX_DIR
        self.site = site
        self.agent = agent
        self.budget_bytes = budget_bytes
        self.ttl_days = dict(ttl_days)

    # -- TTL ---------------------------------------------------------------------------

    def apply_ttl(self, now_ms: int | None = None) -> dict[str, int]:
        """Drop pending items older than their kind's TTL; forget old done items."""
        now = now_ms if now_ms is not None else outbox.now_ms()
        dropped: dict[str, int] = {}
        for kind, days in self.ttl_days.items():
            cutoff = now - int(days * DAY_MS)
            while True:
                n = self._drop_items(
                    [kind], reason="ttl", extra=t.outbox.c.created_ms < cutoff, need=None
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

    def enforce_budget(self) -> BudgetReport:
        """Drop by the policy until usage is within the budget (or nothing droppable is left)."""
        report = BudgetReport(self.budget_bytes)
        files = _files_bytes(self.outbox_dir)
        with self.engine.connect() as conn:
            used = db_used_bytes(conn) + files
        report.used_before = used
        for kind in DROP_ORDER:
            while used > self.budget_bytes:
                need = used - self.budget_bytes
                if kind == "readings":
                    count, size, ledger = self._drop_readings(need)
                else:
                    count, size, ledger = self._drop_items(
                        [kind], reason="disk_budget", extra=None, need=need
                    )
                if count == 0:
                    break
                report.dropped_items[kind] = report.dropped_items.get(kind, 0) + count
                report.dropped_bytes[kind] = report.dropped_bytes.get(kind, 0) + size
                report.ledger_ids += ledger
                files = _files_bytes(self.outbox_dir)
                with self.engine.connect() as conn:
                    used = db_used_bytes(conn) + files
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
        self, kinds: list[str], *, reason: str, extra: Any, need: int | None
    ) -> tuple[int, int, list[int]]:
        """Drop one round of pending items of ``kinds``, oldest first.

        With ``need``, stop once the dropped sizes add up to it. Returns (items,
        bytes, ledger ids).
        """
        o = t.outbox
        query = (
            select(o.c.id, o.c.kind, o.c.object_key, o.c.path, o.c.size_bytes, o.c.created_ms)
            .where(o.c.state == outbox.PENDING, o.c.kind.in_(kinds))
            .order_by(o.c.created_ms, o.c.id)
            .limit(ROUND_ITEMS)
        )
        if extra is not None:
            query = query.where(extra)
        files: list[Path] = []
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
                size += int(row.size_bytes)
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
                        detail={"keys": [r.object_key for r in group]},
                    )
                )
                total_items += len(group)
                total_bytes += group_bytes
            files = [self.outbox_dir / r.path for r in chosen if r.path is not None]
        # Files go after the commit: a crash before it keeps rows and files together;
        # one after it leaves orphans that the sweep removes.
        for path in files:
            path.unlink(missing_ok=True)
        return total_items, total_bytes, ledger_ids

    def _drop_readings(self, need: int) -> tuple[int, int, list[int]]:
        r = t.readings
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(r.c.asset_id, r.c.ts_ms, func.length(r.c.values_json))
                .order_by(r.c.ts_ms)
                .limit(ROUND_READINGS)
            ).all()
            chosen = []
            size = 0
            for row in rows:
                if size >= need:
                    break
                chosen.append(row)
                size += int(row[2]) + READING_OVERHEAD_BYTES
            if not chosen:
                return 0, 0, []
            per_asset: dict[int, list[int]] = defaultdict(list)
            sizes: dict[int, int] = defaultdict(int)
            for aid, ts, length in chosen:
                per_asset[int(aid)].append(int(ts))
                sizes[int(aid)] += int(length) + READING_OVERHEAD_BYTES
            names = dict(
                conn.execute(
                    select(t.assets.c.id, t.assets.c.name).where(t.assets.c.id.in_(per_asset))
                ).all()
            )
            ledger_ids = []
            for aid, stamps in per_asset.items():
                first, last = min(stamps), max(stamps)
                # Every reading of this asset up to `last` is among the oldest chosen.
                conn.execute(delete(r).where(r.c.asset_id == aid, r.c.ts_ms <= last))
                ledger_ids.append(
                    outbox.record_loss(
                        conn,
                        site=self.site,
                        agent=self.agent,
                        kind="readings",
                        reason="disk_budget",
                        items=len(stamps),
                        size_bytes=sizes[aid],
                        first_ms=first,
                        last_ms=last,
                        detail={"asset": names.get(aid, str(aid)), "ts_ms_range": [first, last]},
                    )
                )
        return len(chosen), size, ledger_ids

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
