"""Wrong credentials, missing bucket: a clear line in `sync status`, backlog kept, no crash."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from agent.sqlite import open_engine
from agent.sync.service import sync_status
from agent.sync.stage import SyncStage
from tests.agent.sync.conftest import S3Server, fill_backlog, make_settings, s3_env, s3_sync
from tests.support import run_cli

WRONG_SECRET = "not-the-secret-4711"


def test_wrong_credentials_give_one_clear_line_and_keep_the_backlog(
    migrated_db: Path, tmp_path: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import moto.settings

    bucket = s3.new_bucket()
    expected = fill_backlog(migrated_db, 12, body_bytes=100)
    # From now on the (in-process) server checks credentials: ours are unknown to it.
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    env = s3_env(s3, bucket, migrated_db.parent, secret=WRONG_SECRET)
    result = run_cli("sync", "now", "--no-progress", cwd=tmp_path, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    # The user's one line, and the same error in the (JSON) log.
    assert lines[-1].startswith("error: S3 refused the credentials"), result.stderr
    assert "InvalidAccessKeyId" in lines[-1] and lines[-1].endswith("backlog kept")
    logged = [orjson.loads(line) for line in lines[:-1]]
    assert any("S3 refused the credentials" in entry.get("error", "") for entry in logged)
    assert "Traceback" not in result.stderr
    status = run_cli("sync", "status", "--json", cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    info = orjson.loads(status.stdout)
    assert "S3 refused the credentials" in info["last_error"]
    assert info["healthy"] is False
    assert info["backlog_items"] == len(expected)  # backlog kept
    for text in (result.stdout, result.stderr, status.stdout, status.stderr):
        assert WRONG_SECRET not in text


async def test_missing_bucket_keeps_the_stage_running(migrated_db: Path, s3: S3Server) -> None:
    settings = make_settings(
        migrated_db.parent,
        **s3_sync(s3, "no-such-bucket-here", interval_s=0.2, backoff_max_s=1.0, retraining=False),
    )
    expected = fill_backlog(migrated_db, 5, body_bytes=100)
    engine = open_engine(migrated_db, create=False)
    stage = SyncStage(settings)
    task = asyncio.create_task(stage.run())
    try:
        deadline = time.monotonic() + 30
        while stage.passes < 2:
            assert time.monotonic() < deadline, "the stage made no passes"
            assert not task.done(), "the stage ended"
            await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
        info = sync_status(engine, settings)
        assert info["last_error"] == (
            "bucket 'no-such-bucket-here' does not exist "
            f"(s3://no-such-bucket-here/edge at {s3.endpoint}) (create it or fix sync.target)"
        )
        assert info["backlog_items"] == len(expected)
    finally:
        task.cancel()
        results = await asyncio.gather(task, return_exceptions=True)
        engine.dispose()
    assert isinstance(results[0], asyncio.CancelledError)
