"""The pump model: determinism, fault signatures against a healthy twin, healthy ranges."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simulators.dataset import generate_dataset, write_dataset
from simulators.pump import (
    HEALTHY_LIMITS,
    MACHINE_FAULTS,
    SENSORS,
    AssetRun,
    AssetSpec,
    FaultPlan,
    MachineFault,
    SensorFault,
    SensorFaultPlan,
    plan_fleet,
    simulate_asset,
)

DURATION_S = 6 * 3600.0
RATE_HZ = 1.0 / 10.0
START_TS = 1_767_225_600.0


def _run(spec: AssetSpec, seed: int = 11) -> AssetRun:
    return simulate_asset(
        spec, seed=seed, start_ts=START_TS, duration_s=DURATION_S, rate_hz=RATE_HZ
    )


def test_same_seed_same_samples_bit_for_bit() -> None:
    a = generate_dataset(
        6, seed=5, duration_s=DURATION_S, rate_hz=RATE_HZ, sensor_fault_fraction=0.5
    )
    b = generate_dataset(
        6, seed=5, duration_s=DURATION_S, rate_hz=RATE_HZ, sensor_fault_fraction=0.5
    )
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    c = generate_dataset(6, seed=6, duration_s=DURATION_S, rate_hz=RATE_HZ)
    assert not np.array_equal(
        a["vib_rms_mm_s"].to_numpy()[:100], c["vib_rms_mm_s"].to_numpy()[:100]
    )


def test_asset_stream_does_not_depend_on_fleet_size() -> None:
    small = plan_fleet(3, 9, DURATION_S, fault_fraction=0.0)
    large = plan_fleet(10, 9, DURATION_S, fault_fraction=0.0)
    a, b = _run(small[1], seed=9), _run(large[1], seed=9)
    for s in SENSORS:
        assert np.array_equal(a.values[s], b.values[s])


def test_dataset_columns_and_run_to_failure_truth() -> None:
    df = generate_dataset(10, seed=1, duration_s=DURATION_S, rate_hz=RATE_HZ, fault_fraction=0.5)
    assert list(df.columns) == ["asset", "ts", *SENSORS, "fault", "rul", "sensor_fault"]
    for _asset, g in df.groupby("asset"):
        assert g["ts"].is_monotonic_increasing
        last = g.iloc[-1]
        if last["fault"] == "none":
            assert np.isinf(g["rul"]).all()
        else:
            # A failing run ends at failure; RUL falls by one sample period per sample.
            assert 0.0 <= last["rul"] < 1.0 / RATE_HZ
            assert np.allclose(np.diff(g["rul"].to_numpy()), -1.0 / RATE_HZ)
            assert set(g["fault"]) == {"none", last["fault"]}
    assert set(df["fault"]) - {"none"} == {f.value for f in MACHINE_FAULTS}


def test_write_dataset_round_trips(tmp_path: Path) -> None:
    kwargs = {"duration_s": 3600.0, "rate_hz": 0.1}
    parquet, meta = write_dataset(tmp_path / "p", 3, 4, fmt="parquet", **kwargs)  # type: ignore[arg-type]
    csv, _ = write_dataset(tmp_path / "c", 3, 4, fmt="csv", **kwargs)  # type: ignore[arg-type]
    expected = generate_dataset(3, 4, **kwargs)  # type: ignore[arg-type]
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), expected, check_exact=True)
    from_csv = pd.read_csv(csv, keep_default_na=False, na_values=[])
    pd.testing.assert_frame_equal(
        from_csv, expected, check_exact=True, check_dtype=False, check_column_type=False
    )
    assert meta.name == "assets.json"


def _late(run: AssetRun, twin: AssetRun, plan: FaultPlan) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the last third of the fault, running samples only."""
    t = run.ts - START_TS
    mask = (t >= plan.onset_s + 2 * (plan.failure_s - plan.onset_s) / 3) & run.running
    return mask, mask[: len(twin)]


def _effect(run: AssetRun, twin: AssetRun, plan: FaultPlan, sensor: str) -> float:
    """Mean change of ``sensor`` late in the fault, in units of the twin's noise."""
    mask, _ = _late(run, twin, plan)
    faulty = run.values[sensor][mask]
    healthy = twin.values[sensor][: len(run)][mask]
    spread = float(np.std(np.diff(twin.values[sensor][twin.running]))) + 1e-9
    return float(np.mean(faulty - healthy)) / spread


EXPECTED_SIGNATURES: dict[MachineFault, dict[str, int]] = {
    # +1: must rise clearly, -1: must fall clearly.
    MachineFault.BEARING_WEAR: {"vib_rms_mm_s": 1, "bearing_temp_c": 1},
    MachineFault.IMPELLER_WEAR: {
        "flow_m3_h": -1,
        "discharge_pressure_bar": -1,
        "motor_current_a": 1,
    },
    MachineFault.CAVITATION: {"vib_rms_mm_s": 1, "vib_kurtosis": 1, "discharge_pressure_bar": -1},
    MachineFault.SEAL_LEAK: {"flow_m3_h": -1, "discharge_pressure_bar": -1},
    MachineFault.MISALIGNMENT: {"vib_rms_mm_s": 1, "bearing_temp_c": 1, "motor_current_a": 1},
}


