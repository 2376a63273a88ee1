"""``edgewatch demo``: broker, simulated pump fleet and the agent on one machine.

Nothing to configure: a private Mosquitto on a free local port (edgewatch's own
small broker where Mosquitto is not installed), the fleet simulator
publishing to it in a thread (a few assets develop faults), and the real agent with
its records in ``<data_dir>`` (``./edgewatch-data`` by default). The CLI renders
:class:`DemoView` snapshots live; this module never prints.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.errors import EdgewatchError
from agent.localbroker import BrokerChoice, LocalBroker
from agent.runtime import Agent, resolve_bundle
from agent.settings import Settings
from agent.sqlite import open_engine
from agent.storage import queries
from simulators.fleet import FleetConfig, publish_fleet
from simulators.opcua_server import (
    FleetServer,
    ServerSecurity,
    ServerThread,
    agent_config,
    fleet_sensors,
    make_certificates,
    serve_fleet_opcua,
)
from simulators.sparkplug_node import DEFAULT_NODE, publish_fleet_sparkplug
from simulators.stream import Pacing, RunReport

VIEW_INTERVAL_S = 1.0
#: ``--protocol opcua``: how long the simulator waits for the agent's OPC UA session.
OPCUA_READY_TIMEOUT_S = 60.0
#: Marks a data directory the demo made: only such a directory is cleared for the next run.
DEMO_MARKER = ".edgewatch-demo"
#: What a demo run leaves behind besides the database files.
DEMO_FOLDERS = (
    "baselines",
    "outbox",
    "cloud",
    "demo-broker",
    "backups",
    "updates",
    "demo-updates",
    "demo-opcua",
)
#: ``--model-update``: a TUF repository of the demo's own, polled often, with a short
#: probation, so that shadow scoring and promotion happen within a few minutes.
DEMO_UPDATES = {
    "poll_interval_s": 5.0,
    "probation_windows": 300,
    "probation_s": 20.0,
    "control_interval_s": 1.0,
}
#: What the simulator sent and which faults it had, for `edgewatch evaluate live`.
DEMO_TRUTH = "demo-truth.csv"
#: The simulated compressors as a plant would describe them in a profile: the motor
#: stops on standby (a stopped machine is not judged), and plant demand changes from
#: day to day, so their baseline spans three of the pumps' baselines (three days).
COMPRESSOR_PROFILE: dict[str, Any] = {
    "name": "air compressors",
    "match": "comp-*",
    "run_sensor": "motor_current_a",
}
COMPRESSOR_BASELINE_FACTOR = 3


@dataclass(frozen=True, slots=True)
class DemoOptions:
    #: Pumps, and air compressors besides them: sensors and faults no pump has, so
    #: assets the model bundle was not trained on learn their own baselines.
    assets: int = 8
    compressors: int = 4
    duration_s: float = 300.0
    #: Simulated seconds per wall-clock second. The pump model samples once a minute
    #: and learns each pump's baseline from a day of data: at 3600 that day takes 24 s
    #: and five minutes show about twelve days of wear.
    speedup: float = 3600.0
    rate_hz: float = 1 / 60
    fault_fraction: float = 0.3
    seed: int = 7
    broker: BrokerChoice = "auto"
    #: Publish a new version of the model bundle midway: the agent fetches it, runs it
    #: in shadow and promotes it (docs/updates.md).
    model_update: bool = False
    #: sparkplug: the fleet is a Sparkplug B edge node, the agent reads the group and
    #: publishes its results as an edge node of its own (docs/sparkplug.md). opcua: the
    #: fleet is an OPC UA server (SignAndEncrypt) the agent reads (docs/opcua.md).
    protocol: Literal["json", "sparkplug", "opcua"] = "json"


@dataclass
class DemoView:
    """What the live view shows, refreshed every second."""

    elapsed_s: float
    duration_s: float
    assets: list[dict[str, Any]]
    health: dict[str, Any]
    simulator_sent: int
    rul_unit: str = ""
    broker: str = ""
    #: The live model, a candidate and its probation, the last change (--model-update).
    model: dict[str, Any] = field(default_factory=dict)
    #: The demo broker's port on 127.0.0.1 (for a client of one's own).
    port: int = 0
    #: With Sparkplug B: the group, the fleet's edge node and the agent's.
    sparkplug: dict[str, str] = field(default_factory=dict)
    #: With OPC UA: the simulated fleet's server endpoint.
    opcua: str = ""


@dataclass
class DemoResult:
    database: Path
    data_dir: Path
    simulator: RunReport | None
    health: dict[str, Any] = field(default_factory=dict)
    broker: str = ""
    truth: Path | None = None


def bundle_rul_unit(path: Path) -> str:
    """The unit of the bundle's RUL estimates, read from its manifest ("" if none)."""
    try:
        rul = json.loads((path / "manifest.json").read_text()).get("rul") or {}
    except (OSError, ValueError):
        return ""
    return str(rul.get("unit", ""))


