"""The Ray engine against the local one: same rows read, same model trained.

One local Ray instance (2 CPUs) for the module: Ray's start-up is the slow part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest

from models.fleet.catalog import load_catalog
from models.fleet.engines import ray_session
from models.fleet.profiles import profile
from models.fleet.read import read_local, read_ray
from models.fleet.retrain import RetrainOptions, retrain
from models.fleet.store import Store
from tests.models.test_fleet import (
    PUMP_SENSORS,
    s3_endpoint,
    small_fleet,
    write_asset,
    write_label,
)

ray = pytest.importorskip("ray")
__all__ = ["s3_endpoint"]  # the moto fixture, shared with tests/models/test_fleet.py

#: Longest any one Ray call may take here (they take 1-15 s on 2 cores).
RAY_CALL_TIMEOUT_S = 180.0
T = TypeVar("T")


def bounded(call: Callable[[], T]) -> T:
    """``call()``, failing the test instead of hanging CI if Ray never answers."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(call).result(timeout=RAY_CALL_TIMEOUT_S)
    finally:
        pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    # ray.init belongs to the main thread; it fails fast rather than hangs.
    with ray_session(None, workers=2) as session:
        yield session


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cloud")
    small_fleet(root, gateways=2, assets=3, rows=240)
    # A fan among the pumps (lacks sensors) and a labelled false alarm.
    write_asset(root, "gw-1", "fan-1", 60, sensors=PUMP_SENSORS[:2])
    reason = ["baseline"] * 100 + ["alert"] * 100
    alert: list[int | None] = [None] * 100 + [4] * 100
    write_asset(root, "gw-0", "pump-007", 200, seed=5, reason=reason, alert_id=alert)
    write_label(root, "gw-0", "pump-007", 4, "false_alarm", 1)
    return root


def test_ray_data_reads_the_same_rows_as_the_local_reader(ray_instance: Any, cloud: Path) -> None:
    store = Store(cloud.as_uri())
    entries = load_catalog(store).retraining
    local = read_local(store, entries, PUMP_SENSORS)
    remote = bounded(lambda: read_ray(store, entries, PUMP_SENSORS))
    assert remote.engine == "ray" and remote.rows == local.rows == 6 * 240 + 60 + 200
    assert remote.table.equals(local.table)


def test_retrain_on_ray_and_locally_gives_bit_identical_weights(
    ray_instance: Any, cloud: Path, tmp_path: Path
) -> None:
    made = {}
    for engine in ("ray", "local"):
        out = tmp_path / engine
        options = RetrainOptions(
            cloud.as_uri(), profile("pump"), out, engine=engine, epochs=2, export_onnx=False
        )
        made[engine] = bounded(lambda: retrain(options))  # noqa: B023 - called at once
    ray_dir, local_dir = tmp_path / "ray", tmp_path / "local"
    assert (ray_dir / "anomaly.safetensors").read_bytes() == (
        local_dir / "anomaly.safetensors"
    ).read_bytes()
    ray_seen = made["ray"].manifest_training
    local_seen = made["local"].manifest_training
    assert ray_seen["data"] == local_seen["data"]
    assert ray_seen["data"]["assets_without_profile_sensors"] == ["plant/gw-1/fan-1"]
    assert ray_seen["throughput"]["read"]["engine"] == "ray"
    assert ray_seen["throughput"]["train"]["engine"] == "ray"
    assert [w["windows_trained"] for w in ray_seen["throughput"]["train"]["per_worker"]] == [
        w["windows_trained"] for w in local_seen["throughput"]["train"]["per_worker"]
    ]
    assert made["ray"].metrics == made["local"].metrics
    ray_run, local_run = ray_seen["anomaly"], local_seen["anomaly"]
    assert ray_run["history_tail"] == local_run["history_tail"]
    assert ray_run["epochs_run"] == local_run["epochs_run"] == 2


def test_ray_data_reads_an_s3_prefix(
    ray_instance: Any, cloud: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="fleet-ray")
    for path in cloud.rglob("*"):
        if path.is_file():
            key = f"edge/{path.relative_to(cloud).as_posix()}"
            s3.put_object(Bucket="fleet-ray", Key=key, Body=path.read_bytes())
    store = Store("s3://fleet-ray/edge")
    entries = load_catalog(store).retraining
    remote = bounded(lambda: read_ray(store, entries, PUMP_SENSORS))
    local_store = Store(cloud.as_uri())
    local = read_local(local_store, load_catalog(local_store).retraining, PUMP_SENSORS)
    assert remote.table.equals(local.table)
