"""``edgewatch model export``: ONNX graphs (and int8) for the lean backend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agent.cli._common import console, emit_json

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

    report = export_bundle(bundle, out, quantize=quantize)
    if as_json:
        emit_json(
            {
                "path": str(report.path),
                "quantize": report.quantize,
                "max_abs_diff": report.max_abs_diff,
                "tolerance": report.tolerance,
                "sizes_bytes": report.sizes,
                "windows_per_s": report.speed,
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
