"""``edgewatch bench``: the agent's figures, measured against a baseline in the same run.

Everything runs on this machine: a private Mosquitto, the simulator's publisher, and
the agent as a real ``edgewatch run`` subprocess (so its RSS and CPU are its own).

(a) ceiling: a bare aiomqtt + orjson receive loop (:mod:`agent.benchprobe`) at QoS 1;
(b) the agent's sustained end-to-end rate on the same messages (decode, validate,
    window, infer, store, ack), the ratio (b)/(a), and readings/s with batch payloads;
(c) reading-to-prediction and reading-to-alert latency at a fixed message rate;
(d) the agent's RSS and CPU under that load, and its cold start to first subscription.

The agent runs with what a default install runs: the shipped pump bundle at its own
window and hop (hop 1: a window scored for every reading) and the settings' defaults;
the config sets only where the broker and the data are, and the backend. Other hops
are extra runs (``extra_hops``), reported apart and labelled with their hop.

Assets start commissioned (one baseline learned once, copied to every asset), so
the figures describe steady-state streaming, not commissioning.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent import sparkplug as sp
from agent.errors import EdgewatchError
from agent.localbroker import LocalBroker
from agent.storage import migrate
from simulators.fleet import FleetConfig, simulate_runs
from simulators.payloads import encode_batch, encode_single
from simulators.publisher import make_publisher

if TYPE_CHECKING:
    from agent.storage.writer import Item
    from models.commission import AssetBaseline

SITE = "bench"

SUBSCRIBE_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 120.0
SAMPLE_PERIOD_S = 0.1
#: The bench's Sparkplug B edge node: every simulated asset is one of its devices.
SPARKPLUG_GROUP = "bench"
SPARKPLUG_NODE = "bench-node"
#: How long the stored count may stand still before a QoS 0 run counts as over.
SETTLE_S = 10.0
#: The shipped pump model is trained on one sample a minute; the bench replays such
#: samples faster, with timestamps SAMPLE_PERIOD_S apart.
PUMP_PERIOD_S = 60.0
RSS_SAMPLE_S = 0.5
#: Readings in each message of the batched run.
BATCH_READINGS = 100
#: Readings stored, from the blocks' counts (no block is opened).
STORED_READINGS = "select coalesce(sum(count), 0) from reading_blocks"

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    assets: int = 50
    messages: int = 60_000
    batch_messages: int = 3_000
    latency_rate_msg_s: float = 1000.0
    latency_duration_s: float = 20.0
    #: Each backend gets its own agent run on the same messages, side by side.
    backends: tuple[str, ...] = ("torch", "onnx")
    #: Seconds per figure of the predictor-alone runs.
    inference_seconds: float = 1.0
    #: MQTT version of both the agent and the baseline loop ("5" or "3.1.1").
    protocol: str = "5"
    #: Hops to measure besides the bundle's own, each in extra agent runs.
    extra_hops: tuple[int, ...] = ()
    #: Also run each backend's agent on Sparkplug B ingest (one more agent run each).
    sparkplug: bool = False


@dataclass
class AgentFigures:
    """What one agent run (one inference backend) measured."""

    backend: str = ""
    #: The hop the agent reported at its start (from its log).
    hop: int = 0
    #: Windows sent to inference per reading stored during (b), single and batched,
    #: and windows shed (dropped, inference queue full) per reading: together 1 / hop.
    windows_per_reading: float = 0.0
    shed_per_reading: float = 0.0
    agent_msg_s: float = 0.0
    ratio: float = 0.0
    lost: int = 0
    batched_readings_s: float = 0.0
    batched_lost: int = 0
    prediction_latency_ms: dict[str, float] = field(default_factory=dict)
    alert_latency_ms: dict[str, float] = field(default_factory=dict)
    alerts: int = 0
    rss_mb: dict[str, float] = field(default_factory=dict)
    #: Median RSS over the first and the last minute of (c) (quarters of a shorter
    #: run) and their difference: flat means no growth under steady load.
    rss_steady_mb: dict[str, float] = field(default_factory=dict)
    cpu_percent: float = 0.0
    cold_start_s: float = 0.0
    commits_per_s: float = 0.0
    batched_commits_per_s: float = 0.0
    #: Bytes the agent wrote to storage per reading stored (/proc/<pid>/io
    #: write_bytes: database, WAL and checkpoints), single and batched runs.
    write_bytes_per_reading: float = 0.0
    batched_write_bytes_per_reading: float = 0.0
    #: The backend's predictor alone, in a fresh process (:mod:`models.backend_bench`).
    inference: dict[str, Any] = field(default_factory=dict)
    #: Sparkplug B ingest, from an agent run of its own with ``[sparkplug]`` on and the
    #: same messages as (b) re-encoded as DDATA (QoS 0, as the specification has it):
    #: readings/s and readings not stored, one sample per message and 100.
    sparkplug_readings_s: float = 0.0
    sparkplug_lost: int = 0
    sparkplug_batched_readings_s: float = 0.0
    sparkplug_batched_lost: int = 0


@dataclass
class BenchReport:
    ceiling_msg_s: float = 0.0
    protocol: str = ""
    window: int = 0
    #: The shipped bundle's own hop, which the default runs use.
    hop: int = 0
    backends: dict[str, AgentFigures] = field(default_factory=dict)
    #: Runs at other hops (``BenchOptions.extra_hops``), one per hop and backend.
    extra: list[AgentFigures] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _healthy_values(assets: int, samples: int) -> list[dict[str, np.ndarray]]:
    runs = simulate_runs(
        FleetConfig(
            assets=assets,
            rate_hz=1 / PUMP_PERIOD_S,
            duration_s=float(samples) * PUMP_PERIOD_S,
            fault_fraction=0.0,
            sensor_fault_fraction=0.0,
            seed=11,
        ),
        start_ts=0.0,
    )
    # Every asset replays the first pump at its own offset, so the one baseline
    # learned from that pump fits all of them and healthy data stays healthy.
    first = runs[0].values
    return [{s: np.roll(v, 97 * i) for s, v in first.items()} for i in range(assets)]


class _ProcStats:
    """RSS and CPU time of a process from /proc (Linux)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def write_bytes(self) -> int:
        """Bytes the process caused to be written to storage (/proc/<pid>/io)."""
        try:
            for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def cpu_s(self) -> float:
        try:
            parts = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def _loop(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.samples.append(self.rss_mb())

    def __enter__(self) -> _ProcStats:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A connection that cannot write to the agent's database, closed after use."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def _count(db: Path, sql: str) -> int:
    with _read_only(db) as conn:
        try:
            return int(conn.execute(sql).fetchone()[0] or 0)
        except sqlite3.OperationalError:
            return 0


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise EdgewatchError(f"benchmark timed out waiting for {what}")
        time.sleep(0.05)  # polling another process's database


def _wait_settled(db: Path, target: int) -> tuple[int, float]:
    """Until ``target`` readings are stored, or the count has stood still for SETTLE_S
    (QoS 0: what the broker dropped never comes). Returns the count and the monotonic
    time it last grew."""
    stored, grew = _count(db, STORED_READINGS), time.monotonic()
    deadline = grew + DRAIN_TIMEOUT_S
    while stored < target and time.monotonic() - grew < SETTLE_S:
        if time.monotonic() > deadline:
            raise EdgewatchError("benchmark timed out waiting for Sparkplug B readings")
        time.sleep(0.2)  # polling another process's database
        now = _count(db, STORED_READINGS)
        if now > stored:
            stored, grew = now, time.monotonic()
    return stored, grew


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "p50": round(float(np.percentile(arr, 50)), 2),
        "p99": round(float(np.percentile(arr, 99)), 2),
        "max": round(float(arr.max()), 2),
        "n": float(len(arr)),
    }