@pytest.mark.parametrize("kind", MACHINE_FAULTS)
def test_fault_changes_its_sensors_against_healthy_twin(kind: MachineFault) -> None:
    plan = FaultPlan(kind, onset_s=0.3 * DURATION_S, failure_s=0.9 * DURATION_S)
    healthy = _run(AssetSpec("pump-001", 0))
    faulty = _run(AssetSpec("pump-001", 0, fault=plan))
    assert faulty.failed and not healthy.failed
    assert len(faulty) < len(healthy)
    before = faulty.ts < START_TS + plan.onset_s
    for s in SENSORS:
        # Identical until onset: the fault is the only difference.
        assert np.array_equal(faulty.values[s][before], healthy.values[s][: len(faulty)][before])
    for sensor, sign in EXPECTED_SIGNATURES[kind].items():
        effect = _effect(faulty, healthy, plan, sensor)
        assert sign * effect > 3.0, f"{kind}: {sensor} moved {effect:+.1f} noise units"
    # Untouched: speed is set by the drive, no machine fault changes it.
    assert abs(_effect(faulty, healthy, plan, "speed_rpm")) < 0.5
    # Near failure at least one sensor leaves the healthy range.
    tail = slice(len(faulty) - max(3, len(faulty) // 50), len(faulty))
    outside = [
        s
        for s in SENSORS
        if np.any(faulty.values[s][tail] > HEALTHY_LIMITS[s][1])
        or np.any(faulty.values[s][tail] < HEALTHY_LIMITS[s][0])
    ]
    if kind in (MachineFault.BEARING_WEAR, MachineFault.CAVITATION, MachineFault.MISALIGNMENT):
        assert outside, f"{kind} ends inside the healthy limits"


def test_bearing_wear_kurtosis_rises_early() -> None:
    plan = FaultPlan(MachineFault.BEARING_WEAR, 0.2 * DURATION_S, 0.9 * DURATION_S)
    run = _run(AssetSpec("pump-001", 0, fault=plan))
    twin = _run(AssetSpec("pump-001", 0))
    t = run.ts - START_TS
    early = (t > plan.onset_s + 0.15 * (plan.failure_s - plan.onset_s)) & (
        t < plan.onset_s + 0.45 * (plan.failure_s - plan.onset_s)
    )
    early &= run.running
    diff = run.values["vib_kurtosis"][early] - twin.values["vib_kurtosis"][: len(run)][early]
    assert float(np.mean(diff)) > 1.0


def test_operating_point_changes_stay_within_healthy_limits() -> None:
    runs = [
        simulate_asset(spec, seed=3, start_ts=START_TS, duration_s=2 * 86400.0, rate_hz=1 / 30)
        for spec in plan_fleet(8, 3, 2 * 86400.0, fault_fraction=0.0)
    ]
    stops = 0
    for run in runs:
        speed = run.values["speed_rpm"]
        # The run visits several operating points: stops, load steps and shifts.
        assert np.ptp(speed[run.running]) > 0.1 * float(np.max(speed))
        stops += int(np.count_nonzero(~run.running) > 0)
        for s in SENSORS:
            lo, hi = HEALTHY_LIMITS[s]
            assert float(np.min(run.values[s])) >= lo, (run.spec.asset, s)
            assert float(np.max(run.values[s])) <= hi, (run.spec.asset, s)
    assert stops >= 2


@pytest.mark.parametrize("kind", list(SensorFault))
def test_sensor_faults_touch_only_their_sensor(kind: SensorFault) -> None:
    sf = SensorFaultPlan(kind, "bearing_temp_c", 0.4 * DURATION_S, 0.5 * DURATION_S, 0.3)
    if kind is SensorFault.SPIKE:
        sf = dataclasses.replace(sf, end_s=sf.start_s + 25.0, magnitude=5.0)
    clean = _run(AssetSpec("pump-002", 1))
    bad = _run(AssetSpec("pump-002", 1, sensor_faults=(sf,)))
    labelled = np.array([x == sf.label for x in bad.sensor_fault])
    if kind is SensorFault.DROPOUT:
        gone = len(clean) - len(bad)
        assert gone == math.ceil(0.1 * DURATION_S * RATE_HZ) and not labelled.any()
        return
    assert labelled.any()
    for s in SENSORS:
        if s != sf.sensor:
            assert np.array_equal(bad.values[s], clean.values[s])
    seen, truth = bad.values[sf.sensor][labelled], clean.values[sf.sensor][labelled]
    if kind is SensorFault.STUCK:
        assert len(set(seen.tolist())) == 1 and len(set(truth.tolist())) > 1
    elif kind is SensorFault.SPIKE:
        assert np.all(seen > 3 * truth)
    else:
        assert float(np.mean(seen - truth)) > 3.0
    assert np.array_equal(bad.values[sf.sensor][~labelled], clean.values[sf.sensor][~labelled])


def test_values_do_not_depend_on_the_start_time() -> None:
    spec = plan_fleet(2, 5, DURATION_S, fault_fraction=1.0, sensor_fault_fraction=1.0)[1]
    a = simulate_asset(spec, seed=5, start_ts=START_TS, duration_s=DURATION_S, rate_hz=RATE_HZ)
    b = simulate_asset(spec, seed=5, start_ts=1.8e9 + 123.4, duration_s=DURATION_S, rate_hz=RATE_HZ)
    for s in SENSORS:
        assert np.array_equal(a.values[s], b.values[s])
    assert a.fault == b.fault and np.array_equal(a.rul_s, b.rul_s)
