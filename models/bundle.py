"""Model bundles: a directory or ``.tar.gz`` with ``manifest.json`` plus safetensors weights.

Layout::

    manifest.json        what the weights mean (see :func:`save_bundle`), checksums
    rul.safetensors      RUL ensemble, tensors prefixed ``member<k>.`` (optional)
    anomaly.safetensors  fleet autoencoder (optional)

No pickle anywhere: weights are safetensors, everything else is JSON. A bundle is
verified before it is used (:func:`load_bundle`): the manifest's own checksum, the
sha256 of every listed file (and no file opened that is not listed), the version
against the content (see :mod:`models.manifest`), and every tensor's name and shape
against the network the manifest describes. Anything wrong raises
:class:`agent.errors.BundleError` with one line naming the problem and what to do,
so that the agent can keep its previous bundle active.
"""

from __future__ import annotations

import json
import math
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from agent.errors import BundleError, DatasetError
from models.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    REBUILD_HINT,
    bundle_file,
    extract,
    min_rows,
    read_verified_manifest,
    refuse,
    seal,
    sha256_file,
)
from models.network import AutoencoderConfig, ConvAutoencoder, RulCNN, RulConfig
from models.predictions import LoadedBundle, RulInterval
from models.preprocessing import Scaler
from models.scoring import RunCondition, ThresholdRule

RUL_WEIGHTS = "rul.safetensors"
ANOMALY_WEIGHTS = "anomaly.safetensors"
_REBUILD_HINT = REBUILD_HINT


def code_version() -> str:
    """Version of the code that wrote a bundle (the installed edgewatch distribution)."""
    from agent import __version__

    return __version__


@dataclass(frozen=True)
class RulHead:
    """RUL ensemble: predictions are the members' mean, clipped to ``[0, cap]``."""

    network: RulConfig
    members: tuple[RulCNN, ...]
    scaler: Scaler
    cap: float
    unit: str
    #: Interval from the members' spread (calibrated by cross-validation), or None.
    interval: RulInterval | None = None


@dataclass(frozen=True)
class AnomalyHead:
    """Fleet autoencoder with its calibration (see :mod:`models.scoring`)."""

    network: AutoencoderConfig
    model: ConvAutoencoder
    scaler: Scaler
    reference: float
    threshold: float
    rule: ThresholdRule
    #: Per-sensor scale floor, relative to the level, for asset scalers fitted during
    #: commissioning (see :func:`models.train.fleet_relative_spread`); None = default.
    relative_floor: tuple[float, ...] | None = None
    #: When windows may be judged (machine running); None = always.
    run_condition: RunCondition | None = None


@dataclass(frozen=True)
class Bundle(LoadedBundle[RulHead, AnomalyHead]):
    """A verified bundle with its torch networks loaded."""


# --------------------------------------------------------------------------- helpers


# --------------------------------------------------------------------------- save


