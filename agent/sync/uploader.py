"""Draining the outbox to a target: priority then age, bounded concurrency, a
bandwidth cap, backoff with jitter, and an item marked done only after the store
confirmed it.

Crash safety comes from the order of things: the body is fixed when the item is
enqueued, the upload goes to the item's deterministic key, and the row turns ``done``
only after the store confirmed. A crash between the two re-uploads the same bytes to
the same key next time: the bucket ends with exactly one copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, Row, select, update

from agent import outbox
from agent import schema as t
from agent.errors import SyncError
from agent.logs import fields
from agent.sync.targets import PermanentUploadError, Target

log = logging.getLogger(__name__)

#: First retry delay after a failure; doubles per attempt up to ``backoff_max_s``.
BACKOFF_BASE_S = 2.0
#: Jitter spreads retries of a fleet that lost its uplink at the same moment.
JITTER = (0.5, 1.5)
#: Items fetched per database page while draining (inline bodies come along).
PAGE_ITEMS = 256
#: Confirmed items marked done per transaction. A crash loses at most these marks,
#: which only means re-uploading the same bytes to the same keys.
DONE_BATCH = 32

#: Keyset position before the first item; rescans of one pass from there.
START = (-1, -1, -1)
MAX_RESCANS = 3

Progress = Callable[[int, int, int], None]  # (done, total, bytes)


def backoff_s(attempts: int, cap_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempts`` (1-based), jittered, capped."""
    base = min(cap_s, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return float(min(cap_s, base * rng.uniform(*JITTER)))


class RateLimiter:
    """Caps the average upload rate: each body books its share of the wire in turn."""

    def __init__(self, bytes_per_s: int) -> None:
        self.bytes_per_s = bytes_per_s
        self._next = time.monotonic()

    async def acquire(self, size: int) -> None:
        if self.bytes_per_s <= 0:
            return
        now = time.monotonic()
        start = max(now, self._next)
        self._next = start + size / self.bytes_per_s
        if start > now:
            await asyncio.sleep(start - now)  # the cap itself, not synchronisation


@dataclass
class DrainReport:
    uploaded: int = 0
    bytes: int = 0
    failed: int = 0
    seconds: float = 0.0
    error: str | None = None
    remaining: int = 0
    #: Items the target refused for good in this pass, set aside (state quarantined).
    quarantined: int = 0


class Uploader:
    """Uploads pending outbox items; one instance per target and process."""

    def __init__(
        self,
        engine: Engine,
        target: Target,
        data_dir: Path,
        *,
        concurrency: int = 2,
        bandwidth_bytes_per_s: int = 0,
        backoff_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.target = target
        self.outbox_dir = data_dir / outbox.OUTBOX_DIR
        self.concurrency = concurrency
        self.limiter = RateLimiter(bandwidth_bytes_per_s)
        self.backoff_max_s = backoff_max_s
        self.rng = rng or random.Random()
        #: Failed passes in a row: how long the target has been away, learned from uploads.
        self.consecutive_failures = 0
        self._last_logged_error: str | None = None

    def retry_delay_s(self) -> float:
        return backoff_s(self.consecutive_failures, self.backoff_max_s, self.rng)

    def _page(self, now_ms: int, ignore_backoff: bool, after: tuple[int, int, int]) -> list[Row]:  # type: ignore[type-arg]
        o = t.outbox
        query = (
            select(
                o.c.id,
                o.c.kind,
                o.c.object_key,
                o.c.path,
                o.c.size_bytes,
                o.c.sha256,
                o.c.attempts,
                o.c.priority,
                o.c.created_ms,
                o.c.payload,
            )
            .where(o.c.state == outbox.PENDING)
            .order_by(o.c.priority, o.c.created_ms, o.c.id)
            .limit(PAGE_ITEMS)
        )
        if not ignore_backoff:
            query = query.where(o.c.next_attempt_ms <= now_ms)
        prio, created, ident = after
        # Keyset pagination in drain order: an item is offered once per pass.
        query = query.where(
            (o.c.priority > prio)
            | ((o.c.priority == prio) & (o.c.created_ms > created))
            | ((o.c.priority == prio) & (o.c.created_ms == created) & (o.c.id > ident))
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def pending_count(self, now_ms: int | None = None) -> int:
        from sqlalchemy import func

        o = t.outbox
        query = select(func.count()).select_from(o).where(o.c.state == outbox.PENDING)
        if now_ms is not None:
            query = query.where(o.c.next_attempt_ms <= now_ms)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def _body(self, row: Row) -> bytes | None:  # type: ignore[type-arg]
        if row.path is None:
            return None if row.payload is None else bytes(row.payload)
        try:
            return (self.outbox_dir / str(row.path)).read_bytes()
        except FileNotFoundError:
            return None

    def _mark_done(self, rows: list[Row]) -> None:  # type: ignore[type-arg]
        ids = [row.id for row in rows]
        with self.engine.begin() as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id.in_(ids), t.outbox.c.state == outbox.PENDING)
                .values(
                    state=outbox.DONE,
                    done_ms=outbox.now_ms(),
                    attempts=t.outbox.c.attempts + 1,
                    payload=None,
                    last_error=None,
                )
            )
        # Files go only after their rows say done: a crash in between leaves orphans
        # that the stage sweeps, never a pending row without its body.
        for row in rows:
            if row.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    (self.outbox_dir / str(row.path)).unlink()

    def _mark_failed(self, row: Row, message: str) -> None:  # type: ignore[type-arg]
        attempts = int(row.attempts) + 1
        delay_ms = int(backoff_s(attempts, self.backoff_max_s, self.rng) * 1000)
        with self.engine.begin() as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == row.id, t.outbox.c.state == outbox.PENDING)
                .values(
                    attempts=attempts,
                    next_attempt_ms=outbox.now_ms() + delay_ms,
                    last_error=message[:500],
                )
            )

    def _quarantine(self, row: Row, message: str) -> None:  # type: ignore[type-arg]
        # The body stays (an operator can look at it); TTL and the disk budget remove
        # it later with a loss-ledger entry, like any other item that never made it.
        with self.engine.begin() as conn:
            conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == row.id, t.outbox.c.state == outbox.PENDING)
                .values(
                    state=outbox.QUARANTINED,
                    attempts=t.outbox.c.attempts + 1,
                    done_ms=outbox.now_ms(),
                    last_error=message[:500],
                )
            )
        log.warning(
            "sync: the target refused an item for good; set aside, the rest drains",
            extra=fields(kind=str(row.kind), key=str(row.object_key), error=message),
        )

    def _mark_lost(self, row: Row) -> None:  # type: ignore[type-arg]
        # A file item whose body vanished (removed by hand, disk error) cannot be
        # uploaded: record the loss instead of retrying forever.
        site, agent = [*str(row.object_key).split("/"), "", ""][:2]
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(t.outbox)
                .where(t.outbox.c.id == row.id, t.outbox.c.state == outbox.PENDING)
                .values(state=outbox.DROPPED, payload=None, last_error="body missing")
            ).rowcount
            if changed:
                outbox.record_loss(
                    conn,
                    site=site,
                    agent=agent,
                    kind=str(row.kind),
                    reason="missing_body",
                    items=1,
                    size_bytes=int(row.size_bytes),
                    first_ms=int(row.created_ms),
                    last_ms=int(row.created_ms),
                    detail={"keys": [row.object_key]},
                )

    def _record(self, report: DrainReport) -> None:
        with self.engine.begin() as conn:
            if report.uploaded:
                outbox.put_state(
                    conn, "last_success", {"ts_ms": outbox.now_ms(), "uploaded": report.uploaded}
                )
            if report.error is not None:
                outbox.put_state(
                    conn,
                    "last_error",
                    {
                        "ts_ms": outbox.now_ms(),
                        "message": report.error,
                        "target": self.target.description,
                    },
                )

    async def drain(
        self,
        *,
        ignore_backoff: bool = False,
        on_progress: Progress | None = None,
        max_items: int | None = None,
    ) -> DrainReport:
        """One pass: upload eligible items until none is left or the target fails."""
        t0 = time.monotonic()
        report = DrainReport()
        now = outbox.now_ms()
        total = await asyncio.to_thread(self.pending_count, None if ignore_backoff else now)
        if max_items is not None:
            total = min(total, max_items)
        cursor = START
        rescans = 0
        queue: deque[Row] = deque()  # type: ignore[type-arg]
        failed = asyncio.Event()
        confirmed: list[Row] = []  # type: ignore[type-arg]

        async def flush() -> None:
            if confirmed:
                batch = confirmed[:]
                confirmed.clear()
                await asyncio.to_thread(self._mark_done, batch)

        async def worker() -> None:
            while queue and not failed.is_set():
                row = queue.popleft()
                body = (
                    self._body(row)
                    if row.path is None
                    else await asyncio.to_thread(self._body, row)
                )
                if body is None:
                    await asyncio.to_thread(self._mark_lost, row)
                    continue
                await self.limiter.acquire(len(body))
                try:
                    await asyncio.to_thread(self.target.put, str(row.object_key), body, row.sha256)
                except PermanentUploadError as exc:
                    # Only this object is bad: set it aside and go on with the next,
                    # so one refused key never holds the backlog behind it.
                    report.quarantined += 1
                    await asyncio.to_thread(self._quarantine, row, str(exc))
                    continue
                except SyncError as exc:
                    report.failed += 1
                    report.error = str(exc)
                    failed.set()
                    await asyncio.to_thread(self._mark_failed, row, str(exc))
                    continue
                confirmed.append(row)
                if len(confirmed) >= DONE_BATCH:
                    await flush()
                report.uploaded += 1
                report.bytes += len(body)
                if on_progress is not None:
                    on_progress(report.uploaded, total, report.bytes)

        try:
            while not failed.is_set():
                if max_items is not None and report.uploaded >= max_items:
                    break
                page = await asyncio.to_thread(self._page, now, ignore_backoff, cursor)
                if not page:
                    # Items enqueued during the pass (a ledger entry, a new alert) may
                    # sort before the cursor: look once more from the start.
                    if rescans >= MAX_RESCANS or cursor == START:
                        break
                    rescans += 1
                    cursor = START
                    continue
                last = page[-1]
                cursor = (int(last.priority), int(last.created_ms), int(last.id))
                queue.extend(page)
                async with asyncio.TaskGroup() as group:
                    for _ in range(self.concurrency):
                        group.create_task(worker())
                await flush()
        finally:
            report.seconds = time.monotonic() - t0
        self.consecutive_failures = self.consecutive_failures + 1 if report.error else 0
        report.remaining = await asyncio.to_thread(self.pending_count)
        await asyncio.to_thread(self._record, report)
        self._log(report)
        return report

    def _log(self, report: DrainReport) -> None:
        if report.error is not None:
            # One line per distinct problem, not one per retry.
            if report.error != self._last_logged_error:
                log.warning(
                    "sync upload failed; backlog kept",
                    extra=fields(
                        error=report.error,
                        target=self.target.description,
                        backlog=report.remaining,
                    ),
                )
            self._last_logged_error = report.error
        elif report.uploaded:
            if self._last_logged_error is not None:
                log.info(
                    "sync target reachable again", extra=fields(target=self.target.description)
                )
            self._last_logged_error = None
            log.info(
                "sync drained",
                extra=fields(
                    uploaded=report.uploaded,
                    bytes=report.bytes,
                    seconds=round(report.seconds, 3),
                    backlog=report.remaining,
                ),
            )
