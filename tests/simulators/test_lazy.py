"""Lazy generation: a fleet simulated a chunk per asset at a time gives today's samples.

The chunked runs must be the whole runs bit for bit (filters, duty cycle, stuck
values, drift and the random streams carry across chunks), and the stream must be
the one the simulator published before generation became lazy (digests recorded
from that code). Time to the first message is a figure in docs/performance.md, not
a test: here the work before the first message is checked to be one chunk per asset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tracemalloc

import numpy as np
import pytest

from simulators import compressor, pump
from simulators.fleet import (
    FleetConfig,
    fleet_messages,
    fleet_plan,
    planned_messages,
    runs_to_series,
    simulate_runs,
    stream_fleet,
)
from simulators.physics import (
    DEFAULT_CHUNK_SAMPLES,
    MachineKind,
    MachineRun,
    SensorFault,
    concat_runs,
)
from simulators.stream import Pacing, TruthTable, interleave

START_TS = 1_767_225_600.0
#: Every sensor fault kind, every machine fault of both machines, batches.
MIXED = FleetConfig(
    assets=6,
    compressors=4,
    rate_hz=1 / 30,
    duration_s=86400.0,
    fault_fraction=0.7,
    sensor_fault_fraction=1.0,
    seed=4,
    start_ts=START_TS,
    batch=5,
)
#: One sample a second, every asset failing, single-reading messages.
FAST = FleetConfig(
    assets=3,
    compressors=1,
    rate_hz=1.0,
    duration_s=3600.0,
    fault_fraction=1.0,
    sensor_fault_fraction=1.0,
    seed=2,
    start_ts=START_TS,
)
#: (messages, sha256 of topics and payloads, sha256 of the truth table as CSV), as
#: the simulator gave them before lazy generation (commit b087e5c).
BEFORE = {
    "mixed": (
        4705,
        "b99439688524f06e2bbc6188d1d568ce7f772cf5ccddbe84ab9c2d22f7d184e5",
        "0633e6055c9594ae16aef0b27e3857d499ceca4ca5ca5ebc744c0e492069fe5b",
    ),
    "fast": (
        10859,
        "944626aa3a32b47c18ee7c9262356ad51f6775e5007832fcb071a77b2d38fc72",
        "d8e5a99051829f50e9b9caa883018df667159ae17b9b3d06d9356449fe24901a",
    ),
}


class DigestSink:
    """Hashes what it is sent, in order."""

    def __init__(self) -> None:
        self.sha = hashlib.sha256()

    def publish(self, seq: int, topic: str, payload: bytes, readings: int = 1) -> bool:
        self.sha.update(topic.encode() + b"\0" + payload + b"\0")
        return True

    def wait(self, seconds: float, stop: object = None) -> bool:
        return False


def assert_same_run(a: MachineRun[object], b: MachineRun[object]) -> None:
    assert np.array_equal(a.ts, b.ts)
    assert a.sensors == b.sensors
    for s in a.sensors:
        assert np.array_equal(a.values[s], b.values[s]), s
    assert np.array_equal(a.rul_s, b.rul_s)
    assert np.array_equal(a.running, b.running)
    assert (a.fault, a.sensor_fault, a.failed) == (b.fault, b.sensor_fault, b.failed)


@pytest.mark.parametrize("name", ["mixed", "fast"])
def test_the_fleet_stream_is_the_one_published_before_generation_became_lazy(name: str) -> None:
    config = MIXED if name == "mixed" else FAST
    sink, truth = DigestSink(), TruthTable()
    stats = stream_fleet(config, sink, pacing=Pacing.fast(), truth=truth)
    truth_sha = hashlib.sha256(truth.frame().to_csv(index=False).encode()).hexdigest()
    assert (stats.messages, sink.sha.hexdigest(), truth_sha) == BEFORE[name]
    assert stats.planned == stats.messages


def test_the_plans_cover_every_sensor_fault_and_a_failure_of_both_machines() -> None:
    plans = fleet_plan(MIXED)
    kinds = {sf.kind for _, spec in plans for sf in spec.sensor_faults}
    assert kinds == set(SensorFault)
    failing = {m.prefix for m, spec in plans if spec.fault and spec.fault.failure_s <= 86400}
    assert failing == {"pump", "comp"}


@pytest.mark.parametrize("chunk_samples", [1, 7, 500])
def test_chunked_runs_are_the_whole_runs_bit_for_bit(chunk_samples: int) -> None:
    # One sample per chunk is slow: a shorter run.
    short = dataclasses.replace(MIXED, duration_s=4 * 3600.0)
    config = MIXED if chunk_samples > 1 else short
    for machine, spec in fleet_plan(config):
        kind: MachineKind[object] = machine
        whole = kind.simulate_asset(
            spec,
            seed=config.seed,
            start_ts=START_TS,
            duration_s=config.duration_s,
            rate_hz=config.rate_hz,
        )
        chunks = list(
            kind.iter_chunks(
                spec,
                seed=config.seed,
                start_ts=START_TS,
                duration_s=config.duration_s,
                rate_hz=config.rate_hz,
                chunk_samples=chunk_samples,
            )
        )
        assert len(chunks) > 1
        assert_same_run(concat_runs(chunks), whole)
        assert kind.planned_samples(
            spec, duration_s=config.duration_s, rate_hz=config.rate_hz
        ) == len(whole)


@pytest.mark.parametrize("batch", [1, 5])
def test_lazy_messages_are_the_whole_runs_interleaved(batch: int) -> None:
    config = dataclasses.replace(MIXED, batch=batch)
    whole, total = interleave(runs_to_series(simulate_runs(config, START_TS)), batch)
    expected = list(whole)
    lazy = list(fleet_messages(config, START_TS, chunk_samples=64))
    assert lazy == expected
    assert planned_messages(config) == total == len(expected)


def test_the_first_message_of_a_30_day_50_pump_fleet_takes_one_chunk_per_asset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before its first message, a month-long fleet computes a chunk per asset only.

    One sample a minute keeps the walk of the random streams (the only work that
    grows with the duration, see simulators.physics) short here; the figure at one
    sample a second is in docs/performance.md.
    """
    chunks: list[int] = []
    real_chunk = pump.PUMP.model.chunk  # type: ignore[attr-defined]

    def counting(self: object, timeline: object) -> object:
        chunks.append(len(timeline.t))  # type: ignore[attr-defined]
        return real_chunk(self, timeline)

    monkeypatch.setattr(pump.PUMP.model, "chunk", counting)
    config = FleetConfig(
        assets=50, rate_hz=1 / 60, duration_s=30 * 86400.0, seed=1, start_ts=START_TS
    )
    n_full = int(config.duration_s * config.rate_hz) + 1
    tracemalloc.start()
    try:
        first = next(fleet_messages(config, START_TS))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.asset == "pump-001" and first.ts == [START_TS]
    assert chunks == [DEFAULT_CHUNK_SAMPLES] * config.assets
    # Memory follows the chunk, not the run: under 2 KiB a sample of a chunk per
    # asset, a small share of what the whole runs' values alone would take.
    assert peak < config.assets * DEFAULT_CHUNK_SAMPLES * 2048
    whole_values_bytes = config.assets * n_full * len(pump.SENSORS) * 8
    assert peak < whole_values_bytes / 10


def test_a_compressor_chunk_carries_its_duty_cycle_across_the_boundary() -> None:
    # The receiver's pressure and mode at a chunk's last sample start the next chunk:
    # a boundary inside a load phase must not restart the cycle.
    spec = compressor.plan_fleet(1, 3, 7200.0, fault_fraction=0.0)[0]
    whole = compressor.simulate_asset(
        spec, seed=3, start_ts=START_TS, duration_s=7200.0, rate_hz=1.0
    )
    parts = list(
        compressor.COMPRESSOR.iter_chunks(
            spec, seed=3, start_ts=START_TS, duration_s=7200.0, rate_hz=1.0, chunk_samples=333
        )
    )
    joined = concat_runs(parts)
    assert np.array_equal(
        joined.values["receiver_pressure_bar"], whole.values["receiver_pressure_bar"]
    )
    assert np.array_equal(joined.running, whole.running)
