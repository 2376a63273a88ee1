"""The reading block codec and the one reading path (agent/blocks.py), on real SQLite files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Connection, Engine, delete, event, insert, select

from agent import blocks
from agent import schema as t
from agent.sqlite import open_engine


@pytest.fixture
def engine(migrated_db: Path) -> Iterator[Engine]:
    engine = open_engine(migrated_db)
    with engine.begin() as conn:
        for name in ("a", "b"):
            conn.execute(
                insert(t.assets).values(site="s", name=name, first_seen_ms=0, last_seen_ms=0)
            )
    yield engine
    engine.dispose()


def test_a_block_decodes_to_what_was_encoded() -> None:
    rows: list[blocks.Row] = [
        (1_000, 5, {"temp_c": 41.5, "vib": 0.1}),
        (1_010, 5, {"temp_c": -3.25}),  # vib not carried: NaN in the block, absent back
        (3_000_000_000_000, 9, {"vib": 1e-7, "temp_c": 2938.125}),
    ]
    block = blocks.from_rows(rows)
    assert block.sensors == ("temp_c", "vib")
    back = blocks.decode(blocks.encode(block), block.sensors)
    assert list(back.rows()) == rows


def test_the_newest_format_refuses_a_block_it_cannot_read() -> None:
    block = blocks.from_rows([(1, 1, {"x": 1.0})])
    with pytest.raises(ValueError, match="not readable"):
        blocks.decode(blocks.encode(block), ("x", "y"))


def test_steady_readings_compress_well_below_a_row_each() -> None:
    rng = np.random.default_rng(3)
    rows: list[blocks.Row] = [
        (1_000 * i, 1_000 * (i // 100), {f"s{j}": round(50 + rng.normal(), 2) for j in range(7)})
        for i in range(1_000)
    ]
    block = blocks.from_rows(rows)
    size = len(blocks.encode(block))
    as_floats = len(blocks.encode(block, version=1))
    # float32 values of 7 sensors are 28 bytes raw; times cost almost nothing; values
    # sent with 2 decimals are stored as integers, in far fewer bytes than as floats.
    assert as_floats / len(rows) < 28
    assert size < 0.7 * as_floats
    assert size / len(rows) < 16


def test_columns_are_stored_as_decimals_where_exact_and_read_back_bit_for_bit() -> None:
    rng = np.random.default_rng(5)
    n = 500
    columns = {
        "two_places": np.round(50 + rng.normal(size=n), 2),
        "whole": np.round(rng.normal(size=n) * 1000),
        "six_places": np.round(rng.random(n), 6),
        "large": np.round(2900 + rng.random(n) * 100, 3),
        "full_float": rng.normal(size=n),
        "too_large": 1e16 + rng.random(n) * 1e10,
        "negative_zero": np.where(np.arange(n) == 7, -0.0, np.round(rng.normal(size=n), 1)),
    }
    names = sorted(columns)
    values = np.stack([columns[name] for name in names], axis=1).astype(np.float32)
    values[3, names.index("whole")] = np.nan  # not carried by one reading
    block = blocks.Block(
        np.arange(n, dtype=np.int64) * 1000, np.zeros(n, np.int64), tuple(names), values
    )
    places = dict(zip(names, blocks.decimal_places(values).tolist(), strict=True))
    assert places == {
        "two_places": 2,
        "whole": -1,  # a missing value: stored as floats
        "six_places": 6,
        "large": 3,
        "full_float": -1,
        "too_large": -1,
        "negative_zero": 1,  # -0.0 is 0: the same number
    }
    whole = names.index("whole")
    assert blocks.decimal_places(values[4:, whole : whole + 1]).tolist() == [0]
    back = blocks.decode(blocks.encode(block), block.sensors)
    # The same values, bit for bit but for -0.0, which reads back as 0.0.
    zero = names.index("negative_zero")
    assert back.values[7, zero] == 0.0 and not np.signbit(back.values[7, zero])
    values[:, zero] += np.float32(0.0)  # -0.0 + 0.0 is 0.0
    assert np.array_equal(back.values.view(np.uint32), values.view(np.uint32))
    assert np.array_equal(back.ts_ms, block.ts_ms)
    # A column whose first values have fewer places than the rest.
    late = np.concatenate([np.full(100, 5.0), np.round(rng.normal(size=100), 3)])
    assert blocks.decimal_places(late.astype(np.float32)[:, None]).tolist() == [3]
    # Too few readings to guess from a head: the same verdicts.
    short = values[:40].copy()
    short[3, whole] = 1.0
    assert blocks.decimal_places(short).tolist() == [-1, 3, 1, 6, -1, 2, 0]


def test_blocks_of_the_first_format_are_still_read() -> None:
    rows: list[blocks.Row] = [(1_000, 5, {"temp_c": 41.5, "vib": 0.1}), (2_000, 5, {"vib": 2.0})]
    block = blocks.from_rows(rows)
    old = blocks.encode(block, version=1)
    assert (blocks.format_of(old), blocks.format_of(blocks.encode(block))) == (1, 2)
    assert list(blocks.decode(old, block.sensors).rows()) == rows


def readings(conn: Connection, asset: int = 1, **kw: object) -> list[blocks.Row]:
    return list(blocks.iter_readings(conn, asset, **kw))  # type: ignore[arg-type]


def test_large_writes_are_split_into_bounded_blocks(engine: Engine) -> None:
    n = 2 * blocks.MAX_BLOCK_READINGS + 5
    rows: list[blocks.Row] = [(i, i, {"x": float(i % 100)}) for i in range(n)]
    with engine.begin() as conn:
        assert blocks.insert_readings(conn, 1, rows) == n
        counts = conn.execute(select(t.reading_blocks.c.count)).scalars().all()
        assert sorted(counts) == [5, blocks.MAX_BLOCK_READINGS, blocks.MAX_BLOCK_READINGS]
        assert readings(conn) == rows
        # Written again (a redelivered backlog): not one reading is added.
        assert blocks.insert_readings(conn, 1, rows) == 0
        assert blocks.count_readings(conn) == n


def test_ranges_count_and_order_across_assets(engine: Engine) -> None:
    with engine.begin() as conn:
        blocks.insert_readings(conn, 1, [(ts, ts, {"x": 1.0}) for ts in (10, 20, 30)])
        blocks.insert_readings(conn, 2, [(ts, ts, {"y": 2.0}) for ts in (15, 25)])
        blocks.insert_readings(conn, 1, [(ts, ts, {"x": 3.0}) for ts in (25, 40)])
        assert [r[0] for r in readings(conn, since_ms=20, until_ms=40)] == [20, 25, 30]
        assert blocks.count_readings(conn, [1], 20, 40) == 3
        assert blocks.count_readings(conn) == 7
        merged = [
            (int(owner), int(ts))
            for owners, block in blocks.read_all_blocks(conn, newest_first=True)
            for owner, ts in zip(owners, block.ts_ms, strict=True)
        ]
        assert merged == [(1, 40), (1, 30), (2, 25), (1, 25), (1, 20), (2, 15), (1, 10)]
        assert blocks.first_ts(conn, 1, 21, None) == 25
        assert blocks.stored_values(conn, 2, 25) == {"y": 2.0}
        assert blocks.stored_values(conn, 2, 26) is None


def test_trimming_keeps_the_newer_part_of_a_straddling_block(engine: Engine) -> None:
    with engine.begin() as conn:
        blocks.insert_readings(conn, 1, [(ts, ts, {"x": float(ts)}) for ts in range(0, 100, 10)])
        blocks.insert_readings(conn, 2, [(ts, ts, {"x": 1.0}) for ts in (1, 2)])
        touched, removed = blocks.trim_before(conn, 45, limit=10)
        assert (touched, removed) == (2, 5 + 2)
        assert [r[0] for r in readings(conn)] == [50, 60, 70, 80, 90]
        assert readings(conn, asset=2) == []
        first = conn.execute(select(t.reading_blocks.c.first_ts_ms)).scalar_one()
        assert first == 50


def test_a_timestamp_repeated_in_one_write_is_stored_once_the_first(engine: Engine) -> None:
    rows: list[blocks.Row] = [(30, 1, {"x": 3.0}), (10, 1, {"x": 1.0}), (30, 2, {"x": 9.0})]
    with engine.begin() as conn:
        assert blocks.insert_readings(conn, 1, rows) == 2
        assert readings(conn) == [(10, 1, {"x": 1.0}), (30, 1, {"x": 3.0})]


def test_small_blocks_are_merged_without_changing_a_reading(engine: Engine) -> None:
    # Plant rates: a reading or two per asset per transaction, one tiny block each.
    with engine.begin() as conn:
        for ts in range(0, 3000, 10):
            blocks.insert_readings(conn, 1, [(ts, ts + 1, {"x": ts / 10, "y": 0.5})])
            blocks.insert_readings(conn, 2, [(ts + 5, ts, {"z": 1.25} if ts % 20 else {"w": 2.0})])
        before = {aid: readings(conn, aid) for aid in (1, 2)}
        big = blocks.from_rows([(5000 + i, 0, {"x": 1.0}) for i in range(blocks.COMPACT_BELOW)])
        blocks.write_blocks(conn, 1, big, blocks.SensorSets())  # large enough: left alone
    with engine.begin() as conn:
        assert blocks.compact(conn, limit=10_000) == (600, 2)
        assert blocks.compact(conn, limit=10_000) == (0, 0)
        after = {aid: readings(conn, aid) for aid in (1, 2)}
        counts = conn.execute(select(t.reading_blocks.c.asset_id, t.reading_blocks.c.count)).all()
    assert after == {
        1: before[1] + list(big.rows()),
        2: before[2],
    }
    assert sorted(counts) == [(1, 300), (1, blocks.COMPACT_BELOW), (2, 300)]


def test_a_reader_sees_one_snapshot_while_blocks_are_merged_beside_it(engine: Engine) -> None:
    # The agent merges small blocks (retention) while the sync stage, a report or
    # `records readings` read the same asset on their own connections. The reader
    # lists the blocks first and fetches their data a few at a time: a merge committed
    # in between must not make a listed block vanish under it.
    with engine.begin() as conn:
        for ts in range(0, 3000, 10):
            blocks.insert_readings(conn, 1, [(ts, ts + 1, {"x": ts / 10})])
    with engine.connect() as conn:
        expected = readings(conn)
    reader = engine.connect()
    try:
        stream = blocks.iter_readings(reader, 1)
        seen = [next(stream)]
        with engine.begin() as other:
            assert blocks.compact(other, limit=10_000)[0] == 300
        seen += list(stream)
    finally:
        reader.close()
    assert seen == expected
    with engine.connect() as conn:
        assert readings(conn) == expected


def test_the_places_of_the_last_block_are_kept_while_they_fit() -> None:
    rng = np.random.default_rng(8)
    values = np.stack(
        [
            np.round(rng.normal(size=300), 2),
            np.round(rng.normal(size=300), 1),
            rng.normal(size=300),
        ],
        axis=1,
    ).astype(np.float32)
    # A hint with more places than needed still fits (larger integers, same values); one
    # with too few, or none, is searched again.
    hint = np.array([3, 0, -1], dtype=np.int64)
    assert blocks.decimal_places(values, hint).tolist() == [3, 1, -1]
    memo: blocks.PlacesMemo = {}
    block = blocks.Block(
        np.arange(300, dtype=np.int64), np.zeros(300, np.int64), ("a", "b", "c"), values
    )
    for part in (block.take(slice(0, 150)), block.take(slice(150, 300))):
        back = blocks.decode(blocks.encode(part, memo=memo), part.sensors)
        assert np.array_equal(back.values, part.values)  # -0.0 reads back as 0.0
    assert memo[("a", "b", "c")].tolist() == [2, 1, -1]


def test_a_block_dropped_while_compaction_runs_is_not_merged_back(
    engine: Engine, migrated_db: Path
) -> None:
    # The disk budget drops the oldest block (another connection, committed) after
    # compaction has chosen its blocks and before it deletes them: the merged block
    # holds only the readings still stored, the dropped ones do not come back.
    with engine.begin() as conn:
        for i in range(3):
            blocks.insert_readings(conn, 1, [(1_000 * (i + 1), 0, {"x": float(i)})])
        oldest = (
            conn.execute(select(t.reading_blocks.c.id).order_by(t.reading_blocks.c.first_ts_ms))
            .scalars()
            .first()
        )
    other = open_engine(migrated_db)
    dropped: list[int] = []

    def budget_drop(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.startswith("DELETE FROM reading_blocks") and not dropped:
            with other.begin() as side:
                side.execute(delete(t.reading_blocks).where(t.reading_blocks.c.id == oldest))
            dropped.append(1)

    event.listen(engine, "before_cursor_execute", budget_drop)
    try:
        with engine.begin() as conn:
            assert blocks.compact(conn, 100) == (2, 1)
    finally:
        event.remove(engine, "before_cursor_execute", budget_drop)
        other.dispose()
    with engine.connect() as conn:
        assert readings(conn) == [(2_000, 0, {"x": 1.0}), (3_000, 0, {"x": 2.0})]
