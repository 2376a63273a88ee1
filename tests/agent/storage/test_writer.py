from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from sqlalchemy import Engine, Table, func, select

from agent import blocks
from agent import schema as t
from agent.domain import (
    Accepted,
    Alert,
    AlertKind,
    AssetState,
    AssetStatus,
    Batch,
    DeadLetter,
    Event,
    MessageRef,
    Prediction,
    Reading,
    RejectReason,
    Severity,
)
from agent.metrics import Metrics
from agent.sqlite import open_engine
from agent.storage import queries
from agent.storage.recorder import Recorder, RecorderConfig
from agent.storage.writer import (
    ASSET_ID_CACHE_MAX,
    Heartbeat,
    Item,
    Writer,
    dead_letter_digest,
)


@pytest.fixture
def engine(migrated_db: Path) -> Iterator[Engine]:
    engine = open_engine(migrated_db)
    yield engine
    engine.dispose()


def reading(ts: int, value: float = 1.0, asset: str = "p1") -> Reading:
    return Reading("s", asset, ts, {"x": value, "y": 2.0})


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        if table is t.reading_blocks:
            return blocks.count_readings(conn)
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def stored(engine: Engine, asset: str = "p1") -> list[blocks.Row]:
    with engine.connect() as conn:
        aid = conn.execute(select(t.assets.c.id).where(t.assets.c.name == asset)).scalar_one()
        return list(blocks.iter_readings(conn, aid))


def test_writes_are_idempotent(engine: Engine) -> None:
    writer = Writer(engine, site="s")
    batch: list[Item] = [
        Accepted(MessageRef(1, 1, 0), 10, readings=(reading(1000), reading(2000))),
        Prediction("p1", 2000, "m1", 1.1, 2.0, False, 80.0),
        Alert("p1", AlertKind.ANOMALY, Severity.WARNING, 2000, 3.0, 3.0, last_update_ms=2000),
    ]
    writer.write(batch, 99)
    writer.write(batch, 100)  # a redelivery after a crash
    assert count(engine, t.reading_blocks) == 2
    assert count(engine, t.predictions) == 1
    assert count(engine, t.alerts) == 1
    assert count(engine, t.assets) == 1


def test_alert_updates_and_asset_state(engine: Engine) -> None:
    writer = Writer(engine, site="s")
    opened = Alert("p1", AlertKind.ANOMALY, Severity.WARNING, 2000, 3.0, 3.0, last_update_ms=2000)
    writer.write([AssetStatus("p1", AssetState.HEALTHY, 1, "b1"), opened], 1)
    with engine.connect() as conn:
        assert conn.execute(select(t.assets.c.state)).scalar_one() == "alerting"
    closed = Alert(
        "p1",
        AlertKind.ANOMALY,
        Severity.CRITICAL,
        2000,
        5.0,
        1.0,
        closed_ms=9000,
        last_update_ms=9000,
    )
    writer.write([closed], 2)
    with engine.connect() as conn:
        row = conn.execute(select(t.alerts)).one()
        assert (row.closed_ms, row.peak_score, row.severity) == (9000, 5.0, "critical")
        asset = conn.execute(select(t.assets)).one()
        assert (asset.state, asset.baseline_version) == ("healthy", "b1")


def test_late_readings_are_judged_against_storage(engine: Engine) -> None:
    writer = Writer(engine, site="s", topic_for=lambda a: f"edgewatch/s/{a}/telemetry")
    writer.write([Accepted(None, 1, readings=(reading(1000, 1.0),))], 1)
    stats = writer.write(
        [
            Accepted(
                None,
                2,
                late=(
                    (reading(1000, 1.0), RejectReason.OUT_OF_ORDER),  # a redelivery
                    (reading(1000, 7.0), RejectReason.DUPLICATE),  # same ts, new values
                    (reading(500, 1.0), RejectReason.OUT_OF_ORDER),  # never stored
                ),
            )
        ],
        2,
    )
    assert stats.redelivered == 1
    assert stats.dead_letters == {"duplicate": 1, "out_of_order": 1}
    with engine.connect() as conn:
        rows = conn.execute(select(t.dead_letters.c.reason, t.dead_letters.c.topic)).all()
    assert sorted(rows) == [
        ("duplicate", "edgewatch/s/p1/telemetry"),
        ("out_of_order", "edgewatch/s/p1/telemetry"),
    ]


