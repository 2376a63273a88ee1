"""Fleet retraining without Ray: listing, dedup, labels, row classes, split, windows,
the sharded loop, status and the CLI's failures (tests/models/test_fleet_ray.py: Ray)."""

from __future__ import annotations

import io
import json
import logging
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from moto.server import ThreadedMotoServer

from agent import outbox
from agent.errors import DatasetError, ModelError
from models.bundles import default_bundle_path
from models.fleet import data as fleet_data
from models.fleet.catalog import Label, dedupe, load_catalog, newest_labels
from models.fleet.data import FAULT_ROW, NORMAL, UNKNOWN
from models.fleet.profiles import profile
from models.fleet.read import read_local
from models.fleet.retrain import RetrainOptions, retrain
from models.fleet.status import fleet_status
from models.fleet.store import ObjectInfo, Store
from models.fleet.training import LoopConfig, equal_shards, local_reducer, run_loop
from models.network import AutoencoderConfig
from tests.conftest import CliRunner
from tests.support import free_port

SITE = "plant"
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
T0 = 1_793_491_200_000  # 2026-11-01 00:00 UTC
PUMP_SENSORS = (
    "bearing_temp_c",
    "discharge_pressure_bar",
    "flow_m3_h",
    "motor_current_a",
    "speed_rpm",
    "vib_kurtosis",
    "vib_rms_mm_s",
)
LEVELS = (50.0, 4.8, 88.0, 45.0, 1400.0, 3.0, 1.3)


def pump_values(n: int, seed: int) -> np.ndarray:
    """Pump-like readings: levels, a slow load swing and noise."""
    rng = np.random.default_rng(seed)
    load = 1 + 0.05 * np.sin(np.arange(n) / 90.0 + seed)
    noise = rng.normal(0, 0.01, (n, len(LEVELS)))
    return np.asarray(LEVELS) * (load[:, None] + noise)


