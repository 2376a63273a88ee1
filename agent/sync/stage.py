"""The sync stage of the agent: produce, drain, wait; forever.

It has its own database connection (WAL lets it read and write beside the recorder)
and never raises out of :meth:`SyncStage.run`: an unreachable target, bad
credentials or a busy database are logged, recorded for ``sync status`` and retried
with backoff. Cancelling the task stops it at once; an upload in flight is not marked
done and simply goes again next time (same key, same bytes).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

from sqlalchemy import Engine, exists, select

from agent import outbox
from agent import schema as t
from agent.logs import fields
from agent.metrics import Metrics
from agent.settings import Settings
from agent.sqlite import open_engine
from agent.sync.service import SyncService

log = logging.getLogger(__name__)

#: How often the stage looks for alerts and events to send between passes.
URGENT_POLL_S = 1.0
#: Items at or below this priority do not wait for the next pass.
URGENT_PRIORITY = outbox.PRIORITY[outbox.EVENT]


class SyncStage:
    """``await SyncStage(settings).run()`` inside the runtime's TaskGroup."""

    def __init__(
        self,
        settings: Settings,
        *,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.rng = rng or random.Random()
        self.metrics = metrics or Metrics()
        self.passes = 0

    async def run(self) -> None:
        engine = await asyncio.to_thread(
            open_engine, self.settings.storage.database_path, create=False
        )
        service = SyncService(self.settings, engine, rng=self.rng)
        try:
            swept = await asyncio.to_thread(service.housekeeper.sweep_orphans)
            if swept:
                log.info("removed orphan outbox files", extra=fields(files=swept))
            while True:
                delay = await self._pass(service)
                self.passes += 1
                await self._wait(engine, delay)
        finally:
            engine.dispose()

    async def _pass(self, service: SyncService) -> float:
        interval = self.settings.sync.interval_s
        # TTL and the disk budget are the runtime's own duty (BudgetDuty), so that
        # nothing here, not even a failing export, can switch them off.
        produced = await asyncio.to_thread(service.produce, keep=False)
        if any(produced.values()):
            log.debug("sync produced", extra=fields(**produced))
        try:
            report = await service.drain()
        except Exception:
            self.metrics.sync_errors += 1
            log.exception("sync: drain pass failed")
            return interval
        self.metrics.sync_uploaded += report.uploaded
        self.metrics.sync_backlog = report.remaining
        if report.error is not None:
            self.metrics.sync_errors += 1
            return service.retry_delay_s(interval)
        return interval

    async def _wait(self, engine: Engine, delay_s: float) -> None:
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(URGENT_POLL_S, left))  # a period, not synchronisation
            if await asyncio.to_thread(_urgent_waiting, engine):
                return


def _urgent_waiting(engine: Engine) -> bool:
    o = t.outbox
    with engine.connect() as conn:
        return bool(
            conn.execute(
                select(
                    exists().where(
                        o.c.state == outbox.PENDING,
                        o.c.priority <= URGENT_PRIORITY,
                        o.c.next_attempt_ms <= outbox.now_ms(),
                    )
                )
            ).scalar()
        )
