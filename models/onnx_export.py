"""Export a bundle's networks to ONNX (fp32 or int8), checked against torch.

``export_bundle`` adds to a bundle directory:

- ``rul.onnx``: scaled windows ``x (batch, sensors, window)`` -> the ensemble's mean RUL
  (clipping to ``[0, cap]`` stays in numpy, as in the torch predictor), and for a head
  with an interval every member's prediction (the spread and bounds stay in numpy too);
- ``anomaly.onnx``: scaled windows -> mean squared reconstruction error per window;
- ``golden.safetensors``: fixed raw windows and what torch predicts for them.

It then loads the new graphs with ONNX Runtime exactly as the agent does, compares
them with torch on the golden windows and refuses to write a bundle whose maximum
absolute difference is above the tolerance (written to the manifest, where the
agent checks the golden windows again when it loads the bundle). Opset 17, dynamic
batch axis. The manifest's own ``version`` is kept: the weights are the same model.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.numpy import save_file
from torch import nn

from agent.errors import BundleError, ModelError
from models.backend_bench import windows_per_s
from models.bundle import Bundle, load_bundle
from models.commission import AssetBaseline
from models.datasets import AssetTable
from models.lean import (
    BASELINE_JSON,
    BASELINE_ONNX,
    BASELINE_TEMPLATE,
    BASELINE_WEIGHTS,
    OnnxPredictor,
    load_lean_bundle,
    tolerance_key,
)
from models.manifest import MANIFEST, seal, sha256_file
from models.network import reconstruction_error
from models.predictor import Predictor
from models.preprocessing import FloatArray, Scaler
from models.quant_eval import AccuracyChange, compare

OPSET = 17
GOLDEN = "golden.safetensors"
GOLDEN_WINDOWS = 32
#: fp32 ONNX and torch differ only by float rounding.
FP32_TOLERANCE = 1e-4
#: int8 weights move outputs by design; this bounds how far: RUL as a fraction of its
#: cap, the anomaly score (healthy ~1, thresholds ~2-5) in absolute terms.
INT8_RUL_FRACTION = 0.03
INT8_SCORE_TOLERANCE = 0.25


class _RulEnsemble(nn.Module):
    """Scaled windows -> the members' mean, and with ``with_members`` also every
    member's prediction ``(members, batch)`` (the interval's spread, computed in numpy
    by :func:`models.predictions.member_spread` as for torch)."""

    def __init__(self, members: tuple[nn.Module, ...], with_members: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.with_members = with_members

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        outs = [m(x) for m in self.members]
        acc: torch.Tensor = outs[0]
        for o in outs[1:]:
            acc = acc + o
        mean = acc / len(self.members)
        if self.with_members:
            return mean, torch.stack(outs)
        return mean


class _ReconstructionError(nn.Module):
    def __init__(self, model: nn.Module, steps: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.steps = steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reconstruction_error(self.model, x, self.steps)


#: Output of a RUL graph with every member's prediction, ``(members, batch)``.
MEMBERS_OUTPUT = "members"


def to_onnx(module: nn.Module, sensors: int, window: int, *, members_output: bool = False) -> bytes:
    """``module`` as an ONNX graph with input ``x`` and a dynamic batch axis (output
    ``y``, and ``members`` when ``members_output``)."""
    module.eval()
    example = torch.zeros(2, sensors, window)
    buffer = io.BytesIO()
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter, on purpose (its deprecation warning is noise here):
        # the dynamo one needs onnxscript, a heavy extra dependency, for networks this
        # simple.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,  # type: ignore[arg-type]  # file objects work with dynamo=False
            opset_version=OPSET,
            input_names=["x"],
            output_names=["y", MEMBERS_OUTPUT] if members_output else ["y"],
            dynamic_axes={
                "x": {0: "batch"},
                "y": {0: "batch"},
                **({MEMBERS_OUTPUT: {1: "batch"}} if members_output else {}),
            },
            dynamo=False,
        )
    return buffer.getvalue()


def quantize_int8(model: bytes) -> bytes:
    """Dynamic int8 quantization of the weights (ONNX Runtime's quantizer)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    advice = _DropAdvice()
    # The quantizer logs advice about image models to the root logger on every call.
    root.addFilter(advice)
    try:
        with tempfile.TemporaryDirectory(prefix="onnx-q-") as tmp:
            source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            source.write_bytes(model)
            quantize_dynamic(source, target, weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        root.removeFilter(advice)


class _DropAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


def golden_windows(scaler: Scaler, window: int, n: int = GOLDEN_WINDOWS) -> FloatArray:
    """Fixed raw windows spread over each sensor's fitted range (seeded)."""
    rng = np.random.default_rng(20261123)
    z = rng.normal(0.5, 0.6, size=(n, scaler.n_sensors, window))
    offset = np.asarray(scaler.offset)[None, :, None]
    scale = np.asarray(scaler.scale)[None, :, None]
    out: FloatArray = (offset + scale * z).astype(np.float32)
    return out


@dataclass
class ExportReport:
    path: Path
    quantize: str | None
    max_abs_diff: dict[str, float]
    tolerance: dict[str, float]
    sizes: dict[str, int] = field(default_factory=dict)
    speed: dict[str, dict[str, float]] = field(default_factory=dict)
    #: int8 only, when data was given: the accuracy protocols on fp32 and int8 graphs.
    accuracy: AccuracyChange | None = None
    #: Size of the fp32 graphs, for the int8 size ratio.
    fp32_sizes: dict[str, int] = field(default_factory=dict)


def _outputs(predict: Callable[[FloatArray], Any], x: FloatArray) -> dict[str, FloatArray]:
    out = predict(x)
    found: dict[str, FloatArray] = {}
    if out.rul is not None:
        found["rul"] = np.asarray(out.rul, dtype=np.float32)
    if out.anomaly_score is not None:
        found["anomaly_score"] = np.asarray(out.anomaly_score, dtype=np.float32)
    if out.rul_low is not None and out.rul_high is not None:
        found["rul_low"] = np.asarray(out.rul_low, dtype=np.float32)
        found["rul_high"] = np.asarray(out.rul_high, dtype=np.float32)
    return found


def export_bundle(
    source: str | Path,
    out: str | Path | None = None,
    *,
    quantize: str | None = None,
    speed_seconds: float = 0.5,
    cmapss_train: Path | None = None,
    anomaly_tables: Sequence[AssetTable] | None = None,
) -> ExportReport:
    """Add ONNX graphs to the bundle directory ``source`` (or to a copy at ``out``).

    With ``quantize="int8"``, the data given (the C-MAPSS training file the bundle
    was trained on; labelled simulator runs) measures the accuracy change against
    fp32 graphs of the same weights (:mod:`models.quant_eval`).
    """
    if quantize not in (None, "int8"):
        raise ModelError(f"unknown quantization {quantize!r}; only int8 is supported")
    src = Path(source)
    bundle = load_bundle(src)
    if not src.is_dir():
        raise BundleError(
            f"bundle {src} is an archive; export works on a bundle directory",
            hint="extract it first (tar xzf) and export the directory",
        )
    fp32 = _graphs(bundle)
    graphs = {k: quantize_int8(v) for k, v in fp32.items()} if quantize else fp32
    tolerance = {k: FP32_TOLERANCE for k in graphs}
    if quantize:
        cap = bundle.rul.cap if bundle.rul is not None else 0.0
        tolerance = {"rul": INT8_RUL_FRACTION * cap, "anomaly_score": INT8_SCORE_TOLERANCE}
        tolerance = {k: v for k, v in tolerance.items() if k in graphs}
    if bundle.rul is not None and bundle.rul.interval is not None and "rul" in tolerance:
        tolerance["rul_interval"] = tolerance["rul"] * (1.0 + bundle.rul.interval.scale)
    work = Path(tempfile.mkdtemp(prefix="bundle-export-"))
    try:
        staged = work / "bundle"
        shutil.copytree(src, staged)
        scaler = (bundle.anomaly or bundle.rul).scaler  # type: ignore[union-attr]
        golden = golden_windows(scaler, bundle.window)
        expected = _outputs(Predictor(bundle).predict, golden)
        _write(staged, bundle, graphs, golden, expected, quantize, tolerance)
        lean = load_lean_bundle(staged, check_golden=False)
        got = _outputs(OnnxPredictor(lean).predict, golden)
        diff = {k: float(np.max(np.abs(got[k] - expected[k]))) for k in expected}
        bad = {k: v for k, v in diff.items() if v > tolerance[tolerance_key(k, tolerance)]}
        if bad:
            raise BundleError(
                f"ONNX and torch disagree on the golden windows: {bad} (tolerance {tolerance})",
                hint="the bundle was not written; report this with the bundle",
            )
        report = ExportReport(Path(out) if out else src, quantize, diff, tolerance)
        report.sizes = _sizes(staged)
        if quantize:
            reference = work / "fp32"
            shutil.copytree(src, reference)
            _write(reference, bundle, fp32, golden, expected, None, tolerance)
            report.fp32_sizes = _sizes(reference)
            if cmapss_train is not None or anomaly_tables:
                report.accuracy = compare(
                    reference, staged, cmapss_train=cmapss_train, anomaly_tables=anomaly_tables
                )
        if speed_seconds > 0:
            report.speed = _speeds(bundle, lean, golden, speed_seconds)
        _record(staged, report)
        _publish(staged, report.path, replace=out is None)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _graphs(bundle: Bundle) -> dict[str, bytes]:
    s, w = len(bundle.sensors), bundle.window
    graphs: dict[str, bytes] = {}
    if bundle.rul is not None:
        spread = bundle.rul.interval is not None
        graphs["rul"] = to_onnx(
            _RulEnsemble(bundle.rul.members, with_members=spread), s, w, members_output=spread
        )
    if bundle.anomaly is not None:
        graphs["anomaly_score"] = to_onnx(_ReconstructionError(bundle.anomaly.model), s, w)
    return graphs


def _write(
    root: Path,
    bundle: Bundle,
    graphs: dict[str, bytes],
    golden: FloatArray,
    expected: dict[str, FloatArray],
    quantize: str | None,
    tolerance: dict[str, float],
) -> None:
    manifest = dict(json.loads((root / MANIFEST).read_text()))
    files = dict(manifest["files"])
    names = {"rul": "rul.onnx", "anomaly_score": "anomaly.onnx"}
    for key, model in graphs.items():
        (root / names[key]).write_bytes(model)
        files[names[key]] = sha256_file(root / names[key])
    tensors = {"windows": golden, **{f"expected.{k}": v for k, v in expected.items()}}
    save_file(tensors, str(root / GOLDEN))
    files[GOLDEN] = sha256_file(root / GOLDEN)
    manifest["files"] = files
    manifest["onnx"] = {
        "opset": OPSET,
        "rul": names["rul"] if "rul" in graphs else None,
        "anomaly": names["anomaly_score"] if "anomaly_score" in graphs else None,
        "input": "x: float32 (batch, sensors, window) scaled with the head's scaler",
        "golden": GOLDEN,
        "tolerance": tolerance,
        "quantization": "int8-dynamic" if quantize else None,
    }
    _save_manifest(root, manifest)


def _record(root: Path, report: ExportReport) -> None:
    manifest = dict(json.loads((root / MANIFEST).read_text()))
    manifest["onnx"] = {
        **manifest["onnx"],
        "max_abs_diff": report.max_abs_diff,
        "sizes_bytes": report.sizes,
        "windows_per_s": report.speed,
    }
    if report.accuracy is not None:
        manifest["onnx"]["int8_accuracy"] = report.accuracy.as_dict()
    if report.fp32_sizes:
        manifest["onnx"]["fp32_sizes_bytes"] = report.fp32_sizes
    _save_manifest(root, manifest)


def _save_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(seal(manifest), indent=2, sort_keys=True) + "\n")
    tmp.replace(root / MANIFEST)


def _sizes(root: Path) -> dict[str, int]:
    return {
        p.name: p.stat().st_size
        for p in sorted(root.iterdir())
        if p.suffix in (".onnx", ".safetensors") and p.name != GOLDEN
    }


def _speeds(
    bundle: Bundle, lean: Any, golden: FloatArray, seconds: float
) -> dict[str, dict[str, float]]:
    torch_predict = Predictor(bundle).predict
    onnx_predict = OnnxPredictor(lean).predict
    out: dict[str, dict[str, float]] = {}
    for batch in (1, 64):
        x = np.concatenate([golden] * (1 + batch // len(golden)))[:batch]
        out[f"batch_{batch}"] = {
            "torch": round(windows_per_s(partial(torch_predict, x), batch, seconds)),
            "onnx": round(windows_per_s(partial(onnx_predict, x), batch, seconds)),
        }
    return out


def _publish(staged: Path, target: Path, *, replace: bool) -> None:
    """Move the checked bundle into place; the source stays untouched until then."""
    if target.exists() and not replace:
        raise BundleError(f"{target} already exists", hint="choose another --out")
    backup = target.with_name(target.name + ".old") if target.exists() else None
    if backup is not None:
        target.rename(backup)
    shutil.copytree(staged, target)
    if backup is not None:
        shutil.rmtree(backup)


def split_weights(model: bytes) -> tuple[bytes, dict[str, npt.NDArray[Any]]]:
    """``model`` as a weightless template (its initializers turned into inputs) and the
    weights to feed it. Networks of one architecture share a template byte for byte."""
    import onnx
    from onnx import helper, numpy_helper

    graph = onnx.load_from_string(model)
    weights: dict[str, npt.NDArray[Any]] = {}
    for init in graph.graph.initializer:
        array = numpy_helper.to_array(init)
        weights[init.name] = np.ascontiguousarray(array)
        graph.graph.input.append(
            helper.make_tensor_value_info(
                init.name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)
            )
        )
    del graph.graph.initializer[:]
    return graph.SerializeToString(), weights


def _replace(path: Path, data: bytes) -> str:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return sha256_file(path)


def export_baseline(baseline: AssetBaseline, directory: Path) -> None:
    """Add the asset autoencoder to a saved baseline folder for the lean agent.

    Written twice: whole (``autoencoder.onnx``, to inspect or run alone), and as a
    weightless template plus the asset's weights. The agent runs every asset of one
    architecture through a single session of the shared template and feeds each its
    own weights: ~64 KB per asset instead of a ~0.5 MB session each.
    """
    graph = to_onnx(
        _ReconstructionError(baseline.model, baseline.score_steps),
        len(baseline.sensors),
        baseline.window,
    )
    template, weights = split_weights(graph)
    meta = json.loads((directory / BASELINE_JSON).read_text())
    meta["onnx"] = BASELINE_ONNX
    meta["onnx_sha256"] = _replace(directory / BASELINE_ONNX, graph)
    meta["onnx_template"] = BASELINE_TEMPLATE
    meta["onnx_template_sha256"] = _replace(directory / BASELINE_TEMPLATE, template)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".weights-") as tmp:
        staged = Path(tmp) / BASELINE_WEIGHTS
        save_file(weights, str(staged))
        meta["onnx_weights"] = BASELINE_WEIGHTS
        meta["onnx_weights_sha256"] = _replace(directory / BASELINE_WEIGHTS, staged.read_bytes())
    jtmp = directory / (BASELINE_JSON + ".tmp")
    jtmp.write_text(json.dumps(meta, indent=2) + "\n")
    jtmp.replace(directory / BASELINE_JSON)
