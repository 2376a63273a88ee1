"""SIGKILL the real `edgewatch sync now` at random points of a drain, restart, compare.

After every kill the bucket may hold only expected objects with their exact bytes;
after the final run it holds exactly the expected set: nothing lost, nothing twice.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from agent.storage import migrate
from tests.agent.sync.conftest import S3Server, fill_backlog, s3_env
from tests.support import cli_env, run_cli

WAIT_S = 60.0


def _count(s3: S3Server, bucket: str) -> int:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(page.get("KeyCount", 0) for page in pages)


def _edgewatch() -> list[str]:
    exe = Path(sys.executable).with_name("edgewatch")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "agent"]


def crash_and_recover(
    tmp_path: Path, s3: S3Server, *, runs: int, items: int, max_step: int, seed: int
) -> None:
    rng = random.Random(seed)
    db = tmp_path / "data" / "edgewatch.db"
    migrate.upgrade(db)
    expected = fill_backlog(db, items, body_bytes=1024, files_every=9, seed=seed)
    bucket = s3.new_bucket()
    env = s3_env(s3, bucket, db.parent)
    target = s3.target(bucket)
    kills = 0
    for _ in range(runs):
        before = _count(s3, bucket)
        if before >= len(expected):
            break
        step = rng.randint(1, max_step)
        proc = subprocess.Popen(
            [*_edgewatch(), "sync", "now", "--no-progress"],
            cwd=tmp_path,
            env=cli_env(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while proc.poll() is None and _count(s3, bucket) < before + step:
                assert time.monotonic() < deadline, "uploads did not progress"
                time.sleep(0.01)  # polling the bucket, bounded by the deadline
        finally:
            proc.kill()  # SIGKILL: no cleanup, no commit
            proc.wait()
        kills += 1
        partial = target.list_objects()
        assert set(partial) <= set(expected)
        assert all(partial[k] == expected[k] for k in partial)
    assert kills >= 1
    final = run_cli("sync", "now", "--json", cwd=tmp_path, env=env)
    assert final.returncode == 0, final.stderr
    assert target.list_objects() == expected
    assert orjson.loads(final.stdout)["remaining"] == 0


def test_sigkill_during_upload_loses_and_duplicates_nothing(tmp_path: Path, s3: S3Server) -> None:
    crash_and_recover(tmp_path, s3, runs=3, items=300, max_step=60, seed=11)


@pytest.mark.slow
def test_sigkill_twenty_times(tmp_path: Path, s3: S3Server) -> None:
    crash_and_recover(tmp_path, s3, runs=20, items=900, max_step=30, seed=12)