class Bench:
    def __init__(self, workdir: Path, options: BenchOptions, progress: Progress) -> None:
        self.workdir = workdir
        self.options = options
        self.progress = progress
        self.report = BenchReport(protocol=options.protocol)
        self.topic = "edgewatch/{site}/{asset}/telemetry"
        #: Each agent run has a site of its own, so that the persistent session one
        #: agent leaves on the broker never queues the next run's messages.
        self.site = SITE

    def topic_for(self, asset: str, site: str | None = None) -> str:
        return self.topic.replace("{site}", site or self.site).replace("{asset}", asset)

    def assets(self) -> list[str]:
        return [f"pump-{i:03d}" for i in range(self.options.assets)]

    # ------------------------------------------------------------------ messages
    def single_messages(
        self, count: int, values: list[dict[str, np.ndarray]], start: float
    ) -> Iterator[tuple[str, bytes]]:
        names = self.assets()
        for k in range(count):
            i, step = k % len(names), k // len(names)
            row = {s: float(v[step % len(v)]) for s, v in values[i].items()}
            yield (
                self.topic_for(names[i]),
                encode_single(round(start + step * SAMPLE_PERIOD_S, 3), row),
            )

    def batch_messages(
        self, count: int, values: list[dict[str, np.ndarray]], start: float
    ) -> Iterator[tuple[str, bytes]]:
        names = self.assets()
        for k in range(count):
            i, step = k % len(names), k // len(names)
            base = step * BATCH_READINGS
            idx = [(base + j) % len(values[i]["speed_rpm"]) for j in range(BATCH_READINGS)]
            ts = [round(start + (base + j) * SAMPLE_PERIOD_S, 3) for j in range(BATCH_READINGS)]
            batch = {s: [float(v[j]) for j in idx] for s, v in values[i].items()}
            yield self.topic_for(names[i]), encode_batch(ts, batch)

    def sparkplug_messages(
        self, count: int, values: list[dict[str, np.ndarray]], start: float, samples: int
    ) -> list[tuple[str, bytes]]:
        """The node's NBIRTH, every device's DBIRTH, then ``count`` DDATA of ``samples``
        samples each: the readings of :meth:`single_messages` (``samples`` 1) or of
        :meth:`batch_messages` (``samples`` BATCH_READINGS), with the same times."""
        names = self.assets()
        sensors = list(values[0])
        aliases = {
            name: {s: i * len(sensors) + j + 1 for j, s in enumerate(sensors)}
            for i, name in enumerate(names)
        }
        seq = 0

        def take() -> int:
            nonlocal seq
            seq, taken = (seq + 1) % sp.SEQ_MODULUS, seq
            return taken

        def topic(kind: sp.MessageType, device: str | None = None) -> str:
            return sp.topic(SPARKPLUG_GROUP, kind, SPARKPLUG_NODE, device)

        born_ms = round(start * 1000)
        out = [(topic(sp.MessageType.NBIRTH), sp.birth_payload(born_ms, take(), {}, {}, bdseq=0))]
        for i, name in enumerate(names):
            first = {s: float(values[i][s][0]) for s in sensors}
            out.append(
                (
                    topic(sp.MessageType.DBIRTH, name),
                    sp.birth_payload(born_ms, take(), first, aliases[name]),
                )
            )
        for k in range(count):
            i, step = k % len(names), k // len(names)
            base = step * samples
            rows = [
                (
                    round((start + (base + j) * SAMPLE_PERIOD_S) * 1000),
                    {s: float(v[(base + j) % len(v)]) for s, v in values[i].items()},
                )
                for j in range(samples)
            ]
            out.append(
                (
                    topic(sp.MessageType.DDATA, names[i]),
                    sp.data_payload(take(), rows, aliases[names[i]]),
                )
            )
        return out

    def publish(
        self,
        broker: LocalBroker,
        messages: Iterable[tuple[str, bytes]],
        readings: int = 1,
        qos: int = 1,
    ) -> int:
        sent = 0
        with make_publisher(broker.host, broker.port, qos=qos) as publisher:
            for seq, (topic, payload) in enumerate(messages):
                if publisher.publish(seq, topic, payload, readings):
                    sent += 1
            publisher.flush(timeout_s=120)
        return sent

    # ------------------------------------------------------------------ phases
    def ceiling(self, broker: LocalBroker, values: list[dict[str, np.ndarray]]) -> None:
        n = self.options.messages
        self.progress(f"(a) bare aiomqtt receive loop, {n} QoS 1 messages")
        probe = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.benchprobe",
                broker.host,
                str(broker.port),
                self.topic_for("+", "ceiling"),
                str(n),
                "1",
                self.options.protocol,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert probe.stdout is not None
        if probe.stdout.readline().strip() != "ready":
            raise EdgewatchError("the benchmark's receive probe did not start")
        # Made before publishing, as for (b): the two rates are measured alike.
        msgs = [
            (t.replace(f"/{self.site}/", "/ceiling/"), p)
            for t, p in self.single_messages(n, values, time.time() - 3600)
        ]
        self.publish(broker, msgs)
        out, _ = probe.communicate(timeout=DRAIN_TIMEOUT_S)
        result = json.loads(out.strip().splitlines()[-1])
        elapsed = max(result["last"] - result["first"], 1e-9)
        self.report.ceiling_msg_s = round(result["received"] / elapsed, 1)

    def learn_baseline(self, values: list[dict[str, np.ndarray]]) -> AssetBaseline:
        from models.bundle import load_bundle
        from models.bundles import default_bundle_path
        from models.commission import commission

        self.progress("preparing: one healthy baseline for every asset")
        bundle = load_bundle(default_bundle_path("pump"))
        self.report.window, self.report.hop = bundle.window, bundle.hop
        samples = np.stack([values[0][s][:600] for s in bundle.sensors], axis=1)
        return commission(samples, bundle, asset="template", cpu_budget_s=20)

    def prepare_agent(
        self,
        data_dir: Path,
        broker: LocalBroker,
        baseline: AssetBaseline,
        backend: str,
        hop: int | None,
        sparkplug: bool = False,
    ) -> Path:
        """The agent's config: the shipped defaults, plus a hop override if ``hop``, and
        Sparkplug B ingest instead of JSON with ``sparkplug``."""
        from agent.inference.baselines import BaselineStore

        store = BaselineStore(data_dir / "baselines")
        for asset in self.assets():
            folder = store.save(asset, baseline)
            if backend == "onnx":
                from models.onnx_export import export_baseline

                export_baseline(baseline, folder)
        migrate.upgrade(data_dir / "edgewatch.db")
        config = self.workdir / f"{self.site}.toml"
        config.write_text(
            "\n".join(
                [
                    "[identity]",
                    f'site = "{self.site}"',
                    f'agent = "{self.site}"',
                    "[mqtt]",
                    f'host = "{broker.host}"',
                    f"port = {broker.port}",
                    "health_interval_s = 1.0",
                    f'protocol = "{self.options.protocol}"',
                    "[storage]",
                    f'data_dir = "{data_dir}"',
                    # The harness reads the agent's counters from its heartbeat rows:
                    # committed within a second while the agent idles between runs
                    # (floods commit every commit_interval_ms as by default).
                    "commit_max_wait_ms = 1000",
                    "[model]",
                    *([f"hop = {hop}"] if hop is not None else []),
                    f'backend = "{backend}"',
                    *(
                        ["[sparkplug]", "enabled = true", f'group_id = "{SPARKPLUG_GROUP}"']
                        if sparkplug
                        else []
                    ),
                    "[sync]",
                    "enabled = false",
                    "[logging]",
                    'level = "INFO"',
                    'format = "json"',
                    "",
                ]
            )
        )
        return config

    def agent_log(self) -> Path:
        return self.workdir / f"agent-{self.site}.log"

    def reported_hop(self) -> int:
        """The hop in the agent's "agent starting" log event."""
        for line in self.agent_log().read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "agent starting":
                return int(event.get("hop", 0))
        return 0

    def start_agent(self, config: Path) -> tuple[subprocess.Popen[str], float]:
        exe = Path(sys.executable).with_name("edgewatch")
        log_path = self.agent_log()
        log_file = log_path.open("w")
        t0 = time.monotonic()
        process = subprocess.Popen(
            [str(exe), "--config", str(config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            text=True,
        )

        def subscribed() -> bool:
            if process.poll() is not None:
                raise EdgewatchError(f"the agent exited during the benchmark; see {log_path}")
            return (
                '"event": "subscribed"' in log_path.read_text()
                or '"event":"subscribed"' in log_path.read_text()
            )

        _wait_for(subscribed, SUBSCRIBE_TIMEOUT_S, "the agent to subscribe")
        return process, time.monotonic() - t0

    def throughput(
        self,
        fig: AgentFigures,
        broker: LocalBroker,
        db: Path,
        stats: _ProcStats,
        values: list[dict[str, np.ndarray]],
    ) -> None:
        n, m, assets = self.options.messages, self.options.batch_messages, self.options.assets
        single_span, batch_span = self.spans()
        # Both runs lie in the recent past, the batched one right after the single one.
        start = time.time() - single_span - batch_span - 60
        self.progress(f"(b) agent end to end, {n} single-reading QoS 1 messages, {assets} assets")
        # Payloads are made before the clock starts: the publisher shares the CPU
        # with the agent, and making them is not what is measured.
        singles = list(self.single_messages(n, values, start))
        before = _count(db, STORED_READINGS)
        health0 = self._fresh_heartbeat(db)
        commits0 = health0.get("commits", 0)
        written0 = stats.write_bytes()
        cpu0, t0 = stats.cpu_s(), time.monotonic()
        threading.Thread(target=self.publish, args=(broker, singles), daemon=True).start()
        self._wait_stored(db, singles, "readings")
        elapsed = time.monotonic() - t0
        commits = self._fresh_heartbeat(db).get("commits", 0) - commits0
        fig.commits_per_s = round(commits / (time.monotonic() - t0), 1)
        fig.agent_msg_s = round(n / elapsed, 1)
        fig.cpu_percent = round(100 * (stats.cpu_s() - cpu0) / elapsed, 1)
        stored = _count(db, STORED_READINGS) - before
        fig.lost = n - stored
        fig.write_bytes_per_reading = round((stats.write_bytes() - written0) / max(stored, 1), 1)
        if self.report.ceiling_msg_s:
            fig.ratio = round(fig.agent_msg_s / self.report.ceiling_msg_s, 3)

        self.progress(f"(b) agent end to end, {m} batch messages of {BATCH_READINGS} readings")
        batches = list(self.batch_messages(m, values, start + single_span))
        before = _count(db, STORED_READINGS)
        commits0 = self._fresh_heartbeat(db).get("commits", 0)
        written0 = stats.write_bytes()
        t0 = time.monotonic()
        threading.Thread(
            target=self.publish, args=(broker, batches, BATCH_READINGS), daemon=True
        ).start()
        self._wait_stored(db, batches, "batched readings")
        target = m * BATCH_READINGS
        fig.batched_readings_s = round(target / (time.monotonic() - t0), 1)
        commits = self._fresh_heartbeat(db).get("commits", 0) - commits0
        fig.batched_commits_per_s = round(commits / (time.monotonic() - t0), 1)
        after = self._fresh_heartbeat(db)
        stored = _count(db, STORED_READINGS) - before
        fig.batched_lost = target - stored
        fig.batched_write_bytes_per_reading = round(
            (stats.write_bytes() - written0) / max(stored, 1), 1
        )
        # Scored, not handed over: a full inference queue drops a queued window for a
        # newer one, which counts it as handed over and as shed.
        windows = after.get("predictions", 0) - health0.get("predictions", 0)
        shed = after.get("windows_shed", 0) - health0.get("windows_shed", 0)
        fig.windows_per_reading = round(windows / (n + target), 4)
        fig.shed_per_reading = round(shed / (n + target), 4)

    @staticmethod
    def _fresh_heartbeat(db: Path) -> dict[str, Any]:
        """The agent's health as of now (it writes a heartbeat once a second)."""
        asked = time.time()
        _wait_for(lambda: _heartbeat(db).get("ts", 0) > asked, 10, "a heartbeat")
        return _heartbeat(db)

    def _wait_stored(self, db: Path, messages: list[tuple[str, bytes]], what: str) -> None:
        """Until the last reading published to every asset is committed.

        Each asset's messages are delivered, processed and committed in order, so its
        last reading stored means all of its readings are; the exact count (``lost``)
        is taken afterwards. A count(*) of the growing table on every poll would take
        a good part of a core from the agent being measured.
        """
        last: dict[str, int] = {}
        for topic, payload in reversed(messages):
            asset = topic.split("/")[2]
            if asset not in last:
                ts = orjson.loads(payload)["ts"]
                last[asset] = round(1000 * (max(ts) if isinstance(ts, list) else ts))
        # Readings are stored in time order per asset: a block reaching the last one.
        sql = (
            "select count(*) from reading_blocks b join assets a on a.id = b.asset_id "
            "where a.site = ? and a.name = ? and b.last_ts_ms >= ?"
        )

        def stored() -> bool:
            with _read_only(db) as conn:
                try:
                    return all(
                        conn.execute(sql, (self.site, a, ts)).fetchone()[0]
                        for a, ts in last.items()
                    )
                except sqlite3.OperationalError:
                    return False

        _wait_for(stored, DRAIN_TIMEOUT_S, what)

    def spans(self) -> tuple[float, float]:
        """Data time the single and the batched messages of (b) cover, in seconds."""
        n, m, assets = self.options.messages, self.options.batch_messages, self.options.assets
        return (
            (n // assets + 1) * SAMPLE_PERIOD_S,
            (m // assets + 1) * BATCH_READINGS * SAMPLE_PERIOD_S,
        )

    def sparkplug_run(
        self,
        fig: AgentFigures,
        broker: LocalBroker,
        baseline: AssetBaseline,
        values: list[dict[str, np.ndarray]],
    ) -> None:
        """An agent of the same backend reading Sparkplug B: (b)'s readings as DDATA at
        QoS 0, one sample a message and then 100, from one edge node."""
        self.site = f"{SITE}-{fig.backend}-spb"
        data_dir = self.workdir / "data" / self.site
        config = self.prepare_agent(data_dir, broker, baseline, fig.backend, None, sparkplug=True)
        db = data_dir / "edgewatch.db"
        self.progress(f"{fig.backend}: starting an agent on Sparkplug B")
        process, _ = self.start_agent(config)
        try:
            single_span, batch_span = self.spans()
            start = time.time() - single_span - batch_span - 60
            for samples, count, offset in (
                (1, self.options.messages, 0.0),
                (BATCH_READINGS, self.options.batch_messages, single_span),
            ):
                self.progress(
                    f"(b) Sparkplug B, {count} DDATA of {samples} sample(s), QoS 0, "
                    f"{self.options.assets} devices"
                )
                messages = self.sparkplug_messages(count, values, start + offset, samples)
                expected = count * samples
                before = _count(db, STORED_READINGS)
                t0 = time.monotonic()
                threading.Thread(
                    target=self.publish, args=(broker, messages, samples, 0), daemon=True
                ).start()
                stored, done = _wait_settled(db, before + expected)
                rate = round((stored - before) / max(done - t0, 1e-9), 1)
                if samples == 1:
                    fig.sparkplug_readings_s, fig.sparkplug_lost = rate, expected - stored + before
                else:
                    fig.sparkplug_batched_readings_s = rate
                    fig.sparkplug_batched_lost = expected - stored + before
        finally:
            process.terminate()
            process.wait(timeout=30)

    def latency(
        self, fig: AgentFigures, broker: LocalBroker, db: Path, values: list[dict[str, np.ndarray]]
    ) -> None:
        rate, duration = self.options.latency_rate_msg_s, self.options.latency_duration_s
        self.progress(
            f"(c) latency at {rate:.0f} msg/s for {duration:.0f} s, faults injected halfway"
        )
        arrivals: list[tuple[float, dict[str, Any]]] = []
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="edgewatch-bench-alerts")

        def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
            if not message.retain:
                arrivals.append((time.time(), json.loads(message.payload)))

        client.on_message = on_message
        client.connect(broker.host, broker.port)
        client.subscribe(f"edgewatch/{self.site}/+/alerts", qos=1)
        client.loop_start()
        names = self.assets()
        faulty = set(names[: max(1, len(names) // 10)])
        start_ms = int(time.time() * 1000)
        total = int(rate * duration)
        with make_publisher(broker.host, broker.port, qos=1) as publisher:
            t0 = time.monotonic()
            for k in range(total):
                due = t0 + k / rate
                delay = due - time.monotonic()
                if delay > 0:
                    # Pacing, and the publisher sends what it holds meanwhile: it packs
                    # messages into 32 KB writes, which at this rate would hold a
                    # reading back for up to a tenth of a second before it left.
                    publisher.wait(delay)
                i, step = k % len(names), k // len(names)
                row = {s: float(v[(step + 3000) % len(v)]) for s, v in values[i].items()}
                if names[i] in faulty and k > total // 2:
                    row["vib_rms_mm_s"] *= 6.0
                    row["bearing_temp_c"] += 35.0
                    row["vib_kurtosis"] += 4.0
                publisher.publish(
                    k, self.topic_for(names[i]), encode_single(round(time.time(), 3), row)
                )
            publisher.flush(timeout_s=60)

        def fresh(alert: dict[str, Any]) -> bool:
            # An alert of this phase's faults: at hop 1 an agent still behind on (b)'s
            # readings also opens alerts on them now, hours of data time ago.
            return (
                alert.get("state") == "open"
                and alert.get("asset") in faulty
                and alert["opened_ts"] * 1000 >= start_ms
            )

        # An agent too far behind times out here: "(c) alerts seen" shows how many came.
        with contextlib.suppress(EdgewatchError):
            _wait_for(
                lambda: len({a["asset"] for _, a in arrivals if fresh(a)}) >= len(faulty),
                30,
                "alerts",
            )
        client.loop_stop()
        client.disconnect()
        rows = _rows(
            db,
            f"select created_ms - window_end_ms from predictions where window_end_ms >= {start_ms}",
        )
        fig.prediction_latency_ms = _percentiles([float(r) for r in rows])
        # An alert's first message: later ones (escalation, a new peak score) carry the
        # same opened_ts and would count the time the alert had already been open.
        first: dict[tuple[str, str, float], float] = {}
        for t, a in arrivals:
            if fresh(a):
                first.setdefault((a["asset"], a["kind"], a["opened_ts"]), t)
        opened = [(t - key[2]) * 1000 for key, t in first.items()]
        fig.alert_latency_ms = _percentiles(opened)
        fig.alerts = len(opened)

    def inference(self, backend: str) -> dict[str, Any]:
        from models.bundles import default_bundle_path

        self.progress(f"{backend}: predictor alone, batch 1 / 16 / 64, in a fresh process")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "models.backend_bench",
                backend,
                str(default_bundle_path("pump")),
                str(self.options.inference_seconds),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            tail = out.stderr.strip().splitlines()[-1:] or ["no output"]
            raise EdgewatchError(f"the {backend} inference benchmark failed: {tail[0]}")
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def agent_run(
        self,
        backend: str,
        broker: LocalBroker,
        baseline: AssetBaseline,
        values: list[dict[str, np.ndarray]],
        hop: int | None = None,
    ) -> AgentFigures:
        """One agent run at the shipped defaults, or at ``hop`` instead of the bundle's.

        The predictor-alone figures do not depend on the hop: only the default run
        measures them.
        """
        fig = AgentFigures(backend=backend)
        if hop is None:
            fig.inference = self.inference(backend)
            self.site = f"{SITE}-{backend}"
        else:
            self.site = f"{SITE}-{backend}-hop{hop}"
        data_dir = self.workdir / "data" / self.site
        config = self.prepare_agent(data_dir, broker, baseline, backend, hop)
        db = data_dir / "edgewatch.db"
        label = f"{backend}" if hop is None else f"{backend} at hop {hop}"
        self.progress(f"{label}: starting the agent")
        process, cold = self.start_agent(config)
        fig.cold_start_s = round(cold, 3)
        fig.hop = self.reported_hop()
        try:
            with _ProcStats(process.pid) as stats:
                self.throughput(fig, broker, db, stats, values)
                first_sample = len(stats.samples)
                self.latency(fig, broker, db, values)
                fig.rss_steady_mb = _steady(stats.samples[first_sample:])
            rss = stats.samples or [stats.rss_mb()]
            fig.rss_mb = {
                "start": round(rss[0], 1),
                "max": round(max(rss), 1),
                "end": round(rss[-1], 1),
            }
        finally:
            process.terminate()
            process.wait(timeout=30)
        return fig

    def run(self) -> BenchReport:
        values = _healthy_values(self.options.assets, 6000)
        with LocalBroker(self.workdir / "broker") as broker:
            self.ceiling(broker, values)
            baseline = self.learn_baseline(values)
            for backend in self.options.backends:
                fig = self.report.backends[backend] = self.agent_run(
                    backend, broker, baseline, values
                )
                if self.options.sparkplug:
                    self.sparkplug_run(fig, broker, baseline, values)
            for hop in self.options.extra_hops:
                for backend in self.options.backends:
                    self.report.extra.append(
                        self.agent_run(backend, broker, baseline, values, hop=hop)
                    )
        return self.report


def _steady(samples: list[float]) -> dict[str, float]:
    if len(samples) < 8:
        return {}
    span = min(round(60 / RSS_SAMPLE_S), len(samples) // 4)
    first = round(float(np.median(samples[:span])), 1)
    last = round(float(np.median(samples[-span:])), 1)
    return {
        "first": first,
        "last": last,
        "growth": round(last - first, 1),  # of the printed figures, so that they add up
        "span_s": span * RSS_SAMPLE_S,
    }


def _heartbeat(db: Path) -> dict[str, Any]:
    rows = _rows(db, "select health_json from heartbeats")
    return dict(json.loads(rows[0])) if rows else {}


def _rows(db: Path, sql: str) -> list[Any]:
    with _read_only(db) as conn:
        return [r[0] for r in conn.execute(sql).fetchall()]


def run_bench(options: BenchOptions, workdir: Path, progress: Progress) -> BenchReport:
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        return Bench(workdir, options, progress).run()
    finally:
        shutil.rmtree(workdir / "data", ignore_errors=True)


# ---------------------------------------------------------------------- storage alone


@dataclass
class StorageFigures:
    """The recorder's writer alone: batched readings as the agent commits them."""

    readings: int = 0
    readings_per_message: int = 0
    readings_per_commit: int = 0
    #: Predictions written beside the readings (one per this many readings; 0: none).
    prediction_every: int = 0
    readings_per_s: float = 0.0
    cpu_us_per_reading: float = 0.0
    #: /proc/self/io write_bytes over the run (database, WAL, checkpoints) per reading.
    write_bytes_per_reading: float = 0.0
    #: Database file size per reading after a final checkpoint.
    file_bytes_per_reading: float = 0.0
    commits: int = 0
    #: WAL pages one more commit of the same kind writes, per table or index.
    pages_per_commit: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _self_write_bytes() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    return 0


#: Extra transactions after the timed run whose WAL pages are counted per table.
WAL_SAMPLE_COMMITS = 10


def storage_bench(
    workdir: Path,
    *,
    assets: int = 50,
    readings: int = 300_000,
    per_commit: int = 25_000,
    prediction_every: int = 0,
    per_message: int = BATCH_READINGS,
) -> StorageFigures:
    """Write ``readings`` pump readings of ``assets`` assets in ``per_message``-reading
    messages through the agent's writer, ``per_commit`` readings a transaction (the
    recorder's commit_max_rows), optionally with a prediction every
    ``prediction_every`` readings. Messages are made before the clock starts.

    Then WAL_SAMPLE_COMMITS more transactions of the same kind are written to a copy
    of the database with the WAL kept whole, and its pages counted per table or
    index: what each commit rewrites (``pages_per_commit``).
    """
    from agent.sqlite import open_engine
    from agent.storage.writer import Writer

    per_step = assets * per_message
    per_txn = max(1, per_commit // per_message)
    steps = max(1, readings // per_step)
    extra_steps = -(-WAL_SAMPLE_COMMITS * per_txn // assets)
    values = _healthy_values(assets, (steps + extra_steps) * per_message)
    t0_ms = int(time.time() * 1000) - (steps + extra_steps) * per_message * 1000
    messages = _storage_messages(values, per_message, prediction_every, t0_ms, range(steps))
    db = workdir / "storage.db"
    migrate.upgrade(db)
    engine = open_engine(db)
    writer = Writer(engine, site=SITE, outbox_enabled=False)
    batches = _transactions(messages, per_txn)
    written0, cpu0, t0 = _self_write_bytes(), time.process_time(), time.perf_counter()
    for batch in batches:
        writer.write(batch, int(time.time() * 1000))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    written = _self_write_bytes() - written0
    size = db.stat().st_size
    engine.dispose()
    extra = _storage_messages(
        values, per_message, prediction_every, t0_ms, range(steps, steps + extra_steps)
    )
    # On a copy: the database keeps exactly the readings counted above.
    sample = shutil.copyfile(db, workdir / "storage-wal-sample.db")
    pages = _wal_pages_per_commit(sample, _transactions(extra, per_txn)[:WAL_SAMPLE_COMMITS])
    total = steps * per_step
    return StorageFigures(
        readings=total,
        readings_per_message=per_message,
        readings_per_commit=per_txn * per_message,
        prediction_every=prediction_every,
        readings_per_s=round(total / elapsed, 1),
        cpu_us_per_reading=round(cpu / total * 1e6, 2),
        write_bytes_per_reading=round(written / total, 1),
        file_bytes_per_reading=round(size / total, 1),
        commits=len(batches),
        pages_per_commit=pages,
    )


def _storage_messages(
    values: list[dict[str, np.ndarray]],
    per_message: int,
    prediction_every: int,
    t0_ms: int,
    steps: range,
) -> list[Item]:
    """Each step, one message per asset of ``per_message`` readings a second apart (as
    the agent's decoder hands a batch payload on: columns), with its predictions."""
    from agent.domain import Accepted, Batch, Prediction

    names = list(values[0])
    messages: list[Item] = []
    for step in steps:
        base = step * per_message
        for a, columns in enumerate(values):
            rows = Batch(
                SITE,
                f"pump-{a:03d}",
                tuple(names),
                t0_ms + (base + np.arange(per_message, dtype=np.int64)) * 1000,
                np.array([columns[n][base : base + per_message] for n in names], np.float64),
            )
            messages.append(Accepted(None, t0_ms + base * 1000, readings=rows))
            if prediction_every:
                messages.extend(
                    Prediction(rows.asset, ts, "bench", 1.0, 2.0, False, 80.0)
                    for ts in rows.ts_ms[prediction_every - 1 :: prediction_every].tolist()
                )
    return messages


def _transactions(messages: list[Item], per_txn: int) -> list[list[Item]]:
    """``messages`` cut into transactions of ``per_txn`` messages; a message's
    predictions go in the transaction of its readings."""
    from agent.domain import Accepted

    batches: list[list[Item]] = []
    current: list[Item] = []
    count = 0
    for item in messages:
        if isinstance(item, Accepted):
            if count == per_txn:
                batches.append(current)
                current, count = [], 0
            count += 1
        current.append(item)
    if current:
        batches.append(current)
    return batches


def _wal_pages_per_commit(db: Path, batches: list[list[Item]]) -> dict[str, float]:
    """Write ``batches`` with checkpoints off and count the WAL's frames per table or
    index (SQLite's dbstat); {} where this SQLite has no dbstat."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.exc import OperationalError

    from agent.storage.writer import Writer

    def no_checkpoints(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    engine = create_engine(f"sqlite+pysqlite:///{db}")
    event.listen(engine, "connect", no_checkpoints)
    try:
        writer = Writer(engine, site=SITE, outbox_enabled=False)
        for batch in batches:
            writer.write(batch, int(time.time() * 1000))
        with engine.connect() as conn:
            try:
                owners: dict[int, str] = dict(
                    (int(row[0]), str(row[1]))
                    for row in conn.exec_driver_sql("SELECT pageno, name FROM dbstat")
                )
            except OperationalError:  # an SQLite built without dbstat
                return {}
        counts: dict[str, int] = {}
        for page in _wal_frame_pages(db.with_name(db.name + "-wal")):
            name = owners.get(page, "(free or other)")
            counts[name] = counts.get(name, 0) + 1
    finally:
        engine.dispose()
    commits = max(1, len(batches))
    return {
        name: round(n / commits, 1) for name, n in sorted(counts.items(), key=lambda kv: -kv[1])
    }


#: SQLite's WAL: a 32-byte header (page size at byte 8), then frames of a 24-byte
#: header (page number first) and one page.
_WAL_HEADER = 32
_WAL_FRAME_HEADER = 24


def _wal_frame_pages(wal: Path) -> Iterator[int]:
    """The page number of every frame in the WAL file ``wal``."""
    with contextlib.suppress(FileNotFoundError), wal.open("rb") as f:
        header = f.read(_WAL_HEADER)
        if len(header) < _WAL_HEADER:
            return
        page_size = int.from_bytes(header[8:12], "big")
        while len(frame := f.read(_WAL_FRAME_HEADER + page_size)) == _WAL_FRAME_HEADER + page_size:
            yield int.from_bytes(frame[:4], "big")
