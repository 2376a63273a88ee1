"""A centrifugal pump driven by a VFD-fed induction motor, sampled at a fixed rate.

The model is "physics-flavoured": affinity laws tie flow, pressure and motor current
to speed; bearing temperature follows load through a first-order thermal lag;
vibration grows with the square of speed. Operating-point changes (load steps, night
shifts, start/stop) are normal and keep every sensor inside :data:`HEALTHY_LIMITS`.
Machine faults (:class:`MachineFault`) start at an onset, grow along a severity curve
and end the run at failure; sensor faults (:class:`SensorFault`) corrupt what one
sensor reports without touching the machine.

Determinism: every random draw comes from one :class:`numpy.random.Generator` per
asset, derived from ``(seed, asset index)``, and every draw happens whether or not the
asset has a fault. So the same seed and arguments give the same samples bit for bit,
and an asset with a fault is the exact "twin" of the same asset without it until the
fault's onset; tests use that to measure what a fault changes.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SENSORS: tuple[str, ...] = (
    "vib_rms_mm_s",
    "vib_kurtosis",
    "bearing_temp_c",
    "motor_current_a",
    "discharge_pressure_bar",
    "flow_m3_h",
    "speed_rpm",
)

#: Decimal places each sensor reports; real transmitters quantise, and short numbers
#: keep payloads small. Applied before sensor faults so stuck values repeat exactly.
SENSOR_DECIMALS: dict[str, int] = {
    "vib_rms_mm_s": 3,
    "vib_kurtosis": 3,
    "bearing_temp_c": 2,
    "motor_current_a": 2,
    "discharge_pressure_bar": 3,
    "flow_m3_h": 2,
    "speed_rpm": 1,
}

#: Upper bounds a healthy pump never exceeds at any operating point (ISO 10816-3
#: zone B/C for vibration, class-B bearing temperature, rated current plus margin).
#: Faults near failure exceed at least one of them.
HEALTHY_LIMITS: dict[str, tuple[float, float]] = {
    "vib_rms_mm_s": (0.0, 3.5),
    "vib_kurtosis": (2.0, 4.2),
    "bearing_temp_c": (5.0, 72.0),
    "motor_current_a": (0.0, 90.0),
    "discharge_pressure_bar": (0.5, 10.0),
    "flow_m3_h": (0.0, 170.0),
    "speed_rpm": (0.0, 3100.0),
}

#: Hour of the plant's day at the first sample: the day shift, so that short demo
#: runs show load steps rather than a quiet night.
DEFAULT_CLOCK_START_H = 8.0
#: One sample a minute: the rate the shipped pump model is trained on.
DEFAULT_RATE_HZ = 1.0 / 60.0

#: Namespace separating fleet-level draws from per-asset streams in the seed tree.
_FLEET_STREAM = 2**32 - 1


class MachineFault(enum.StrEnum):
    """What is wrong with the machine; ``none`` before onset and on healthy assets."""

    NONE = "none"
    BEARING_WEAR = "bearing_wear"
    IMPELLER_WEAR = "impeller_wear"
    CAVITATION = "cavitation"
    SEAL_LEAK = "seal_leak"
    MISALIGNMENT = "misalignment"


MACHINE_FAULTS: tuple[MachineFault, ...] = tuple(
    f for f in MachineFault if f is not MachineFault.NONE
)


class SensorFault(enum.StrEnum):
    """What is wrong with one sensor (the machine itself is unaffected)."""

    STUCK = "stuck"
    SPIKE = "spike"
    DRIFT = "drift"
    DROPOUT = "dropout"  # the device sends nothing: samples are missing from the stream


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A machine fault: starts at ``onset_s``, fails the asset at ``failure_s``.

    Times are seconds since the start of the run.
    """

    kind: MachineFault
    onset_s: float
    failure_s: float


@dataclass(frozen=True, slots=True)
class SensorFaultPlan:
    """A sensor fault on ``sensor`` between ``start_s`` and ``end_s`` (run seconds).

    ``magnitude`` is the relative size of a drift (fraction of the clean value at the
    end of the interval) or spike (multiplier); unused for stuck and dropout.
    """

    kind: SensorFault
    sensor: str
    start_s: float
    end_s: float
    magnitude: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.kind.value}:{self.sensor}"


