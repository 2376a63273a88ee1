"""A fleet of simulated pumps and air compressors published over MQTT, with ground truth.

Python API::

    from simulators.fleet import FleetConfig, publish_fleet
    from simulators.stream import Pacing

    report = publish_fleet(
        FleetConfig(assets=20, compressors=5, rate_hz=1.0, duration_s=600, seed=7),
        host="127.0.0.1", port=1883,
        pacing=Pacing(speedup=60), truth_path="truth.parquet",
    )
    report.publish.sent, report.publish.rate_msg_s, report.publish.errors

The truth table has one row per published reading: ``asset, ts, seq, fault, rul,
sensor_fault`` (RUL in seconds, ``inf`` for assets that do not fail). ``seq`` is the
number of the message that carried the reading. Sample values are seeded: the same
config gives the same samples bit for bit, whatever the chunk size. Timestamps follow
the wall clock when ``start_ts`` is None.

The fleet draws its noise per block (:attr:`simulators.physics.NoiseLayout.BLOCKS`),
so that the first message of a month-long run costs a chunk per asset, not a walk
through the month's random numbers. Nameplates, fault plans and operating points are
those of :func:`simulators.dataset.generate_dataset` with the same arguments, the
noise is not: datasets keep the whole-run layout.
``FleetConfig(noise=NoiseLayout.WHOLE_RUN)`` streams the dataset's samples, at the
old cost before the first message.

Pumps (:mod:`simulators.pump`, ``pump-001`` ...) and compressors
(:mod:`simulators.compressor`, ``comp-001`` ...) report different sensors; each
kind draws from its own branch of the seed tree, so adding compressors leaves every
pump's samples and fault plan as they were.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators import compressor, pump
from simulators.badinput import BadInputInjector
from simulators.compressor import CompressorRun
from simulators.payloads import DEFAULT_SITE, DEFAULT_TOPIC_TEMPLATE, Chunk
from simulators.physics import DEFAULT_CHUNK_SAMPLES, AssetSpec, MachineKind, NoiseLayout
from simulators.publisher import (
    DEFAULT_MAX_INFLIGHT,
    DEFAULT_RECONNECT_TIMEOUT_S,
    Backend,
    MessageSink,
)
from simulators.pump import AssetRun
from simulators.stream import (
    BrokerTarget,
    Pacing,
    ProgressCallback,
    RunReport,
    Series,
    StreamStats,
    TruthTable,
    interleave_lazily,
    publish_to_broker,
    run_stream,
)

#: A run of any machine kind the fleet simulates.
FleetRun = AssetRun | CompressorRun


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What to simulate. ``start_ts`` None means "now" when the run starts.

    ``assets`` pumps and ``compressors`` air compressors; ``fault_fraction`` and
    ``sensor_fault_fraction`` apply to each kind on its own. ``noise`` is where the
    noise comes from in the seed tree (see the module's docs).
    """

    assets: int = 20
    rate_hz: float = 1.0
    duration_s: float = 600.0
    fault_fraction: float = 0.3
    sensor_fault_fraction: float = 0.1
    seed: int = 0
    start_ts: float | None = None
    batch: int = 1
    compressors: int = 0
    noise: NoiseLayout = NoiseLayout.BLOCKS


def default_start_ts(span_s: float, pacing: Pacing, now: float | None = None) -> float:
    """Start time such that no reading is ever stamped ahead of the wall clock.

    The agent rejects readings more than a few minutes in the future, so a sped-up
    run starts in the past and catches up with "now" at its end.
    """
    now = time.time() if now is None else now
    if pacing.speedup is not None and pacing.rate_msg_s is None:
        lead = span_s * (1.0 - 1.0 / max(pacing.speedup, 1.0))
    else:
        lead = span_s
    return round(now - lead, 3)


def fleet_plan(config: FleetConfig) -> list[tuple[MachineKind[Any], AssetSpec]]:
    """Every asset's machine and plan: the pumps first, then the compressors."""
    machines: tuple[tuple[MachineKind[Any], int], ...] = (
        (pump.PUMP, config.assets),
        (compressor.COMPRESSOR, config.compressors),
    )
    return [
        (machine, spec)
        for machine, count in machines
        for spec in machine.plan_fleet(
            count,
            config.seed,
            config.duration_s,
            fault_fraction=config.fault_fraction,
            sensor_fault_fraction=config.sensor_fault_fraction,
        )
    ]