def save_bundle(
    out: str | Path,
    *,
    name: str,
    sensors: Sequence[str],
    sensor_units: Sequence[str],
    window: int,
    hop: int,
    rul: RulHead | None,
    anomaly: AnomalyHead | None,
    training: Mapping[str, Any],
    metrics: Mapping[str, Any],
    sample_period_s: float | None = None,
    first_rows: int | None = None,
) -> Path:
    """Write a bundle directory (or ``.tar.gz`` if ``out`` ends with it); returns its path.

    ``version`` in the manifest is ``<name>@<16 hex>`` of its content (see
    :func:`models.manifest.content_version`): the same weights, scalers and thresholds
    always get the same version, any difference gets another one.
    """
    if rul is None and anomaly is None:
        raise BundleError("a bundle needs at least one model (rul or anomaly)")
    if len(sensors) != len(sensor_units):
        raise BundleError("sensors and sensor_units differ in length")
    target = Path(out)
    as_tar = target.name.endswith(".tar.gz")
    work = Path(tempfile.mkdtemp(prefix="bundle-")) if as_tar else target
    work.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "kinds": [],
        "code_version": code_version(),
        "sensors": [{"name": s, "unit": u} for s, u in zip(sensors, sensor_units, strict=True)],
        "window": window,
        "hop": hop,
        "sample_period_s": sample_period_s,
        "input": "float32 raw sensor values shaped (batch, sensors, window), sensors in order",
        "rul": None,
        "anomaly": None,
    }
    if first_rows is not None and first_rows != window:
        if anomaly is not None or not 1 <= first_rows <= window:
            raise BundleError(f"min_rows {first_rows}: only a RUL-only bundle, within 1..window")
        # Written only when it differs, so that bundles without it keep their versions.
        manifest["min_rows"] = first_rows
    if rul is not None:
        tensors = {
            f"member{k}.{key}": t.detach().contiguous()
            for k, m in enumerate(rul.members)
            for key, t in m.state_dict().items()
        }
        save_file(tensors, str(work / RUL_WEIGHTS))
        files[RUL_WEIGHTS] = sha256_file(work / RUL_WEIGHTS)
        manifest["kinds"].append("rul")
        manifest["rul"] = {
            "weights": RUL_WEIGHTS,
            "network": rul.network.to_json(),
            "members": len(rul.members),
            "scaler": rul.scaler.to_json(),
            "cap": rul.cap,
            "unit": rul.unit,
            "output": "mean of members, clipped to [0, cap]",
            "interval": None if rul.interval is None else rul.interval.to_json(),
        }
    if anomaly is not None:
        save_file(
            {k: t.detach().contiguous() for k, t in anomaly.model.state_dict().items()},
            str(work / ANOMALY_WEIGHTS),
        )
        files[ANOMALY_WEIGHTS] = sha256_file(work / ANOMALY_WEIGHTS)
        manifest["kinds"].append("anomaly")
        manifest["anomaly"] = {
            "weights": ANOMALY_WEIGHTS,
            "network": anomaly.network.to_json(),
            "scaler": anomaly.scaler.to_json(),
            "score_reference": anomaly.reference,
            "threshold": anomaly.threshold,
            "threshold_rule": anomaly.rule.to_json(),
            "score": "mean squared reconstruction error of scaled window / score_reference",
            "asset_scale_floor_relative": (
                list(anomaly.relative_floor) if anomaly.relative_floor is not None else None
            ),
            "run_condition": (
                anomaly.run_condition.to_json() if anomaly.run_condition is not None else None
            ),
        }
    manifest["training"] = dict(training)
    manifest["metrics"] = dict(metrics)
    manifest["files"] = files
    manifest = seal(manifest)
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    for f in work.iterdir():
        f.chmod(0o644)  # safetensors writes 0600; a shipped bundle must be world-readable
    if as_tar:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(target, "w:gz") as tar:
            for f in sorted(work.iterdir()):
                tar.add(f, arcname=f.name)
        shutil.rmtree(work, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- load


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle directory or ``.tar.gz``; raises :class:`BundleError`."""
    p = Path(path)
    if not p.exists():
        raise BundleError(f"bundle {p} not found", hint="check the path or model.bundle setting")
    if p.is_dir():
        return _load_dir(p, p)
    if p.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
            extract(p, Path(tmp))
            return _load_dir(Path(tmp), p)
    raise BundleError(f"bundle {p} is neither a directory nor a .tar.gz", hint=_REBUILD_HINT)


def _load_dir(root: Path, origin: Path) -> Bundle:
    manifest = read_verified_manifest(root, origin)
    files = manifest["files"]
    try:
        sensors = tuple(str(s["name"]) for s in manifest["sensors"])
        units = tuple(str(s.get("unit", "")) for s in manifest["sensors"])
        window, hop = int(manifest["window"]), int(manifest["hop"])
        rul = _load_rul(root, origin, manifest.get("rul"), files, len(sensors), window)
        anomaly = _load_anomaly(root, origin, manifest.get("anomaly"), files, len(sensors), window)
        version, name = str(manifest["version"]), str(manifest["name"])
        rows = min_rows(manifest)
    except (KeyError, TypeError, ValueError, DatasetError) as exc:
        raise refuse(origin, f"manifest field missing or malformed ({exc})") from exc
    if rul is None and anomaly is None:
        raise refuse(origin, "it contains no model")
    return Bundle(origin, name, version, sensors, units, window, hop, rul, anomaly, manifest, rows)


def _check_shape(
    origin: Path,
    what: str,
    n_sensors: int,
    window: int,
    net_sensors: int,
    net_window: int,
    scaler: Scaler,
) -> None:
    if net_sensors != n_sensors or scaler.n_sensors != n_sensors:
        raise refuse(
            origin,
            f"{what} expects {net_sensors} sensors (scaler {scaler.n_sensors}) but the "
            f"manifest lists {n_sensors}",
        )
    if net_window != window:
        raise refuse(origin, f"{what} window {net_window} differs from manifest window {window}")


def _weights(
    root: Path, origin: Path, fname: object, files: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    path = bundle_file(root, origin, files, fname)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise refuse(origin, f"{fname} is not a readable safetensors file ({exc})") from exc


def _load_state(
    origin: Path, module: nn.Module, state: Mapping[str, torch.Tensor], what: str
) -> None:
    want = module.state_dict()
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        raise refuse(
            origin,
            f"{what} weights do not fit the network (missing {missing[:3]}, "
            f"unexpected {extra[:3]})",
        )
    for key, t in want.items():
        if tuple(state[key].shape) != tuple(t.shape):
            raise refuse(
                origin,
                f"{what} tensor {key} has shape {tuple(state[key].shape)}, network needs "
                f"{tuple(t.shape)}",
            )
    module.load_state_dict(dict(state), strict=True)
    module.eval()


def _load_rul(
    root: Path, origin: Path, spec: Any, files: Mapping[str, Any], n_sensors: int, window: int
) -> RulHead | None:
    if spec is None:
        return None
    net = RulConfig.from_json(spec["network"])
    scaler = Scaler.from_json(spec["scaler"])
    _check_shape(origin, "RUL network", n_sensors, window, net.n_sensors, net.window, scaler)
    tensors = _weights(root, origin, spec["weights"], files)
    n = int(spec["members"])
    if n < 1:
        raise refuse(origin, "RUL head has no members")
    members = []
    for k in range(n):
        prefix = f"member{k}."
        m = RulCNN(net)
        _load_state(
            origin,
            m,
            {key[len(prefix) :]: t for key, t in tensors.items() if key.startswith(prefix)},
            f"RUL member {k}",
        )
        members.append(m)
    if any(not key.startswith(tuple(f"member{k}." for k in range(n))) for key in tensors):
        raise refuse(origin, "RUL weights hold more members than the manifest lists")
    interval = RulInterval.from_json(spec.get("interval"))
    if interval is not None and n < 2:
        raise refuse(origin, "a RUL interval from the members' spread needs 2 members or more")
    return RulHead(net, tuple(members), scaler, float(spec["cap"]), str(spec["unit"]), interval)


def _load_anomaly(
    root: Path, origin: Path, spec: Any, files: Mapping[str, Any], n_sensors: int, window: int
) -> AnomalyHead | None:
    if spec is None:
        return None
    net = AutoencoderConfig.from_json(spec["network"])
    scaler = Scaler.from_json(spec["scaler"])
    _check_shape(origin, "autoencoder", n_sensors, window, net.n_sensors, net.window, scaler)
    model = ConvAutoencoder(net)
    _load_state(origin, model, _weights(root, origin, spec["weights"], files), "autoencoder")
    reference, threshold = float(spec["score_reference"]), float(spec["threshold"])
    if not (reference > 0 and threshold > 0 and math.isfinite(reference * threshold)):
        raise refuse(origin, "anomaly score_reference and threshold must be positive numbers")
    rule = ThresholdRule.from_json(spec.get("threshold_rule", {}))
    floor = spec.get("asset_scale_floor_relative")
    if floor is not None and len(floor) != n_sensors:
        raise refuse(
            origin, f"asset_scale_floor_relative has {len(floor)} entries, not {n_sensors}"
        )
    rel = tuple(float(v) for v in floor) if floor is not None else None
    run = RunCondition.from_json(spec.get("run_condition"))
    return AnomalyHead(net, model, scaler, reference, threshold, rule, rel, run)