def prepare_data_dir(settings: Settings) -> bool:
    """Give the demo an empty data directory; True if a previous demo's records went.

    Every demo simulates the last days up to now, so a second run in the same
    directory would send readings older than the first run's: the agent would
    rightly dead-letter nearly all of them as out of order. A directory whose
    database the demo did not make (a real agent's) is never touched.
    """
    data_dir = settings.storage.data_dir
    database = settings.storage.database_path
    marker = data_dir / DEMO_MARKER
    if database.exists() and not marker.exists():
        raise EdgewatchError(
            f"{database} holds records the demo did not make; the demo will not touch them",
            hint="run the demo in an empty directory, e.g. "
            "`EDGEWATCH_STORAGE__DATA_DIR=/tmp/edgewatch-demo edgewatch demo`",
        )
    cleared = False
    if marker.exists():
        for path in [database.with_name(database.name + s) for s in ("", "-wal", "-shm")]:
            if path.exists():
                path.unlink()
                cleared = True
        for name in DEMO_FOLDERS:
            if (data_dir / name).is_dir():
                shutil.rmtree(data_dir / name)
                cleared = True
        (data_dir / DEMO_TRUTH).unlink(missing_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by `edgewatch demo`: the next demo clears this directory\n")
    return cleared


def demo_settings(
    base: Settings,
    port: int,
    broker_kind: str = "mosquitto",
    protocol: str = "json",
    span_s: float = 0.0,
) -> Settings:
    """The user's settings with the broker pointed at the demo's own broker (and, for
    Sparkplug B, ingest and output through the user's ``sparkplug.group_id``).

    ``span_s``: the simulated time the demo replays, ending now. Its readings must be
    neither refused as too old (``ts_past``) nor deleted by retention while it runs: a
    30-minute demo replays 75 days, beyond both defaults."""
    data = base.model_dump()
    if span_s > 0:
        span_days = span_s / 86400 + 1
        data["ingest"]["max_past_s"] = max(data["ingest"]["max_past_s"], span_s + 86400)
        for key in ("retention_days", "prediction_retention_days"):
            data["storage"][key] = min(3650.0, max(data["storage"][key], span_days))
    if protocol == "sparkplug":
        data["sparkplug"].update(enabled=True, publish=True)
    data["mqtt"].update(host="127.0.0.1", port=port)
    if broker_kind == "embedded":
        data["mqtt"]["protocol"] = "3.1.1"  # all the embedded broker speaks
    data["mqtt"]["health_interval_s"] = 2.0
    # The live view reads the database: a demo is not an SD card to spare, so its
    # rows are committed within a second rather than gathered for commit_max_wait_ms.
    data["storage"]["commit_max_wait_ms"] = min(data["storage"]["commit_max_wait_ms"], 1000)
    # Twelve pumps finish their baselines at about the same time; learning two at
    # once keeps the wait short on a 2-core machine.
    data["model"]["max_commissioning"] = max(2, data["model"]["max_commissioning"])
    if not data["profiles"]:  # the user's own profiles replace the demo's
        samples = COMPRESSOR_BASELINE_FACTOR * data["model"]["commission_samples"]
        data["profiles"] = [{**COMPRESSOR_PROFILE, "commission_samples": samples}]
    return Settings.model_validate(data)


async def run_demo(
    base: Settings,
    options: DemoOptions,
    on_view: Callable[[DemoView], None],
    stop: asyncio.Event,
) -> DemoResult:
    """Run until ``duration_s`` of wall time has passed or ``stop`` is set."""
    data_dir = base.storage.data_dir
    with LocalBroker(
        data_dir / "demo-broker",
        choice=options.broker,
        max_payload_bytes=base.ingest.max_payload_bytes,
    ) as broker:
        settings = demo_settings(
            base,
            broker.port,
            broker.kind,
            options.protocol,
            span_s=options.duration_s * options.speedup,
        )
        config = FleetConfig(
            assets=options.assets,
            compressors=options.compressors,
            rate_hz=options.rate_hz,
            duration_s=options.duration_s * options.speedup,
            fault_fraction=options.fault_fraction,
            sensor_fault_fraction=0.0,
            seed=options.seed,
        )
        opcua = DemoOpcUa(data_dir / "demo-opcua") if options.protocol == "opcua" else None
        if opcua is not None:
            settings = await asyncio.to_thread(opcua.prepare, settings, config, options.speedup)
        updates = DemoUpdates(data_dir / "demo-updates", resolve_bundle(settings))
        if options.model_update:
            settings = await asyncio.to_thread(updates.prepare, settings)
        agent = Agent(settings)
        agent_task = asyncio.create_task(agent.run(), name="agent")
        ready = asyncio.create_task(agent.subscribed.wait())
        await asyncio.wait({agent_task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if agent_task.done():
            ready.cancel()
            if opcua is not None:
                await asyncio.to_thread(opcua.close)
            agent_task.result()  # raises the agent's startup error
            raise EdgewatchError("the agent stopped before it subscribed")

        sim_stop = threading.Event()
        sent = [0]

        def progress(done: int, _total: int | None) -> None:
            sent[0] = done

        spb = settings.sparkplug
        sparkplug = (
            {
                "group": spb.group_id,
                "fleet": DEFAULT_NODE,
                "agent": spb.edge_node_id or settings.identity.agent,
            }
            if spb.enabled
            else {}
        )
        if opcua is not None:
            loop = asyncio.get_running_loop()

            def agent_reading(_server: object) -> None:
                # The server keeps only current values: samples written before the
                # agent's monitored items exist would never reach it.
                ingest = agent.opcua
                assert ingest is not None
                asyncio.run_coroutine_threadsafe(
                    asyncio.wait_for(ingest.first_session.wait(), OPCUA_READY_TIMEOUT_S), loop
                ).result(OPCUA_READY_TIMEOUT_S + 5)

            publishing = asyncio.to_thread(
                serve_fleet_opcua,
                config,
                endpoint=opcua.endpoint,
                security=opcua.security,
                pacing=Pacing(speedup=options.speedup),
                truth_path=data_dir / DEMO_TRUTH,
                on_progress=progress,
                on_ready=agent_reading,
                stop=sim_stop,
                server=opcua.server,
                linger_s=options.duration_s,
            )
        elif spb.enabled:
            publishing = asyncio.to_thread(
                publish_fleet_sparkplug,
                config,
                host=broker.host,
                port=broker.port,
                group=spb.group_id,
                pacing=Pacing(speedup=options.speedup),
                truth_path=data_dir / DEMO_TRUTH,
                on_progress=progress,
                stop=sim_stop,
            )
        else:
            publishing = asyncio.to_thread(
                publish_fleet,
                config,
                host=broker.host,
                port=broker.port,
                topic_template=settings.mqtt.telemetry_topic,
                site=settings.identity.site,
                pacing=Pacing(speedup=options.speedup),
                truth_path=data_dir / DEMO_TRUTH,
                on_progress=progress,
                stop=sim_stop,
            )
        simulator = asyncio.create_task(publishing, name="simulator")
        engine = open_engine(settings.storage.database_path)
        rul_unit = bundle_rul_unit(resolve_bundle(settings))
        started = time.monotonic()
        report: RunReport | None = None
        try:
            while not stop.is_set() and not agent_task.done():
                elapsed = time.monotonic() - started
                overview = await asyncio.to_thread(
                    queries.fleet_overview, engine, settings.identity.site
                )
                health = agent.metrics.snapshot()
                if (
                    options.model_update
                    and not updates.published
                    and (elapsed >= options.duration_s / 2)
                ):
                    await asyncio.to_thread(updates.publish)
                on_view(
                    DemoView(
                        elapsed,
                        options.duration_s,
                        overview,
                        health,
                        sent[0],
                        rul_unit=rul_unit,
                        broker=broker.kind,
                        model=(
                            await asyncio.to_thread(updates.view, agent, settings)
                            if options.model_update
                            else {}
                        ),
                        port=broker.port,
                        sparkplug=sparkplug,
                        opcua="" if opcua is None else opcua.endpoint,
                    )
                )
                if simulator.done() or elapsed >= options.duration_s:
                    break
                try:
                    async with asyncio.timeout(VIEW_INTERVAL_S):
                        await stop.wait()
                except TimeoutError:
                    pass
        finally:
            if opcua is not None:
                # The agent leaves first: its server closing under it would read as a
                # lost session (the server lingers until sim_stop for that).
                agent.request_stop()
                await agent_task
            sim_stop.set()
            report = await simulator
            agent.request_stop()
            await agent_task
            engine.dispose()
    return DemoResult(
        database=settings.storage.database_path,
        data_dir=data_dir,
        simulator=report,
        health=agent.metrics.snapshot(),
        broker=broker.kind,
        truth=report.truth_path if report is not None else None,
    )


class DemoOpcUa:
    """``--protocol opcua``: certificates, a free port and the agent's ``[opcua]``
    settings for the fleet's OPC UA server (Basic256Sha256, SignAndEncrypt)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.endpoint = ""
        self.security: ServerSecurity | None = None
        #: The fleet's server, listening before the agent starts (which then connects
        #: at its first attempt).
        self.server: ServerThread | None = None

    def prepare(self, settings: Settings, config: FleetConfig, speedup: float) -> Settings:
        shutil.rmtree(self.root, ignore_errors=True)
        certs = make_certificates(self.root)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.endpoint = f"opc.tcp://127.0.0.1:{port}"
        self.security = ServerSecurity.from_certificates(certs)
        publishing_ms = 100.0
        section = tomllib.loads(
            agent_config(
                self.endpoint,
                fleet_sensors(config),
                security_mode="SignAndEncrypt",
                certs=certs,
                sampling_interval_ms=1000.0 / config.rate_hz,
                publishing_interval_ms=publishing_ms,
                # Twice what the sped-up fleet samples per variable in one publish.
                queue_size=max(10, math.ceil(2 * config.rate_hz * speedup * publishing_ms / 1000)),
            )
        )["opcua"]
        data = settings.model_dump()
        data["opcua"] = section
        self.server = ServerThread(FleetServer(self.endpoint, fleet_sensors(config), self.security))
        self.server.start()
        return Settings.model_validate(data)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class DemoUpdates:
    """``--model-update``: keys, a repository and a new version of the bundle.

    The new version is the configured bundle re-sealed with a new note, so a new
    content version with the same weights: it stands in for a retrained bundle (a
    retraining would take longer than the demo) and passes probation.
    """

    def __init__(self, root: Path, bundle: Path) -> None:
        self.root = root
        self.bundle = bundle
        self.published: str | None = None

    @property
    def repo_url(self) -> str:
        return (self.root / "repo").resolve().as_uri()

    def prepare(self, settings: Settings) -> Settings:
        from models.updates.repository import init_keys, publish

        if not self.bundle.is_dir():
            raise EdgewatchError(
                f"--model-update needs a bundle directory, not {self.bundle}",
                hint="unpack the bundle or leave model.bundle unset",
            )
        shutil.rmtree(self.root, ignore_errors=True)
        root_json = init_keys(self.root / "keys")
        # The running version first, as on a real repository: polls before the new
        # one find nothing newer (instead of an empty repository).
        publish(self.bundle, self.repo_url, self.root / "keys")
        data = settings.model_dump()
        data["updates"].update(
            enabled=True, repo=self.repo_url, trusted_root=str(root_json), **DEMO_UPDATES
        )
        return Settings.model_validate(data)

    def publish(self) -> str:
        from models.manifest import MANIFEST, seal
        from models.updates.repository import publish

        out = self.root / "retrained"
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(self.bundle, out)
        manifest = json.loads((out / MANIFEST).read_text())
        manifest["notes"] = f"demo update published {time.strftime('%Y-%m-%d %H:%M:%S')}"
        (out / MANIFEST).write_text(json.dumps(seal(manifest)))
        self.published = publish(out, self.repo_url, self.root / "keys").version
        return self.published

    def view(self, agent: Agent, settings: Settings) -> dict[str, Any]:
        from models.updates.store import ModelStore

        state = ModelStore(settings.updates_cache_dir / "store").read()
        inference = agent.inference
        last = state.history[-1] if state.history else None
        return {
            "published": self.published,
            "live": inference.predictor.model_version if inference is not None else None,
            "candidate": state.candidate.version if state.candidate else None,
            "probation": inference.probation() if inference is not None else None,
            "last": None if last is None else f"{last.action} {last.version}: {last.reason}",
        }
