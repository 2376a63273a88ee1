"""Target away for a while, backlog grows, target back: everything arrives once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from agent.sqlite import open_engine
from agent.sync.service import sync_status
from agent.sync.stage import SyncStage
from tests.agent.sync.conftest import S3Server, fill_backlog, make_settings, s3_sync, start_moto
from tests.support import free_port

WAIT_S = 30.0


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline


async def test_outage_then_recovery_delivers_everything_once(
    migrated_db: Path, s3: S3Server
) -> None:
    bucket = s3.new_bucket()
    # A second endpoint that is down at first, then comes up (same moto backend).
    port = free_port()
    down = S3Server(f"http://127.0.0.1:{port}", port)
    settings = make_settings(
        migrated_db.parent,
        **s3_sync(down, bucket, interval_s=0.2, backoff_max_s=1.0, concurrency=4, retraining=False),
    )
    expected = fill_backlog(migrated_db, 40, body_bytes=512, seed=1)
    engine = open_engine(migrated_db, create=False)

    def status() -> dict[str, object]:
        return sync_status(engine, settings)

    stage = SyncStage(settings)
    task = asyncio.create_task(stage.run())
    try:
        await wait_for(lambda: status()["last_error"] is not None, "the first failed upload")
        error = str(status()["last_error"])
        assert "cannot reach" in error and str(port) in error
        # The backlog grows while the target is away.
        expected |= await asyncio.to_thread(fill_backlog, migrated_db, 30, body_bytes=512, seed=2)
        passes = stage.passes
        await wait_for(lambda: stage.passes >= passes + 2, "more failed passes")
        assert status()["backlog_items"] == len(expected)
        assert not s3.target(bucket).list_objects()

        server = start_moto(port)
        try:
            await wait_for(lambda: status()["backlog_items"] == 0, "the backlog to drain")
            objects = await asyncio.to_thread(down.target(bucket).list_objects)
        finally:
            server.stop()
        assert objects == expected  # every item, byte-identical, nothing else
        assert status()["healthy"] is True
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        engine.dispose()
    assert isinstance(results[0], asyncio.CancelledError)  # stopped, not crashed
