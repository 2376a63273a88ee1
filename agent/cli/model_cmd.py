"""``edgewatch model export | status | rollback | pin``: bundles on the gateway.

``export`` adds ONNX graphs (and int8) for the lean backend; ``status``, ``rollback``
and ``pin`` read and change the gateway's model store (docs/updates.md). They change
only the store's state file: a running agent follows it within
``updates.control_interval_s``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agent.cli._common import console, emit_json, invocation
from agent.settings import Settings

if TYPE_CHECKING:
    from models.datasets import AssetTable
    from models.updates.store import ModelStore, StoreState

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
    from models.lean import tolerance_key
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
            f"RUL RMSE ({accuracy.rul_windows} cut windows), fp32 -> int8",
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
        limit = report.tolerance[tolerance_key(key, report.tolerance)]
        table.add_row(f"max |ONNX - torch|, {key}", "", f"{diff:.2g} (tolerance {limit:g})")
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


def _store(settings: Settings) -> tuple[ModelStore, str]:
    """The gateway's model store and the configured bundle's version."""
    from agent.runtime import resolve_bundle
    from agent.updates.lifecycle import bundle_version
    from models.updates.store import ModelStore

    return ModelStore(settings.updates_cache_dir / "store"), bundle_version(
        resolve_bundle(settings)
    )


def _probation(settings: Settings) -> dict[str, Any] | None:
    """Probation progress from the running agent's last heartbeat (None: none)."""
    from agent.sqlite import open_engine
    from agent.storage import queries

    db = settings.storage.database_path
    if not db.exists():
        return None
    engine = open_engine(db, create=False)
    try:
        beat = queries.latest_heartbeat(engine, settings.identity.agent)
    except Exception:  # an older schema or a busy file: status shows the store alone
        return None
    finally:
        engine.dispose()
    if beat is None:
        return None
    if time.time_ns() // 1_000_000 - beat["ts_ms"] > queries.heartbeat_max_age_ms(settings):
        return None
    progress = beat["health"].get("model_probation")
    return progress if isinstance(progress, dict) else None


def _status_doc(
    state: StoreState, configured: str, probation: dict[str, Any] | None
) -> dict[str, Any]:
    def slot(value: Any) -> dict[str, Any] | None:
        return None if value is None else {"version": value.version, "folder": value.folder}

    return {
        "live": state.live.version if state.live else configured,
        "live_from": "store" if state.live else "configured bundle",
        "previous": slot(state.previous),
        "candidate": slot(state.candidate),
        "probation": probation,
        "pinned": state.pinned,
        "rejected": list(state.rejected),
        "history": [
            {"ts": c.ts, "action": c.action, "version": c.version, "reason": c.reason}
            for c in state.history
        ],
    }


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    last: Annotated[int, typer.Option("--last", min=0, help="History entries shown.")] = 10,
) -> None:
    """The live model, the previous one, a candidate in probation, and the history."""
    settings = invocation(ctx).settings()
    store, configured = _store(settings)
    doc = _status_doc(store.read(), configured, _probation(settings))
    if as_json:
        emit_json(doc)
        return
    console.print(
        f"live: {doc['live']} ({doc['live_from']})" + (" [pinned]" if doc["pinned"] else "")
    )
    previous = doc["previous"]
    console.print(f"previous: {previous['version'] if previous else '-'}")
    candidate, probation = doc["candidate"], doc["probation"]
    if candidate is None:
        console.print("candidate: -")
    elif probation is None or probation.get("version") != candidate["version"]:
        console.print(f"candidate: {candidate['version']} (probation starts with the agent)")
    else:
        console.print(
            f"candidate: {candidate['version']} in probation, {probation['windows']}/"
            f"{probation['windows_needed']} windows, {probation['elapsed_s']:.0f}/"
            f"{probation['seconds_needed']:.0f} s, {probation['errors']} errors"
        )
    if doc["rejected"]:
        console.print(f"never taken again: {', '.join(doc['rejected'])}")
    history = doc["history"][-last:] if last else []
    if history:
        table = Table(title="history", title_justify="left")
        for column in ("when (UTC)", "what", "version", "why"):
            table.add_column(column)
        for entry in history:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["ts"]))
            table.add_row(when, entry["action"], entry["version"], entry["reason"])
        console.print(table)


@app.command("rollback")
def rollback(ctx: typer.Context) -> None:
    """Make the previous model live again (a running agent swaps within a second).

    The model rolled back is never taken as an update again; a candidate in
    probation is dropped.
    """
    settings = invocation(ctx).settings()
    store, configured = _store(settings)
    gone = store.read().live
    state = store.rollback("operator: edgewatch model rollback", configured=configured)
    live = state.live.version if state.live else f"{configured} (the configured bundle)"
    console.print(f"rolled back {gone.version if gone else '-'}; {live} is live")
    console.print(
        f"a running agent swaps within {settings.updates.control_interval_s:g} s "
        "(event model_rolled_back)"
    )


@app.command("pin")
def pin(
    ctx: typer.Context,
    version: Annotated[
        str | None, typer.Argument(help="The live version, as `model status` shows it.")
    ] = None,
    unpin: Annotated[bool, typer.Option("--unpin", help="Let updates replace it again.")] = False,
) -> None:
    """Keep the live model: no update replaces it until `model pin --unpin`."""
    if unpin == (version is not None):
        raise typer.BadParameter("give the live VERSION to pin, or --unpin", param_hint="VERSION")
    settings = invocation(ctx).settings()
    store, configured = _store(settings)
    state = store.read()
    live = state.live.version if state.live else configured
    state = store.pin(version, live)
    if state.pinned:
        console.print(f"pinned {state.pinned}: updates will not replace it")
    else:
        console.print(f"unpinned {live}: updates may replace it")
