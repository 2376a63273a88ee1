"""Disk budget: fill past it offline; what was dropped is exactly what the ledger says."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
from sqlalchemy import func, insert, select

from agent import blocks, outbox
from agent import schema as t
from agent.sqlite import open_engine
from agent.sync.budget import Housekeeper, disk_usage
from tests.agent.sync.conftest import AGENT, SITE, enqueue_file

MB = 1024 * 1024
BUDGET = 3 * MB
TOLERANCE = 0.05
T0 = 1_763_856_000_000


def test_fill_past_the_budget_then_drop_by_policy(migrated_db: Path) -> None:
    data_dir = migrated_db.parent
    engine = open_engine(migrated_db, create=False)
    keeper = Housekeeper(engine, data_dir, site=SITE, agent=AGENT, budget_bytes=BUDGET, ttl_days={})
    with engine.begin() as conn:
        aid = conn.execute(
            insert(t.assets)
            .values(site=SITE, name="pump-1", first_seen_ms=T0, last_seen_ms=T0)
            .returning(t.assets.c.id)
        ).scalar_one()
    enqueued: dict[str, str] = {}
    readings = 0
    reading_value = orjson.dumps({f"s{i}": 1.0 + i for i in range(12)}).decode()
    # Offline for a long time: every kind keeps arriving, the budget is enforced
    # periodically as the sync stage does, and the last fill overshoots it.
    for round_ in range(12):
        with engine.begin() as conn:
            blocks.insert_readings(
                conn,
                aid,
                [(T0 + (readings + i) * 100, 0, orjson.loads(reading_value)) for i in range(2000)],
            )
            readings += 2000
            for i in range(40):
                n = round_ * 40 + i
                kind = (outbox.SUMMARY, outbox.EVENT, outbox.ALERT, outbox.RETRAINING)[n % 4]
                key = outbox.item_key(
                    site=SITE,
                    agent=AGENT,
                    kind=kind,
                    ts_ms=T0 + n * 1000,
                    asset="pump-1",
                    name=f"{n}.bin",
                )
                if kind == outbox.RETRAINING:
                    body = os.urandom(48 * 1024)
                    enqueue_file(conn, data_dir, key=key, kind=kind, created_ms=T0 + n, body=body)
                else:
                    size = 256 if kind == outbox.ALERT else 6 * 1024
                    outbox.enqueue(
                        conn, key=key, kind=kind, created_ms=T0 + n, body=os.urandom(size)
                    )
                enqueued[key] = kind
        if round_ in (2, 5, 8):
            keeper.enforce_budget()
    assert disk_usage(engine, data_dir) > BUDGET  # the last fill went past it
    report = keeper.enforce_budget()

    used = disk_usage(engine, data_dir)
    assert used <= BUDGET * (1 + TOLERANCE)
    assert report.used_after == used

    with engine.connect() as conn:
        pending = set(
            conn.execute(
                select(t.outbox.c.object_key).where(t.outbox.c.state == outbox.PENDING)
            ).scalars()
        )
        ledger = conn.execute(select(t.loss_ledger)).all()
        left_readings = blocks.count_readings(conn)
        ledger_items = conn.execute(
            select(func.count()).select_from(t.outbox).where(t.outbox.c.kind == outbox.LEDGER)
        ).scalar_one()
    dropped = {k for k in enqueued if k not in pending}
    in_ledger = [k for row in ledger for k in orjson.loads(row.detail_json).get("keys", [])]
    assert dropped, "nothing was dropped"
    assert sorted(in_ledger) == sorted(dropped)  # exactly, and each once
    assert all(row.reason == "disk_budget" for row in ledger)
    assert sum(r.items for r in ledger if r.kind != "readings") == len(dropped)
    assert sum(r.items for r in ledger if r.kind == "readings") == readings - left_readings
    assert ledger_items == len(ledger)  # every ledger entry is synced too
    assert not any(enqueued[k] == outbox.ALERT for k in dropped)  # never for space
    # Lowest priority first: retraining files went before any summary or event.
    kinds = {enqueued[k] for k in dropped}
    assert outbox.RETRAINING in kinds
    if outbox.SUMMARY in kinds:
        assert not any(enqueued[k] == outbox.RETRAINING for k in pending)
    # Files of dropped items are gone from the disk.
    for key in dropped:
        assert not (data_dir / outbox.OUTBOX_DIR / key).exists()
    engine.dispose()


def test_ttl_drops_old_items_with_a_ledger_entry(migrated_db: Path) -> None:
    engine = open_engine(migrated_db, create=False)
    now = T0 + 10 * 86_400_000
    with engine.begin() as conn:
        for i, age_days in enumerate((1, 3, 6)):
            outbox.enqueue(
                conn,
                key=f"k{i}",
                kind=outbox.SUMMARY,
                created_ms=now - age_days * 86_400_000,
                body=b"x" * 10,
            )
    keeper = Housekeeper(
        engine,
        migrated_db.parent,
        site=SITE,
        agent=AGENT,
        budget_bytes=10**9,
        ttl_days={"summary": 2.0},
    )
    assert keeper.apply_ttl(now) == {"summary": 2}
    with engine.connect() as conn:
        ledger = conn.execute(select(t.loss_ledger)).one()
    assert ledger.reason == "ttl" and ledger.items == 2
    assert sorted(orjson.loads(ledger.detail_json)["keys"]) == ["k1", "k2"]
    engine.dispose()
