"""Outbox files: orphans left by a crash are swept; a lost body becomes a ledger entry."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
from sqlalchemy import select

from agent import outbox
from agent import schema as t
from agent.sqlite import open_engine
from agent.sync.budget import Housekeeper
from agent.sync.targets import FileTarget
from agent.sync.uploader import Uploader
from tests.agent.sync.conftest import AGENT, SITE, fill_backlog


def test_orphan_files_are_swept_and_pending_ones_kept(migrated_db: Path) -> None:
    data_dir = migrated_db.parent
    expected = fill_backlog(migrated_db, 20, body_bytes=64, files_every=5)
    # A crash between the exporter's rename and its commit leaves such a file.
    orphan = data_dir / outbox.OUTBOX_DIR / "plant-a/gw-1/retraining/x/orphan.parquet"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"never committed")
    engine = open_engine(migrated_db, create=False)
    keeper = Housekeeper(engine, data_dir, site=SITE, agent=AGENT, budget_bytes=10**9, ttl_days={})
    assert keeper.sweep_orphans() == 0  # too young: it may be mid-export
    assert keeper.sweep_orphans(min_age_s=0) == 1
    assert not orphan.exists()
    files = {p.relative_to(data_dir / "outbox").as_posix() for p in data_dir.rglob("*.bin")}
    assert files == {k for k in expected if "/retraining/" in k}
    engine.dispose()


def test_an_item_whose_file_vanished_is_recorded_as_lost(migrated_db: Path, tmp_path: Path) -> None:
    data_dir = migrated_db.parent
    expected = fill_backlog(migrated_db, 10, body_bytes=64, files_every=5)
    lost = sorted(k for k in expected if "/retraining/" in k)[0]
    (data_dir / outbox.OUTBOX_DIR / lost).unlink()
    engine = open_engine(migrated_db, create=False)
    target = FileTarget(tmp_path / "cloud")
    report = asyncio.run(Uploader(engine, target, data_dir).drain())
    assert report.error is None
    objects = target.list_objects()
    ledger_keys = [k for k in objects if "/ledger/" in k]
    assert len(ledger_keys) == 1
    entry = orjson.loads(objects[ledger_keys[0]])
    assert entry["reason"] == "missing_body" and entry["detail"]["keys"] == [lost]
    assert {k: v for k, v in objects.items() if "/ledger/" not in k} == {
        k: v for k, v in expected.items() if k != lost
    }
    with engine.connect() as conn:
        state = conn.execute(
            select(t.outbox.c.state).where(t.outbox.c.object_key == lost)
        ).scalar_one()
    assert state == outbox.DROPPED
    engine.dispose()