def test_values_read_back_as_sent_and_their_redelivery_is_recognised(engine: Engine) -> None:
    # Values are kept as float32 and read back by their shortest decimal form: what a
    # sensor sends with up to 7 significant digits comes back as sent, and the same
    # message delivered again is a redelivery, not a duplicate with other values.
    writer = Writer(engine, site="s")
    sent = {"z": -0.0, "a": 0.1, "b": 41.5, "c": 2938.125, 'é"x': 1.5, "e": 1e16}
    batch = tuple(Reading("s", "p1", 1000 * i, {**sent, "i": float(i)}) for i in range(1, 4))
    writer.write([Accepted(None, 7, readings=batch)], 1)
    assert stored(engine) == [(r.ts_ms, 7, r.values) for r in batch]
    stats = writer.write(
        [Accepted(None, 8, late=tuple((r, RejectReason.OUT_OF_ORDER) for r in batch))], 2
    )
    assert (stats.redelivered, stats.dead_letters) == (3, {})


def test_batches_as_columns_are_stored_as_their_readings_would_be(engine: Engine) -> None:
    # A decoded batch payload reaches the writer as columns (Batch); in one commit
    # with single readings of the same asset (in between, overlapping, redelivered),
    # what is stored is what the same readings one by one would have made.
    sent = {"b": 41.5, "a": 0.1, "c": -2938.125}
    first = [Reading("s", "p1", 1000 * i, {**sent, "i": float(i)}) for i in range(10)]
    single = Reading("s", "p1", 10_500, {**sent, "i": -1.0})
    again = [Reading("s", "p1", 1000 * i, {**sent, "i": 99.0}) for i in range(8, 14)]
    writer = Writer(engine, site="s")
    writer.write(
        [
            Accepted(None, 7, readings=Batch.of(first)),
            Accepted(None, 8, readings=(single,)),
            Accepted(None, 9, readings=Batch.of(again)),  # 8000 and 9000 again: first stays
        ],
        1,
    )
    want = sorted(
        [(r.ts_ms, 7, r.values) for r in first]
        + [(single.ts_ms, 8, single.values)]
        + [(r.ts_ms, 9, r.values) for r in again[2:]],
        key=lambda row: row[0],
    )
    assert stored(engine) == want
    with engine.connect() as conn:
        newest = conn.execute(select(t.assets.c.last_seen_ms)).scalar_one()
    assert newest == 13_000


def test_a_redelivered_batch_overlapping_stored_readings_stores_only_the_new_ones(
    engine: Engine,
) -> None:
    # After a crash between commit and ack the broker sends the batch again, and the
    # stream carries on: readings already stored (even in the middle of a block) are
    # skipped, the new ones kept, each timestamp once.
    writer = Writer(engine, site="s")
    writer.write([Accepted(None, 1, readings=tuple(reading(1000 * i) for i in range(10)))], 1)
    again = tuple(reading(1000 * i, 5.0) for i in range(5, 15))
    writer.write([Accepted(None, 2, readings=again)], 2)
    rows = stored(engine)
    assert [ts for ts, _, _ in rows] == [1000 * i for i in range(15)]
    assert [v["x"] for _, _, v in rows] == [1.0] * 10 + [5.0] * 5  # the first one stays


def test_readings_removed_behind_the_writers_back_are_stored_again_once(engine: Engine) -> None:
    # The writer remembers each asset's newest stored time instead of asking per
    # commit; when stored readings go away (retention, a rolled-back transaction) its
    # memory runs ahead of the database, which must cost lookups, never a loss or a
    # duplicate.
    writer = Writer(engine, site="s")
    writer.write([Accepted(None, 1, readings=tuple(reading(1000 * i) for i in range(10)))], 1)
    with engine.begin() as conn:
        conn.execute(t.reading_blocks.delete())
    writer.write([Accepted(None, 2, readings=tuple(reading(1000 * i) for i in range(5, 15)))], 2)
    writer.write([Accepted(None, 3, readings=tuple(reading(1000 * i) for i in range(12, 16)))], 3)
    assert [ts for ts, _, _ in stored(engine)] == [1000 * i for i in range(5, 16)]


def test_a_reading_older_than_the_newest_block_is_stored_in_time_order(engine: Engine) -> None:
    # A late reading inside the reorder window goes to a new block whose time range
    # overlaps the previous one; readers still see one time-ordered stream.
    writer = Writer(engine, site="s")
    writer.write([Accepted(None, 1, readings=(reading(1000), reading(3000)))], 1)
    writer.write([Accepted(None, 2, readings=(reading(2000), reading(4000)))], 2)
    assert [ts for ts, _, _ in stored(engine)] == [1000, 2000, 3000, 4000]
    with engine.connect() as conn:
        assert blocks.count_readings(conn, None, 1500, 3500) == 2
        aid = conn.execute(select(t.assets.c.id)).scalar_one()
        newest = [ts for ts, _, _ in blocks.iter_readings(conn, aid, newest_first=True)]
    assert newest == [4000, 3000, 2000, 1000]


