"""``edgewatch bench``: the agent's end-to-end figures; ``bench models`` for the networks."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agent.cli import models_cmd, sync_cmd
from agent.cli._common import console, emit_json, err_console

app = typer.Typer(help="Benchmarks that print figures (never pass/fail).")
app.command("models")(models_cmd.bench_models)
app.command("sync")(sync_cmd.bench)

TARGETS = {
    "ratio": ">= 0.5",
    "batched_readings_s": ">= 100000",
    "prediction_p99_ms": "<= 250",
    "alert_p99_ms": "<= 250",
    "rss_max_mb": "<= 350",
    "cold_start_s": "<= 3",
}


def _rows(report: Any) -> list[tuple[str, str, str]]:
    r = report
    p, a = r.prediction_latency_ms, r.alert_latency_ms
    return [
        ("(a) bare aiomqtt + orjson receive loop, msg/s", f"{r.ceiling_msg_s:,.0f}", ""),
        ("(b) agent end to end, msg/s (1 reading each)", f"{r.agent_msg_s:,.0f}", ""),
        ("(b)/(a)", f"{r.ratio:.2f}", TARGETS["ratio"]),
        ("messages lost", str(r.lost), "0"),
        (
            "(b) batched payloads, readings/s",
            f"{r.batched_readings_s:,.0f}",
            TARGETS["batched_readings_s"],
        ),
        ("readings lost (batched)", str(r.batched_lost), "0"),
        (
            "(c) reading -> prediction p50 / p99, ms",
            f"{p.get('p50', '-')} / {p.get('p99', '-')}",
            TARGETS["prediction_p99_ms"],
        ),
        (
            "(c) reading -> alert p50 / p99, ms",
            f"{a.get('p50', '-')} / {a.get('p99', '-')}",
            TARGETS["alert_p99_ms"],
        ),
        ("(c) alerts seen", str(r.alerts), ""),
        (
            "(d) agent RSS start / max / end, MB",
            " / ".join(f"{r.rss_mb.get(k, 0):.0f}" for k in ("start", "max", "end")),
            TARGETS["rss_max_mb"],
        ),
        ("(d) agent CPU during (b), % of one core", f"{r.cpu_percent:.0f}", ""),
        ("cold start to first subscription, s", f"{r.cold_start_s:.2f}", TARGETS["cold_start_s"]),
        ("database commits/s during (b)", f"{r.commits_per_s:.1f}", "<= 10"),
    ]


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
    )
    with (
        tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp,
        console.status("benchmarking") as status,
    ):
        report = run_bench(options, Path(tmp), lambda text: status.update(text))
    if as_json:
        emit_json(report.as_dict())
        return
    table = Table("figure", "measured", "target", title=f"edgewatch bench (MQTT {protocol})")
    for row in _rows(report):
        table.add_row(*row)
    console.print(table)
    err_console.print("figures vary with machine load; compare (a) and (b) from the same run")
