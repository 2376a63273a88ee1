"""The demo starts from an empty data directory, and never clears a real agent's."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.demo import DEMO_MARKER, prepare_data_dir
from agent.errors import EdgewatchError
from agent.settings import Settings, load_settings


def _settings(data_dir: Path) -> Settings:
    return load_settings(None, {"storage": {"data_dir": str(data_dir)}})


def test_first_demo_marks_its_directory(tmp_path: Path) -> None:
    data = tmp_path / "edgewatch-data"
    assert prepare_data_dir(_settings(data)) is False
    assert (data / DEMO_MARKER).is_file()


def test_next_demo_clears_the_previous_demo_records(tmp_path: Path) -> None:
    data = tmp_path / "edgewatch-data"
    settings = _settings(data)
    prepare_data_dir(settings)
    for name in ("edgewatch.db", "edgewatch.db-wal"):
        (data / name).write_bytes(b"x")
    (data / "baselines" / "pump-001").mkdir(parents=True)
    (data / "cloud" / "k").mkdir(parents=True)
    (data / "notes.txt").write_text("the user's own file")
    assert prepare_data_dir(settings) is True
    assert sorted(p.name for p in data.iterdir()) == [DEMO_MARKER, "notes.txt"]


def test_a_real_agent_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "var-lib-edgewatch"
    data.mkdir()
    (data / "edgewatch.db").write_bytes(b"precious")
    with pytest.raises(EdgewatchError, match="holds records the demo did not make"):
        prepare_data_dir(_settings(data))
    assert (data / "edgewatch.db").read_bytes() == b"precious"
    assert not (data / DEMO_MARKER).exists()


def test_the_demo_describes_its_compressors_unless_the_user_has_profiles(tmp_path: Path) -> None:
    from agent.demo import demo_settings
    from simulators.compressor import SENSORS

    base = _settings(tmp_path / "d")
    demo = demo_settings(base, 1884)
    (profile,) = demo.profiles
    assert profile.match == "comp-*" and profile.run_sensor in SENSORS
    assert profile.commission_samples == 3 * base.model.commission_samples
    own = load_settings(None, {"profiles": [{"match": "fan-*"}]})
    assert [p.match for p in demo_settings(own, 1884).profiles] == ["fan-*"]


def test_a_long_demo_keeps_the_days_it_replays(tmp_path: Path) -> None:
    # `demo --duration 30m` replays 75 days at 3600x: with the ingest and retention
    # defaults (30 and 7 days) every reading was refused as ts_past, nothing scored.
    from agent.demo import demo_settings

    base = _settings(tmp_path / "d")
    span = 30 * 60 * 3600.0
    demo = demo_settings(base, 1884, span_s=span)
    assert demo.ingest.max_past_s >= span + 3600
    assert demo.storage.retention_days >= span / 86400
    assert demo.storage.prediction_retention_days >= span / 86400
    short = demo_settings(base, 1884, span_s=3600.0)  # longer defaults stay as they are
    assert short.ingest.max_past_s == base.ingest.max_past_s
    assert short.storage.prediction_retention_days == base.storage.prediction_retention_days
