"""The air-compressor model and fleets that mix it with pumps.

Determinism, the load/unload duty cycle inside the healthy limits, fault signatures
against a healthy twin, and fleets of pumps and compressors: names, sensor sets and
untouched pump samples.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulators import compressor, pump
from simulators.compressor import (
    COMPRESSOR_FAULTS,
    HEALTHY_LIMITS,
    SENSORS,
    CompressorFault,
    CompressorRun,
    plan_fleet,
    simulate_asset,
)
from simulators.fleet import FleetConfig, runs_to_series, simulate_runs, stream_fleet
from simulators.physics import AssetSpec, FaultPlan, SensorFault, SensorFaultPlan
from simulators.stream import Pacing, TruthTable
from tests.conftest import CliRunner
from tests.simulators.conftest import ARRIVAL_TIMEOUT_S, ListSink, SubscriberFactory
from tests.support import Broker

DURATION_S = 6 * 3600.0
RATE_HZ = 1.0 / 10.0
START_TS = 1_767_225_600.0
#: Faults run from 30 % to 90 % of the run, during the day shift (clock starts 08:00).
ONSET_S, FAILURE_S = 0.3 * DURATION_S, 0.9 * DURATION_S


def _run(spec: AssetSpec, seed: int = 11) -> CompressorRun:
    return simulate_asset(
        spec, seed=seed, start_ts=START_TS, duration_s=DURATION_S, rate_hz=RATE_HZ
    )


def _outside(run: CompressorRun, sensor: str, mask: np.ndarray) -> bool:
    lo, hi = HEALTHY_LIMITS[sensor]
    seen = run.values[sensor][mask]
    return bool(np.any(seen > hi) or np.any(seen < lo))


def test_sensors_are_the_compressors_own() -> None:
    assert 6 <= len(SENSORS) <= 8
    assert set(SENSORS) == set(HEALTHY_LIMITS) == set(compressor.SENSOR_DECIMALS)
    # At most one name in common with the pump (a motor current is a motor current).
    assert set(SENSORS) & set(pump.SENSORS) == {"motor_current_a"}


def test_same_seed_same_samples_bit_for_bit() -> None:
    specs = plan_fleet(4, 5, DURATION_S, fault_fraction=0.5, sensor_fault_fraction=0.5)
    a = [_run(spec, seed=5) for spec in specs]
    again = plan_fleet(4, 5, DURATION_S, fault_fraction=0.5, sensor_fault_fraction=0.5)
    b = [_run(spec, seed=5) for spec in again]
    for x, y in zip(a, b, strict=True):
        assert x.spec == y.spec
        assert np.array_equal(x.ts, y.ts) and x.fault == y.fault
        assert x.sensor_fault == y.sensor_fault and np.array_equal(x.rul_s, y.rul_s)
        for s in SENSORS:
            assert np.array_equal(x.values[s], y.values[s])
    other = _run(specs[0], seed=6)
    assert not np.array_equal(a[0].values["comp_vib_rms_g"], other.values["comp_vib_rms_g"])


def test_asset_stream_does_not_depend_on_fleet_size_or_start_time() -> None:
    small = plan_fleet(3, 9, DURATION_S, fault_fraction=0.0)
    large = plan_fleet(10, 9, DURATION_S, fault_fraction=0.0)
    a = _run(small[1], seed=9)
    b = simulate_asset(
        large[1], seed=9, start_ts=1.8e9 + 12.5, duration_s=DURATION_S, rate_hz=RATE_HZ
    )
    for s in SENSORS:
        assert np.array_equal(a.values[s], b.values[s])


def test_duty_cycle_stays_within_healthy_limits_at_every_operating_point() -> None:
    duration_s = 2 * 86400.0
    loaded_share: list[float] = []
    standby_runs = 0
    for rate_hz, clock_start_h in ((1.0 / 60.0, 8.0), (1.0 / 5.0, 20.0)):
        for spec in plan_fleet(8, 3, duration_s, fault_fraction=0.0):
            run = simulate_asset(
                spec,
                seed=3,
                start_ts=START_TS,
                duration_s=duration_s,
                rate_hz=rate_hz,
                clock_start_h=clock_start_h,
            )
            assert not run.failed and set(run.fault) == {"none"}
            for s in SENSORS:
                lo, hi = HEALTHY_LIMITS[s]
                assert float(np.min(run.values[s])) >= lo, (run.spec.asset, s)
                assert float(np.max(run.values[s])) <= hi, (run.spec.asset, s)
            # Load/unload: the receiver swings through the band, the current between
            # loaded and unloaded levels, and the controller's load share moves with
            # the day and night shifts.
            on = run.values["motor_current_a"][run.running]
            assert float(np.min(on)) < 0.5 * float(np.max(on))
            pressure = run.values["receiver_pressure_bar"]
            assert np.ptp(pressure) > 0.8 * run.params.band_bar
            assert float(np.min(pressure)) > run.params.cut_in_bar - 0.05
            assert float(np.max(pressure)) < run.params.cut_out_bar + 0.05
            load = run.values["load_pct"]
            assert np.ptp(load) > 20.0
            loaded_share.append(float(np.mean(load)))
            # Standby: the motor stops and draws nothing.
            if not run.running.all():
                standby_runs += 1
                assert np.all(run.values["motor_current_a"][~run.running] == 0.0)
    assert standby_runs >= 4
    assert 20.0 < float(np.mean(loaded_share)) < 70.0


#: How each fault shows against the healthy twin late in the fault: +1 must rise,
#: -1 must fall by more than three noise units.
EXPECTED_SIGNATURES: dict[CompressorFault, dict[str, int]] = {
    CompressorFault.BEARING_WEAR: {"comp_vib_rms_g": 1, "discharge_temp_c": 1},
    CompressorFault.INTAKE_RESTRICTION: {
        "filter_dp_mbar": 1,
        "load_pct": 1,
        "discharge_temp_c": 1,
    },
    CompressorFault.OIL_COOLER_FOULING: {"oil_temp_c": 1, "discharge_temp_c": 1},
    CompressorFault.VALVE_LEAK: {"load_pct": 1, "receiver_pressure_bar": -1},
}

#: Sensors each fault pushes beyond :data:`HEALTHY_LIMITS` before failure.
LEAVES_LIMITS: dict[CompressorFault, tuple[str, ...]] = {
    CompressorFault.BEARING_WEAR: ("comp_vib_rms_g",),
    CompressorFault.INTAKE_RESTRICTION: ("filter_dp_mbar",),
    CompressorFault.OIL_COOLER_FOULING: ("oil_temp_c", "discharge_temp_c"),
    CompressorFault.VALVE_LEAK: ("receiver_pressure_bar", "load_pct"),
}

#: Mean motor current late in the fault against the twin's (relative): a clogged
#: intake or a leaking valve keep the machine loaded longer.
CURRENT_RISE: dict[CompressorFault, float] = {
    CompressorFault.INTAKE_RESTRICTION: 0.1,
    CompressorFault.VALVE_LEAK: 0.05,
}


def _effect(run: CompressorRun, twin: CompressorRun, sensor: str, late: np.ndarray) -> float:
    """Mean change of ``sensor`` over ``late``, in units of the twin's sample-to-sample noise."""
    faulty = run.values[sensor][late]
    healthy = twin.values[sensor][: len(run)][late]
    spread = float(np.std(np.diff(twin.values[sensor]))) + 1e-9
    return float(np.mean(faulty - healthy)) / spread


