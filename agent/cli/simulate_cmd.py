"""``edgewatch simulate``: the pump and compressor fleet, dataset export and dataset replay."""

from __future__ import annotations

import logging
import math
import re
import signal
import threading
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from agent.cli._common import console, emit_json, err_console, invocation
from agent.errors import BrokerError, DatasetError
from agent.logs import printable
from simulators.publisher import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_TIMEOUT_S,
    Backend,
    parse_broker_url,
)
from simulators.pump import DEFAULT_RATE_HZ

if TYPE_CHECKING:
    # The simulators' stream, dataset and replay modules load pandas: imported in the
    # commands that use them, so that `edgewatch run` on a gateway never pays for it.
    from simulators.badinput import BadInputInjector
    from simulators.fleet import FleetConfig
    from simulators.stream import Pacing, ProgressCallback, RunReport

app = typer.Typer(
    name="simulate",
    help="Simulate a degrading fleet (pumps, air compressors), export datasets, replay "
    "public datasets.",
    no_args_is_help=True,
)

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"3d"`` -> seconds."""
    compact = text.strip().replace(" ", "")
    total = 0.0
    pos = 0
    for match in _DURATION_RE.finditer(compact):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
        pos = match.end()
    if pos != len(compact) or not compact:
        raise typer.BadParameter(f"{text!r} is not a duration (e.g. 90s, 10m, 1h30m, 3d)")
    return total


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


@app.command("dataset")
def dataset(
    out: Annotated[Path, typer.Option("--out", help="Directory to write into.")],
    assets: Annotated[int, typer.Option("--assets", min=1, help="Number of pumps.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    fmt: Annotated[
        str, typer.Option("--format", help="parquet or csv.", case_sensitive=False)
    ] = "parquet",
    duration: Annotated[
        str, typer.Option("--duration", help="Simulated time per asset, e.g. 3d, 12h.")
    ] = "3d",
    rate_hz: Annotated[
        float, typer.Option("--rate-hz", min=0.0, help="Samples per second per asset.")
    ] = DEFAULT_RATE_HZ,
    fault_fraction: Annotated[
        float, typer.Option("--fault-fraction", min=0.0, max=1.0, help="Share that fail.")
    ] = 0.8,
    sensor_fault_fraction: Annotated[
        float,
        typer.Option("--sensor-fault-fraction", min=0.0, max=1.0, help="Share with a bad sensor."),
    ] = 0.0,
) -> None:
    """Write run-to-failure pump data (telemetry + assets.json) without a broker."""
    fmt = fmt.lower()
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("use parquet or csv", param_hint="--format")
    if rate_hz <= 0:
        raise typer.BadParameter("must be > 0", param_hint="--rate-hz")
    from simulators import dataset as dataset_lib

    with _progress() as progress:
        task = progress.add_task("simulating", total=assets)
        paths = dataset_lib.write_dataset(
            out,
            assets,
            seed,
            fmt="csv" if fmt == "csv" else "parquet",
            duration_s=parse_duration(duration),
            rate_hz=rate_hz,
            fault_fraction=fault_fraction,
            sensor_fault_fraction=sensor_fault_fraction,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    for path in paths:
        console.print(f"wrote {path}")


# -- publishing commands ---------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    site: str
    template: str
    max_payload_bytes: int
    reorder_samples: int
    username: str | None
    password: str | None


def _target(ctx: typer.Context, broker: str | None, site: str | None) -> _Target:
    """Broker, site and topic template: flags first, then the agent's configuration."""
    settings = invocation(ctx).settings()
    if broker:
        host, port = parse_broker_url(broker, default_port=settings.mqtt.port)
    else:
        if settings.mqtt.tls or settings.mqtt.ca_file is not None:
            raise BrokerError(
                "the simulator does not speak TLS, but the configured broker uses it",
                hint="pass --broker mqtt://host:port of a plain listener",
            )
        host, port = settings.mqtt.host, settings.mqtt.port
    password = settings.mqtt.password
    return _Target(
        host=host,
        port=port,
        site=site or settings.identity.site,
        template=settings.mqtt.telemetry_topic,
        max_payload_bytes=settings.ingest.max_payload_bytes,
        reorder_samples=settings.ingest.reorder_samples,
        username=settings.mqtt.username,
        password=password.get_secret_value() if password is not None else None,
    )


