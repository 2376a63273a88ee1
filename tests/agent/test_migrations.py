from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, func, insert, select

from agent import blocks
from agent import schema as tables
from agent.domain import Accepted, DeadLetter, MessageRef, Reading, RejectReason
from agent.errors import SchemaTooNewError, StorageError
from agent.sqlite import open_engine
from agent.storage import migrate
from agent.storage.writer import Writer, dead_letter_digest


def revisions_oldest_first() -> list[str]:
    return [r.revision for r in reversed(migrate.history())]


def test_upgrade_from_empty_creates_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "new" / "edgewatch.db"
    result = migrate.upgrade(path)
    assert result.from_revision is None
    assert result.to_revision == migrate.head_revision()
    assert result.backup is None  # nothing to back up in a new database
    engine = open_engine(path)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), tables.metadata)
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            fks = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
    finally:
        engine.dispose()
    assert diff == [], "migrations and agent/schema.py disagree"
    assert mode == "wal"
    assert fks == 1


@pytest.mark.parametrize("start", revisions_oldest_first()[:-1])
def test_upgrade_from_each_previous_revision_keeps_data_and_backs_up(
    tmp_path: Path, start: str
) -> None:
    path = tmp_path / "edgewatch.db"
    migrate.upgrade(path, start)
    engine = open_engine(path)
    with engine.begin() as conn:
        conn.execute(
            insert(tables.assets).values(
                site="s", name="pump-1", first_seen_ms=1, last_seen_ms=2, state="healthy"
            )
        )
    engine.dispose()

    result = migrate.upgrade(path)
    assert result.changed
    assert result.from_revision == start
    assert result.backup is not None and result.backup.is_file()
    with sqlite3.connect(result.backup) as copy:
        rows = copy.execute("SELECT name FROM assets").fetchall()
        version = copy.execute("SELECT version_num FROM alembic_version").fetchone()
    assert rows == [("pump-1",)]
    assert version == (start,)

    engine = open_engine(path)
    with engine.connect() as conn:
        names = conn.execute(select(tables.assets.c.name)).scalars().all()
    engine.dispose()
    assert names == ["pump-1"]


def test_upgrade_at_head_is_a_no_op_without_backup(migrated_db: Path) -> None:
    result = migrate.upgrade(migrated_db)
    assert not result.changed
    assert result.backup is None
    assert not (migrated_db.parent / migrate.BACKUP_DIR_NAME).exists()


def test_downgrade_to_base_and_back(migrated_db: Path) -> None:
    migrate.downgrade(migrated_db, "base")
    engine = open_engine(migrated_db)
    try:
        assert migrate.current_revision(engine) is None
    finally:
        engine.dispose()
    assert migrate.upgrade(migrated_db).to_revision == migrate.head_revision()


