"""``edgewatch bench``: the agent's end-to-end figures; ``bench models`` for the networks."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.cli import models_cmd, sync_cmd
from agent.cli._common import console, emit_json, err_console


class Backend(StrEnum):
    TORCH = "torch"
    ONNX = "onnx"


app = typer.Typer(help="Benchmarks that print figures (never pass/fail).")
app.command("models")(models_cmd.bench_models)
app.command("sync")(sync_cmd.bench)


@app.command("storage")
def bench_storage(
    readings: Annotated[
        int, typer.Option("--readings", min=5_000, help="Readings written in all.")
    ] = 300_000,
    assets: Annotated[int, typer.Option("--assets", min=1, help="Simulated assets.")] = 50,
    per_commit: Annotated[
        int, typer.Option("--per-commit", min=100, help="Readings per transaction.")
    ] = 25_000,
    prediction_every: Annotated[
        int,
        typer.Option(
            "--prediction-every",
            min=0,
            help="Also write a prediction every N readings (0: readings only).",
        ),
    ] = 0,
    per_message: Annotated[
        int,
        typer.Option(
            "--per-message",
            min=1,
            help="Readings per message and asset (100: batch payloads; 1-10: plant rates).",
        ),
    ] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print figures as JSON.")] = False,
) -> None:
    """The database writer alone: batched readings/s, CPU and bytes written per reading,
    and the WAL pages a commit writes per table or index."""
    from agent.bench import storage_bench

    with (
        tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp,
        console.status("writing readings"),
    ):
        figures = storage_bench(
            Path(tmp),
            assets=assets,
            readings=readings,
            per_commit=per_commit,
            prediction_every=prediction_every,
            per_message=per_message,
        )
    if as_json:
        emit_json(figures.as_dict())
        return
    table = Table(title="edgewatch bench storage (the recorder's writer alone)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("readings written", f"{figures.readings:,}")
    table.add_row(
        "readings per message / per commit",
        f"{figures.readings_per_message} / {figures.readings_per_commit:,}",
    )
    table.add_row(
        "predictions written",
        f"one per {prediction_every} readings" if prediction_every else "none",
    )
    table.add_row("readings/s", f"{figures.readings_per_s:,.0f}")
    table.add_row("CPU per reading, us", f"{figures.cpu_us_per_reading:.2f}")
    table.add_row("bytes written to disk per reading", f"{figures.write_bytes_per_reading:,.1f}")
    table.add_row("database file per reading, bytes", f"{figures.file_bytes_per_reading:,.1f}")
    for name, pages in figures.pages_per_commit.items():
        table.add_row(f"WAL pages a commit writes: {name}", f"{pages:,.1f}")
    console.print(table)


def _pair(d: dict[str, Any], a: str = "p50", b: str = "p99") -> str:
    return f"{d.get(a, '-')} / {d.get(b, '-')}"


def _inference(key: str) -> Callable[[Any], str]:
    return lambda f: f"{f.inference.get('windows_per_s', {}).get(key, 0):,.0f}"


def _windows(f: Any) -> str:
    return f"{f.windows_per_reading:.3f} / {f.shed_per_reading:.3f}"


#: (figure, how to read it off one backend's AgentFigures, target)
FIGURES: list[tuple[str, Callable[[Any], str], str]] = [
    ("(b) agent end to end, msg/s (1 reading each)", lambda f: f"{f.agent_msg_s:,.0f}", ""),
    ("(b)/(a)", lambda f: f"{f.ratio:.2f}", ">= 0.8"),
    ("messages lost", lambda f: str(f.lost), "0"),
    ("(b) batched payloads, readings/s", lambda f: f"{f.batched_readings_s:,.0f}", ">= 250000"),
    ("readings lost (batched)", lambda f: str(f.batched_lost), "0"),
    (
        "(b) bytes written to disk per reading, single / batched",
        lambda f: f"{f.write_bytes_per_reading:,.1f} / {f.batched_write_bytes_per_reading:,.1f}",
        "batched <= 16",
    ),
    (
        "(c) reading -> prediction p50 / p99, ms",
        lambda f: _pair(f.prediction_latency_ms),
        "p99 <= 250",
    ),
    ("(c) reading -> alert p50 / p99, ms", lambda f: _pair(f.alert_latency_ms), "p99 <= 100"),
    ("(c) alerts seen", lambda f: str(f.alerts), ""),
    (
        "(d) agent RSS start / max / end, MB",
        lambda f: " / ".join(f"{f.rss_mb.get(k, 0):.0f}" for k in ("start", "max", "end")),
        "torch <= 350, onnx <= 120",
    ),
    (
        "(d) RSS during (c): first / last span, growth, MB",
        lambda f: (
            f"{f.rss_steady_mb['first']:.0f} / {f.rss_steady_mb['last']:.0f}, "
            f"{f.rss_steady_mb['growth']:+.1f} ({f.rss_steady_mb['span_s']:.0f} s spans)"
            if f.rss_steady_mb
            else "-"
        ),
        "flat",
    ),
    ("(d) agent CPU during (b), % of one core", lambda f: f"{f.cpu_percent:.0f}", ""),
    (
        "cold start to first subscription, s",
        lambda f: f"{f.cold_start_s:.2f}",
        "torch <= 3, onnx <= 1",
    ),
    (
        "database commits/s during (b), single / batched",
        lambda f: f"{f.commits_per_s:.1f} / {f.batched_commits_per_s:.1f}",
        "<= 10",
    ),
    ("predictor windows/s, batch 1", _inference("1"), ""),
    ("predictor windows/s, batch 16", _inference("16"), ""),
    ("predictor windows/s, batch 64", _inference("64"), ""),
    (
        "predictor single window p50 / p99, ms",
        lambda f: _pair(f.inference.get("single_window_ms", {})),
        "onnx p50 <= 0.2",
    ),
    (
        "predictor process RSS loaded, MB",
        lambda f: f"{f.inference.get('rss_mb', {}).get('loaded', 0):.0f}",
        "",
    ),
    ("predictor import + load, s", lambda f: f"{f.inference.get('load_s', 0):.2f}", ""),
]

#: Rows of the Sparkplug B agent runs (``--sparkplug``), with their ratio to the JSON
#: run of the same backend.
SPARKPLUG_FIGURES: list[tuple[str, Callable[[Any], str], str]] = [
    (
        "Sparkplug B (b), readings/s, 1 sample per DDATA / 100",
        lambda f: f"{f.sparkplug_readings_s:,.0f} / {f.sparkplug_batched_readings_s:,.0f}",
        "",
    ),
    (
        "Sparkplug B / JSON (b) readings/s, single / batched",
        lambda f: (
            f"{f.sparkplug_readings_s / max(f.agent_msg_s, 1e-9):.2f} / "
            f"{f.sparkplug_batched_readings_s / max(f.batched_readings_s, 1e-9):.2f}"
        ),
        ">= 0.8",
    ),
    (
        "Sparkplug B readings lost (QoS 0), single / batched",
        lambda f: f"{f.sparkplug_lost} / {f.sparkplug_batched_lost}",
        "",
    ),
]

#: What runs at another hop than the bundle's add as rows (the predictor alone does
#: not depend on the hop).
EXTRA_FIGURES: list[tuple[str, Callable[[Any], str], str]] = [
    ("(b) windows scored / shed per reading", _windows, ""),
    *FIGURES[:9],
    *FIGURES[10:13],
]


def render(report: Any) -> Table:
    """The figures at the bundle's hop, then the rows of each extra hop, labelled."""
    backends = list(report.backends)
    table = Table(
        "figure",
        *backends,
        "target",
        title=(
            f"edgewatch bench (MQTT {report.protocol}, window {report.window}, "
            f"hop {report.hop}: the bundle's)"
        ),
    )
    ceiling = f"{report.ceiling_msg_s:,.0f}"
    table.add_row("(a) bare aiomqtt + orjson receive loop, msg/s", *[ceiling] * len(backends), "")
    table.add_row(
        "hop the agent ran at", *(str(report.backends[b].hop) for b in backends), "bundle's"
    )
    table.add_row(
        "(b) windows scored / shed per reading",
        *(_windows(report.backends[b]) for b in backends),
        "sum 1 / hop, 0 shed",
    )
    for label, read, target in FIGURES:
        table.add_row(label, *(read(report.backends[b]) for b in backends), target)
    if any(report.backends[b].sparkplug_readings_s for b in backends):
        table.add_section()
        for label, read, target in SPARKPLUG_FIGURES:
            table.add_row(label, *(read(report.backends[b]) for b in backends), target)
    for hop in sorted({f.hop for f in report.extra}):
        runs = {f.backend: f for f in report.extra if f.hop == hop}
        table.add_section()
        for label, read, _ in EXTRA_FIGURES:
            table.add_row(
                f"hop {hop}, not the default: {label}",
                *(read(runs[b]) if b in runs else "-" for b in backends),
                "",
            )
    return table