def write_asset(
    root: Path,
    agent: str,
    asset: str,
    n: int,
    *,
    seed: int = 0,
    reason: list[str] | None = None,
    alert_id: list[int | None] | None = None,
    label: list[str | None] | None = None,
    start_ms: int = T0,
    sensors: tuple[str, ...] = PUMP_SENSORS,
) -> list[str]:
    """One asset's readings a minute apart as hourly retraining files in the sync layout."""
    values = pump_values(n, seed)
    ts = start_ms + np.arange(n) * MINUTE_MS
    reason = reason or ["baseline"] * n
    alert_id = alert_id or [None] * n
    label = label or ["normal" if r == "baseline" else None for r in reason]
    keys = []
    hours = (ts // HOUR_MS) * HOUR_MS
    for hour in np.unique(hours):
        rows = np.flatnonzero(hours == hour)
        columns: dict[str, Any] = {
            "asset": pa.array([asset] * len(rows), pa.string()),
            "ts": pa.array(ts[rows], pa.timestamp("ms", tz="UTC")),
        }
        for j, s in enumerate(PUMP_SENSORS):
            if s in sensors:
                columns[s] = pa.array(values[rows, j], pa.float64())
        columns.update(
            anomaly_score=pa.array([None] * len(rows), pa.float64()),
            alert_id=pa.array([alert_id[i] for i in rows], pa.int64()),
            reason=pa.array([reason[i] for i in rows], pa.string()),
            label=pa.array([label[i] for i in rows], pa.string()),
        )
        key = outbox.item_key(
            site=SITE,
            agent=agent,
            kind="retraining",
            ts_ms=int(hour),
            asset=asset,
            name=f"{outbox.iso_ms(int(hour))[:11]}.parquet",
        )
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = io.BytesIO()
        pq.write_table(pa.table(columns), sink)
        path.write_bytes(sink.getvalue())
        keys.append(key)
    return keys


def write_label(
    root: Path, agent: str, asset: str, alert_id: int, verdict: str, labelled_ms: int, **extra: Any
) -> str:
    body = {
        "schema": "1",
        "site": SITE,
        "agent": agent,
        "asset": asset,
        "alert_id": alert_id,
        "opened_ms": extra.pop("opened_ms", None),
        "closed_ms": extra.pop("closed_ms", None),
        "severity": "warning",
        "label": verdict,
        "note": None,
        "by": "op",
        "labelled_ms": labelled_ms,
    }
    key = outbox.item_key(
        site=SITE,
        agent=agent,
        kind="label",
        ts_ms=T0,
        asset=asset,
        name=f"{outbox.iso_ms(T0)}-{alert_id}-{labelled_ms}.json",
    )
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(outbox.json_body(body))
    return key


def small_fleet(root: Path, gateways: int = 2, assets: int = 3, rows: int = 300) -> None:
    """Healthy pumps (baselines, then sampled hours) on a few gateways."""
    for g in range(gateways):
        for a in range(assets):
            reason = ["baseline"] * 120 + ["sample"] * (rows - 120)
            write_asset(root, f"gw-{g}", f"pump-{a:03d}", rows, seed=10 * g + a, reason=reason)


# --------------------------------------------------------------------------- catalog


def test_a_key_listed_twice_is_one_object_and_foreign_objects_are_ignored() -> None:
    key = "plant/gw-1/retraining/2026/11/01/pump-1/20261101T00.parquet"
    listing = [
        ObjectInfo(key, 100, 1),
        ObjectInfo(key, 120, 5),  # the same key again (an overlapping listing)
        ObjectInfo("plant/gw-1/label/2026/11/01/pump-1/x.json", 10, 2),
        ObjectInfo("README.txt", 3, 1),
        ObjectInfo("plant/gw-1/other/2026/11/01/pump-1/x.json", 3, 1),
    ]
    entries, duplicates, ignored = dedupe(listing)
    assert [(e.key, e.size) for e in entries] == [
        ("plant/gw-1/label/2026/11/01/pump-1/x.json", 10),
        (key, 120),
    ]
    assert (duplicates, ignored) == (1, 2)
    # Keys below a longer prefix parse from the right.
    deeper, _, _ = dedupe([ObjectInfo(f"edge/eu/{key}", 1, 1)])
    assert (deeper[0].site, deeper[0].agent, deeper[0].asset) == ("plant", "gw-1", "pump-1")


def test_the_file_store_skips_temporary_files_and_names_a_missing_folder(tmp_path: Path) -> None:
    write_asset(tmp_path, "gw-1", "pump-1", 90)
    (tmp_path / "plant/gw-1/retraining/.tmp-x.parquet.1").write_bytes(b"partial")
    keys = sorted(o.key for o in Store(tmp_path.as_uri()).list())
    assert keys == [
        "plant/gw-1/retraining/2026/11/01/pump-1/20261101T00.parquet",
        "plant/gw-1/retraining/2026/11/01/pump-1/20261101T01.parquet",
    ]
    with pytest.raises(DatasetError, match="no such folder"):
        Store((tmp_path / "nope").as_uri())
    with pytest.raises(DatasetError, match="neither"):
        Store("http://example.com/x")


def test_the_newest_label_of_an_alert_wins_whatever_the_listing_order() -> None:
    older = Label(SITE, "gw-1", "pump-1", 7, "fault", 1_000)
    newer = Label(SITE, "gw-1", "pump-1", 7, "false_alarm", 2_000)
    other = Label(SITE, "gw-2", "pump-1", 7, "maintenance", 1_500)
    for order in ([older, newer, other], [other, newer, older]):
        best = newest_labels(order)
        assert best[(SITE, "gw-1", "pump-1", 7)].label == "false_alarm"
        assert best[(SITE, "gw-2", "pump-1", 7)].label == "maintenance"


def test_label_objects_are_read_and_bad_ones_counted(tmp_path: Path) -> None:
    write_asset(tmp_path, "gw-1", "pump-1", 60)
    write_label(tmp_path, "gw-1", "pump-1", 3, "fault", 10)
    write_label(tmp_path, "gw-1", "pump-1", 3, "false_alarm", 20)
    bad = write_label(tmp_path, "gw-1", "pump-1", 4, "fault", 30)
    (tmp_path / bad).write_text('{"label": "broken"}')
    catalog = load_catalog(Store(tmp_path.as_uri()))
    assert catalog.labels[(SITE, "gw-1", "pump-1", 3)].label == "false_alarm"
    assert catalog.bad_labels == 1
    assert catalog.label_counts() == {"fault": 0, "false_alarm": 1, "maintenance": 0}


# --------------------------------------------------------------------------- rows


def test_rows_are_classed_by_the_operators_labels(tmp_path: Path) -> None:
    # 0-39 baseline, 40-59 sampled, 60-119 around alert 1 (false alarm), 120-179 around
    # alert 2 (fault, open 140-159), 180-209 around alert 3 (nobody labelled), 210-239
    # sampled after the fault.
    reason = ["baseline"] * 40 + ["sample"] * 20 + ["alert"] * 150 + ["sample"] * 30
    alert: list[int | None] = [None] * 60 + [1] * 60 + [2] * 60 + [3] * 30 + [None] * 30
    write_asset(tmp_path, "gw-1", "pump-1", 240, reason=reason, alert_id=alert)
    write_label(tmp_path, "gw-1", "pump-1", 1, "fault", 5)
    write_label(tmp_path, "gw-1", "pump-1", 1, "false_alarm", 9)  # changed mind: newest wins
    write_label(
        tmp_path,
        "gw-1",
        "pump-1",
        2,
        "fault",
        9,
        opened_ms=T0 + 140 * MINUTE_MS,
        closed_ms=T0 + 159 * MINUTE_MS,
    )
    store = Store(tmp_path.as_uri())
    catalog = load_catalog(store)
    table = read_local(store, catalog.retraining, PUMP_SENSORS).table
    (rows,) = fleet_data.classify(table, PUMP_SENSORS, catalog.labels)
    cls = rows.row_class
    assert (cls[:40] == NORMAL).all()  # the commissioning baseline
    # An asset that had a fault: its sampled windows may hold the fault developing.
    assert (cls[40:60] == UNKNOWN).all()
    assert (cls[60:120] == NORMAL).all() and rows.relabelled_normal[60:120].all()
    assert not rows.relabelled_normal[:60].any()
    assert (cls[120:140] == UNKNOWN).all()  # fault alert context before it opened
    assert (cls[140:160] == FAULT_ROW).all()
    assert (cls[160:180] == UNKNOWN).all()
    assert (cls[180:210] == UNKNOWN).all()  # unlabelled alert
    assert (cls[210:] == UNKNOWN).all()  # after a fault: not healthy until recommissioned


def test_a_label_stored_in_the_file_counts_when_no_label_object_says_otherwise(
    tmp_path: Path,
) -> None:
    reason = ["baseline"] * 40 + ["alert"] * 40
    alert: list[int | None] = [None] * 40 + [5] * 40
    labels: list[str | None] = ["normal" if i < 40 else "maintenance" for i in range(80)]
    write_asset(tmp_path, "gw-1", "pump-1", 80, reason=reason, alert_id=alert, label=labels)
    store = Store(tmp_path.as_uri())
    catalog = load_catalog(store)
    table = read_local(store, catalog.retraining, PUMP_SENSORS).table
    (rows,) = fleet_data.classify(table, PUMP_SENSORS, catalog.labels)
    assert (rows.row_class == NORMAL).all() and rows.relabelled_normal[40:].all()
    write_label(tmp_path, "gw-1", "pump-1", 5, "fault", 1)
    catalog = load_catalog(store)
    (rows,) = fleet_data.classify(table, PUMP_SENSORS, catalog.labels)
    assert (rows.row_class[40:] == FAULT_ROW).all()


def test_reading_order_does_not_change_the_rows_and_a_repeated_reading_is_kept_once(
    tmp_path: Path,
) -> None:
    small_fleet(tmp_path, gateways=2, assets=2, rows=150)
    store = Store(tmp_path.as_uri())
    entries = load_catalog(store).retraining
    shuffled = list(entries)
    random.Random(3).shuffle(shuffled)
    a = read_local(store, entries, PUMP_SENSORS).table
    b = read_local(store, shuffled, PUMP_SENSORS).table
    assert a.equals(b) and a.num_rows == 4 * 150
    # A file that repeats readings of another (an hour re-exported under another name).
    src = tmp_path / entries[0].key
    (src.parent / "20261101T00-again.parquet").write_bytes(src.read_bytes())
    again = read_local(store, load_catalog(store).retraining, PUMP_SENSORS).table
    assert again.equals(a)


def test_an_asset_without_a_profile_sensor_is_not_usable(tmp_path: Path) -> None:
    write_asset(tmp_path, "gw-1", "pump-1", 60)
    write_asset(tmp_path, "gw-1", "fan-1", 60, sensors=PUMP_SENSORS[:3])
    store = Store(tmp_path.as_uri())
    catalog = load_catalog(store)
    table = read_local(store, catalog.retraining, PUMP_SENSORS).table
    assets = fleet_data.classify(table, PUMP_SENSORS, catalog.labels)
    assert {a.key[2]: fleet_data.usable(a) for a in assets} == {"fan-1": False, "pump-1": True}


def test_windows_never_span_a_gap(tmp_path: Path) -> None:
    write_asset(tmp_path, "gw-1", "pump-1", 50)
    write_asset(tmp_path, "gw-1", "pump-1", 50, start_ms=T0 + 5 * HOUR_MS)
    store = Store(tmp_path.as_uri())
    catalog = load_catalog(store)
    table = read_local(store, catalog.retraining, PUMP_SENSORS).table
    (rows,) = fleet_data.classify(table, PUMP_SENSORS, catalog.labels)
    assert rows.segments(MINUTE_MS) == [(0, 50), (50, 100)]
    from models.fleet.training import healthy_runs

    assert [len(r) for r in healthy_runs(rows, MINUTE_MS, 32)] == [50, 50]
    assert healthy_runs(rows, MINUTE_MS, 64) == []


def test_the_split_is_by_asset_deterministic_and_stable_as_the_fleet_grows(tmp_path: Path) -> None:
    small_fleet(tmp_path, gateways=3, assets=4, rows=60)
    store = Store(tmp_path.as_uri())
    catalog = load_catalog(store)
    table = read_local(store, catalog.retraining, PUMP_SENSORS).table
    assets = fleet_data.classify(table, PUMP_SENSORS, catalog.labels)
    train, val = fleet_data.split_assets(assets, seed=0, fraction=0.3)

    def names(xs: list[fleet_data.AssetRows]) -> set[fleet_data.AssetKey]:
        return {a.key for a in xs}

    assert names(train).isdisjoint(names(val)) and len(train) + len(val) == 12
    assert val and train
    _, again_val = fleet_data.split_assets(list(reversed(assets)), seed=0, fraction=0.3)
    assert names(again_val) == names(val)
    # An asset's side depends on its own name and the seed alone: a fleet with more (or
    # fewer) gateways leaves every other asset where it was.
    assert names(val) == {a.key for a in assets if fleet_data.is_validation(a.key, 0, 0.3)}
    fewer = assets[:8]
    _, fewer_val = fleet_data.split_assets(fewer, seed=0, fraction=0.3)
    assert names(fewer_val) == names(val) & names(fewer)
    with pytest.raises(DatasetError, match="two or more"):
        fleet_data.split_assets(assets[:1], seed=0, fraction=0.3)


# --------------------------------------------------------------------------- training


def test_equal_shards_are_seeded_and_of_one_length() -> None:
    x = np.arange(11 * 2 * 4, dtype=np.float32).reshape(11, 2, 4)
    a, b = equal_shards(x, 2, seed=1), equal_shards(x, 2, seed=1)
    assert [len(s) for s in a] == [5, 5]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    seen = np.concatenate(a)[:, 0, 0]
    assert len(set(seen.tolist())) == 10  # no window twice, one left out


def test_the_sharded_loop_is_deterministic_and_its_reducer_averages_workers() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3, 16)).astype(np.float32)
    cfg = LoopConfig(AutoencoderConfig(3, 16, (8, 4), 3, 4), 3, 16, 1e-3, 5, 7, 2)
    shards = equal_shards(x, 2, 7)
    one = run_loop(cfg, dict(enumerate(shards)), x[:8], local_reducer)
    two = run_loop(cfg, dict(enumerate(shards)), x[:8], local_reducer)
    assert all(torch.equal(one.state[k], two.state[k]) for k in one.state)
    assert [w["windows"] for w in one.workers] == [3 * 32, 3 * 32]
    assert one.history[0]["train_loss"] > one.history[-1]["train_loss"]