def simulate_runs(config: FleetConfig, start_ts: float) -> list[FleetRun]:
    """Every asset's whole run: the pumps first, then the compressors."""
    return [
        machine.simulate_asset(
            spec,
            seed=config.seed,
            start_ts=start_ts,
            duration_s=config.duration_s,
            rate_hz=config.rate_hz,
            noise=config.noise,
        )
        for machine, spec in fleet_plan(config)
    ]


def iter_run_chunks(
    config: FleetConfig, start_ts: float, chunk_samples: int = DEFAULT_CHUNK_SAMPLES
) -> list[Iterator[FleetRun]]:
    """Every asset's run a chunk at a time (:meth:`MachineKind.iter_chunks`), lazily:
    nothing is simulated before an iterator is first advanced."""
    return [
        machine.iter_chunks(
            spec,
            seed=config.seed,
            start_ts=start_ts,
            duration_s=config.duration_s,
            rate_hz=config.rate_hz,
            chunk_samples=chunk_samples,
            noise=config.noise,
        )
        for machine, spec in fleet_plan(config)
    ]


def planned_messages(config: FleetConfig) -> int:
    """Good messages the fleet sends (every asset's samples in ``config.batch`` s)."""
    return sum(
        -(
            -machine.planned_samples(spec, duration_s=config.duration_s, rate_hz=config.rate_hz)
            // config.batch
        )
        for machine, spec in fleet_plan(config)
    )


def run_to_series(run: FleetRun) -> Series:
    """A run (or a chunk of one) as a stream series; truth columns ``fault``, ``rul``
    (s), ``sensor_fault``. Each series carries its own machine's sensors."""
    return Series(
        asset=run.spec.asset,
        ts=run.ts,
        values={s: run.values[s] for s in run.sensors},
        truth={
            "fault": list(run.fault),
            "rul": run.rul_s.tolist(),
            "sensor_fault": list(run.sensor_fault),
        },
    )


def runs_to_series(runs: Sequence[FleetRun]) -> list[Series]:
    """The runs as stream series (:func:`run_to_series`)."""
    return [run_to_series(run) for run in runs]


def fleet_messages(
    config: FleetConfig, start_ts: float, chunk_samples: int = DEFAULT_CHUNK_SAMPLES
) -> Iterator[Chunk]:
    """The fleet's messages in time order, simulated a chunk per asset at a time.

    The same messages as :func:`simulators.stream.interleave` of the whole runs;
    memory is bounded by ``chunk_samples`` per asset, whatever the duration.
    """
    return interleave_lazily(
        [
            (run_to_series(chunk) for chunk in chunks)
            for chunks in iter_run_chunks(config, start_ts, chunk_samples)
        ],
        config.batch,
    )


def stream_fleet(
    config: FleetConfig,
    sink: MessageSink,
    *,
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    site: str = DEFAULT_SITE,
    pacing: Pacing | None = None,
    bad: BadInputInjector | None = None,
    count: int | None = None,
    truth: TruthTable | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> StreamStats:
    """Simulate the fleet and send it to any sink (publisher, or a list in tests)."""
    pacing = pacing or Pacing(speedup=1.0)
    start_ts = config.start_ts
    if start_ts is None:
        start_ts = default_start_ts(config.duration_s, pacing)
    return run_stream(
        fleet_messages(config, start_ts),
        sink,
        topic_template=topic_template,
        site=site,
        pacing=pacing,
        bad=bad,
        count=count,
        total=planned_messages(config),
        truth=truth,
        on_progress=on_progress,
        stop=stop,
    )


def publish_fleet(
    config: FleetConfig,
    *,
    host: str,
    port: int,
    qos: int = 1,
    topic_template: str = DEFAULT_TOPIC_TEMPLATE,
    site: str = DEFAULT_SITE,
    pacing: Pacing | None = None,
    bad: BadInputInjector | None = None,
    count: int | None = None,
    truth_path: str | Path | None = None,
    bad_record_path: str | Path | None = None,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    username: str | None = None,
    password: str | None = None,
    backend: Backend = "auto",
    reconnect_timeout_s: float = DEFAULT_RECONNECT_TIMEOUT_S,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Publish the simulated fleet to ``host:port``; waits for every acknowledgement."""
    target = BrokerTarget(
        host, port, qos, max_inflight, username, password, backend, reconnect_timeout_s
    )
    return publish_to_broker(
        target,
        lambda sink, truth: stream_fleet(
            config,
            sink,
            topic_template=topic_template,
            site=site,
            pacing=pacing,
            bad=bad,
            count=count,
            truth=truth,
            on_progress=on_progress,
            stop=stop,
        ),
        truth_path=truth_path,
        bad_record_path=bad_record_path,
    )
