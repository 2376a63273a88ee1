"""Lazy generation and the two noise layouts.

Chunked runs must be the whole runs bit for bit in either layout (filters, duty
cycle, stuck values, drift and the random streams carry across chunks). Datasets
keep the whole-run layout: their frames, and the fleet streamed in that layout, are
the ones recorded from the code before the streaming fleet changed layout. The
streaming fleet's block layout is pinned by digests of its own, does not depend on
the chunk size, is the same process as the whole-run layout, and starts a month-long
fleet with a chunk's work per asset. Time to the first message is a figure in
docs/performance.md, not a test: here the random numbers drawn before it are counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tracemalloc
from typing import Any

import numpy as np
import pandas as pd
import pytest

from simulators import compressor, physics, pump
from simulators.dataset import generate_dataset
from simulators.fleet import (
    FleetConfig,
    FleetRun,
    fleet_messages,
    fleet_plan,
    planned_messages,
    runs_to_series,
    simulate_runs,
    stream_fleet,
)
from simulators.physics import (
    DEFAULT_CHUNK_SAMPLES,
    NOISE_BLOCK_SAMPLES,
    BlockStreams,
    Draw,
    MachineKind,
    MachineRun,
    NoiseLayout,
    SensorFault,
    asset_seed,
    concat_runs,
)
from simulators.stream import Pacing, TruthTable, interleave

START_TS = 1_767_225_600.0
WHOLE_RUN, BLOCKS = NoiseLayout.WHOLE_RUN, NoiseLayout.BLOCKS
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
#: Every run longer than a noise block (133,201 samples, failures after 60 % of the
#: run): a cavitating pump (burst noise), drifts (a second pass) and a dropout.
LONG = FleetConfig(
    assets=2,
    compressors=1,
    rate_hz=1.0,
    duration_s=37 * 3600.0,
    fault_fraction=1.0,
    sensor_fault_fraction=1.0,
    seed=4,
    start_ts=START_TS,
)
#: (messages, sha256 of topics and payloads, sha256 of the truth table as CSV) per
#: layout. Whole-run: as the simulator gave them before lazy generation (commit
#: b087e5c), unchanged since. Blocks: as this version gives them.
DIGESTS = {
    ("mixed", WHOLE_RUN): (
        4705,
        "b99439688524f06e2bbc6188d1d568ce7f772cf5ccddbe84ab9c2d22f7d184e5",
        "0633e6055c9594ae16aef0b27e3857d499ceca4ca5ca5ebc744c0e492069fe5b",
    ),
    ("fast", WHOLE_RUN): (
        10859,
        "944626aa3a32b47c18ee7c9262356ad51f6775e5007832fcb071a77b2d38fc72",
        "d8e5a99051829f50e9b9caa883018df667159ae17b9b3d06d9356449fe24901a",
    ),
    # The same messages and truth (plans, failures, dropouts), other sample values.
    ("mixed", BLOCKS): (
        4705,
        "4378516b77e7faf07c82c9f47920b82f61ff468806d75aaca2bc1a7c9b93a36a",
        "0633e6055c9594ae16aef0b27e3857d499ceca4ca5ca5ebc744c0e492069fe5b",
    ),
    ("fast", BLOCKS): (
        10859,
        "722053500d00a6724da43b396502e52b4c12bc4ce48e4aadc479abe83845df43",
        "d8e5a99051829f50e9b9caa883018df667159ae17b9b3d06d9356449fe24901a",
    ),
}
#: (rows, sha256 of the frame's columns) of generate_dataset, recorded before the
#: streaming fleet changed layout. "shipped" is the shipped pump bundle's training
#: data, as its manifest names it.
DATASETS = {
    "shipped": (141945, "507b5ee7ab85493dcdb56f97978de6aa7b9e55d6edd4788ef080f2535d9018eb"),
    "sensor_faults": (15941, "d22c5715e0de613a953e566d5a22fb1da0a78f89cf4c8fec168b0f61b17ab3ff"),
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


def stream_digest(config: FleetConfig) -> tuple[int, str, str]:
    sink, truth = DigestSink(), TruthTable()
    stats = stream_fleet(config, sink, pacing=Pacing.fast(), truth=truth)
    assert stats.planned == stats.messages
    truth_sha = hashlib.sha256(truth.frame().to_csv(index=False).encode()).hexdigest()
    return stats.messages, sink.sha.hexdigest(), truth_sha


def frame_digest(frame: pd.DataFrame) -> tuple[int, str]:
    """Rows and a digest of every column: float64 bytes, or the values as text."""
    sha = hashlib.sha256()
    for col in frame.columns:
        sha.update(str(col).encode() + b"\0")
        data = frame[col]
        if data.dtype == np.float64:
            sha.update(np.ascontiguousarray(data.to_numpy(dtype=np.float64)).tobytes())
        else:
            sha.update("\0".join(map(str, data.tolist())).encode() + b"\0")
    return len(frame), sha.hexdigest()


def assert_same_run(a: MachineRun[Any], b: MachineRun[Any]) -> None:
    assert np.array_equal(a.ts, b.ts)
    assert a.sensors == b.sensors
    for s in a.sensors:
        assert np.array_equal(a.values[s], b.values[s]), s
    assert np.array_equal(a.rul_s, b.rul_s)
    assert np.array_equal(a.running, b.running)
    assert (a.fault, a.sensor_fault, a.failed) == (b.fault, b.sensor_fault, b.failed)


def chunked(config: FleetConfig, chunk_samples: int) -> list[MachineRun[object]]:
    """Every asset's run, generated ``chunk_samples`` at a time and joined."""
    runs: list[MachineRun[object]] = []
    for machine, spec in fleet_plan(config):
        kind: MachineKind[object] = machine
        chunks = list(
            kind.iter_chunks(
                spec,
                seed=config.seed,
                start_ts=START_TS,
                duration_s=config.duration_s,
                rate_hz=config.rate_hz,
                chunk_samples=chunk_samples,
                noise=config.noise,
            )
        )
        assert len(chunks) > 1
        joined = concat_runs(chunks)
        planned = kind.planned_samples(spec, duration_s=config.duration_s, rate_hz=config.rate_hz)
        assert planned == len(joined)
        runs.append(joined)
    return runs