def test_dead_letters_events_heartbeats(engine: Engine) -> None:
    writer = Writer(engine, site="s", dead_letter_max_bytes=4)
    letter = DeadLetter(5, "t/x", b"0123456789", 10, RejectReason.INVALID_JSON, "nope")
    writer.write(
        [
            Accepted(MessageRef(1, 1, 0), 5, rejected=letter),
            Event(6, "started", "agent started"),
            Heartbeat("gw", 1, "0.1", 1, 7, {"ok": True}),
            Heartbeat("gw", 1, "0.1", 1, 8, {"ok": True}),
        ],
        9,
    )
    with engine.connect() as conn:
        assert conn.execute(select(t.dead_letters.c.payload)).scalar_one() == b"0123"
        assert conn.execute(select(t.heartbeats.c.ts_ms)).scalar_one() == 8
    assert count(engine, t.events) == 1


def test_a_redelivered_dead_letter_is_stored_once(engine: Engine) -> None:
    # The crash between commit and ack: the broker sends the refused message again,
    # later, to a new process (a new Writer).
    letter = DeadLetter(5, "t/x", b"{not json", 9, RejectReason.INVALID_JSON, "nope", "x")
    Writer(engine, site="s").write([Accepted(MessageRef(1, 1, 0), 5, rejected=letter)], 9)
    again = DeadLetter(70, "t/x", b"{not json", 9, RejectReason.INVALID_JSON, "nope", "x")
    Writer(engine, site="s").write([Accepted(MessageRef(1, 1, 1), 70, rejected=again)], 80)
    with engine.connect() as conn:
        rows = conn.execute(select(t.dead_letters.c.received_ms, t.dead_letters.c.digest)).all()
    assert [r.received_ms for r in rows] == [5]  # the first delivery's row
    assert rows[0].digest == dead_letter_digest("t/x", "invalid_json", b"{not json", 9)


def test_a_redelivered_late_reading_is_one_dead_letter(engine: Engine) -> None:
    writer = Writer(engine, site="s", topic_for=lambda a: f"edgewatch/s/{a}/telemetry")
    writer.write([Accepted(None, 1, readings=(reading(1000, 1.0),))], 1)
    clash = Accepted(MessageRef(2, 1, 0), 2, late=((reading(1000, 7.0), RejectReason.DUPLICATE),))
    writer.write([clash], 2)
    writer.write([clash], 3)
    assert count(engine, t.dead_letters) == 1


def test_dead_letters_differ_by_topic_reason_and_payload(engine: Engine) -> None:
    letters = [
        DeadLetter(1, "t/x", b"a", 1, RejectReason.INVALID_JSON, ""),
        DeadLetter(1, "t/y", b"a", 1, RejectReason.INVALID_JSON, ""),
        DeadLetter(1, "t/x", b"b", 1, RejectReason.INVALID_JSON, ""),
        DeadLetter(1, "t/x", b"a", 1, RejectReason.SCHEMA, ""),
        # Same stored prefix, longer as received (truncated): another message.
        DeadLetter(1, "t/x", b"a", 5000, RejectReason.INVALID_JSON, ""),
    ]
    Writer(engine, site="s").write([Accepted(None, 1, rejected=d) for d in letters], 1)
    assert count(engine, t.dead_letters) == len(letters)


