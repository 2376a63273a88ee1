"""``edgewatch demo``: the whole system on one machine, with a live view."""

from __future__ import annotations

import asyncio
import signal
import time
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from agent.cli._common import console, invocation
from agent.logs import configure_logging, printable


class ProtocolOption(StrEnum):
    json = "json"
    sparkplug = "sparkplug"
    opcua = "opcua"


class BrokerOption(StrEnum):
    auto = "auto"
    mosquitto = "mosquitto"
    embedded = "embedded"


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except (ValueError, IndexError):
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 5m or 1h") from None


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _model_line(model: dict[str, Any]) -> str:
    """The model update's progress (``--model-update``), one line above the caption."""
    if not model:
        return ""
    line = f"model: live {model['live']}"
    probation = model.get("probation")
    if probation:
        line += (
            f"  |  candidate {probation['version']} in shadow: {probation['windows']}/"
            f"{probation['windows_needed']} windows, {probation['elapsed_s']:.0f}/"
            f"{probation['seconds_needed']:.0f} s"
        )
    elif model.get("candidate"):
        line += f"  |  candidate {model['candidate']} loading"
    elif not model.get("published"):
        line += "  |  a new version is published midway"
    text = printable(line)
    if model.get("last"):
        text += "\nlast change: " + printable(str(model["last"]))
    return text + "\n"


def _sparkplug_line(sparkplug: dict[str, str]) -> str:
    """Where the Sparkplug B traffic is (``--protocol sparkplug``)."""
    if not sparkplug:
        return ""
    group = sparkplug["group"]
    return (
        printable(
            f"Sparkplug B: fleet spBv1.0/{group}/+/{sparkplug['fleet']}, "
            f"agent's results spBv1.0/{group}/+/{sparkplug['agent']}"
        )
        + "\n"
    )


def render(view: Any) -> Table:
    health = view.health
    table = Table(
        title=(
            f"edgewatch demo  {view.elapsed_s:5.0f}/{view.duration_s:.0f} s   "
            f"messages {health['messages_received']}  predictions {health['predictions']}  "
            f"alerts opened {health['alerts_opened']}  dead letters {health['dead_letters_total']}"
        ),
        caption=_model_line(view.model)
        + _sparkplug_line(view.sparkplug)
        + (f"OPC UA: fleet at {printable(view.opcua)} (SignAndEncrypt)\n" if view.opcua else "")
        + f"broker: {view.broker} on 127.0.0.1:{view.port}   Ctrl-C stops the demo cleanly",
    )
    rul = f"RUL ({view.rul_unit})" if view.rul_unit else "RUL"
    for column in ("asset", "state", "anomaly score", "threshold", rul, "open alerts"):
        table.add_column(column, justify="left" if column in ("asset", "state") else "right")
    for row in view.assets:
        state = row["state"]
        style = {"alerting": "bold red", "commissioning": "dim"}.get(state, "")
        table.add_row(
            printable(row["name"]),  # the asset name is whatever the publisher sent
            printable(state),
            _fmt(row["anomaly_score"], ".2f"),
            _fmt(row["anomaly_threshold"], ".2f"),
            _fmt(row["rul"], ".1f"),
            str(row["open_alerts"] or ""),
            style=style,
        )
    return table


def demo(
    ctx: typer.Context,
    assets: Annotated[int, typer.Option("--assets", min=0, max=200, help="Simulated pumps.")] = 8,
    compressors: Annotated[
        int,
        typer.Option(
            "--compressors",
            min=0,
            max=200,
            help="Simulated air compressors besides the pumps (other sensors and faults).",
        ),
    ] = 4,
    duration: Annotated[
        str, typer.Option("--duration", help="Wall-clock length, e.g. 90s, 5m.")
    ] = "5m",
    speedup: Annotated[
        float,
        typer.Option("--speedup", min=1, help="Simulated seconds per wall-clock second."),
    ] = 3600.0,
    seed: Annotated[int, typer.Option("--seed", help="Simulator seed.")] = 7,
    broker: Annotated[
        BrokerOption,
        typer.Option(
            "--broker",
            help="auto: Mosquitto when installed, else edgewatch's embedded MQTT 3.1.1 broker.",
        ),
    ] = BrokerOption.auto,
    model_update: Annotated[
        bool,
        typer.Option(
            "--model-update",
            help="Publish a new version of the model bundle midway (a signed update): "
            "the view shows it fetched, in shadow probation and promoted.",
        ),
    ] = False,
    protocol: Annotated[
        ProtocolOption,
        typer.Option(
            "--protocol",
            help="json: edgewatch telemetry topics. sparkplug: the fleet is a Sparkplug B "
            "edge node, and the agent publishes its scores, RUL and alerts as one "
            "(group: sparkplug.group_id; docs/sparkplug.md). opcua: the fleet is an OPC UA "
            "server the agent reads with SignAndEncrypt (docs/opcua.md).",
        ),
    ] = ProtocolOption.json,
) -> None:
    """Run a local broker, simulated pumps and compressors (some develop faults) and the agent.

    Records go to the data directory (./edgewatch-data by default); each demo
    starts it afresh (it never touches a directory holding a real agent's records).
    """
    from agent.demo import DemoOptions, prepare_data_dir, run_demo  # torch loads with it

    if assets + compressors == 0:
        raise typer.BadParameter("the demo needs at least one asset", param_hint="--assets")
    inv = invocation(ctx)
    settings = inv.settings()
    configure_logging(inv.log_level or "WARNING", "console")
    options = DemoOptions(
        assets=assets,
        compressors=compressors,
        duration_s=_duration(duration),
        speedup=speedup,
        seed=seed,
        broker=broker.value,
        model_update=model_update,
        protocol=protocol.value,
    )
    if prepare_data_dir(settings):
        console.print(f"cleared the previous demo's records in {settings.storage.data_dir}")

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        console.print("starting broker, agent and simulator ...")
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            return await run_demo(settings, options, lambda v: live.update(render(v)), stop)

    started = time.monotonic()
    result = asyncio.run(main())
    health = result.health
    console.print(
        f"\ndemo finished after {time.monotonic() - started:.0f} s: "
        f"{health['messages_received']} messages, {health['predictions']} predictions, "
        f"{health['alerts_opened']} alerts opened, {health['dead_letters_total']} dead letters"
    )
    if result.broker == "embedded":
        console.print(
            "broker: edgewatch's embedded one, fine for trying edgewatch; "
            "a gateway runs Mosquitto (sudo apt-get install -y mosquitto)"
        )
    console.print(f"database: {result.database}")
    cloud = result.data_dir / "cloud"
    if cloud.is_dir():
        synced = sum(1 for p in cloud.rglob("*") if p.is_file())
        console.print(f"cloud copy (sync target): {cloud} ({synced} objects)")
    console.print("next: `edgewatch records alerts` lists the alerts (`--open`: still open);")
    console.print("      `edgewatch report --fleet --out fleet.png` draws the fleet's health")
    if result.truth is not None and result.truth.is_file():
        console.print(
            f"      `edgewatch evaluate live --truth {result.truth} --label fault` scores "
            "the alerts against the faults the simulator planted"
        )
