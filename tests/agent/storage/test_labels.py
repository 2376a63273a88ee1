"""Operator labels and acknowledgements: rows, outbox items, CLI, views, export, budget."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, insert, select

from agent import outbox
from agent import schema as t
from agent.cli.app import main
from agent.domain import Accepted, Alert, AlertKind, Reading, Severity
from agent.sqlite import open_engine
from agent.storage import labels, migrate
from agent.storage.retention import RetentionPolicy, apply_retention
from agent.storage.writer import Writer
from agent.sync.budget import Housekeeper
from agent.sync.retraining import HOUR_MS, RetrainingConfig, RetrainingExporter

SITE = "plant-a"
AGENT = "gw-1"
T0 = 1_763_856_000_000  # an hour boundary
MIN = 60_000


def _alerting_db(path: Path) -> Engine:
    """pump-7 with an hour of readings and one closed alert (id 1) at T0 + 30 min."""
    engine = open_engine(path, create=False)
    with engine.begin() as conn:  # commissioned: the exporter holds back a new asset
        conn.execute(
            insert(t.assets).values(
                site=SITE, name="pump-7", first_seen_ms=T0, last_seen_ms=T0, state="healthy"
            )
        )
    writer = Writer(engine, site=SITE, agent=AGENT)
    readings = tuple(Reading(SITE, "pump-7", T0 + i * MIN, {"temp_c": 40.0 + i}) for i in range(60))
    alert = Alert(
        "pump-7",
        AlertKind.ANOMALY,
        Severity.WARNING,
        T0 + 30 * MIN,
        3.0,
        3.0,
        closed_ms=T0 + 31 * MIN,
        last_update_ms=T0 + 31 * MIN,
    )
    writer.write([Accepted(None, T0, readings=readings), alert], T0)
    return engine


def _label_items(engine: Engine) -> list[Any]:
    o = t.outbox
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(o.c.object_key, o.c.payload, o.c.priority, o.c.created_ms)
                .where(o.c.kind == outbox.LABEL)
                .order_by(o.c.id)
            ).all()
        )


def test_a_label_is_a_row_and_an_outbox_item_with_the_contracted_body(
    migrated_db: Path,
) -> None:
    engine = _alerting_db(migrated_db)
    done = labels.label_alert(
        engine, 1, "fault", agent=AGENT, note=" bearing worn ", by="ana", now_ms=T0 + 2 * HOUR_MS
    )
    assert done.label == labels.Label(1, "fault", "bearing worn", "ana", T0 + 2 * HOUR_MS)
    assert done.acknowledged  # labelling acknowledges an unacknowledged alert
    [item] = _label_items(engine)
    opened = T0 + 30 * MIN
    assert item.object_key == outbox.item_key(
        site=SITE,
        agent=AGENT,
        kind="label",
        ts_ms=opened,
        asset="pump-7",
        name=f"{outbox.iso_ms(opened)}-1-{T0 + 2 * HOUR_MS}.json",
    )
    assert item.object_key == done.key
    assert outbox.PRIORITY[outbox.ALERT] < item.priority < outbox.PRIORITY[outbox.EVENT]
    assert orjson.loads(item.payload) == {
        "schema": "1",
        "site": SITE,
        "agent": AGENT,
        "asset": "pump-7",
        "alert_id": 1,
        "opened_ms": opened,
        "closed_ms": T0 + 31 * MIN,
        "severity": "warning",
        "label": "fault",
        "note": "bearing worn",
        "by": "ana",
        "labelled_ms": T0 + 2 * HOUR_MS,
    }
    with engine.connect() as conn:
        alert = conn.execute(select(t.alerts)).one()
    assert (alert.acknowledged, alert.acknowledged_ms, alert.acknowledged_by) == (
        1,
        T0 + 2 * HOUR_MS,
        "ana",
    )
    engine.dispose()


def test_the_newest_label_wins_and_history_is_kept(migrated_db: Path) -> None:
    engine = _alerting_db(migrated_db)
    now = T0 + 2 * HOUR_MS
    labels.label_alert(engine, 1, "fault", agent=AGENT, now_ms=now)
    # The same millisecond again, then a clock that went back: each label still gets a
    # later time than the one before, and its own object key.
    second = labels.label_alert(engine, 1, "maintenance", agent=AGENT, now_ms=now)
    third = labels.label_alert(engine, 1, "false_alarm", agent=AGENT, by="bo", now_ms=now - 5000)
    assert [second.label.labelled_ms, third.label.labelled_ms] == [now + 1, now + 2]
    with engine.connect() as conn:
        assert labels.current_labels(conn, [1, 99]) == {1: third.label}
        assert [x.label for x in labels.history(conn, 1)] == [
            "fault",
            "maintenance",
            "false_alarm",
        ]
    items = _label_items(engine)
    assert len({i.object_key for i in items}) == 3
    assert max(items, key=lambda i: orjson.loads(i.payload)["labelled_ms"]).payload == (
        items[-1].payload
    )
    engine.dispose()


def test_refusals_and_sync_off(migrated_db: Path) -> None:
    engine = _alerting_db(migrated_db)
    with pytest.raises(labels.LabelError, match="no alert with id 7"):
        labels.label_alert(engine, 7, "fault", agent=AGENT)
    with pytest.raises(labels.LabelError, match="unknown label 'broken'"):
        labels.label_alert(engine, 1, "broken", agent=AGENT)
    with pytest.raises(labels.LabelError, match="note is 2001 characters"):
        labels.label_alert(engine, 1, "fault", agent=AGENT, note="x" * 2001)
    with pytest.raises(labels.LabelError, match="no alert with id 7"):
        labels.acknowledge_alert(engine, 7)
    # The table refuses an unknown label even from a writer that skips the code.
    with pytest.raises(Exception, match="CHECK constraint"), engine.begin() as conn:
        conn.execute(insert(t.alert_labels).values(alert_id=1, label="oops", created_ms=1))
    done = labels.label_alert(engine, 1, "maintenance", agent=AGENT, sync=False)
    assert done.key is None
    assert _label_items(engine) == []
    engine.dispose()


def test_the_first_acknowledgement_is_kept(migrated_db: Path) -> None:
    engine = _alerting_db(migrated_db)
    first = labels.acknowledge_alert(engine, 1, by="ana", now_ms=T0 + HOUR_MS)
    again = labels.acknowledge_alert(engine, 1, by="bo", now_ms=T0 + 2 * HOUR_MS)
    assert first == labels.Acknowledged(1, T0 + HOUR_MS, "ana", True)
    assert again == labels.Acknowledged(1, T0 + HOUR_MS, "ana", False)
    # A label after the acknowledgement does not take it over.
    assert not labels.label_alert(engine, 1, "fault", agent=AGENT, by="bo").acknowledged
    engine.dispose()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_cli_labels_acknowledges_and_shows_the_label(
    capsys: pytest.CaptureFixture[str], migrated_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEWATCH_IDENTITY__AGENT", AGENT)
    _alerting_db(migrated_db).dispose()
    db = ("--db", str(migrated_db))
    code, out, err = _cli(capsys, "records", "ack", "1", "--by", "ana", *db)
    assert (code, out.strip()) == (0, "alert 1 acknowledged"), err
    code, out, _ = _cli(capsys, "records", "ack", "1", *db)
    assert code == 0 and "already acknowledged by ana" in out
    code, out, err = _cli(
        capsys, "records", "label", "1", "false_alarm", "--note", "sensor knocked", *db
    )
    assert (code, out.strip()) == (0, "alert 1 labelled false_alarm"), err
    code, out, _ = _cli(capsys, "records", "alerts", "--format", "json", *db)
    [row] = json.loads(out)
    assert (row["id"], row["label"], row["label_note"], row["acknowledged"]) == (
        1,
        "false_alarm",
        "sensor knocked",
        True,
    )
    assert row["acknowledged_by"] == "ana" and row["labelled_at"].endswith("Z")
    monkeypatch.setenv("COLUMNS", "120")  # the alert is from 2025: dates with the year
    code, out, _ = _cli(capsys, "records", "alerts", *db)
    assert code == 0 and "false_alarm" in out
    # One line and a non-zero exit for what cannot be done.
    code, _, err = _cli(capsys, "records", "label", "42", "fault", *db)
    assert code != 0 and "no alert with id 42" in err and len(err.strip().splitlines()) == 1
    code, _, err = _cli(capsys, "records", "label", "1", "broken", *db)
    assert code != 0 and "broken" in err
    [item] = _label_items(open_engine(migrated_db, create=False))
    assert f"/{AGENT}/label/" in item.object_key


def test_views_show_the_current_label_and_the_history(migrated_db: Path) -> None:
    engine = _alerting_db(migrated_db)
    labels.label_alert(engine, 1, "fault", agent=AGENT, now_ms=T0 + HOUR_MS)
    labels.label_alert(engine, 1, "maintenance", agent=AGENT, by="bo", now_ms=T0 + 2 * HOUR_MS)
    engine.dispose()
    with sqlite3.connect(migrated_db) as conn:
        current = conn.execute(
            "SELECT alert_id, label, labelled_by, acknowledged, asset FROM v_alerts"
        ).fetchall()
        past = conn.execute("SELECT label FROM v_alert_labels ORDER BY created_ms").fetchall()
    assert current == [(1, "maintenance", "bo", 1, "pump-7")]
    assert past == [("fault",), ("maintenance",)]


def test_downgrade_to_0007_drops_labels_and_restores_the_view(migrated_db: Path) -> None:
    engine = _alerting_db(migrated_db)
    labels.label_alert(engine, 1, "fault", agent=AGENT)
    engine.dispose()
    migrate.downgrade(migrated_db, "0007")
    with sqlite3.connect(migrated_db) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        columns = [r[1] for r in conn.execute("PRAGMA table_info(v_alerts)")]
    assert "alert_labels" not in names and "v_alert_labels" not in names
    assert columns[-1] == "opened_ms" and "label" not in columns
    assert migrate.upgrade(migrated_db).to_revision == migrate.HEAD_REVISION


def test_the_retraining_export_carries_the_label_of_the_alert(
    migrated_db: Path, tmp_path: Path
) -> None:
    engine = _alerting_db(migrated_db)
    labels.label_alert(engine, 1, "fault", agent=AGENT, now_ms=T0 + HOUR_MS)
    labels.label_alert(engine, 1, "false_alarm", agent=AGENT, now_ms=T0 + HOUR_MS + 1)
    exporter = RetrainingExporter(
        engine, tmp_path, RetrainingConfig(SITE, AGENT, before_s=120, after_s=120, sample_rate=0)
    )
    assert exporter.run_once(T0 + 3 * HOUR_MS) == 1
    with engine.connect() as conn:
        rel = conn.execute(
            select(t.outbox.c.path).where(t.outbox.c.kind == outbox.RETRAINING)
        ).scalar_one()
    engine.dispose()
    table = pq.read_table(io.BytesIO((tmp_path / outbox.OUTBOX_DIR / rel).read_bytes()))
    assert table.column("reason").to_pylist() == ["alert"] * 6  # 28..33 min
    assert table.column("label").to_pylist() == ["false_alarm"] * 6


def test_labels_survive_the_budget_and_go_with_their_alert(
    migrated_db: Path, tmp_path: Path
) -> None:
    engine = _alerting_db(migrated_db)
    labels.label_alert(engine, 1, "fault", agent=AGENT, now_ms=T0 + HOUR_MS)
    keeper = Housekeeper(
        engine,
        tmp_path,
        site=SITE,
        agent=AGENT,
        budget_bytes=1,  # everything droppable goes
        ttl_days={"label": 1.0},
    )
    report = keeper.enforce_budget(T0 + 2 * HOUR_MS)
    assert "alerts" in report.dropped_items  # the closed alert went, and its label row
    assert len(_label_items(engine)) == 1  # the label's outbox item stays
    with engine.connect() as conn:
        assert conn.execute(select(t.alert_labels)).all() == []
    # A label item waits at most its kind's TTL, with a ledger entry.
    assert keeper.apply_ttl(T0 + HOUR_MS + 2 * 86_400_000) == {"label": 1}
    assert _label_items(engine) == []
    engine.dispose()


def test_retention_removes_an_old_alert_with_its_labels(migrated_db: Path) -> None:
    engine = _alerting_db(migrated_db)
    labels.label_alert(engine, 1, "maintenance", agent=AGENT, now_ms=T0 + HOUR_MS)
    removed = apply_retention(engine, RetentionPolicy(1.0, 1.0), T0 + 3 * 86_400_000)
    assert removed["alerts"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(t.alert_labels)).all() == []
    engine.dispose()
