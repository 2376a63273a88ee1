"""Bundles to publish as updates: copies of the shipped pump bundle, good or bad."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from models.bundles import default_bundle_path
from models.manifest import MANIFEST, read_verified_manifest, seal


def make_version(tmp: Path, tag: str, *, rul_cap: float | None = None) -> Path:
    """A copy of the shipped pump bundle with a new content version.

    ``rul_cap`` makes a bad model that is still a valid, sealed bundle: every RUL
    estimate clipped to it (alerting on healthy pumps when the agent alerts below a
    higher RUL), its golden windows recomputed so that it passes verification.
    """
    out = tmp / f"pump-{tag}"
    shutil.copytree(default_bundle_path("pump"), out)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["notes"] = f"retrained {tag}"
    if rul_cap is not None:
        manifest["rul"]["cap"] = rul_cap
        (out / MANIFEST).write_text(json.dumps(seal(manifest)))
        _regolden(out)
        manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps(seal(manifest)))
    return out


def _regolden(bundle: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from models.lean import OnnxPredictor, load_lean_bundle

    manifest = json.loads((bundle / MANIFEST).read_text())
    name = manifest["onnx"]["golden"]
    golden = load_file(str(bundle / name))
    out = OnnxPredictor(load_lean_bundle(bundle, check_golden=False)).predict(golden["windows"])
    for key in ("rul", "anomaly_score", "rul_low", "rul_high"):
        value = getattr(out, key)
        if f"expected.{key}" in golden and value is not None:
            golden[f"expected.{key}"] = value
    save_file(golden, str(bundle / name))
    manifest["files"][name] = hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    (bundle / MANIFEST).write_text(json.dumps(seal(manifest)))


def version_of(bundle: Path) -> str:
    return str(read_verified_manifest(bundle, bundle)["version"])