def test_local_retrain_writes_a_bundle_that_records_the_data_it_saw(tmp_path: Path) -> None:
    cloud = tmp_path / "cloud"
    small_fleet(cloud, gateways=2, assets=3, rows=240)
    reason = ["baseline"] * 100 + ["alert"] * 100
    alert: list[int | None] = [None] * 100 + [9] * 100
    write_asset(cloud, "gw-1", "pump-009", 200, seed=99, reason=reason, alert_id=alert)
    write_label(cloud, "gw-1", "pump-009", 9, "false_alarm", 1)
    options = RetrainOptions(
        cloud.as_uri(), profile("pump"), tmp_path / "b", epochs=2, export_onnx=False
    )
    report = retrain(options)
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    seen = manifest["training"]["data"]
    assert seen["gateways"] == ["plant/gw-0", "plant/gw-1"]
    assert seen["assets"] == 7 and seen["rows"] == 6 * 240 + 200
    assert seen["labels"] == {"fault": 0, "false_alarm": 1, "maintenance": 0}
    assert seen["rows_relabelled_normal"] == 100
    assert seen["first_ts_ms"] == T0 and seen["last_ts_ms"] == T0 + 239 * MINUTE_MS
    assert set(seen["training_assets"]).isdisjoint(seen["validation_assets"])
    throughput = manifest["training"]["throughput"]
    assert throughput["read"]["rows"] == 6 * 240 + 200 and throughput["read"]["rows_per_s"] > 0
    assert [w["rank"] for w in throughput["train"]["per_worker"]] == [0, 1]
    assert manifest["training"]["anomaly"]["initialised_from"].startswith("fleet:pump@")
    assert manifest["rul"] is not None  # the base bundle's RUL head, carried over
    base = json.loads((default_bundle_path("pump") / "manifest.json").read_text())
    assert manifest["rul"]["weights"] == base["rul"]["weights"]
    assert report.version.startswith("pump@") and report.version != base["version"]
    # The same data and seed: the same weights.
    retrain(
        RetrainOptions(cloud.as_uri(), profile("pump"), tmp_path / "c", epochs=2, export_onnx=False)
    )
    same = (tmp_path / "b/anomaly.safetensors").read_bytes() == (
        tmp_path / "c/anomaly.safetensors"
    ).read_bytes()
    assert same


