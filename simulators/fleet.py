"""A fleet of simulated pumps published over MQTT, with ground truth beside it.

Python API::

    from simulators.fleet import FleetConfig, publish_fleet
    from simulators.stream import Pacing

    report = publish_fleet(
        FleetConfig(assets=20, rate_hz=1.0, duration_s=600, fault_fraction=0.3, seed=7),
        host="127.0.0.1", port=1883,
        pacing=Pacing(speedup=60), truth_path="truth.parquet",
    )
    report.publish.sent, report.publish.rate_msg_s, report.publish.errors

The truth table has one row per published reading: ``asset, ts, seq, fault, rul,
sensor_fault`` (RUL in seconds, ``inf`` for assets that do not fail). ``seq`` is the
number of the message that carried the reading. Sample values are seeded and
identical to :func:`simulators.dataset.generate_dataset` with the same arguments and
``start_ts``; only the timestamps follow the wall clock when ``start_ts`` is None.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from simulators.badinput import BadInputInjector
from simulators.payloads import DEFAULT_SITE, DEFAULT_TOPIC_TEMPLATE, Chunk
from simulators.publisher import DEFAULT_MAX_INFLIGHT, MessageSink, MqttPublisher
from simulators.pump import SENSORS, AssetRun, plan_fleet, simulate_asset
from simulators.stream import (
    Pacing,
    ProgressCallback,
    RunReport,
    StreamStats,
    TruthTable,
    finish_run,
    run_stream,
)


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What to simulate. ``start_ts`` None means "now" when the run starts."""

    assets: int = 20
    rate_hz: float = 1.0
    duration_s: float = 600.0
    fault_fraction: float = 0.3
    sensor_fault_fraction: float = 0.1
    seed: int = 0
    start_ts: float | None = None
    batch: int = 1


def simulate_runs(config: FleetConfig, start_ts: float) -> list[AssetRun]:
    specs = plan_fleet(
        config.assets,
        config.seed,
        config.duration_s,
        fault_fraction=config.fault_fraction,
        sensor_fault_fraction=config.sensor_fault_fraction,
    )
    return [
        simulate_asset(
            spec,
            seed=config.seed,
            start_ts=start_ts,
            duration_s=config.duration_s,
            rate_hz=config.rate_hz,
        )
        for spec in specs
    ]


def fleet_chunks(runs: list[AssetRun], batch: int = 1) -> tuple[Iterator[Chunk], int]:
    """Messages of every asset interleaved in time order, and how many there are.

    A batch goes out when its newest sample exists, so messages are ordered by the
    time of their last sample (ties by asset).
    """
    if batch < 1:
        raise ValueError("batch must be >= 1")
    ends: list[float] = []
    owners: list[int] = []
    starts: list[int] = []
    for a, run in enumerate(runs):
        n = len(run)
        first = np.arange(0, n, batch)
        last = np.minimum(first + batch, n) - 1
        ends.extend(run.ts[last].tolist())
        owners.extend([a] * len(first))
        starts.extend(first.tolist())
    order = np.lexsort((np.asarray(owners), np.asarray(ends))) if ends else np.array([], int)

    def generate() -> Iterator[Chunk]:
        # Lists once per run: slicing lists is much cheaper than numpy -> list per message.
        cols = [
            (
                run.spec.asset,
                run.ts.tolist(),
                {s: run.values[s].tolist() for s in SENSORS},
                run.fault,
                run.rul_s.tolist(),
                run.sensor_fault,
            )
            for run in runs
        ]
        for i in order.tolist():
            asset, ts, values, fault, rul, sensor_fault = cols[owners[i]]
            lo = starts[i]
            hi = lo + batch
            yield Chunk(
                asset=asset,
                ts=ts[lo:hi],
                values={s: v[lo:hi] for s, v in values.items()},
                truth={
                    "fault": fault[lo:hi],
                    "rul": rul[lo:hi],
                    "sensor_fault": sensor_fault[lo:hi],
                },
                as_batch=batch > 1,
            )

    return generate(), len(ends)


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
    start_ts = config.start_ts if config.start_ts is not None else round(time.time(), 3)
    runs = simulate_runs(config, start_ts)
    chunks, total = fleet_chunks(runs, config.batch)
    return run_stream(
        chunks,
        sink,
        topic_template=topic_template,
        site=site,
        pacing=pacing or Pacing(speedup=1.0),
        bad=bad,
        count=count,
        total=total,
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
    truth_path: str | None = None,
    bad_record_path: str | None = None,
    max_inflight: int = DEFAULT_MAX_INFLIGHT,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> RunReport:
    """Publish the simulated fleet to ``host:port``; waits for every acknowledgement."""
    truth = TruthTable() if truth_path else None
    publisher = MqttPublisher(host, port, qos=qos, max_inflight=max_inflight)
    with publisher:
        stats = stream_fleet(
            config,
            publisher,
            topic_template=topic_template,
            site=site,
            pacing=pacing,
            bad=bad,
            count=count,
            truth=truth,
            on_progress=on_progress,
            stop=stop,
        )
    return finish_run(
        stats,
        publisher.result,
        truth=truth,
        truth_path=truth_path,
        bad_record_path=bad_record_path,
    )
