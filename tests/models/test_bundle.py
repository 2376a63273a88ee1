from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from agent.errors import BundleError
from models.bundle import RUL_WEIGHTS, load_bundle, save_bundle
from models.manifest import MANIFEST
from models.manifest import canonical as _canonical
from models.predictor import Predictor
from tests.models.conftest import SENSORS, WINDOW, make_bundle


def test_round_trip_directory_and_tarball(tmp_path: Path, bundle_dir: Path) -> None:
    b = load_bundle(bundle_dir)
    assert b.sensors == SENSORS and b.window == WINDOW and b.hop == 2
    assert b.kinds == ("rul", "anomaly")
    assert b.version.startswith("test@")
    assert b.rul is not None and len(b.rul.members) == 2
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    assert manifest["metrics"]["nan_metric"] is None  # strict JSON
    assert set(manifest["files"]) == {"rul.safetensors", "anomaly.safetensors"}

    tar = make_bundle(tmp_path / "b.tar.gz")
    bt = load_bundle(tar)
    assert bt.version == b.version  # same weights, same version
    x = np.random.default_rng(0).normal(50, 5, (3, 3, WINDOW)).astype(np.float32)
    p1, p2 = Predictor(b).predict(x), Predictor(bt).predict(x)
    assert p1.rul is not None and p2.rul is not None
    assert np.allclose(p1.rul, p2.rul)


def _reseal(bundle_dir: Path, edit: dict[str, object]) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest.update(edit)
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))


def test_edited_weights_refused(bundle_dir: Path) -> None:
    w = bundle_dir / RUL_WEIGHTS
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"rul\.safetensors does not match its sha256"):
        load_bundle(bundle_dir)


def test_edited_manifest_refused(bundle_dir: Path) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["anomaly"]["threshold"] = 99.0
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"manifest.json was modified"):
        load_bundle(bundle_dir)


def test_missing_file_refused(bundle_dir: Path) -> None:
    (bundle_dir / RUL_WEIGHTS).unlink()
    with pytest.raises(BundleError, match=r"rul.safetensors listed in the manifest is missing"):
        load_bundle(bundle_dir)
    (bundle_dir / MANIFEST).unlink()
    with pytest.raises(BundleError, match=r"manifest.json is missing"):
        load_bundle(bundle_dir)


def test_wrong_sensor_count_refused(bundle_dir: Path) -> None:
    # Even a consistently re-sealed manifest cannot claim sensors the weights lack.
    _reseal(bundle_dir, {"sensors": [{"name": "a", "unit": "1"}, {"name": "b", "unit": "1"}]})
    with pytest.raises(BundleError, match=r"expects 3 sensors .* manifest lists 2"):
        load_bundle(bundle_dir)


def test_wrong_tensor_shape_refused(tmp_path: Path) -> None:
    a = make_bundle(tmp_path / "a")
    other = tmp_path / "other"
    make_bundle(other)
    manifest = json.loads((a / MANIFEST).read_text())
    manifest["rul"]["network"]["hidden"] = 9
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (a / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="has shape"):
        load_bundle(a)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "nope")
    (tmp_path / "x.bin").write_bytes(b"\0")
    with pytest.raises(BundleError, match=r"neither a directory nor a \.tar\.gz"):
        load_bundle(tmp_path / "x.bin")
    (tmp_path / "x.tar.gz").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not a readable"):
        load_bundle(tmp_path / "x.tar.gz")


def test_empty_bundle_cannot_be_saved(tmp_path: Path) -> None:
    with pytest.raises(BundleError):
        save_bundle(
            tmp_path / "e",
            name="e",
            sensors=["a"],
            sensor_units=["1"],
            window=4,
            hop=1,
            rul=None,
            anomaly=None,
            training={},
            metrics={},
        )