@pytest.mark.parametrize("name", ["shipped", "sensor_faults"])
def test_datasets_are_the_ones_generated_before_the_fleet_changed_layout(name: str) -> None:
    if name == "shipped":
        frame = generate_dataset(assets=40, seed=11)
    else:
        frame = generate_dataset(
            6, 3, duration_s=86400.0, rate_hz=1 / 30, fault_fraction=0.7, sensor_fault_fraction=1.0
        )
    assert frame_digest(frame) == DATASETS[name]


@pytest.mark.parametrize("name", ["mixed", "fast"])
@pytest.mark.parametrize("noise", [WHOLE_RUN, BLOCKS])
def test_the_fleet_stream_is_pinned_per_layout(name: str, noise: NoiseLayout) -> None:
    # Whole-run: the stream published before generation became lazy, so the
    # datasets' layout has not moved. Blocks: this version's stream.
    config = dataclasses.replace(MIXED if name == "mixed" else FAST, noise=noise)
    assert stream_digest(config) == DIGESTS[(name, noise)]


def test_the_fleet_streams_in_blocks_by_default_and_the_layouts_differ() -> None:
    assert FleetConfig().noise is BLOCKS
    whole = simulate_runs(dataclasses.replace(FAST, noise=WHOLE_RUN), START_TS)
    blocks = simulate_runs(FAST, START_TS)
    for a, b in zip(whole, blocks, strict=True):
        # Same plan, nameplate and operating point; other noise.
        assert (a.spec, a.params, a.fault) == (b.spec, b.params, b.fault)
        assert np.array_equal(a.running, b.running)
        assert not np.array_equal(a.values[a.sensors[0]], b.values[b.sensors[0]])


def test_the_block_stream_is_deterministic_per_seed() -> None:
    first = stream_digest(FAST)
    assert stream_digest(FAST) == first
    assert stream_digest(dataclasses.replace(FAST, seed=FAST.seed + 1))[1] != first[1]


def test_the_plans_cover_every_sensor_fault_and_a_failure_of_both_machines() -> None:
    plans = fleet_plan(MIXED)
    kinds = {sf.kind for _, spec in plans for sf in spec.sensor_faults}
    assert kinds == set(SensorFault)
    failing = {m.prefix for m, spec in plans if spec.fault and spec.fault.failure_s <= 86400}
    assert failing == {"pump", "comp"}
    long = fleet_plan(LONG)
    assert {spec.fault.kind.value for _, spec in long if spec.fault} >= {"cavitation"}
    assert {sf.kind for _, spec in long for sf in spec.sensor_faults} >= {
        SensorFault.DRIFT,
        SensorFault.DROPOUT,
    }