@dataclass(frozen=True, slots=True)
class AssetSpec:
    """Everything that differs between assets of a fleet apart from their random stream."""

    asset: str
    index: int
    fault: FaultPlan | None = None
    sensor_faults: tuple[SensorFaultPlan, ...] = ()


@dataclass(frozen=True, slots=True)
class PumpParams:
    """Nameplate and installation figures of one pump, drawn per asset."""

    rated_speed_rpm: float
    bep_flow_m3_h: float
    valve_factor: float
    shutoff_rise_bar: float
    suction_bar: float
    rated_current_a: float
    no_load_current_a: float
    base_vib_mm_s: float
    ambient_c: float
    temp_rise_c: float


@dataclass(frozen=True, slots=True)
class AssetRun:
    """One asset's samples and their ground truth, all arrays of the same length.

    ``rul_s`` is seconds until failure (``inf`` for an asset that never fails in the
    run); ``fault`` is the machine fault label per sample; ``sensor_fault`` is
    ``"<kind>:<sensor>"`` while a sensor fault is active, else ``""``.
    """

    spec: AssetSpec
    params: PumpParams
    ts: FloatArray
    values: dict[str, FloatArray]
    fault: list[str]
    rul_s: FloatArray
    sensor_fault: list[str]
    failed: bool
    running: BoolArray = field(repr=False)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