# --------------------------------------------------------------------------- status, CLI


def test_status_counts_each_gateway_s_objects_and_lag(tmp_path: Path) -> None:
    small_fleet(tmp_path, gateways=2, assets=1, rows=120)
    write_label(tmp_path, "gw-1", "pump-000", 1, "fault", 1)
    entries, _, _ = dedupe(Store(tmp_path.as_uri()).list())
    doc = fleet_status(entries, now_ms=T0 + 3 * HOUR_MS)
    gws = {g["gateway"]: g for g in doc["gateways"]}
    assert set(gws) == {"plant/gw-0", "plant/gw-1"}
    assert gws["plant/gw-0"]["kinds"]["retraining"]["objects"] == 2
    assert gws["plant/gw-0"]["kinds"]["retraining"]["lag_s"] == 2 * 3600.0  # newest hour 01:00
    assert gws["plant/gw-1"]["kinds"]["label"]["objects"] == 1
    assert doc["kinds"]["retraining"]["objects"] == 4


def test_fleet_commands_fail_with_one_line(cli: CliRunner, tmp_path: Path) -> None:
    missing = cli("fleet", "status", "--data", (tmp_path / "nope").as_uri())
    assert missing.returncode == 1
    assert missing.stderr.strip().count("\n") == 0 and "no such folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = cli("fleet", "retrain", "--data", (tmp_path / "empty").as_uri(), "--out", "b")
    assert empty.returncode == 1 and "nothing synced" in empty.stderr
    small_fleet(tmp_path / "cloud", gateways=1, assets=2, rows=60)
    status = cli("fleet", "status", "--data", (tmp_path / "cloud").as_uri(), "--json")
    assert status.returncode == 0, status.stderr
    doc = json.loads(status.stdout)
    assert [g["gateway"] for g in doc["gateways"]] == ["plant/gw-0"]
    unknown = cli(
        "fleet",
        "retrain",
        "--data",
        (tmp_path / "cloud").as_uri(),
        "--out",
        "b",
        "--profile",
        "kettle",
    )
    assert unknown.returncode == 1 and "no fleet training profile named 'kettle'" in unknown.stderr