def test_database_newer_than_code_is_refused(migrated_db: Path) -> None:
    with sqlite3.connect(migrated_db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(SchemaTooNewError, match="newer than this edgewatch"):
        migrate.upgrade(migrated_db)
    with pytest.raises(SchemaTooNewError):
        migrate.ensure_current(migrated_db)


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE stuff (x)")
    with pytest.raises(StorageError, match="no edgewatch schema version"):
        migrate.upgrade(path)


def test_garbage_file_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "edgewatch.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StorageError, match="not an SQLite database"):
        migrate.upgrade(path)
    assert path.read_bytes().startswith(b"this is not sqlite")


def test_ensure_current_refuses_an_old_schema(tmp_path: Path) -> None:
    path = tmp_path / "edgewatch.db"
    migrate.upgrade(path, revisions_oldest_first()[0])
    with pytest.raises(StorageError, match="edgewatch db upgrade"):
        migrate.ensure_current(path)


def test_missing_database_is_not_created_by_readers(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_engine(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


def test_head_revision_constant_is_the_newest_script() -> None:
    # The constant lets a current database open without Alembic; a new migration
    # must move it too.
    assert migrate.head_revision() == migrate.HEAD_REVISION


def test_the_agent_process_loads_no_heavy_library(tmp_path: Path) -> None:
    """What `edgewatch run` imports on a current database: no torch, pandas, pyarrow,
    matplotlib or Alembic (their RSS would count against a 1 GB gateway)."""
    db = tmp_path / "edgewatch.db"
    migrate.upgrade(db)
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "import agent.cli.app, agent.runtime\n"
        "from agent.storage import migrate\n"
        f"migrate.upgrade(Path({str(db)!r}))\n"
        f"migrate.ensure_current(Path({str(db)!r})).dispose()\n"
        "heavy = ('torch', 'pandas', 'pyarrow', 'matplotlib', 'alembic', 'simulators.stream')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == []


def test_dead_letters_stored_twice_before_0005_collapse_to_one(tmp_path: Path) -> None:
    """Rows a redelivery duplicated under 0004 migrate to one row each (the first), and
    afterwards the same refused message cannot be stored twice."""
    path = tmp_path / "edgewatch.db"
    migrate.upgrade(path, "0004")
    rows = [
        (10, "edgewatch/s/p1/telemetry", b"{bad", 4, "invalid_json"),
        (20, "edgewatch/s/p1/telemetry", b"{bad", 4, "invalid_json"),  # its redelivery
        (30, "edgewatch/s/p2/telemetry", b"{bad", 4, "invalid_json"),
        (40, "edgewatch/s/p1/telemetry", b"{bad", 4, "schema"),
    ]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO dead_letters (received_ms, topic, payload, payload_size, reason) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    migrate.upgrade(path)
    with sqlite3.connect(path) as conn:
        kept = conn.execute(
            "SELECT received_ms, topic, reason, digest FROM dead_letters ORDER BY id"
        ).fetchall()
        viewed = conn.execute("SELECT count(*) FROM v_dead_letters").fetchone()
    assert [(r[0], r[1], r[2]) for r in kept] == [
        (10, "edgewatch/s/p1/telemetry", "invalid_json"),
        (30, "edgewatch/s/p2/telemetry", "invalid_json"),
        (40, "edgewatch/s/p1/telemetry", "schema"),
    ]
    # The migration's frozen digest is the writer's: new deliveries meet old rows.
    assert [r[3] for r in kept] == [
        dead_letter_digest(topic, reason, payload, size)
        for _, topic, payload, size, reason in (rows[0], rows[2], rows[3])
    ]
    assert viewed == (3,)
    engine = open_engine(path)
    try:
        letter = DeadLetter(99, rows[0][1], b"{bad", 4, RejectReason.INVALID_JSON, "")
        Writer(engine, site="s").write([Accepted(MessageRef(1, 1, 0), 99, rejected=letter)], 99)
        with engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(tables.dead_letters)).scalar()
    finally:
        engine.dispose()
    assert total == 3

    migrate.downgrade(path, "0004")
    with sqlite3.connect(path) as conn:
        columns = [c[1] for c in conn.execute("PRAGMA table_info(dead_letters)")]
        assert conn.execute("SELECT count(*) FROM v_dead_letters").fetchone() == (3,)
    assert "digest" not in columns


def _rows_0006(count: int) -> list[tuple[int, int, int, str]]:
    """readings rows as 0006 stored them: two assets, a sensor missing now and then,
    more than one block's worth for the first asset."""
    rows = []
    for i in range(count):
        values: dict[str, float] = {"temp_c": 40 + i % 7 * 0.25, "flow_m3_h": 100.5 + i % 3}
        if i % 5 == 0:
            del values["flow_m3_h"]
        rows.append((1, 1_000 * i, 1_000 * i + 7, json.dumps(values, sort_keys=True)))
    rows += [(2, 5_000 * i, 5_000 * i, json.dumps({"x_bar": -1.125 * i})) for i in range(30)]
    return rows


def _values(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in json.loads(text).items()}


def test_0007_moves_readings_into_blocks_and_back(tmp_path: Path) -> None:
    """Every row of 0006's readings table is a reading in a block after 0007, and a row
    again after downgrading: same times, same values (as sent, up to 7 digits)."""
    path = tmp_path / "edgewatch.db"
    migrate.upgrade(path, "0006")
    rows = _rows_0006(blocks.MAX_BLOCK_READINGS + 100)
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO assets (id, site, name, first_seen_ms, last_seen_ms) "
            "VALUES (?, 's', ?, 0, 0)",
            [(1, "pump-1"), (2, "rig-2")],
        )
        conn.executemany(
            "INSERT INTO readings (asset_id, ts_ms, received_ms, values_json) VALUES (?, ?, ?, ?)",
            rows,
        )

    migrate.upgrade(path)
    engine = open_engine(path)
    try:
        with engine.connect() as conn:
            moved = [
                (aid, ts, rec, values)
                for aid in (1, 2)
                for ts, rec, values in blocks.iter_readings(conn, aid)
            ]
            per_block = conn.execute(
                select(tables.reading_blocks.c.asset_id, tables.reading_blocks.c.count)
            ).all()
        assert moved == [(a, ts, rec, _values(v)) for a, ts, rec, v in rows]
        assert sorted(per_block) == [(1, 100), (1, blocks.MAX_BLOCK_READINGS), (2, 30)]
        # A redelivery after the upgrade meets the moved readings: nothing is added.
        again = Reading("s", "pump-1", 2_000, _values(rows[2][3]))
        Writer(engine, site="s").write([Accepted(MessageRef(1, 1, 0), 9, readings=(again,))], 9)
        with engine.connect() as conn:
            assert blocks.count_readings(conn) == len(rows)
    finally:
        engine.dispose()
    with sqlite3.connect(path) as conn:
        tables_now = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        viewed = conn.execute(
            "SELECT asset, sum(readings) FROM v_reading_blocks GROUP BY asset ORDER BY asset"
        ).fetchall()
    assert "readings" not in tables_now and "v_readings" not in tables_now
    assert viewed == [("pump-1", blocks.MAX_BLOCK_READINGS + 100), ("rig-2", 30)]

    migrate.downgrade(path, "0006")
    with sqlite3.connect(path) as conn:
        back = conn.execute(
            "SELECT asset_id, ts_ms, received_ms, values_json FROM readings "
            "ORDER BY asset_id, ts_ms"
        ).fetchall()
        viewed_rows = conn.execute("SELECT count(*) FROM v_readings").fetchone()
        tables_now = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert [(a, ts, rec, _values(v)) for a, ts, rec, v in back] == [
        (a, ts, rec, _values(v)) for a, ts, rec, v in rows
    ]
    assert viewed_rows == (len(rows),)
    assert not tables_now & {"reading_blocks", "sensor_sets", "v_reading_blocks"}


def test_0010_downgrade_rewrites_blocks_in_the_format_older_agents_read(tmp_path: Path) -> None:
    """Blocks written at 0010 (format 2) are format 1 after downgrading to 0009, with
    every reading unchanged; blocks already in format 1 are left as they are."""
    path = tmp_path / "edgewatch.db"
    migrate.upgrade(path)
    engine = open_engine(path)
    decimals = [
        Reading("s", "pump-1", 1_000 * i, {"temp_c": 40 + i / 100, "vib": 0.1 * (i % 7)})
        for i in range(1, 300)
    ]
    try:
        writer = Writer(engine, site="s")
        writer.write([Accepted(MessageRef(1, 1, 0), 5, readings=tuple(decimals))], 5)
        with engine.begin() as conn:
            old = blocks.from_rows([(500_000, 6, {"temp_c": 1.5})])
            conn.execute(
                insert(tables.reading_blocks).values(
                    asset_id=1,
                    first_ts_ms=500_000,
                    last_ts_ms=500_000,
                    count=1,
                    sensor_set_id=blocks.SensorSets().id_of(conn, old.sensors),
                    data=blocks.encode(old, version=1),
                )
            )
        with engine.connect() as conn:
            before = list(blocks.iter_readings(conn, 1))
            formats = [blocks.format_of(d) for d in _block_data(conn)]
        assert sorted(formats) == [1, 2]
    finally:
        engine.dispose()

    migrate.downgrade(path, "0009")
    engine = open_engine(path)
    try:
        with engine.connect() as conn:
            assert [blocks.format_of(d) for d in _block_data(conn)] == [1, 1]
            assert list(blocks.iter_readings(conn, 1)) == before
    finally:
        engine.dispose()
    assert migrate.upgrade(path).to_revision == migrate.head_revision()


def _block_data(conn: Connection) -> list[bytes]:
    return [bytes(d) for d in conn.execute(select(tables.reading_blocks.c.data)).scalars()]
