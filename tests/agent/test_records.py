"""`edgewatch records`: exact rows for each filter, every format parsed back."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from agent import schema as t
from agent.cli.app import main
from agent.sqlite import open_engine
from tests.agent.hostile import CLOSE, MARKUP, hostile
from tests.agent.seed import MIN, NOW, seeded
from tests.conftest import CliRunner

__all__ = ["hostile", "seeded"]  # the fixtures, imported for pytest


def records(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["records", *args, "--db", str(db)])
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def as_json(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> list[dict[str, Any]]:
    code, out, err = records(capsys, db, *args, "--format", "json")
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)
    return rows


def test_alerts_open_only(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    rows = as_json(capsys, seeded, "alerts", "--open")
    assert [(r["asset"], r["severity"], r["status"], r["closed"]) for r in rows] == [
        ("pump-a", "critical", "open", None)
    ]


def test_alerts_active_in_range_oldest_first(
    capsys: pytest.CaptureFixture[str], seeded: Path
) -> None:
    # Since 4 h ago: pump-b's alert closed 4.5 h ago is out; pump-a's closed one overlaps.
    rows = as_json(capsys, seeded, "alerts", "--since", "4h")
    assert [(r["asset"], r["severity"]) for r in rows] == [
        ("pump-a", "warning"),
        ("pump-a", "critical"),
    ]
    assert rows[0]["opened"].endswith("Z")


def test_predictions_filters(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    rows = as_json(capsys, seeded, "predictions", "--asset", "pump-a", "--anomalies-only")
    assert [(r["anomaly_score"], r["rul"], r["is_anomaly"]) for r in rows] == [
        (5.0, 400.0, True),
        (7.5, 120.0, True),
    ]
    recent = as_json(capsys, seeded, "predictions", "--since", "90m")
    assert [r["anomaly_score"] for r in recent] == [7.5]
    older = as_json(capsys, seeded, "predictions", "--until", "150m")
    assert [r["anomaly_score"] for r in older] == [0.9, 1.0]
    limited = as_json(capsys, seeded, "predictions", "--limit", "1")
    assert [r["anomaly_score"] for r in limited] == [0.9]


def test_iso_times_are_accepted(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime((NOW - 90 * MIN) / 1000))
    rows = as_json(capsys, seeded, "predictions", "--since", since)
    assert [r["anomaly_score"] for r in rows] == [7.5]


def test_dead_letters_by_reason_and_asset(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    rows = as_json(capsys, seeded, "dead-letters", "--reason", "invalid_json")
    assert [(r["asset"], r["payload"]) for r in rows] == [("pump-a", "{not json")]
    rows = as_json(capsys, seeded, "dead-letters", "--asset", "pump-b")
    assert [r["reason"] for r in rows] == ["ts_future"]
    every = as_json(capsys, seeded, "dead-letters")
    assert every[-1]["payload"] == "\ufffd\ufffd"  # undecodable bytes stay visible


def test_events_by_level(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    rows = as_json(capsys, seeded, "events", "--level", "warning")
    assert [(r["kind"], r["asset"]) for r in rows] == [("window_restart", "pump-a")]


def test_assets_with_latest_prediction(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    rows = as_json(capsys, seeded, "assets")
    assert [(r["asset"], r["state"], r["anomaly_score"], r["open_alerts"]) for r in rows] == [
        ("pump-a", "alerting", 7.5, 1),
        ("pump-b", "healthy", 0.9, 0),
    ]


def test_readings_have_a_column_per_sensor(
    capsys: pytest.CaptureFixture[str], seeded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.csv"
    code, _, err = records(capsys, seeded, "readings", "--output", str(out))
    assert code == 0, err
    assert "3 readings written" in err
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["ts", "asset", "received", "temp_c", "vib_mm_s", "flow_m3_h"]
    assert [(r["asset"], r["temp_c"], r["vib_mm_s"], r["flow_m3_h"]) for r in rows] == [
        ("pump-b", "30.0", "", "55.0"),
        ("pump-a", "41.5", "2.25", ""),
        ("pump-a", "42.0", "2.5", ""),
    ]
    one = as_json(capsys, seeded, "readings", "--asset", "pump-a")
    assert list(one[0]) == ["ts", "asset", "received", "temp_c", "vib_mm_s"]


def test_parquet_round_trip(
    capsys: pytest.CaptureFixture[str], seeded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "p.parquet"
    code, _, err = records(capsys, seeded, "predictions", "-o", str(out))
    assert code == 0, err
    table = pq.read_table(out)
    assert table.column_names == [
        "window_end",
        "asset",
        "anomaly_score",
        "anomaly_threshold",
        "is_anomaly",
        "rul",
        "rul_low",
        "rul_high",
        "stopped",
        "model_version",
    ]
    assert str(table.schema.field("window_end").type) == "timestamp[ms, tz=UTC]"
    assert table.column("anomaly_score").to_pylist() == [0.9, 1.0, 5.0, 7.5]
    ends = [ts.timestamp() * 1000 for ts in table.column("window_end").to_pylist()]
    assert ends[-1] == pytest.approx(NOW - 10 * MIN)
    empty = tmp_path / "none.parquet"
    code, _, err = records(
        capsys, seeded, "alerts", "--since", "1m", "--open", "--asset", "pump-b", "-o", str(empty)
    )
    assert code == 0, err
    assert pq.read_table(empty).num_rows == 0


def test_csv_and_json_to_stdout(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    code, out, _ = records(capsys, seeded, "events", "--format", "csv")
    assert code == 0
    assert [r["kind"] for r in csv.DictReader(io.StringIO(out))] == [
        "agent_started",
        "window_restart",
    ]
    assert as_json(capsys, seeded, "alerts", "--asset", "pump-b", "--open") == []


def test_table_shows_local_times_units_and_a_limit_note(cli: CliRunner, seeded: Path) -> None:
    result = cli("records", "predictions", "--limit", "2", "--db", str(seeded))
    code, out, err = result.returncode, result.stdout, result.stderr
    assert code == 0
    assert "anomaly score" in out and "window end" in out and "(times in " in out
    local = time.strftime("%m-%d %H:%M", time.localtime((NOW - 10 * MIN) / 1000))
    assert local in out  # newest first, in local time
    assert "showing the newest 2 of 4 predictions" in err


def test_unknown_asset_is_one_line(capsys: pytest.CaptureFixture[str], seeded: Path) -> None:
    code, _, err = records(capsys, seeded, "alerts", "--asset", "pump-zz")
    assert code == 1
    assert "no asset named 'pump-zz'" in err


def test_cli_errors_as_a_user_sees_them(cli: CliRunner, seeded: Path, tmp_path: Path) -> None:
    bad = cli("records", "alerts", "--since", "yesterday-ish", "--db", str(seeded))
    assert bad.returncode == 2
    assert "is not a time" in bad.stderr
    missing = cli("records", "alerts", "--db", str(tmp_path / "nope.db"))
    assert missing.returncode == 1
    assert "does not exist" in missing.stderr
    parquet = cli("records", "alerts", "--format", "parquet", "--db", str(seeded))
    assert parquet.returncode == 2
    ok = cli("records", "alerts", "--db", str(seeded))
    assert ok.returncode == 0
    assert "pump-a" in ok.stdout and "critical" in ok.stdout


def test_tables_show_publisher_text_as_text(cli: CliRunner, hostile: Path) -> None:
    # Payloads, topics, asset and sensor names and event messages come from publishers:
    # rich markup in them is shown, never interpreted (an unopened "[/]" used to crash).
    outputs = {}
    for kind in ("dead-letters", "assets", "alerts", "events", "predictions"):
        done = cli("records", kind, "--db", str(hostile))
        assert done.returncode == 0, done.stderr
        outputs[kind] = done.stdout
    readings = cli("records", "readings", "--asset", "$\\x$", "--db", str(hostile))
    assert readings.returncode == 0, readings.stderr
    outputs["readings"] = readings.stdout
    dead = outputs["dead-letters"]
    assert CLOSE in dead and MARKUP in dead
    # Control characters are shown as escapes: a newline cannot start a row of its own,
    # an ESC cannot reach the operator's terminal.
    assert "a\\nb" in dead and "\\x1b[2Jwiped" in dead
    assert all("\x1b" not in out for out in outputs.values())
    assert "$\\x$" in outputs["assets"] and "[bold red]x" in outputs["assets"]
    assert "$\\x$" in outputs["alerts"]
    assert "[/] gap\\n12:00:00 error" in outputs["events"]
    assert "$\\y$_c" in outputs["readings"]


def test_error_lines_show_publisher_text_as_text(cli: CliRunner, hostile: Path) -> None:
    done = cli("records", "alerts", "--asset", "[/]nope", "--db", str(hostile))
    assert done.returncode == 1
    assert "no asset named '[/]nope'" in done.stderr
    assert "Traceback" not in done.stderr


def test_reading_never_writes(seeded: Path) -> None:
    from sqlalchemy.exc import OperationalError

    engine = open_engine(seeded, create=False, read_only=True)
    try:
        with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
            conn.execute(t.events.delete())
    finally:
        engine.dispose()


def test_views_show_readable_rows(seeded: Path) -> None:
    import sqlite3

    with sqlite3.connect(seeded) as conn:
        rows = conn.execute(
            "select asset, status, severity, opened_utc from v_alerts order by opened_ms"
        ).fetchall()
        assets = conn.execute("select asset, open_alerts from v_assets order by asset").fetchall()
    assert [(a, s, sev) for a, s, sev, _ in rows] == [
        ("pump-b", "closed", "warning"),
        ("pump-a", "closed", "warning"),
        ("pump-a", "open", "critical"),
    ]
    assert rows[0][3].endswith("Z") and "T" in rows[0][3]
    assert assets == [("pump-a", 1), ("pump-b", 0)]
