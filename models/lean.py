"""Inference with ONNX Runtime, without torch: the lean backend of the agent.

A bundle exported with ``edgewatch model export`` carries ONNX graphs of its
networks (see :mod:`models.onnx_export`): ``rul.onnx`` maps scaled windows to the
ensemble's RUL, ``anomaly.onnx`` maps scaled windows to their mean squared
reconstruction error. Scaling, score normalisation and thresholds stay in numpy,
exactly as in :class:`models.predictor.Predictor`, whose interface
:class:`OnnxPredictor` shares. Nothing here imports torch (a test checks it).
"""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.errors import BundleError, ModelError
from models.batch_predictor import BatchPredictor
from models.manifest import (
    bundle_file,
    extract,
    min_rows,
    read_verified_manifest,
    refuse,
    sha256_file,
)
from models.predictions import LoadedBundle, RulInterval
from models.preprocessing import FloatArray, Scaler
from models.scoring import RunCondition, ThresholdRule, judged_windows

ONNX_INPUT = "x"
BASELINE_ONNX = "autoencoder.onnx"
BASELINE_TEMPLATE = "autoencoder.template.onnx"
BASELINE_WEIGHTS = "autoencoder.safetensors"
BASELINE_JSON = "baseline.json"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def has_graphs(path: Path) -> bool:
    """Does the bundle at ``path`` carry ONNX graphs (cheap: reads the manifest only)?"""
    if not (path / "manifest.json").is_file():
        return False
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("onnx"), dict)