@app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    messages: Annotated[
        int, typer.Option("--messages", min=1000, help="Messages in (a) and (b).")
    ] = 60_000,
    batch_messages: Annotated[
        int, typer.Option("--batch-messages", min=100, help="100-reading messages in (b).")
    ] = 3_000,
    assets: Annotated[int, typer.Option("--assets", min=1, help="Simulated assets.")] = 50,
    latency_s: Annotated[
        float, typer.Option("--latency-seconds", min=5, help="Length of the 1,000 msg/s run (c).")
    ] = 20.0,
    protocol: Annotated[str, typer.Option("--protocol", help="MQTT version: 5 or 3.1.1.")] = "5",
    backend: Annotated[
        list[Backend] | None,
        typer.Option(
            "--backend",
            help="Inference backend of the agent runs; repeat for several (default: both).",
        ),
    ] = None,
    extra_hop: Annotated[
        list[int] | None,
        typer.Option(
            "--extra-hop",
            min=1,
            help="Also run the agent at this hop (repeat for several); the default runs "
            "use the bundle's own hop and these are extra, labelled rows.",
        ),
    ] = None,
    sparkplug: Annotated[
        bool,
        typer.Option(
            "--sparkplug",
            help="Also run each backend's agent on Sparkplug B ingest: (b)'s readings as "
            "DDATA, compared with the JSON run (one more agent run per backend).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print figures as JSON.")] = False,
) -> None:
    """Run the agent against a local Mosquitto and print its figures beside a baseline."""
    if ctx.invoked_subcommand is not None:
        return
    from agent.bench import BenchOptions, run_bench  # torch and the simulator load here

    options = BenchOptions(
        assets=assets,
        messages=messages,
        batch_messages=batch_messages,
        latency_duration_s=latency_s,
        protocol=protocol,
        backends=tuple(b.value for b in (backend or [Backend.TORCH, Backend.ONNX])),
        extra_hops=tuple(extra_hop or ()),
        sparkplug=sparkplug,
    )
    with (
        tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp,
        console.status("benchmarking") as status,
    ):
        report = run_bench(options, Path(tmp), lambda text: status.update(text))
    if as_json:
        emit_json(report.as_dict())
        return
    console.print(render(report))
    err_console.print("figures vary with machine load; compare (a) and (b) from the same run")