def _backend(name: str, qos: int) -> Backend:
    if name not in ("auto", "wire", "paho"):
        raise typer.BadParameter("use auto, wire or paho", param_hint="--mqtt-backend")
    if name == "wire" and qos == 2:
        raise typer.BadParameter("the wire backend does not do QoS 2", param_hint="--qos")
    return "wire" if name == "wire" else "paho" if name == "paho" else "auto"


def _pacing(as_fast_as_possible: bool, speedup: float, rate: float | None = None) -> Pacing:
    from simulators.stream import Pacing

    if as_fast_as_possible:
        return Pacing.fast()
    if rate is not None:
        return Pacing(speedup=None, rate_msg_s=rate)
    return Pacing(speedup=speedup)


def _injector(
    rate: float,
    kinds: str,
    seed: int,
    target: _Target,
    max_payload_bytes: int | None,
) -> BadInputInjector | None:
    if rate <= 0:
        return None
    from simulators.badinput import BadInputInjector, parse_kinds

    try:
        return BadInputInjector(
            rate,
            seed,
            kinds=parse_kinds(kinds),
            topic_template=target.template,
            site=target.site,
            max_payload_bytes=max_payload_bytes or target.max_payload_bytes,
            reorder_samples=target.reorder_samples,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--bad-input-*") from None


Runner = Callable[["ProgressCallback", threading.Event], "RunReport"]


def _with_progress(description: str, run: Runner) -> RunReport:
    """Run with a progress bar; Ctrl-C stops the stream but still drains and reports."""
    progress = Progress(
        TextColumn("{task.description}", style="progress.description", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    )
    with progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        stop = threading.Event()
        previous = signal.getsignal(signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, lambda _sig, _frame: stop.set())
        try:
            return run(update, stop)
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, previous)


def _render(report: RunReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
    else:
        pub = report.publish
        table = Table(title="publish report", show_header=False, title_justify="left")
        table.add_column("what", style="bold")
        table.add_column("value", justify="right")
        table.add_row("messages sent (acknowledged)", f"{pub.sent:,}")
        table.add_row(
            "  good / bad on purpose",
            f"{report.stream.good_messages:,} / {report.stream.bad_messages:,}",
        )
        table.add_row("readings sent", f"{pub.readings_sent:,}")
        table.add_row("not sent", f"{pub.not_sent:,}")
        table.add_row("elapsed", f"{pub.elapsed_s:.2f} s")
        table.add_row("rate", f"{pub.rate_msg_s:,.0f} msg/s, {pub.rate_readings_s:,.0f} readings/s")
        table.add_row("disconnects / reconnects", f"{pub.disconnects} / {pub.reconnects}")
        table.add_row("errors", str(len(pub.errors)))
        if report.truth_path:
            table.add_row("ground truth", str(report.truth_path))
        if report.bad_record_path:
            table.add_row("bad-input record", str(report.bad_record_path))
        console.print(table)
        for error in pub.errors[:10]:
            warning = Text.assemble(("warning:", "yellow"), " ", printable(str(error)))
            err_console.print(warning, highlight=False)
        if pub.unacked_seqs:
            shown = ", ".join(map(str, pub.unacked_seqs[:20]))
            more = " ..." if len(pub.unacked_seqs) > 20 else ""
            unacked = Text.assemble(("not acknowledged (seq):", "yellow"), f" {shown}{more}")
            err_console.print(unacked, highlight=False)
    if not report.publish.ok:
        raise typer.Exit(1)


BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", help="mqtt://host:port (default: mqtt.host/port from config)."),
]
SiteOpt = Annotated[
    str | None, typer.Option("--site", help="Site in the topic (default: identity.site).")
]
TruthOpt = Annotated[
    Path | None,
    typer.Option("--truth", help="Write ground truth here (.parquet, or .csv by suffix)."),
]
CountOpt = Annotated[
    int | None, typer.Option("--count", min=1, help="Stop after this many messages.")
]
FastOpt = Annotated[
    bool,
    typer.Option(
        "--as-fast-as-possible",
        help=(
            "No pacing: publish flat out. The broker must queue what a subscriber cannot "
            "take yet (Mosquitto drops past max_queued_messages, 1000 by default); the "
            "broker's $SYS drop count is read after the run, which fails if it dropped any."
        ),
    ),
]
#: Said after a flat-out run when the broker gives no drop count: the acknowledgements
#: counted are the broker's, and a broker with default limits drops what the agent
#: could not take in time.
FLAT_OUT_NOTE = (
    "note: published flat out; the broker acknowledged every message, but it drops QoS 1 "
    "messages a subscriber cannot take in time once its queue is full (Mosquitto: "
    "max_queued_messages, 1000 by default): raise it, or pace the run with --speedup"
)
#: After a flat-out run, how long to wait for the broker to publish its $SYS counts
#: again (Mosquitto's sys_interval is 10 s by default).
SYS_WAIT_S = 11.0
#: How long asking the broker for its first drop count may take at most (a broker
#: with $SYS answers right behind its SUBACK; see simulators.brokerdrops).
SYS_FIRST_S = 5.0


def _flat_out(target: _Target, description: str, run: Runner, as_json: bool) -> None:
    """A run published flat out, then what the broker dropped of it ($SYS), if it says."""
    from simulators.brokerdrops import DropWatch

    with DropWatch(target.host, target.port, target.username, target.password) as watch:
        counted = watch.wait_started(SYS_FIRST_S)
        report = _with_progress(description, run)
        if counted:
            with err_console.status(
                f"reading the broker's drop count ($SYS, up to {SYS_WAIT_S:.0f} s)"
            ):
                dropped = watch.dropped(SYS_WAIT_S)
        else:
            dropped = None
    _render(report, as_json)
    if dropped is None:
        typer.echo(FLAT_OUT_NOTE, err=True)
    elif not dropped:
        typer.echo(
            "note: published flat out; the broker dropped none of it "
            "($SYS/broker/publish/messages/dropped)",
            err=True,
        )
    else:
        err_console.print(
            Text.assemble(
                ("error:", "red"),
                f" the broker dropped {dropped:,} messages while this run published "
                "($SYS/broker/publish/messages/dropped): a subscriber could not take them "
                "in time and its queue was full (Mosquitto: max_queued_messages, 1000 by "
                "default); the agent never got them. Pace the run (--rate or --speedup) "
                "or raise the broker's limit.",
            ),
            highlight=False,
        )
        raise typer.Exit(1)


BatchOpt = Annotated[
    int, typer.Option("--batch", min=1, help="Readings per message (1 = single payloads).")
]
QosOpt = Annotated[int, typer.Option("--qos", min=0, max=2, help="MQTT QoS of the publishes.")]
BadRateOpt = Annotated[
    float,
    typer.Option(
        "--bad-input-rate", min=0.0, max=0.99, help="Share of bad messages mixed in on purpose."
    ),
]
BadKindsOpt = Annotated[
    str,
    typer.Option("--bad-input-kinds", help="Comma-separated kinds of bad input, or 'all'."),
]
BadRecordOpt = Annotated[
    Path,
    typer.Option("--bad-input-record", help="Record of the bad messages (.jsonl/.csv/.parquet)."),
]
MaxPayloadOpt = Annotated[
    int | None,
    typer.Option("--max-payload-bytes", min=64, help="Agent's payload limit for too_large."),
]
InflightOpt = Annotated[
    int,
    typer.Option("--max-inflight", min=1, max=32767, help="Unacknowledged publishes at most."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
ReconnectOpt = Annotated[
    float,
    typer.Option(
        "--reconnect-timeout", min=0.0, help="Give up after the broker is away this long (s)."
    ),
]
BackendOpt = Annotated[
    str, typer.Option("--mqtt-backend", help="auto (wire; paho for QoS 2), wire or paho.")
]


@app.command("fleet")
def fleet(
    ctx: typer.Context,
    assets: Annotated[int, typer.Option("--assets", min=0, help="Number of pumps.")] = 20,
    compressors: Annotated[
        int,
        typer.Option(
            "--compressors",
            min=0,
            help="Number of air compressors (comp-001 ...), besides the pumps; "
            "they report other sensors than the pumps.",
        ),
    ] = 0,
    rate_hz: Annotated[
        float, typer.Option("--rate-hz", help="Samples per second per asset.")
    ] = 1.0,
    speedup: Annotated[
        float, typer.Option("--speedup", help="Simulated seconds per wall-clock second.")
    ] = 1.0,
    duration: Annotated[str, typer.Option("--duration", help="Simulated time, e.g. 10m.")] = "10m",
    fault_fraction: Annotated[
        float,
        typer.Option(
            "--fault-fraction",
            min=0.0,
            max=1.0,
            help="Share of the pumps, and of the compressors, that fail.",
        ),
    ] = 0.3,
    sensor_fault_fraction: Annotated[
        float,
        typer.Option("--sensor-fault-fraction", min=0.0, max=1.0, help="Share with a bad sensor."),
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    start_ts: Annotated[
        float | None,
        typer.Option(
            "--start-ts",
            help="First sample time, epoch s (default: so that the "
            "last sample is stamped at the moment it is sent).",
        ),
    ] = None,
    broker: BrokerOpt = None,
    site: SiteOpt = None,
    truth: TruthOpt = None,
    count: CountOpt = None,
    as_fast_as_possible: FastOpt = False,
    batch: BatchOpt = 1,
    qos: QosOpt = 1,
    bad_input_rate: BadRateOpt = 0.0,
    bad_input_kinds: BadKindsOpt = "all",
    bad_input_record: BadRecordOpt = Path("bad-input.jsonl"),
    max_payload_bytes: MaxPayloadOpt = None,
    max_inflight: InflightOpt = DEFAULT_MAX_INFLIGHT,
    mqtt_backend: BackendOpt = "auto",
    reconnect_timeout: ReconnectOpt = DEFAULT_RECONNECT_TIMEOUT_S,
    as_json: JsonOpt = False,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="json (edgewatch telemetry topics), sparkplug (one Sparkplug B edge "
            "node, every asset a device, QoS 0 as the specification asks; see "
            "docs/sparkplug.md) or opcua (an OPC UA server, every sensor a variable; "
            "see docs/opcua.md).",
        ),
    ] = "json",
    group: Annotated[
        str | None,
        typer.Option("--group", help="Sparkplug group id (default: sparkplug.group_id)."),
    ] = None,
    node: Annotated[
        str, typer.Option("--node", help="Sparkplug edge node id of the simulated fleet.")
    ] = "sim-node",
    endpoint: Annotated[
        str, typer.Option("--endpoint", help="OPC UA: where the server listens.")
    ] = "opc.tcp://127.0.0.1:4840",
    security: Annotated[
        str,
        typer.Option(
            "--security",
            help="OPC UA: None, Sign or SignAndEncrypt (Basic256Sha256, certificates in --pki).",
        ),
    ] = "None",
    pki: Annotated[
        Path,
        typer.Option(
            "--pki",
            help="OPC UA: folder of the server's and the agent's certificates and keys "
            "(made there if missing; the server trusts the agent's client_cert.der).",
        ),
    ] = Path("opcua-pki"),
    agent_config: Annotated[
        Path | None,
        typer.Option(
            "--agent-config",
            help="OPC UA: write the agent's [opcua] settings for this fleet to this file.",
        ),
    ] = None,
    linger: Annotated[
        str,
        typer.Option("--linger", help="OPC UA: keep serving the last values this long."),
    ] = "2s",
) -> None:
    """Publish a degrading fleet of pumps and air compressors to the telemetry topics."""
    if rate_hz <= 0 or speedup <= 0:
        raise typer.BadParameter("--rate-hz and --speedup must be > 0")
    if assets + compressors == 0:
        raise typer.BadParameter("simulate at least one asset", param_hint="--assets")
    if protocol not in ("json", "sparkplug", "opcua"):
        raise typer.BadParameter("use json, sparkplug or opcua", param_hint="--protocol")
    if protocol != "json" and bad_input_rate > 0:
        raise typer.BadParameter(
            f"bad input is JSON on purpose: not with --protocol {protocol}",
            param_hint="--bad-input-rate",
        )
    from simulators.fleet import FleetConfig, publish_fleet

    target = _target(ctx, broker, site)
    backend = _backend(mqtt_backend, qos)
    config = FleetConfig(
        assets=assets,
        compressors=compressors,
        rate_hz=rate_hz,
        duration_s=parse_duration(duration),
        fault_fraction=fault_fraction,
        sensor_fault_fraction=sensor_fault_fraction,
        seed=seed,
        start_ts=start_ts,
        batch=batch,
    )
    bad = _injector(bad_input_rate, bad_input_kinds, seed, target, max_payload_bytes)
    if protocol == "opcua":
        _fleet_opcua(
            config,
            _OpcUaOptions(endpoint, security, pki, agent_config, parse_duration(linger)),
            _pacing(as_fast_as_possible, speedup),
            count,
            truth,
            as_json,
        )
        return
    if protocol == "sparkplug":
        _fleet_sparkplug(
            ctx,
            config,
            target,
            group,
            node,
            speedup,
            as_fast_as_possible,
            count,
            truth,
            max_inflight,
            reconnect_timeout,
            as_json,
        )
        return

    def run(on_progress: ProgressCallback, stop: threading.Event) -> RunReport:
        return publish_fleet(
            config,
            host=target.host,
            port=target.port,
            qos=qos,
            topic_template=target.template,
            site=target.site,
            pacing=_pacing(as_fast_as_possible, speedup),
            bad=bad,
            count=count,
            truth_path=truth,
            bad_record_path=bad_input_record if bad is not None else None,
            max_inflight=max_inflight,
            username=target.username,
            password=target.password,
            backend=backend,
            reconnect_timeout_s=reconnect_timeout,
            on_progress=on_progress,
            stop=stop,
        )

    description = f"fleet -> {target.host}:{target.port}"
    if as_fast_as_possible:
        _flat_out(target, description, run, as_json)
    else:
        _render(_with_progress(description, run), as_json)


def _fleet_sparkplug(
    ctx: typer.Context,
    config: FleetConfig,
    target: _Target,
    group: str | None,
    node: str,
    speedup: float,
    as_fast_as_possible: bool,
    count: int | None,
    truth: Path | None,
    max_inflight: int,
    reconnect_timeout: float,
    as_json: bool,
) -> None:
    from agent.domain import name_problem
    from simulators.sparkplug_node import publish_fleet_sparkplug

    group = group or invocation(ctx).settings().sparkplug.group_id
    for flag, value in (("--group", group), ("--node", node)):
        problem = name_problem(value)
        if problem is not None:
            raise typer.BadParameter(f"{value!r} {problem}", param_hint=flag)

    def run(on_progress: ProgressCallback, stop: threading.Event) -> RunReport:
        return publish_fleet_sparkplug(
            config,
            host=target.host,
            port=target.port,
            group=group,
            node=node,
            pacing=_pacing(as_fast_as_possible, speedup),
            count=count,
            truth_path=truth,
            max_inflight=max_inflight,
            username=target.username,
            password=target.password,
            reconnect_timeout_s=reconnect_timeout,
            on_progress=on_progress,
            stop=stop,
        )

    where = f"spBv1.0/{group}/+/{node} -> {target.host}:{target.port}"
    _render(_with_progress(f"fleet (Sparkplug B) {where}", run), as_json)


#: The agent's publishing interval for a simulated fleet: a tenth of a second of wall
#: time, however fast data time runs.
PUBLISHING_INTERVAL_MS = 100.0


def _queue_size(rate_hz: float, pacing: Pacing) -> int:
    """Samples per variable the server must hold between two publishes (twice over)."""
    if pacing.speedup is None:
        return 10_000
    per_publish = rate_hz * pacing.speedup * PUBLISHING_INTERVAL_MS / 1000.0
    return min(10_000, max(10, math.ceil(2 * per_publish)))


@dataclass(frozen=True)
class _OpcUaOptions:
    endpoint: str
    security: str
    pki: Path
    agent_config: Path | None
    linger_s: float


def _fleet_opcua(
    config: FleetConfig,
    options: _OpcUaOptions,
    pacing: Pacing,
    count: int | None,
    truth: Path | None,
    as_json: bool,
) -> None:
    from simulators.opcua_server import (
        Certificates,
        ServerSecurity,
        agent_config,
        fleet_sensors,
        make_certificates,
        serve_fleet_opcua,
    )

    # asyncua warns of every client that comes and goes; errors still show.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    if options.security not in ("None", "Sign", "SignAndEncrypt"):
        raise typer.BadParameter("use None, Sign or SignAndEncrypt", param_hint="--security")
    if not options.endpoint.startswith("opc.tcp://"):
        raise typer.BadParameter("use opc.tcp://HOST:PORT", param_hint="--endpoint")
    security = None
    certs = None
    if options.security != "None":
        pki = options.pki
        certs = Certificates(
            pki / "server_cert.der",
            pki / "server_key.pem",
            pki / "client_cert.der",
            pki / "client_key.pem",
        )
        if not all(path.exists() for path in astuple(certs)):
            certs = make_certificates(pki)
            err_console.print(f"certificates written to {pki}")
        security = ServerSecurity(certs.server_cert, certs.server_key, modes=(options.security,))
    if options.agent_config is not None:
        options.agent_config.write_text(
            agent_config(
                options.endpoint,
                fleet_sensors(config),
                security_mode=None if security is None else options.security,
                certs=certs,
                sampling_interval_ms=round(1000.0 / config.rate_hz, 3),
                publishing_interval_ms=PUBLISHING_INTERVAL_MS,
                queue_size=_queue_size(config.rate_hz, pacing),
            )
        )

    def run(on_progress: ProgressCallback, stop: threading.Event) -> RunReport:
        return serve_fleet_opcua(
            config,
            endpoint=options.endpoint,
            security=security,
            pacing=pacing,
            count=count,
            truth_path=truth,
            on_progress=on_progress,
            stop=stop,
            linger_s=options.linger_s,
        )

    try:
        report = _with_progress(f"fleet (OPC UA) {options.endpoint}", run)
    except OSError as exc:
        err_console.print(f"error: cannot serve on {options.endpoint}: {exc}")
        raise typer.Exit(1) from None
    _render(report, as_json)


@app.command("replay")
def replay(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="C-MAPSS file, or a CSV file or directory.")],
    fmt: Annotated[str, typer.Option("--format", help="cmapss or csv.")] = "cmapss",
    time_column: Annotated[
        str | None, typer.Option("--time-column", help="CSV: time column (epoch s/ms or ISO).")
    ] = None,
    sep: Annotated[str, typer.Option("--sep", help="CSV: field separator.")] = ",",
    label_column: Annotated[
        list[str] | None,
        typer.Option("--label-column", help="CSV: ground-truth column, not published (repeat)."),
    ] = None,
    asset_from_file: Annotated[
        bool, typer.Option("--asset-from-file", help="CSV: one asset per file (its name).")
    ] = False,
    asset_column: Annotated[
        str | None, typer.Option("--asset-column", help="CSV: column naming the asset.")
    ] = None,
    sensors: Annotated[
        str | None, typer.Option("--sensors", help="Comma-separated columns to publish.")
    ] = None,
    cycle_seconds: Annotated[
        float, typer.Option("--cycle-seconds", help="C-MAPSS: data time of one cycle.")
    ] = 1.0,
    rate: Annotated[
        float | None, typer.Option("--rate", help="Messages per second (overrides --speedup).")
    ] = None,
    speedup: Annotated[
        float, typer.Option("--speedup", help="Data seconds per wall-clock second.")
    ] = 1.0,
    keep_time: Annotated[
        bool, typer.Option("--keep-time", help="Publish the original timestamps.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bad-input choices.")] = 0,
    broker: BrokerOpt = None,
    site: SiteOpt = None,
    truth: TruthOpt = None,
    count: CountOpt = None,
    as_fast_as_possible: FastOpt = False,
    batch: BatchOpt = 1,
    qos: QosOpt = 1,
    bad_input_rate: BadRateOpt = 0.0,
    bad_input_kinds: BadKindsOpt = "all",
    bad_input_record: BadRecordOpt = Path("bad-input.jsonl"),
    max_payload_bytes: MaxPayloadOpt = None,
    max_inflight: InflightOpt = DEFAULT_MAX_INFLIGHT,
    mqtt_backend: BackendOpt = "auto",
    reconnect_timeout: ReconnectOpt = DEFAULT_RECONNECT_TIMEOUT_S,
    as_json: JsonOpt = False,
) -> None:
    """Replay a dataset (C-MAPSS or CSV) as live assets; labels go to the truth file."""
    if (rate is not None and rate <= 0) or speedup <= 0 or cycle_seconds <= 0:
        raise typer.BadParameter("--rate, --speedup and --cycle-seconds must be > 0")
    from simulators.replay import publish_replay, read_cmapss, read_csv

    wanted = [s.strip() for s in sensors.split(",") if s.strip()] if sensors else None
    kind = fmt.lower()
    if kind == "cmapss":
        series = read_cmapss(path, cycle_s=cycle_seconds, sensors=wanted)
    elif kind == "csv":
        if not time_column:
            raise typer.BadParameter("CSV replay needs --time-column", param_hint="--time-column")
        series = read_csv(
            path,
            time_column=time_column,
            sep=sep,
            label_columns=label_column or [],
            asset_column=asset_column,
            asset_from_file=asset_from_file,
            sensors=wanted,
        )
    else:
        raise typer.BadParameter("use cmapss or csv", param_hint="--format")
    if not series:
        raise DatasetError(f"{path} holds no readings")
    target = _target(ctx, broker, site)
    backend = _backend(mqtt_backend, qos)
    bad = _injector(bad_input_rate, bad_input_kinds, seed, target, max_payload_bytes)

    def run(on_progress: ProgressCallback, stop: threading.Event) -> RunReport:
        return publish_replay(
            series,
            host=target.host,
            port=target.port,
            qos=qos,
            topic_template=target.template,
            site=target.site,
            pacing=_pacing(as_fast_as_possible, speedup, rate),
            batch=batch,
            keep_time=keep_time,
            bad=bad,
            count=count,
            truth_path=truth,
            bad_record_path=bad_input_record if bad is not None else None,
            max_inflight=max_inflight,
            username=target.username,
            password=target.password,
            backend=backend,
            reconnect_timeout_s=reconnect_timeout,
            on_progress=on_progress,
            stop=stop,
        )

    description = f"replay {path.name} -> {target.host}:{target.port}"
    if as_fast_as_possible:
        _flat_out(target, description, run, as_json)
    else:
        _render(_with_progress(description, run), as_json)
