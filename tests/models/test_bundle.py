from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from agent.errors import BundleError, ModelError
from models.bundle import RUL_WEIGHTS, load_bundle, save_bundle
from models.bundles import default_bundle_path
from models.lean import load_lean_bundle
from models.manifest import MANIFEST, content_version, seal, sha256_file
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
    (bundle_dir / MANIFEST).write_text(json.dumps(seal(manifest)))


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
    (a / MANIFEST).write_text(json.dumps(seal(manifest)))
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


# --- tampering: a re-sealed bundle cannot keep its version or reach outside itself ---


def _tamper_weights(bundle_dir: Path) -> dict[str, object]:
    """Other weights of the right shapes, with their checksum updated in the manifest."""
    tensors = load_file(str(bundle_dir / RUL_WEIGHTS))
    save_file({k: t + 0.5 for k, t in tensors.items()}, str(bundle_dir / RUL_WEIGHTS))
    manifest: dict[str, object] = json.loads((bundle_dir / MANIFEST).read_text())
    files = manifest["files"]
    assert isinstance(files, dict)
    files[RUL_WEIGHTS] = sha256_file(bundle_dir / RUL_WEIGHTS)
    return manifest


def test_weights_swapped_and_resealed_under_the_old_version_are_refused(
    bundle_dir: Path,
) -> None:
    before = load_bundle(bundle_dir).version
    manifest = _tamper_weights(bundle_dir)
    assert manifest["version"] == before
    # The manifest checksum and every file digest are consistent: only the version,
    # which must be derived from the content, gives it away.
    manifest["manifest_sha256"] = hashlib.sha256(_canonical(manifest)).hexdigest()
    (bundle_dir / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="bundle version does not match its content"):
        load_bundle(bundle_dir)


def test_resealed_content_gets_a_version_of_its_own(bundle_dir: Path) -> None:
    before = load_bundle(bundle_dir).version
    manifest = _tamper_weights(bundle_dir)
    (bundle_dir / MANIFEST).write_text(json.dumps(seal(dict(manifest))))
    after = load_bundle(bundle_dir).version
    assert after != before and after.startswith("test@")
    # A threshold is content as much as weights are.
    _reseal(bundle_dir, {"anomaly": {**manifest["anomaly"], "threshold": 99.0}})  # type: ignore[dict-item]
    assert load_bundle(bundle_dir).version not in (before, after)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "..", "sub/rul.safetensors", ""])
def test_weights_outside_the_bundle_are_refused(bundle_dir: Path, name: str) -> None:
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    manifest["rul"]["weights"] = name
    (bundle_dir / MANIFEST).write_text(json.dumps(seal(manifest)))
    with pytest.raises(BundleError, match="not a plain file name inside the bundle"):
        load_bundle(bundle_dir)


def test_a_file_not_listed_in_files_is_not_opened(bundle_dir: Path) -> None:
    shutil.copyfile(bundle_dir / RUL_WEIGHTS, bundle_dir / "extra.safetensors")
    _reseal(
        bundle_dir,
        {
            "rul": {
                **json.loads((bundle_dir / MANIFEST).read_text())["rul"],
                "weights": "extra.safetensors",
            }
        },
    )
    with pytest.raises(BundleError, match=r"extra\.safetensors has no checksum in the manifest"):
        load_bundle(bundle_dir)


def test_a_listed_file_linking_out_of_the_bundle_is_refused(tmp_path: Path) -> None:
    bundle_dir = make_bundle(tmp_path / "bundle")
    outside = tmp_path / "elsewhere.safetensors"
    (bundle_dir / RUL_WEIGHTS).rename(outside)
    (bundle_dir / RUL_WEIGHTS).symlink_to(outside)  # digest unchanged: same bytes
    with pytest.raises(BundleError, match="link leading out of the bundle"):
        load_bundle(bundle_dir)


def _lean_copy(tmp_path: Path) -> Path:
    target = tmp_path / "pump"
    shutil.copytree(default_bundle_path("pump"), target)
    return target


@pytest.mark.parametrize("key", ["rul", "anomaly", "golden"])
@pytest.mark.parametrize("name", ["/etc/passwd", "../x"])
def test_onnx_and_golden_paths_outside_the_bundle_are_refused(
    tmp_path: Path, key: str, name: str
) -> None:
    bundle = _lean_copy(tmp_path)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["onnx"][key] = name
    (bundle / MANIFEST).write_text(json.dumps(seal(manifest)))
    with pytest.raises(BundleError, match="not a plain file name inside the bundle"):
        load_lean_bundle(bundle)


def test_an_onnx_graph_not_listed_in_files_is_refused(tmp_path: Path) -> None:
    bundle = _lean_copy(tmp_path)
    shutil.copyfile(bundle / "anomaly.onnx", bundle / "other.onnx")
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["onnx"]["anomaly"] = "other.onnx"
    (bundle / MANIFEST).write_text(json.dumps(seal(manifest)))
    with pytest.raises(BundleError, match=r"other\.onnx has no checksum in the manifest"):
        load_lean_bundle(bundle)


@pytest.mark.parametrize("name", ["pump", "cmapss-fd001"])
def test_shipped_bundles_carry_their_content_version(name: str) -> None:
    manifest = json.loads((default_bundle_path(name) / MANIFEST).read_text())
    assert manifest["version"] == content_version(manifest)
    assert load_bundle(default_bundle_path(name)).version == manifest["version"]


def test_a_rul_only_bundle_records_its_min_rows(tmp_path: Path) -> None:
    whole = load_bundle(make_bundle(tmp_path / "whole", anomaly=False))
    assert whole.min_rows == whole.window and "min_rows" not in whole.manifest
    short = load_bundle(make_bundle(tmp_path / "short", anomaly=False, first_rows=5))
    assert short.min_rows == 5 and short.window == 16


def test_min_rows_is_refused_with_an_anomaly_model_or_outside_the_window(
    tmp_path: Path, bundle_dir: Path
) -> None:
    with pytest.raises(BundleError, match="only a RUL-only bundle"):
        make_bundle(tmp_path / "both", first_rows=5)
    with pytest.raises(BundleError, match="only a RUL-only bundle"):
        make_bundle(tmp_path / "long", anomaly=False, first_rows=17)
    _reseal(bundle_dir, {"min_rows": 5})  # a bundle with an autoencoder, edited
    with pytest.raises(BundleError, match="RUL-only bundles"):
        load_bundle(bundle_dir)