async def test_recorder_acks_each_message_only_once_its_rows_are_visible(
    engine: Engine, migrated_db: Path
) -> None:
    """At the moment a message is acknowledged, its rows must already be committed:
    looked at from another connection, as the agent's next life would see them."""
    deliveries = [
        Accepted(MessageRef(i, 1, 0), 1, readings=(reading(1000 * (i + 1)),)) for i in range(5)
    ]
    letter = DeadLetter(1, "t/bad", b"{", 1, RejectReason.INVALID_JSON, "nope")
    deliveries.append(Accepted(MessageRef(5, 1, 0), 1, rejected=letter))
    visible_at_ack: dict[int, bool] = {}
    done = asyncio.Event()
    observer = sqlite3.connect(migrated_db)

    def stored(item: Accepted) -> bool:
        if item.rejected is not None:
            sql = "SELECT count(*) FROM dead_letters WHERE topic = ?"
            row = observer.execute(sql, (item.rejected.topic,)).fetchone()
        else:
            sql = "SELECT count(*) FROM reading_blocks WHERE ? BETWEEN first_ts_ms AND last_ts_ms"
            row = observer.execute(sql, (item.readings[0].ts_ms,)).fetchone()
        return bool(row[0])

    by_mid = {d.ref.mid: d for d in deliveries if d.ref is not None}

    def on_committed(refs: Sequence[MessageRef]) -> None:
        for ref in refs:
            visible_at_ack[ref.mid] = stored(by_mid[ref.mid])
        if len(visible_at_ack) == len(deliveries):
            done.set()

    recorder = Recorder(
        Writer(engine, site="s"),
        RecorderConfig(commit_interval_ms=50, commit_max_rows=100, ack_batch=2),
        Metrics(),
        on_committed,
    )
    queue: asyncio.Queue[object] = asyncio.Queue()
    for item in deliveries:
        queue.put_nowait(item)
    task = asyncio.create_task(recorder.run(queue))  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(5):
            await done.wait()
    finally:
        await _cancelled(task)
        observer.close()
    assert visible_at_ack == {mid: True for mid in by_mid}


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Stop a recorder task; it ends by its cancellation, not by an error."""
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_commits_gather_longer_at_low_rates_and_not_under_load(engine: Engine) -> None:
    # Every commit rewrites a page per asset it touches: at plant rates a batch waits
    # (up to commit_max_wait_ms) for COMMIT_TARGET_ROWS rows; under load, and before
    # any rate is known, commit_interval_ms.
    config = RecorderConfig(commit_interval_ms=200, commit_max_wait_ms=10_000)
    recorder = Recorder(Writer(engine, site="s"), config, Metrics(), lambda refs: None)
    assert recorder.wait_s() == 0.2
    recorder._note_rate(10, 0.2)  # 50 rows a second: a quiet plant
    assert recorder.wait_s() == 10.0
    for _ in range(3):
        recorder._note_rate(25_000, 0.05)  # a flood
    assert recorder.wait_s() == 0.2
    for _ in range(20):
        recorder._note_rate(1_000, 1.0)  # in between: as long as 2,500 rows take
    assert recorder.wait_s() == pytest.approx(2.5, rel=0.01)
    recorder.flush()
    assert recorder.wait_s() == 0.0


async def test_flush_commits_what_waits_without_waiting_for_more(engine: Engine) -> None:
    # A quiet plant's batch may wait minutes for more rows; on stop the agent's
    # queues drain in seconds, so flush() ends the wait at once.
    committed = asyncio.Event()
    acked: list[int] = []

    def on_committed(refs: Sequence[MessageRef]) -> None:
        acked.extend(ref.mid for ref in refs)
        committed.set()

    config = RecorderConfig(commit_interval_ms=600_000, commit_max_wait_ms=600_000)
    recorder = Recorder(Writer(engine, site="s"), config, Metrics(), on_committed)
    queue: asyncio.Queue[object] = asyncio.Queue()
    task = asyncio.create_task(recorder.run(queue))  # type: ignore[arg-type]
    try:
        queue.put_nowait(Accepted(MessageRef(7, 1, 0), 1, readings=(reading(1000),)))
        async with asyncio.timeout(0.5):
            await queue.join()  # (times out: the batch is waiting for more)
    except TimeoutError:
        pass
    try:
        assert not committed.is_set()
        recorder.flush()
        async with asyncio.timeout(5):
            await queue.join()
    finally:
        await _cancelled(task)
    assert acked == [7]
    assert count(engine, t.reading_blocks) == 1


def test_no_outbox_items_without_sync(engine: Engine) -> None:
    writer = Writer(engine, site="s", outbox_enabled=False)
    opened = Alert("p1", AlertKind.ANOMALY, Severity.WARNING, 2000, 3.0, 3.0, last_update_ms=2000)
    writer.write([opened, Event(1, "started", "agent started")], 1)
    assert count(engine, t.alerts) == 1 and count(engine, t.events) == 1
    assert count(engine, t.outbox) == 0


def test_the_asset_id_cache_stays_bounded_through_an_asset_flood(engine: Engine) -> None:
    writer = Writer(engine, site="s")
    n = ASSET_ID_CACHE_MAX + 500
    for first in range(0, n, 1000):
        batch = [
            Accepted(None, 1, readings=(reading(1000, asset=f"fake-{i}"),))
            for i in range(first, min(first + 1000, n))
        ]
        writer.write(batch, 1)
        assert len(writer._asset_ids) <= ASSET_ID_CACHE_MAX + 1000
    assert count(engine, t.reading_blocks) == n
    # A name forgotten by the cache still finds its row (no second asset).
    writer.write([Accepted(None, 1, readings=(reading(2000, asset="fake-0"),))], 2)
    assert count(engine, t.assets) == n


def test_a_restart_primes_from_the_newest_stored_readings(engine: Engine) -> None:
    writer = Writer(engine, site="s")
    writer.write([Accepted(None, 1, readings=tuple(reading(1000 * i) for i in range(6)))], 1)
    writer.write([Accepted(None, 2, readings=tuple(reading(1000 * i) for i in range(6, 9)))], 2)
    writer.write([Prediction("p1", 8000, "m1", 1.1, 2.0, False, 80.0)], 3)
    primed, last_end = queries.recent_readings(engine, "s", "p1", 4)
    assert [r.ts_ms for r in primed] == [5000, 6000, 7000, 8000]
    assert primed[0] == reading(5000)
    assert last_end == 8000
    assert queries.recent_readings(engine, "s", "nobody", 4) == ([], None)