# --------------------------------------------------------------------------- s3


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_an_s3_prefix_reads_as_the_same_folder_does(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    small_fleet(tmp_path, gateways=2, assets=2, rows=90)
    write_label(tmp_path, "gw-1", "pump-001", 2, "false_alarm", 5)
    s3 = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="fleet")
    for path in tmp_path.rglob("*"):
        if path.is_file():
            s3.put_object(
                Bucket="fleet",
                Key=f"edge/{path.relative_to(tmp_path).as_posix()}",
                Body=path.read_bytes(),
            )
    s3.put_object(Bucket="fleet", Key="elsewhere/x.txt", Body=b"not ours")
    local_store, s3_store = Store(tmp_path.as_uri()), Store("s3://fleet/edge")
    local, remote = load_catalog(local_store), load_catalog(s3_store)
    assert [e.key for e in remote.entries] == [e.key for e in local.entries]
    assert remote.labels == local.labels and remote.ignored == 0
    a = read_local(local_store, local.retraining, PUMP_SENSORS).table
    b = read_local(s3_store, remote.retraining, PUMP_SENSORS).table
    assert a.equals(b)
    with pytest.raises(DatasetError, match="cannot list s3://nope/edge"):
        list(Store("s3://nope/edge").list())


# --------------------------------------------------------------------------- verdict


