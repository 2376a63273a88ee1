"""``edgewatch model export``: ONNX graphs (and int8) for the lean backend."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from agent.cli._common import console, emit_json

if TYPE_CHECKING:
    from models.datasets import AssetTable

app = typer.Typer(help="Prepare model bundles for the gateway (ONNX export).", no_args_is_help=True)


@app.command("export")
def export(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory to export.")],
    quantize: Annotated[
        str | None, typer.Option("--quantize", help="int8: dynamic int8 weights (smaller).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write a new bundle here (default: add to BUNDLE)."),
    ] = None,
    cmapss_train: Annotated[
        Path | None,
        typer.Option(
            "--cmapss-train",
            help="int8: the C-MAPSS file the bundle was trained on, for the validation "
            "RMSE of fp32 and int8.",
        ),
    ] = None,
    simulated_assets: Annotated[
        int,
        typer.Option(
            "--simulated-assets",
            min=0,
            help="int8: simulated pumps with faults for the anomaly F1 of fp32 and int8 "
            "(pump bundles; 0 skips).",
        ),
    ] = 12,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Add ONNX graphs of every network to a bundle, checked against torch.

    The graphs must reproduce torch's outputs on fixed golden windows (stored in the
    bundle) within the tolerance written to the manifest, or nothing is written.
    The agent uses them with model.backend = onnx or auto (no torch in its process).
    """
    if quantize not in (None, "int8"):
        raise typer.BadParameter("only int8 is supported", param_hint="--quantize")
    from models.onnx_export import export_bundle  # torch: only when exporting

    tables = _simulated_tables(bundle, simulated_assets) if quantize else None
    report = export_bundle(
        bundle, out, quantize=quantize, cmapss_train=cmapss_train, anomaly_tables=tables
    )
    if as_json:
        emit_json(
            {
                "path": str(report.path),
                "quantize": report.quantize,
                "max_abs_diff": report.max_abs_diff,
                "tolerance": report.tolerance,
                "sizes_bytes": report.sizes,
                "windows_per_s": report.speed,
                "fp32_sizes_bytes": report.fp32_sizes,
                "accuracy": report.accuracy.as_dict() if report.accuracy else None,
            }
        )
        return
    kind = "int8" if quantize else "fp32"
    table = Table(title=f"{report.path} ({kind} ONNX)", title_justify="left")
    table.add_column("")
    table.add_column("torch", justify="right")
    table.add_column(f"ONNX {kind}", justify="right")
    for name in ("rul", "anomaly"):
        torch_size = report.sizes.get(f"{name}.safetensors")
        onnx_size = report.sizes.get(f"{name}.onnx")
        if torch_size and onnx_size:
            table.add_row(
                f"{name} model size",
                f"{torch_size / 1024:.0f} KiB",
                f"{onnx_size / 1024:.0f} KiB ({onnx_size / torch_size:.2f}x)",
            )
    for name in ("rul", "anomaly"):
        fp32_size = report.fp32_sizes.get(f"{name}.onnx")
        int8_size = report.sizes.get(f"{name}.onnx")
        if fp32_size and int8_size:
            table.add_row(
                f"{name} ONNX size, fp32 -> int8",
                f"{fp32_size / 1024:.0f} KiB",
                f"{int8_size / 1024:.0f} KiB ({fp32_size / int8_size:.1f}x smaller)",
            )
    accuracy = report.accuracy
    if accuracy is not None and accuracy.rmse_change is not None:
        table.add_row(
            f"validation RUL RMSE ({accuracy.rul_windows} windows), fp32 -> int8",
            f"{accuracy.rul_rmse_fp32:.3f}",
            f"{accuracy.rul_rmse_int8:.3f} ({accuracy.rmse_change:+.3f})",
        )
    if accuracy is not None and accuracy.f1_change is not None:
        table.add_row(
            f"anomaly F1, simulated faults ({accuracy.anomaly_rows:,} rows), fp32 -> int8",
            f"{accuracy.anomaly_f1_fp32:.4f}",
            f"{accuracy.anomaly_f1_int8:.4f} ({accuracy.f1_change:+.4f})",
        )
    for batch, speeds in report.speed.items():
        table.add_row(
            f"windows/s, {batch.replace('_', ' ')}",
            f"{speeds['torch']:,.0f}",
            f"{speeds['onnx']:,.0f} ({speeds['onnx'] / max(speeds['torch'], 1):.1f}x)",
        )
    for key, diff in report.max_abs_diff.items():
        table.add_row(
            f"max |ONNX - torch|, {key}", "", f"{diff:.2g} (tolerance {report.tolerance[key]:g})"
        )
    console.print(table)


def _simulated_tables(bundle: Path, assets: int) -> list[AssetTable] | None:
    """Labelled simulator runs for a bundle whose sensors the simulator produces."""
    manifest = json.loads((bundle / "manifest.json").read_text()) if bundle.is_dir() else {}
    if assets == 0 or not manifest.get("anomaly"):
        return None
    from models.datasets import read_simulator_output
    from simulators.dataset import write_dataset
    from simulators.pump import SENSORS

    names = {str(s["name"]) for s in manifest.get("sensors", [])}
    if not names or not names <= set(SENSORS):
        return None
    with tempfile.TemporaryDirectory(prefix="edgewatch-int8-") as tmp:
        write_dataset(Path(tmp), assets, 7, fmt="parquet")
        return read_simulator_output(Path(tmp))