@pytest.mark.parametrize("noise", [WHOLE_RUN, BLOCKS])
@pytest.mark.parametrize("chunk_samples", [1, 7, 500])
def test_chunked_runs_are_the_whole_runs_bit_for_bit(
    chunk_samples: int, noise: NoiseLayout
) -> None:
    # One sample per chunk is slow: a shorter run.
    short = dataclasses.replace(MIXED, duration_s=4 * 3600.0)
    config = dataclasses.replace(MIXED if chunk_samples > 1 else short, noise=noise)
    whole = simulate_runs(config, START_TS)
    for joined, run in zip(chunked(config, chunk_samples), whole, strict=True):
        assert_same_run(joined, run)


@pytest.mark.parametrize("chunk_samples", [1000, NOISE_BLOCK_SAMPLES + 1])
def test_block_noise_does_not_depend_on_the_chunk_size_across_blocks(chunk_samples: int) -> None:
    # Chunks that straddle the noise blocks' boundaries.
    whole = simulate_runs(LONG, START_TS)
    assert min(len(run) for run in whole) > NOISE_BLOCK_SAMPLES
    for joined, run in zip(chunked(LONG, chunk_samples), whole, strict=True):
        assert_same_run(joined, run)


NOISES: list[tuple[str, Draw]] = [
    ("a", ("normal",)),
    ("b", ("random",)),
    ("c", ("uniform", 0.5, 1.0)),
]


def test_block_streams_are_cut_anywhere_and_entered_at_any_block() -> None:
    node = asset_seed(5, 2, (7,))
    n, block = 2500, 100
    whole = BlockStreams(node, n, NOISES, block_samples=block)
    expected = {name: whole.take(name, n) for name, _ in NOISES}
    cuts = BlockStreams(node, n, NOISES, block_samples=block)
    sizes = [1, 99, 2, 100, 101, 0, 7, 350]
    for name, _ in NOISES:
        parts, done = [], 0
        for size in [*sizes, n - sum(sizes)]:
            parts.append(cuts.take(name, size))
            done += size
        assert np.array_equal(np.concatenate(parts), expected[name])
        # Any block on its own: no draw of the blocks before it.
        draw = dict(NOISES)[name]
        alone = physics._draw(cuts.block_stream(name, 17), draw, block)
        assert np.array_equal(alone, expected[name][17 * block : 18 * block])
    with pytest.raises(ValueError, match="draws left"):
        cuts.take("a", 1)
    # A noise not needed leaves the others where they were.
    some = BlockStreams(node, n, NOISES, frozenset({"c"}), block_samples=block)
    assert np.array_equal(some.take("c", n), expected["c"])


def test_block_noise_is_independent_across_blocks_sensors_and_assets() -> None:
    # Mean and spread of each draw, and no correlation between blocks (a block
    # repeated, or streams shared, would correlate fully).
    n, block = 200_000, 1000
    a = BlockStreams(asset_seed(1, 0), n, NOISES, block_samples=block)
    b = BlockStreams(asset_seed(1, 1), n, NOISES, block_samples=block)
    normal, uniform = a.take("a", n), a.take("c", n)
    other_asset = b.take("a", n)
    assert abs(normal.mean()) < 0.01 and abs(normal.std() - 1.0) < 0.01
    assert abs(uniform.mean() - 0.75) < 0.005 and uniform.min() >= 0.5 and uniform.max() < 1.0
    assert abs(a.take("b", n).mean() - 0.5) < 0.005
    for lag in (1, block, 7 * block):
        assert abs(np.corrcoef(normal[:-lag], normal[lag:])[0, 1]) < 0.02, lag
    assert abs(np.corrcoef(normal, other_asset)[0, 1]) < 0.02
    assert abs(np.corrcoef(normal, uniform)[0, 1]) < 0.02


def test_block_noise_is_the_same_process_as_whole_run_noise() -> None:
    """Per asset and sensor, the long-run mean and spread of both layouts agree.

    The operating point and faults are the same in both; only the noise draws
    differ. 4 days at one sample every 5 s: 69,121 samples, past a noise block.
    """
    config = FleetConfig(
        assets=5,
        compressors=2,
        rate_hz=1 / 5,
        duration_s=4 * 86400.0,
        fault_fraction=1.0,
        sensor_fault_fraction=0.0,
        seed=3,
        start_ts=START_TS,
    )
    runs: dict[NoiseLayout, list[FleetRun]] = {
        noise: simulate_runs(dataclasses.replace(config, noise=noise), START_TS)
        for noise in (WHOLE_RUN, BLOCKS)
    }
    faults = {run.spec.fault.kind.value for run in runs[BLOCKS] if run.spec.fault}
    assert "cavitation" in faults  # random bursts, not only additive noise
    for old, new in zip(runs[WHOLE_RUN], runs[BLOCKS], strict=True):
        assert len(old) == len(new) > NOISE_BLOCK_SAMPLES // 2
        for s in old.sensors:
            x, y = old.values[s], new.values[s]
            assert abs(y.mean() - x.mean()) < 0.05 * x.std(), (old.spec.asset, s)
            assert abs(y.std() / x.std() - 1.0) < 0.02, (old.spec.asset, s)