@pytest.mark.parametrize("index", [0, 3])
@pytest.mark.parametrize("kind", COMPRESSOR_FAULTS)
def test_fault_shows_against_healthy_twin_and_leaves_the_limits(
    kind: CompressorFault, index: int
) -> None:
    name = compressor.asset_name(index)
    plan = FaultPlan(kind, onset_s=ONSET_S, failure_s=FAILURE_S)
    healthy = _run(AssetSpec(name, index))
    faulty = _run(AssetSpec(name, index, fault=plan))
    assert faulty.failed and not healthy.failed
    assert 0.0 <= faulty.rul_s[-1] < 1.0 / RATE_HZ
    assert set(faulty.fault) == {"none", kind.value}
    t = faulty.ts - START_TS
    before = t < ONSET_S
    for s in SENSORS:
        # Identical until onset: the fault is the only difference.
        assert np.array_equal(faulty.values[s][before], healthy.values[s][: len(faulty)][before])
        assert not _outside(healthy, s, np.ones(len(healthy), dtype=bool)), s
    late = t >= ONSET_S + 2.0 * (FAILURE_S - ONSET_S) / 3.0
    for sensor, sign in EXPECTED_SIGNATURES[kind].items():
        effect = _effect(faulty, healthy, sensor, late)
        assert sign * effect > 3.0, f"{kind}: {sensor} moved {effect:+.1f} noise units"
    for sensor in LEAVES_LIMITS[kind]:
        assert _outside(faulty, sensor, ~before), f"{kind}: {sensor} stays inside its limits"
    if kind in CURRENT_RISE:
        current = "motor_current_a"
        rise = np.mean(faulty.values[current][late]) / np.mean(
            healthy.values[current][: len(faulty)][late]
        )
        assert rise - 1.0 > CURRENT_RISE[kind]


def test_a_pump_plan_is_refused() -> None:
    plan = FaultPlan(pump.MachineFault.CAVITATION, ONSET_S, FAILURE_S)
    with pytest.raises(ValueError, match="CompressorFault"):
        _run(AssetSpec("comp-001", 0, fault=plan))
    bad_sensor = SensorFaultPlan(SensorFault.STUCK, "flow_m3_h", 0.0, 60.0)
    with pytest.raises(ValueError, match="flow_m3_h"):
        _run(AssetSpec("comp-001", 0, sensor_faults=(bad_sensor,)))


