"""The sync machinery put together from settings, for the stage and the CLI."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from agent import outbox
from agent import schema as t
from agent.errors import SyncError
from agent.logs import fields
from agent.settings import Settings
from agent.sync.budget import disk_usage, housekeeper
from agent.sync.failures import FailureLog
from agent.sync.retraining import RetrainingConfig, RetrainingExporter
from agent.sync.summaries import Summarizer, SummaryConfig
from agent.sync.targets import S3Options, Target, open_target
from agent.sync.uploader import DrainReport, Progress, Uploader

log = logging.getLogger(__name__)

MB = 1024 * 1024
#: Quarantined items listed by `sync status` (the newest; the count covers all).
QUARANTINE_SHOWN = 20


def s3_options(settings: Settings) -> S3Options:
    s = settings.sync
    return S3Options(
        endpoint_url=s.s3_endpoint_url,
        region=s.s3_region,
        access_key_id=s.s3_access_key_id,
        secret_access_key=(
            s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None
        ),
    )


class SyncService:
    """Produces summaries and retraining files, keeps the budget, drains the outbox."""

    def __init__(
        self, settings: Settings, engine: Engine, *, rng: random.Random | None = None
    ) -> None:
        s = settings
        self.settings = settings
        self.engine = engine
        self.data_dir = s.storage.data_dir
        self.target_url = s.sync_target
        self.rng = rng or random.Random()
        self.summarizer = Summarizer(
            engine, SummaryConfig(s.identity.site, s.identity.agent, s.sync.summary_period_s)
        )
        self.exporter = (
            RetrainingExporter(
                engine,
                self.data_dir,
                RetrainingConfig(
                    s.identity.site,
                    s.identity.agent,
                    before_s=s.sync.retraining_before_s,
                    after_s=s.sync.retraining_after_s,
                    sample_rate=s.sync.retraining_sample_rate,
                    sample_window_s=s.sync.retraining_sample_window_s,
                ),
            )
            if s.sync.retraining
            else None
        )
        self.housekeeper = housekeeper(s, engine)
        self._uploader: Uploader | None = None
        self.failures = FailureLog(log)
        if self.exporter is not None:
            self.exporter.failures = self.failures

    def uploader(self) -> Uploader:
        """The uploader, its target set up on first use (a bad URL is a SyncError)."""
        if self._uploader is None:
            target: Target = open_target(self.target_url, s3_options(self.settings))
            s = self.settings.sync
            self._uploader = Uploader(
                self.engine,
                target,
                self.data_dir,
                concurrency=s.concurrency,
                bandwidth_bytes_per_s=s.bandwidth_bytes_per_s,
                backoff_max_s=s.backoff_max_s,
                rng=self.rng,
            )
        return self._uploader

    def produce(self, now_ms: int | None = None, *, keep: bool = True) -> dict[str, int]:
        """Blocking: close summary periods and retraining hours; with ``keep`` also
        apply TTL and budget (``sync now``; the agent runs those as a duty of its own).

        Each step is isolated: one that fails is logged once per kind of failure and
        the others still run.
        """
        produced = {"summaries": 0, "retraining_files": 0}
        steps: list[tuple[str, Callable[[], int]]] = [
            ("summaries", lambda: self.summarizer.run_once(now_ms)),
        ]
        if self.exporter is not None:
            exporter = self.exporter
            steps.append(("retraining_files", lambda: exporter.run_once(now_ms)))
        if keep:
            keeper = self.housekeeper
            steps += [
                ("ttl_dropped", lambda: sum(keeper.apply_ttl(now_ms).values())),
                ("budget_dropped", lambda: sum(keeper.enforce_budget().dropped_items.values())),
                ("orphans_swept", keeper.sweep_orphans),
            ]
        for name, step in steps:
            try:
                produced[name] = step()
                self.failures.succeeded(name)
            except Exception as exc:
                # A busy or full database, a file that cannot be written: the other
                # steps (above all TTL and budget) must still run.
                self.failures.failed(name, exc)
        return produced

    def retry_delay_s(self, fallback_s: float) -> float:
        """How long to wait after a failed pass (backoff learned from the uploads)."""
        return self._uploader.retry_delay_s() if self._uploader is not None else fallback_s

    async def drain(
        self, *, ignore_backoff: bool = False, on_progress: Progress | None = None
    ) -> DrainReport:
        try:
            uploader = self.uploader()
        except SyncError as exc:
            report = DrainReport(error=str(exc))
            record_error(self.engine, str(exc), self.target_url)
            return report
        return await uploader.drain(ignore_backoff=ignore_backoff, on_progress=on_progress)


def record_error(engine: Engine, message: str, target: str) -> None:
    with engine.begin() as conn:
        outbox.put_state(
            conn, "last_error", {"ts_ms": outbox.now_ms(), "message": message, "target": target}
        )


def sync_status(engine: Engine, settings: Settings, now_ms: int | None = None) -> dict[str, Any]:
    """Backlog by kind (items, bytes), oldest item age, last success and last error."""
    now = now_ms if now_ms is not None else outbox.now_ms()
    o = t.outbox
    with engine.connect() as conn:
        rows = conn.execute(
            select(o.c.kind, func.count(), func.sum(o.c.size_bytes), func.min(o.c.created_ms))
            .where(o.c.state == outbox.PENDING)
            .group_by(o.c.kind)
        ).all()
        done = conn.execute(
            select(func.count()).select_from(o).where(o.c.state == outbox.DONE)
        ).scalar_one()
        ledger = conn.execute(
            select(func.count(), func.coalesce(func.sum(t.loss_ledger.c["items"]), 0))
        ).one()
        refused_count, refused = outbox.quarantined(conn, QUARANTINE_SHOWN)
        success = outbox.get_state(conn, "last_success")
        error = outbox.get_state(conn, "last_error")
    backlog = {str(kind): {"items": int(n), "bytes": int(size or 0)} for kind, n, size, _ in rows}
    oldest = min((int(r[3]) for r in rows), default=None)
    healthy = error is None or (success is not None and success["ts_ms"] >= error["ts_ms"])
    return {
        "target": _describe_target(settings),
        "backlog": backlog,
        "backlog_items": sum(v["items"] for v in backlog.values()),
        "backlog_bytes": sum(v["bytes"] for v in backlog.values()),
        "oldest_age_s": None if oldest is None else round((now - oldest) / 1000, 1),
        "uploaded_items_kept": int(done),
        "last_success_ms": None if success is None else success["ts_ms"],
        "last_error": None if error is None else error["message"],
        "last_error_ms": None if error is None else error["ts_ms"],
        "healthy": healthy,
        "quarantined_items": refused_count,
        "quarantined": refused,
        "ledger_entries": int(ledger[0]),
        "ledger_items_dropped": int(ledger[1]),
        "disk_used_bytes": disk_usage(engine, Path(settings.storage.data_dir)),
        "disk_budget_bytes": settings.storage.disk_budget_mb * MB,
    }


@dataclass(frozen=True, slots=True)
class Requeued:
    """What ``sync retry`` did: the keys back in line, and those asked for that were
    not set aside (unknown, uploaded, dropped or already pending)."""

    requeued: list[str]
    not_quarantined: list[str]


def retry_quarantined(engine: Engine, keys: Sequence[str] | None = None) -> Requeued:
    """Put items the target refused back in line once it is fixed: all of them, or
    those with the given object keys. The agent's next pass (or ``sync now``) takes
    them; one still refused is set aside again."""
    with engine.begin() as conn:
        requeued = outbox.requeue_quarantined(conn, keys)
    if requeued:
        log.info("sync: quarantined items put back in line", extra=fields(items=len(requeued)))
    missing = sorted(set(keys or ()) - set(requeued))
    return Requeued(requeued, missing)


def _describe_target(settings: Settings) -> str:
    # The URL carries no secrets (credentials are separate settings); keep the
    # endpoint so an operator sees where uploads go.
    url = settings.sync_target
    if url.startswith("s3://") and settings.sync.s3_endpoint_url:
        return f"{url} at {settings.sync.s3_endpoint_url}"
    return url
