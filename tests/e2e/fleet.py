"""Simulated pump fleets for end-to-end tests, as lists of ready-to-publish messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from simulators.badinput import BadInputInjector, BadRecord
from simulators.fleet import FleetConfig, runs_to_series, simulate_runs
from simulators.payloads import Chunk
from simulators.publisher import make_publisher
from simulators.stream import Pacing, interleave, run_stream
from tests.support import Broker

#: The shipped pump model is trained on one sample a minute.
PUMP_PERIOD_S = 60.0
TOPIC = "edgewatch/{site}/{asset}/telemetry"


@dataclass
class Fleet:
    chunks: list[Chunk]
    faulty: set[str]
    healthy: set[str]

    def split(self, first_per_asset: int) -> tuple[list[Chunk], list[Chunk]]:
        """The first ``first_per_asset`` messages of every asset, then the rest."""
        seen: dict[str, int] = {}
        head: list[Chunk] = []
        tail: list[Chunk] = []
        for chunk in self.chunks:
            n = seen.get(chunk.asset, 0)
            (head if n < first_per_asset else tail).append(chunk)
            seen[chunk.asset] = n + 1
        return head, tail


def make_fleet(assets: int, samples: int, *, fault_fraction: float, seed: int) -> Fleet:
    duration = samples * PUMP_PERIOD_S
    config = FleetConfig(
        assets=assets,
        rate_hz=1 / PUMP_PERIOD_S,
        duration_s=duration,
        fault_fraction=fault_fraction,
        sensor_fault_fraction=0.0,
        seed=seed,
    )
    runs = simulate_runs(config, start_ts=round(time.time() - duration - 3600, 3))
    chunks, _ = interleave(runs_to_series(runs), batch=1)
    faulty = {r.spec.asset for r in runs if r.spec.fault is not None}
    return Fleet(list(chunks), faulty, {r.spec.asset for r in runs} - faulty)


@dataclass
class Sent:
    messages: int
    readings: int
    bad: list[BadRecord]


def publish(
    broker: Broker,
    chunks: Sequence[Chunk],
    *,
    site: str,
    bad: BadInputInjector | None = None,
    stop: threading.Event | None = None,
) -> Sent:
    """Publish at QoS 1 as fast as possible and wait for every acknowledgement."""
    with make_publisher(broker.host, broker.port, qos=1) as publisher:
        stats = run_stream(
            chunks,
            publisher,
            topic_template=TOPIC,
            site=site,
            pacing=Pacing.fast(),
            bad=bad,
            stop=stop,
        )
        assert publisher.flush(timeout_s=60), "publisher could not deliver everything"
    return Sent(stats.good_messages + stats.bad_messages, stats.readings, stats.bad_records)