class Network:
    """One ONNX graph in a single-threaded ONNX Runtime session."""

    def __init__(self, model: bytes, *, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # The arena keeps the largest batch's buffers forever; a gateway wants them back.
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"ONNX Runtime cannot load a graph: {exc}") from exc

    def run(
        self, x: FloatArray, weights: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> FloatArray:
        """Outputs for ``x``; ``weights`` feeds a template graph (see :func:`shared_network`)."""
        feeds: dict[str, npt.NDArray[Any]] = dict(weights) if weights else {}
        feeds[ONNX_INPUT] = np.ascontiguousarray(x, dtype=np.float32)
        out = self.session.run(None, feeds)
        result: FloatArray = np.asarray(out[0], dtype=np.float32).reshape(len(x))
        return result

    @property
    def outputs(self) -> int:
        return len(self.session.get_outputs())

    def run_all(self, x: FloatArray) -> list[FloatArray]:
        """Every output of the graph for ``x`` (e.g. a RUL graph's mean and members)."""
        out = self.session.run(None, {ONNX_INPUT: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.asarray(o, dtype=np.float32) for o in out]


_shared: dict[tuple[str, int], Network] = {}
_shared_lock = threading.Lock()


def shared_network(template: Path, digest: str, *, threads: int = 1) -> Network:
    """One session per distinct template graph in this process, whoever asks.

    Sessions are immutable and their ``run`` is thread-safe, so every asset baseline
    of one architecture can share one; the weights come with each call.
    """
    key = (digest, threads)
    with _shared_lock:
        network = _shared.get(key)
        if network is None:
            network = _shared[key] = Network(template.read_bytes(), threads=threads)
        return network


@dataclass(frozen=True)
class LeanRul:
    scaler: Scaler
    cap: float
    unit: str
    network: Network
    interval: RulInterval | None = None


@dataclass(frozen=True)
class LeanAnomaly:
    scaler: Scaler
    reference: float
    threshold: float
    rule: ThresholdRule
    network: Network
    relative_floor: tuple[float, ...] | None = None
    run_condition: RunCondition | None = None


@dataclass(frozen=True)
class LeanBundle(LoadedBundle[LeanRul, LeanAnomaly]):
    """A verified bundle with its ONNX graphs loaded (same fields the agent reads)."""


def load_lean_bundle(
    path: str | Path, *, threads: int = 1, check_golden: bool = True
) -> LeanBundle:
    """Verify a bundle (directory or ``.tar.gz``) and load its ONNX graphs.

    With ``check_golden`` the graphs must reproduce, within the manifest's tolerance,
    what torch predicted for the bundle's golden windows when it was exported: a
    graph that computes something else is refused even if its checksum was forged.
    """
    p = Path(path)
    if not p.exists():
        raise BundleError(f"bundle {p} not found", hint="check the path or model.bundle setting")
    if p.is_dir():
        return _load(p, p, threads, check_golden)
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        extract(p, Path(tmp))
        return _load(Path(tmp), p, threads, check_golden)


def tolerance_key(output: str, tolerance: Mapping[str, Any]) -> str:
    """Which tolerance of a manifest holds ``output``: the interval's bounds have their
    own where recorded (``mean +- scale x sd`` multiplies the members' rounding by up to
    ``1 + scale``), else the RUL's, as every other RUL output."""
    if output in ("rul_low", "rul_high") and "rul_interval" in tolerance:
        return "rul_interval"
    return "rul" if output.startswith("rul") else output


def _check_golden(root: Path, origin: Path, bundle: LeanBundle) -> None:
    from safetensors.numpy import load_file

    graphs = bundle.manifest["onnx"]
    golden = load_file(str(bundle_file(root, origin, bundle.manifest["files"], graphs["golden"])))
    out = OnnxPredictor(bundle).predict(golden["windows"])
    tolerance = graphs["tolerance"]
    outputs = (
        ("rul", out.rul),
        ("anomaly_score", out.anomaly_score),
        ("rul_low", out.rul_low),
        ("rul_high", out.rul_high),
    )
    for key, got in outputs:
        if got is None or f"expected.{key}" not in golden:
            continue
        limit = tolerance[tolerance_key(key, tolerance)]
        diff = float(np.max(np.abs(got - golden[f"expected.{key}"])))
        if not diff <= float(limit):
            raise refuse(
                origin,
                f"its ONNX {key} graph does not reproduce the golden windows "
                f"(max difference {diff:.3g} > {limit})",
            )


def _load(root: Path, origin: Path, threads: int, check_golden: bool) -> LeanBundle:
    manifest = read_verified_manifest(root, origin)
    graphs = manifest.get("onnx")
    if not isinstance(graphs, dict):
        raise BundleError(
            f"bundle {origin} has no ONNX graphs",
            hint=f"run `edgewatch model export {origin}` or set model.backend = torch",
        )
    files = manifest["files"]
    try:
        sensors = tuple(str(s["name"]) for s in manifest["sensors"])
        units = tuple(str(s.get("unit", "")) for s in manifest["sensors"])
        rul = anomaly = None
        if manifest.get("rul") and graphs.get("rul"):
            head = manifest["rul"]
            rul = LeanRul(
                scaler=Scaler.from_json(head["scaler"]),
                cap=float(head["cap"]),
                unit=str(head.get("unit", "")),
                network=Network(
                    bundle_file(root, origin, files, graphs["rul"]).read_bytes(), threads=threads
                ),
                interval=RulInterval.from_json(head.get("interval")),
            )
            if rul.interval is not None and rul.network.outputs < 2:
                raise refuse(origin, "its RUL graph has no members output for the interval")
        if manifest.get("anomaly") and graphs.get("anomaly"):
            head = manifest["anomaly"]
            floor = head.get("asset_scale_floor_relative")
            anomaly = LeanAnomaly(
                scaler=Scaler.from_json(head["scaler"]),
                reference=float(head["score_reference"]),
                threshold=float(head["threshold"]),
                rule=ThresholdRule.from_json(head["threshold_rule"]),
                network=Network(
                    bundle_file(root, origin, files, graphs["anomaly"]).read_bytes(),
                    threads=threads,
                ),
                relative_floor=None if floor is None else tuple(float(v) for v in floor),
                run_condition=RunCondition.from_json(head.get("run_condition")),
            )
        bundle = LeanBundle(
            path=origin,
            name=str(manifest["name"]),
            version=str(manifest["version"]),
            sensors=sensors,
            sensor_units=units,
            window=int(manifest["window"]),
            hop=int(manifest["hop"]),
            rul=rul,
            anomaly=anomaly,
            manifest=manifest,
            min_rows=min_rows(manifest),
        )
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise refuse(origin, f"ONNX section missing or malformed ({exc})") from exc
    if bundle.rul is None and bundle.anomaly is None:
        raise refuse(origin, "it contains no ONNX graph")
    if check_golden:
        _check_golden(root, origin, bundle)
    return bundle


@dataclass
class LeanBaseline:
    """An asset baseline scored by ONNX Runtime (the folder also holds the torch weights)."""

    sensors: tuple[str, ...]
    window: int
    scaler: Scaler
    network: Network
    reference: float
    threshold: float
    rule: ThresholdRule
    asset: str | None = None
    #: The asset's weights when ``network`` is a shared template (None: a whole graph).
    weights: dict[str, npt.NDArray[Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    run_condition: RunCondition | None = None
    run_level: float | None = None

    def judged(self, windows: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Per raw window: is the machine running, so that the score may be judged?"""
        return judged_windows(self.run_condition, self.run_level, windows, self.sensors)

    def score(self, windows: npt.ArrayLike) -> FloatArray:
        x = np.asarray(windows, dtype=np.float32)
        err = self.network.run(self.scaler.transform(x, axis=1), self.weights)
        return (err / np.float32(self.reference)).astype(np.float32)

    @classmethod
    def load(cls, directory: str | Path, *, threads: int = 1) -> LeanBaseline:
        d = Path(directory)
        try:
            meta = json.loads((d / BASELINE_JSON).read_text())
            graph = meta.get("onnx")
            if not graph:
                raise ModelError(
                    f"asset baseline {d} has no ONNX graph (made for the torch backend)",
                    hint="commission the asset again",
                )
            network, weights = _baseline_network(d, meta, threads)
            return cls(
                sensors=tuple(str(s) for s in meta["sensors"]),
                window=int(meta["window"]),
                scaler=Scaler.from_json(meta["scaler"]),
                network=network,
                weights=weights,
                reference=float(meta["score_reference"]),
                threshold=float(meta["threshold"]),
                rule=ThresholdRule.from_json(meta["threshold_rule"]),
                asset=meta.get("asset"),
                info=dict(meta.get("info", {})),
                run_condition=RunCondition.from_json(meta.get("run_condition")),
                run_level=None if meta.get("run_level") is None else float(meta["run_level"]),
            )
        except ModelError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(
                f"cannot load asset baseline from {d}: {exc}", hint="commission the asset again"
            ) from exc


def _verified(folder: Path, meta: dict[str, Any], key: str) -> Path:
    path = folder / str(meta[key])
    if sha256_file(path) != meta.get(f"{key}_sha256"):
        raise ModelError(
            f"asset baseline {folder} is damaged ({path.name} checksum mismatch)",
            hint="commission the asset again",
        )
    return path


def _baseline_network(
    folder: Path, meta: dict[str, Any], threads: int
) -> tuple[Network, dict[str, npt.NDArray[Any]] | None]:
    if meta.get("onnx_template") and meta.get("onnx_weights"):
        from safetensors.numpy import load_file

        template = _verified(folder, meta, "onnx_template")
        weights = load_file(str(_verified(folder, meta, "onnx_weights")))
        network = shared_network(template, str(meta["onnx_template_sha256"]), threads=threads)
        return network, dict(weights)
    # Baselines exported before templates existed: a session of their own.
    return Network(_verified(folder, meta, "onnx").read_bytes(), threads=threads), None


class OnnxPredictor(BatchPredictor[LeanBaseline]):
    """The scoring path (:class:`models.batch_predictor.BatchPredictor`) on ONNX
    Runtime; one instance per thread."""

    def __init__(self, bundle: LeanBundle | str | Path, *, threads: int = 1) -> None:
        if threads < 1:
            raise ModelError(f"threads must be >= 1, got {threads}")
        self.threads = threads
        self._bundle = (
            bundle if isinstance(bundle, LeanBundle) else load_lean_bundle(bundle, threads=threads)
        )

    @property
    def bundle(self) -> LeanBundle:
        return self._bundle

    def _rul_outputs(
        self, scaled: FloatArray, members: bool
    ) -> tuple[FloatArray, FloatArray | None]:
        head = self.bundle.rul
        assert head is not None
        if not members:
            return head.network.run(scaled), None
        both = head.network.run_all(scaled)
        return both[0].reshape(-1), both[1]

    def _fleet_scores(self, raw: FloatArray) -> FloatArray:
        fleet = self.bundle.anomaly
        assert fleet is not None
        err = fleet.network.run(fleet.scaler.transform(raw, axis=1))
        return (err / np.float32(fleet.reference)).astype(np.float32)