def test_sensor_faults_pick_compressor_sensors() -> None:
    specs = plan_fleet(30, 4, DURATION_S, fault_fraction=0.0, sensor_fault_fraction=1.0)
    chosen = {sf.sensor for spec in specs for sf in spec.sensor_faults}
    assert chosen <= set(SENSORS) and len(chosen) >= 4
    spec = next(s for s in specs if s.sensor_faults[0].kind is SensorFault.STUCK)
    bad, clean = _run(spec, seed=4), _run(AssetSpec(spec.asset, spec.index), seed=4)
    sf = spec.sensor_faults[0]
    labelled = np.array([x == sf.label for x in bad.sensor_fault])
    assert labelled.any() and len(set(bad.values[sf.sensor][labelled].tolist())) == 1
    for s in SENSORS:
        if s != sf.sensor:
            assert np.array_equal(bad.values[s], clean.values[s])


def test_fleet_mixes_pumps_and_compressors() -> None:
    config = FleetConfig(
        assets=5,
        compressors=8,
        rate_hz=1.0 / 30.0,
        duration_s=DURATION_S,
        fault_fraction=0.5,
        sensor_fault_fraction=0.0,
        seed=2,
    )
    runs = simulate_runs(config, START_TS)
    names = [run.spec.asset for run in runs]
    assert names == [f"pump-{i:03d}" for i in range(1, 6)] + [f"comp-{i:03d}" for i in range(1, 9)]
    for run, series in zip(runs, runs_to_series(runs), strict=True):
        expected = pump.SENSORS if run.spec.asset.startswith("pump-") else SENSORS
        assert run.sensors == expected
        assert series.asset == run.spec.asset and tuple(series.values) == expected
        assert series.truth["fault"] == run.fault
    # The fault fraction applies to each kind: half the compressors fail, one of each kind
    # at least, and the healthy ones never leave the healthy limits.
    faults = Counter(run.fault[-1] for run in runs if run.spec.asset.startswith("comp-"))
    assert faults["none"] == 4 and set(faults) - {"none"} == {f.value for f in COMPRESSOR_FAULTS}
    assert sum(run.failed for run in runs if run.spec.asset.startswith("pump-")) == round(0.5 * 5)


def test_adding_compressors_moves_no_pump_sample() -> None:
    base = FleetConfig(assets=4, rate_hz=1.0 / 30.0, duration_s=DURATION_S, seed=6)
    mixed = FleetConfig(assets=4, compressors=3, rate_hz=1.0 / 30.0, duration_s=DURATION_S, seed=6)
    pumps = simulate_runs(base, START_TS)
    with_compressors = simulate_runs(mixed, START_TS)
    assert len(with_compressors) == 7
    for a, b in zip(pumps, with_compressors[:4], strict=True):
        assert a.spec == b.spec and a.fault == b.fault
        for s in pump.SENSORS:
            assert np.array_equal(a.values[s], b.values[s])


def test_stream_sends_each_asset_its_own_sensors_with_truth() -> None:
    config = FleetConfig(
        assets=2,
        compressors=2,
        rate_hz=1.0,
        duration_s=120.0,
        fault_fraction=1.0,
        seed=1,
        start_ts=START_TS,
        batch=4,
    )
    sink, truth = ListSink(), TruthTable()
    stream_fleet(config, sink, site="plant", pacing=Pacing.fast(), truth=truth)
    seen: dict[str, set[str]] = {}
    for _seq, topic, payload, _readings in sink.sent:
        asset = topic.split("/")[2]
        seen.setdefault(asset, set()).update(json.loads(payload)["values"])
    assert seen == {
        "pump-001": set(pump.SENSORS),
        "pump-002": set(pump.SENSORS),
        "comp-001": set(SENSORS),
        "comp-002": set(SENSORS),
    }
    frame = truth.frame()
    assert len(frame) == sum(readings for *_, readings in sink.sent)
    comp = frame[frame["asset"].str.startswith("comp-")]
    assert set(comp["fault"]) <= {"none", *(f.value for f in COMPRESSOR_FAULTS)}
    assert all(math.isfinite(x) for x in comp["rul"])  # both compressors fail


def test_fleet_command_publishes_compressors_beside_pumps(
    cli: CliRunner, mqtt_broker: Broker, subscribe: SubscriberFactory, tmp_path: Path
) -> None:
    sub = subscribe(mqtt_broker, "edgewatch/comp-site/#")
    done = cli(
        "simulate", "fleet", "--broker", mqtt_broker.url, "--site", "comp-site",
        "--assets", "1", "--compressors", "2", "--rate-hz", "1", "--duration", "1m",
        "--seed", "3", "--fault-fraction", "0", "--sensor-fault-fraction", "0",
        "--as-fast-as-possible", "--truth", "truth.parquet", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["sent"] == report["readings"] == 3 * 61  # no faults: all run to the end
    assert sub.wait_for(report["sent"], ARRIVAL_TIMEOUT_S)
    sensors = {
        topic.split("/")[2]: set(json.loads(payload)["values"]) for topic, payload in sub.messages
    }
    assert sensors == {
        "pump-001": set(pump.SENSORS),
        "comp-001": set(SENSORS),
        "comp-002": set(SENSORS),
    }
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    assert sorted(set(truth["asset"])) == ["comp-001", "comp-002", "pump-001"]