def _result(version: str, tp: int, fp: int, tn: int, fn: int, alarms: int, labelled: int) -> Any:
    from models.fleet.compare import AssetResult, BundleResult
    from models.metrics import DetectionCounts

    counts = DetectionCounts(tp, fp, tn, fn)
    asset = AssetResult("p/g/a", counts, tp + fp + tn + fn, 0, 0, alarms, labelled, 2.0)
    return BundleResult(version, [asset])


def test_the_verdict_weighs_f1_far_and_false_alarms() -> None:
    from models.fleet.compare import Comparison

    incumbent = _result("inc", 900, 10, 990, 100, 2, 2)
    # Fewer labelled false alarms, F1 a hair lower (within the tolerance): better.
    close = Comparison(_result("c", 899, 5, 995, 101, 1, 1), incumbent, 60, 1000)
    assert close.no_worse() and close.better() and close.false_alarms_removed == 1
    # A real loss of recall is worse, whatever it does to false alarms.
    deaf = Comparison(_result("c", 700, 0, 1000, 300, 0, 0), incumbent, 60, 1000)
    assert not deaf.no_worse() and not deaf.better()
    # A new false alarm on an unlabelled normal row counts against it too.
    noisy = Comparison(_result("c", 900, 12, 988, 100, 3, 1), incumbent, 60, 1000)
    assert not noisy.no_worse() and noisy.false_alarms_removed == 1
    # The same figures: no worse, not better (nothing to publish).
    same = Comparison(_result("c", 900, 10, 990, 100, 2, 2), incumbent, 60, 1000)
    assert same.no_worse() and not same.better()


def test_ray_is_imported_only_when_the_ray_engine_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    code = (
        "import sys, agent.cli.app, agent.runtime, models.fleet.retrain, models.fleet.compare; "
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    from models.fleet.engines import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as on a gateway without the extra
    with pytest.raises(ModelError, match=r"edgewatch\[fleet\]"):
        require_ray()