def asset_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of asset ``index``: independent of fleet size and of other assets."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def fleet_rng(seed: int) -> np.random.Generator:
    """The random stream for fleet-level choices (which assets fail, and how)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_FLEET_STREAM,)))


def asset_name(index: int) -> str:
    return f"pump-{index + 1:03d}"


def plan_fleet(
    assets: int,
    seed: int,
    duration_s: float,
    *,
    fault_fraction: float = 0.3,
    sensor_fault_fraction: float = 0.0,
    faults: tuple[MachineFault, ...] = MACHINE_FAULTS,
) -> list[AssetSpec]:
    """Decide which assets fail, how and when, and which get a sensor fault.

    Faulty assets cycle through ``faults`` so that every kind appears once the fleet
    has enough faulty assets. Degradation is compressed to fit the run: onset falls
    in the first half and failure in the second half of ``duration_s``, otherwise a
    ten-minute demo would never show a failure.
    """
    if assets < 0:
        raise ValueError("assets must be >= 0")
    if not 0.0 <= fault_fraction <= 1.0 or not 0.0 <= sensor_fault_fraction <= 1.0:
        raise ValueError("fractions must be within [0, 1]")
    rng = fleet_rng(seed)
    n_faulty = round(fault_fraction * assets)
    faulty = {int(i) for i in rng.permutation(assets)[:n_faulty]} if assets else set()
    kinds = [faults[int(k)] for k in rng.permutation(len(faults))] if faults else []
    specs: list[AssetSpec] = []
    next_kind = 0
    for index in range(assets):
        # Draw every value for every asset so that changing the fractions moves no
        # other asset's plan.
        onset_frac = rng.uniform(0.1, 0.45)
        fail_frac = rng.uniform(0.6, 0.98)
        sensor_draw = rng.random()
        sensor_kind = SensorFault(list(SensorFault)[int(rng.integers(len(SensorFault)))])
        sensor_name = SENSORS[int(rng.integers(len(SENSORS)))]
        sensor_start = rng.uniform(0.05, 0.8)
        sensor_len = rng.uniform(0.02, 0.12)
        sensor_mag = rng.uniform(0.15, 0.35)
        fault: FaultPlan | None = None
        if index in faulty and kinds:
            kind = kinds[next_kind % len(kinds)]
            next_kind += 1
            fault = FaultPlan(kind, onset_frac * duration_s, fail_frac * duration_s)
        sensor_faults: tuple[SensorFaultPlan, ...] = ()
        if sensor_draw < sensor_fault_fraction:
            start = sensor_start * duration_s
            if sensor_kind is SensorFault.SPIKE:
                # A spike is a glitch of a few samples, not a long episode.
                end = start + min(sensor_len * duration_s, 0.01 * duration_s)
                magnitude = 3.0 + 10.0 * sensor_mag
            else:
                end = start + sensor_len * duration_s
                magnitude = sensor_mag
            sensor_faults = (SensorFaultPlan(sensor_kind, sensor_name, start, end, magnitude),)
        specs.append(AssetSpec(asset_name(index), index, fault, sensor_faults))
    return specs


def _draw_params(rng: np.random.Generator) -> PumpParams:
    rated_current = float(rng.uniform(45.0, 75.0))
    return PumpParams(
        rated_speed_rpm=float(rng.choice([1480.0, 2960.0])),
        bep_flow_m3_h=float(rng.uniform(60.0, 140.0)),
        valve_factor=float(rng.uniform(0.9, 1.05)),
        shutoff_rise_bar=float(rng.uniform(4.5, 7.5)),
        suction_bar=float(rng.uniform(0.8, 1.5)),
        rated_current_a=rated_current,
        no_load_current_a=float(rng.uniform(0.3, 0.4)) * rated_current,
        base_vib_mm_s=float(rng.uniform(0.9, 1.9)),
        ambient_c=float(rng.uniform(18.0, 30.0)),
        temp_rise_c=float(rng.uniform(18.0, 28.0)),
    )


def _first_order_lag(target: FloatArray, dt_s: float, tau_s: float, initial: float) -> FloatArray:
    """Exact discretisation of dy/dt = (x - y) / tau for piecewise-constant x."""
    alpha = math.exp(-dt_s / tau_s)
    out = np.empty_like(target)
    y = initial
    beta = 1.0 - alpha
    for i, x in enumerate(target.tolist()):
        y = alpha * y + beta * x
        out[i] = y
    return out


def _piecewise(
    rng: np.random.Generator, duration_s: float, mean_interval_s: float, max_events: int
) -> tuple[FloatArray, FloatArray]:
    """Event times (starting with 0) and one uniform draw per segment, fixed size."""
    gaps = rng.exponential(mean_interval_s, size=max_events)
    starts = np.concatenate(([0.0], np.cumsum(gaps)[:-1]))
    levels = rng.uniform(-1.0, 1.0, size=max_events)
    keep = starts <= duration_s
    return starts[keep], levels[keep]


#: Sizes of the fixed-length event draws; fixed so that the random stream consumed
#: does not depend on the run's duration more than necessary.
_MAX_LOAD_STEPS = 256
_MAX_STOPS = 8


def _severity(t: FloatArray, plan: FaultPlan, exponent: float) -> FloatArray:
    span = max(plan.failure_s - plan.onset_s, 1e-9)
    x = np.clip((t - plan.onset_s) / span, 0.0, 1.0)
    return np.asarray(x**exponent, dtype=np.float64)


def simulate_asset(
    spec: AssetSpec,
    *,
    seed: int,
    start_ts: float,
    duration_s: float,
    rate_hz: float,
    clock_start_h: float = DEFAULT_CLOCK_START_H,
) -> AssetRun:
    """Simulate one asset from ``start_ts`` for ``duration_s`` (or until it fails).

    Samples are at ``start_ts + k / rate_hz``; a failing asset's last sample is the
    last one at or before its failure time (RUL 0 or just above). Shifts and the
    ambient temperature follow the plant's clock, which reads ``clock_start_h`` at the
    first sample: the samples do not depend on ``start_ts``, so a live run started
    at any time of day gives the same values as the offline dataset.
    """
    if rate_hz <= 0 or duration_s < 0:
        raise ValueError("rate_hz must be > 0 and duration_s >= 0")
    rng = asset_rng(seed, spec.index)
    p = _draw_params(rng)
    dt = 1.0 / rate_hz
    n_full = math.floor(duration_s * rate_hz + 1e-9) + 1
    t = np.arange(n_full, dtype=np.float64) * dt
    ts = start_ts + t

    # Operating point: shift demand (day/night by site clock), load steps, stops.
    hour = ((clock_start_h + t / 3600.0) % 24.0).astype(np.float64)
    night = (hour >= 22.0) | (hour < 6.0)
    shift_base = np.where(night, 0.55, 0.85)
    step_interval = min(max(duration_s / 6.0, 30.0), 7200.0)
    step_starts, step_levels = _piecewise(rng, duration_s, step_interval, _MAX_LOAD_STEPS)
    step_offset = 0.15 * step_levels[np.searchsorted(step_starts, t, side="right") - 1]
    load = np.clip(shift_base + step_offset, 0.35, 1.0)

    stop_count = int(rng.poisson(0.8 if duration_s < 86400 else duration_s / 86400.0))
    stop_count = min(stop_count, _MAX_STOPS)
    stop_at = rng.uniform(0.1, 0.9, size=_MAX_STOPS) * duration_s
    stop_len = rng.uniform(0.01, 0.05, size=_MAX_STOPS) * duration_s
    running = np.ones(n_full, dtype=np.bool_)
    for k in range(stop_count):
        running &= ~((t >= stop_at[k]) & (t < stop_at[k] + max(stop_len[k], 2.0 * dt)))

    speed_target = np.where(running, 0.6 + 0.4 * load, 0.0)
    speed_frac = _first_order_lag(speed_target, dt, tau_s=4.0, initial=float(speed_target[0]))
    on = speed_frac > 0.05  # the pump moves liquid and vibrates only while turning

    # Noise and random bursts are drawn unconditionally so that twins stay aligned.
    noise = {s: rng.standard_normal(n_full) for s in SENSORS}
    burst_u = rng.random(n_full)
    burst_amp = rng.uniform(0.5, 1.0, size=n_full)

    # Machine faults.
    vib_add = np.zeros(n_full)
    kurt_add = np.zeros(n_full)
    temp_add = np.zeros(n_full)
    flow_scale = np.ones(n_full)
    rise_scale = np.ones(n_full)
    current_scale = np.ones(n_full)
    pressure_noise_bar = np.full(n_full, 0.015)
    flow_noise = np.full(n_full, 0.01)
    plan = spec.fault
    fault_label = np.full(n_full, MachineFault.NONE.value, dtype=object)
    if plan is not None:
        lin = _severity(t, plan, 1.0)
        active = t >= plan.onset_s
        fault_label[active] = plan.kind.value
        sp2 = speed_frac**2
        if plan.kind is MachineFault.BEARING_WEAR:
            d = _severity(t, plan, 2.5)  # spalls spread faster as they grow
            vib_add = 8.0 * d * sp2
            # Early spalls give sharp impacts (high kurtosis); widespread damage
            # raises the whole level and kurtosis falls back.
            kurt_add = (5.0 * np.sqrt(lin) * (1.0 - lin) + 0.6 * lin) * on
            temp_add = 30.0 * d
        elif plan.kind is MachineFault.IMPELLER_WEAR:
            d = _severity(t, plan, 1.5)
            flow_scale = 1.0 - 0.3 * d
            rise_scale = 1.0 - 0.3 * d
            current_scale = 1.0 + 0.2 * d  # worn vanes waste power in recirculation
            vib_add = 1.0 * d * sp2
        elif plan.kind is MachineFault.CAVITATION:
            d = _severity(t, plan, 1.5)
            burst = (burst_u < 0.35 * d) & on
            vib_add = np.where(burst, 9.0 * burst_amp * d, 0.6 * d) * sp2
            kurt_add = np.where(burst, 10.0 * burst_amp * d, 0.5 * d) * on
            rise_scale = 1.0 - 0.12 * d
            flow_scale = 1.0 - 0.08 * d
            pressure_noise_bar = 0.015 + 0.45 * d
            flow_noise = 0.01 + 0.05 * d
        elif plan.kind is MachineFault.SEAL_LEAK:
            d = _severity(t, plan, 2.0)
            flow_scale = 1.0 - 0.25 * d  # leaked liquid never reaches the flow meter
            rise_scale = 1.0 - 0.2 * d
            current_scale = 1.0 + 0.04 * d
            pressure_noise_bar = 0.015 + 0.05 * d
        elif plan.kind is MachineFault.MISALIGNMENT:
            d = _severity(t, plan, 1.7)
            vib_add = 5.5 * d * sp2
            kurt_add = 0.4 * d * on
            temp_add = 22.0 * d * speed_frac
            current_scale = 1.0 + 0.08 * d

    # Hydraulics by the affinity laws: flow ~ n, head ~ n^2, power ~ n^3.
    flow = p.bep_flow_m3_h * p.valve_factor * speed_frac * flow_scale
    rise = p.shutoff_rise_bar * (1.0 - 0.35 * p.valve_factor**2) * speed_frac**2 * rise_scale
    pressure = p.suction_bar + rise
    power_frac = speed_frac**3 * p.valve_factor
    current = (p.no_load_current_a + (p.rated_current_a - p.no_load_current_a) * power_frac) * (
        current_scale
    )
    current = np.where(on, current, 0.0)
    daily = 3.0 * np.sin(2.0 * math.pi * (hour - 9.0) / 24.0)
    temp_target = p.ambient_c + daily + p.temp_rise_c * (0.3 + 0.7 * speed_frac**2) * on + temp_add
    temp = _first_order_lag(temp_target, dt, tau_s=900.0, initial=float(temp_target[0]))
    vib = np.where(on, p.base_vib_mm_s * (0.3 + 0.7 * speed_frac**2), 0.05) + vib_add

    clean: dict[str, FloatArray] = {
        "vib_rms_mm_s": np.abs(vib * (1.0 + 0.04 * noise["vib_rms_mm_s"])),
        "vib_kurtosis": 3.0 + kurt_add + 0.12 * noise["vib_kurtosis"],
        "bearing_temp_c": temp + 0.15 * noise["bearing_temp_c"],
        "motor_current_a": np.abs(current * (1.0 + 0.01 * noise["motor_current_a"]))
        + 0.05 * np.abs(noise["motor_current_a"]) * on,
        "discharge_pressure_bar": pressure + pressure_noise_bar * noise["discharge_pressure_bar"],
        "flow_m3_h": np.abs(flow * (1.0 + flow_noise * noise["flow_m3_h"])),
        "speed_rpm": np.abs(
            p.rated_speed_rpm * speed_frac + 2.0 * noise["speed_rpm"] * (speed_frac > 0.01)
        ),
    }
    values = {s: np.round(clean[s], SENSOR_DECIMALS[s]) for s in SENSORS}

    # Sensor faults act on what is reported, after quantisation.
    sensor_label = np.full(n_full, "", dtype=object)
    keep = np.ones(n_full, dtype=np.bool_)
    for sf in spec.sensor_faults:
        mask = (t >= sf.start_s) & (t < sf.end_s)
        if not mask.any():
            mask[min(int(sf.start_s * rate_hz), n_full - 1)] = True
        sensor_label[mask] = sf.label
        series = values[sf.sensor]
        first = int(np.argmax(mask))
        if sf.kind is SensorFault.STUCK:
            series[mask] = series[first]
        elif sf.kind is SensorFault.SPIKE:
            series[mask] = np.round(series[mask] * sf.magnitude + sf.magnitude, 3)
        elif sf.kind is SensorFault.DRIFT:
            ramp = np.clip((t[mask] - sf.start_s) / max(sf.end_s - sf.start_s, dt), 0.0, 1.0)
            offset = sf.magnitude * max(float(np.mean(np.abs(series))), 1.0) * ramp
            series[mask] = np.round(series[mask] + offset, SENSOR_DECIMALS[sf.sensor])
        elif sf.kind is SensorFault.DROPOUT:
            keep &= ~mask

    n = n_full
    failed = False
    if plan is not None and plan.failure_s <= duration_s:
        n = math.floor(plan.failure_s * rate_hz + 1e-9) + 1
        n = min(n, n_full)
        failed = True
    keep[n:] = False
    rul = np.full(n_full, math.inf) if not failed or plan is None else plan.failure_s - t
    return AssetRun(
        spec=spec,
        params=p,
        ts=ts[keep],
        values={s: values[s][keep] for s in SENSORS},
        fault=[str(x) for x in fault_label[keep]],
        rul_s=np.asarray(rul[keep], dtype=np.float64),
        sensor_fault=[str(x) for x in sensor_label[keep]],
        failed=failed,
        running=running[keep],
    )
