"""The recorder stage: groups items into few, large transactions, then acknowledges.

A batch is committed when it holds ``commit_max_rows`` items, when it holds
``ack_batch`` unacknowledged messages (the broker stops sending at its in-flight
limit, so waiting longer would only stall the stream), or when its oldest item has
waited long enough: ``commit_interval_ms`` under load, and up to
``commit_max_wait_ms`` at low rates, as long as it takes the rate seen so far to
bring COMMIT_TARGET_ROWS rows. Few large commits spare SD cards: each one rewrites a
page per asset it touches, so at plant rates the number of commits, not the data,
sets what is written. The ack after the commit is what makes processing
at-least-once; on stop, :meth:`Recorder.flush` commits what waits at once.

If a write fails (disk full, database locked for long), nothing is acknowledged:
the batch is kept and retried with backoff, the broker keeps the messages, and
the failure is logged once per outage, not per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent.domain import Accepted, MessageRef
from agent.errors import StorageError
from agent.logs import fields
from agent.metrics import Metrics
from agent.storage.writer import Item, Writer

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
#: Rows a commit gathers at low rates, within commit_max_wait_ms. Every commit
#: rewrites a page per asset it touches (readings' and predictions' indexes): the
#: writer alone, 50 assets at 1 Hz with a prediction each, wrote 12.3 KB a reading at
#: 10 rows a commit (200 ms), 889 B at 500 and 307 B at 2,500 (docs/performance.md).
COMMIT_TARGET_ROWS = 2_500


@dataclass(frozen=True, slots=True)
class RecorderConfig:
    commit_interval_ms: int = 200
    commit_max_rows: int = 25_000
    ack_batch: int = 1000
    #: The longest a batch waits at low rates (commit_interval_ms: no longer wait).
    commit_max_wait_ms: int = 200


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Recorder:
    """Consumes the recorder queue until cancelled, committing in batches."""

    def __init__(
        self,
        writer: Writer,
        config: RecorderConfig,
        metrics: Metrics,
        on_committed: Callable[[Sequence[MessageRef]], object],
    ) -> None:
        self.writer = writer
        self.config = config
        self.metrics = metrics
        self.on_committed = on_committed
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edgewatch-db")
        self._failing_since: float | None = None
        self._flush = asyncio.Event()
        #: Rows a second arriving while batches gathered (None: no batch yet).
        self._rate: float | None = None

    def flush(self) -> None:
        """Commit what is waiting now, and from now on without waiting for more (the
        agent is stopping: its queues drain in seconds, not in a commit's wait)."""
        self._flush.set()

    def wait_s(self) -> float:
        """How long a new write batch may wait for more items (see the module doc)."""
        if self._flush.is_set():
            return 0.0
        shortest = self.config.commit_interval_ms / 1000
        longest = max(shortest, self.config.commit_max_wait_ms / 1000)
        if self._rate is None:
            return shortest
        if self._rate <= 0:
            return longest
        return min(longest, max(shortest, COMMIT_TARGET_ROWS / self._rate))

    async def run(self, inbox: asyncio.Queue[Item]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                first = await inbox.get()
                batch: list[Item] = [first]
                refs = _refs(first)
                rows = item_rows(first)
                started = loop.time()
                deadline = started + self.wait_s()
                while rows < self.config.commit_max_rows and refs < self.config.ack_batch:
                    try:
                        item = inbox.get_nowait()
                    except asyncio.QueueEmpty:
                        remaining = deadline - loop.time()
                        if remaining <= 0 or self._flush.is_set():
                            break
                        got = await self._next(inbox, remaining)
                        if got is None:
                            break
                        item = got
                    batch.append(item)
                    refs += _refs(item)
                    rows += item_rows(item)
                self._note_rate(rows, loop.time() - started)
                try:
                    await self.commit(batch)
                finally:
                    # Done only once committed: Queue.join() on shutdown then means
                    # everything received is on disk.
                    for _ in batch:
                        inbox.task_done()
        finally:
            self._pool.shutdown(wait=True)

    async def _next(self, inbox: asyncio.Queue[Item], timeout_s: float) -> Item | None:
        """The next item, or None after ``timeout_s`` or once :meth:`flush` is called."""
        get = asyncio.ensure_future(inbox.get())
        flushed = asyncio.ensure_future(self._flush.wait())
        try:
            await asyncio.wait({get, flushed}, timeout=timeout_s, return_when=FIRST_COMPLETED)
        finally:
            flushed.cancel()
            if not get.done():
                get.cancel()  # Queue.get gives up cleanly: no item is taken
        return get.result() if get.done() and not get.cancelled() else None

    def _note_rate(self, rows: int, waited_s: float) -> None:
        # Rows a second while the batch gathered: a moving average over batches, so
        # that a flood's tail is committed at once and a quiet plant's in few commits.
        rate = rows / max(waited_s, 1e-3)
        self._rate = rate if self._rate is None else (self._rate + rate) / 2

    async def commit(self, batch: list[Item]) -> None:
        """Write ``batch`` (retrying until it succeeds), then acknowledge its messages."""
        loop = asyncio.get_running_loop()
        delay = RETRY_FIRST_S
        while True:
            try:
                started = time.perf_counter()
                stats = await loop.run_in_executor(self._pool, self.writer.write, batch, _now_ms())
                self.metrics.commit_s.observe(time.perf_counter() - started)
                break
            except StorageError as exc:
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.error(
                        "cannot write to the database; holding messages unacknowledged",
                        extra=fields(error=str(exc), items=len(batch)),
                    )
                await asyncio.sleep(delay)  # backoff between retries, not synchronisation
                delay = min(delay * 2, RETRY_MAX_S)
        if self._failing_since is not None:
            log.warning(
                "database writes recovered",
                extra=fields(after_s=round(time.monotonic() - self._failing_since, 1)),
            )
            self._failing_since = None
        self.metrics.commits += 1
        self.metrics.rows_written += stats.rows
        self.metrics.readings_redelivered += stats.redelivered
        for reason, count in stats.dead_letters.items():
            if reason in ("duplicate", "out_of_order"):
                self.metrics.dead_letters[reason] += count
        acked = [item.ref for item in batch if isinstance(item, Accepted) and item.ref is not None]
        if acked:
            self.on_committed(acked)


def item_rows(item: Item) -> int:
    # A batch message brings many readings: count rows, not items, so that one
    # transaction (and the memory it holds) stays bounded whatever the payloads.
    return len(item.readings) + len(item.late) + 1 if isinstance(item, Accepted) else 1


def _refs(item: Item) -> int:
    return 1 if isinstance(item, Accepted) and item.ref is not None else 0