@pytest.mark.parametrize("noise", [WHOLE_RUN, BLOCKS])
@pytest.mark.parametrize("batch", [1, 5])
def test_lazy_messages_are_the_whole_runs_interleaved(batch: int, noise: NoiseLayout) -> None:
    config = dataclasses.replace(MIXED, batch=batch, noise=noise)
    whole, total = interleave(runs_to_series(simulate_runs(config, START_TS)), batch)
    expected = list(whole)
    lazy = list(fleet_messages(config, START_TS, chunk_samples=64))
    assert lazy == expected
    assert planned_messages(config) == total == len(expected)


def count_draws(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every noise value drawn in either layout, the whole-run walk included."""
    drawn = [0]
    real = physics._draw

    def counting(gen: np.random.Generator, draw: Draw, count: int) -> physics.FloatArray:
        drawn[0] += count
        return real(gen, draw, count)

    monkeypatch.setattr(physics, "_draw", counting)
    return drawn


def test_the_first_message_of_a_30_day_50_pump_fleet_takes_a_chunk_per_sensor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before its first message, a month-long fleet at one sample a second computes
    and draws a chunk per asset and sensor, nothing that grows with the month."""
    chunks: list[int] = []
    real_chunk = pump.PUMP.model.chunk  # type: ignore[attr-defined]

    def counting(self: object, timeline: object) -> object:
        chunks.append(len(timeline.t))  # type: ignore[attr-defined]
        return real_chunk(self, timeline)

    monkeypatch.setattr(pump.PUMP.model, "chunk", counting)
    drawn = count_draws(monkeypatch)
    config = FleetConfig(assets=50, rate_hz=1.0, duration_s=30 * 86400.0, seed=1, start_ts=START_TS)
    n_full = int(config.duration_s * config.rate_hz) + 1
    tracemalloc.start()
    try:
        first = next(fleet_messages(config, START_TS))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.asset == "pump-001" and first.ts == [START_TS]
    assert chunks == [DEFAULT_CHUNK_SAMPLES] * config.assets
    # Seven sensors' noise, and two burst draws for a cavitating pump.
    assert 0 < drawn[0] <= config.assets * (len(pump.SENSORS) + 2) * DEFAULT_CHUNK_SAMPLES
    # Memory follows the chunk, not the run: under 2 KiB a sample of a chunk per
    # asset, a small share of what the whole runs' values alone would take.
    assert peak < config.assets * DEFAULT_CHUNK_SAMPLES * 2048
    whole_values_bytes = config.assets * n_full * len(pump.SENSORS) * 8
    assert peak < whole_values_bytes / 10


def test_the_count_sees_the_whole_run_layouts_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    # The same count in the datasets' layout (a shorter run): the walk through the
    # earlier sensors' blocks dominates, which is what the block layout removed.
    drawn = count_draws(monkeypatch)
    config = FleetConfig(assets=5, rate_hz=1 / 60, duration_s=30 * 86400.0, seed=1, noise=WHOLE_RUN)
    next(fleet_messages(config, START_TS))
    n_full = int(config.duration_s * config.rate_hz) + 1
    assert drawn[0] >= config.assets * (len(pump.SENSORS) - 1) * n_full


@pytest.mark.parametrize("noise", [WHOLE_RUN, BLOCKS])
def test_a_compressor_chunk_carries_its_duty_cycle_across_the_boundary(
    noise: NoiseLayout,
) -> None:
    # The receiver's pressure and mode at a chunk's last sample start the next chunk:
    # a boundary inside a load phase must not restart the cycle.
    spec = compressor.plan_fleet(1, 3, 7200.0, fault_fraction=0.0)[0]
    whole = compressor.simulate_asset(
        spec, seed=3, start_ts=START_TS, duration_s=7200.0, rate_hz=1.0, noise=noise
    )
    parts = list(
        compressor.COMPRESSOR.iter_chunks(
            spec,
            seed=3,
            start_ts=START_TS,
            duration_s=7200.0,
            rate_hz=1.0,
            chunk_samples=333,
            noise=noise,
        )
    )
    joined = concat_runs(parts)
    assert np.array_equal(
        joined.values["receiver_pressure_bar"], whole.values["receiver_pressure_bar"]
    )
    assert np.array_equal(joined.running, whole.running)
