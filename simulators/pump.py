"""A centrifugal pump driven by a VFD-fed induction motor, sampled at a fixed rate.

The model is "physics-flavoured": affinity laws tie flow, pressure and motor current
to speed; bearing temperature follows load through a first-order thermal lag;
vibration grows with the square of speed. Operating-point changes (load steps, night
shifts, start/stop) are normal and keep every sensor inside :data:`HEALTHY_LIMITS`.
Machine faults (:class:`MachineFault`) start at an onset, grow along a severity curve
and end the run at failure; sensor faults (:class:`SensorFault`) corrupt what one
sensor reports without touching the machine.

Determinism: every random draw comes from the asset's node of the seed tree, derived
from ``(seed, asset index)``: nameplate and operating point from its stream, noise in
the run's noise layout (:class:`simulators.physics.NoiseLayout`: whole-run blocks for
the datasets, a stream per block for the streaming fleet). Every draw happens whether
or not the asset has a fault. So the same seed, layout and arguments give the same
samples bit for bit, and an asset with a fault is the exact "twin" of the same asset
without it until the fault's onset; tests use that to measure what a fault changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from simulators.physics import (
    DEFAULT_CLOCK_START_H,
    AssetSpec,
    BoolArray,
    FaultPlan,
    FloatArray,
    Lag,
    MachineKind,
    MachineRun,
    NoiseLayout,
    RunInfo,
    Sampled,
    SensorFault,
    SensorFaultPlan,
    StepProfile,
    Timeline,
    asset_rng,
    daily_swing_c,
    fleet_rng,
    is_night,
    noise_source,
    severity,
)

__all__ = [
    "DEFAULT_CLOCK_START_H",
    "DEFAULT_RATE_HZ",
    "HEALTHY_LIMITS",
    "MACHINE_FAULTS",
    "PUMP",
    "SENSORS",
    "SENSOR_DECIMALS",
    "AssetRun",
    "AssetSpec",
    "BoolArray",
    "FaultPlan",
    "FloatArray",
    "MachineFault",
    "NoiseLayout",
    "PumpParams",
    "SensorFault",
    "SensorFaultPlan",
    "asset_name",
    "asset_rng",
    "fleet_rng",
    "plan_fleet",
    "simulate_asset",
]

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

#: One sample a minute: the rate the shipped pump model is trained on.
DEFAULT_RATE_HZ = 1.0 / 60.0


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


#: One pump's samples and ground truth (see :class:`simulators.physics.MachineRun`).
AssetRun: TypeAlias = MachineRun[PumpParams]


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


#: Sizes of the fixed-length event draws; fixed so that the random stream consumed
#: does not depend on the run's duration more than necessary.
_MAX_LOAD_STEPS = 256
_MAX_STOPS = 8


class _Pump:
    """The pump's physics a chunk at a time: nameplate draws, operating point, faults.

    The asset's stream is drawn in the order the whole-run model always drew it:
    nameplate, load steps, stops; then the noise of each sensor and the cavitation
    bursts, a run long each, in the run's layout (:func:`noise_source`).
    """

    def __init__(self, spec: AssetSpec, rng: np.random.Generator, run: RunInfo) -> None:
        self.spec = spec
        self.params = _draw_params(rng)
        duration_s, dt = run.duration_s, run.dt_s
        self.dt = dt
        # Operating point: shift demand (day/night by site clock), load steps, stops.
        self.steps = StepProfile(rng, duration_s, _MAX_LOAD_STEPS)
        stop_count = int(rng.poisson(0.8 if duration_s < 86400 else duration_s / 86400.0))
        self.stop_count = min(stop_count, _MAX_STOPS)
        self.stop_at = rng.uniform(0.1, 0.9, size=_MAX_STOPS) * duration_s
        self.stop_len = rng.uniform(0.01, 0.05, size=_MAX_STOPS) * duration_s
        # Noise and random bursts are drawn unconditionally so that twins stay aligned.
        cavitation = spec.fault is not None and spec.fault.kind is MachineFault.CAVITATION
        needed = {*SENSORS, *(("burst_u", "burst_amp") if cavitation else ())}
        self.noise = noise_source(
            rng,
            run,
            [
                *((s, ("normal",)) for s in SENSORS),
                ("burst_u", ("random",)),
                ("burst_amp", ("uniform", 0.5, 1.0)),
            ],
            frozenset(needed),
        )
        self.speed_lag = Lag(dt, tau_s=4.0)
        self.temp_lag = Lag(dt, tau_s=900.0)

    def chunk(self, timeline: Timeline) -> Sampled[PumpParams]:
        p, spec = self.params, self.spec
        t, dt, hour = timeline.t, self.dt, timeline.hour
        n = t.shape[0]

        shift_base = np.where(is_night(hour), 0.55, 0.85)
        step_offset = 0.15 * self.steps(t)
        load = np.clip(shift_base + step_offset, 0.35, 1.0)
        running = np.ones(n, dtype=np.bool_)
        for k in range(self.stop_count):
            stop_at, stop_len = self.stop_at[k], self.stop_len[k]
            running &= ~((t >= stop_at) & (t < stop_at + max(stop_len, 2.0 * dt)))

        speed_target = np.where(running, 0.6 + 0.4 * load, 0.0)
        speed_frac = self.speed_lag(speed_target)
        on = speed_frac > 0.05  # the pump moves liquid and vibrates only while turning

        noise = {s: self.noise.take(s, n) for s in SENSORS}

        # Machine faults.
        vib_add = np.zeros(n)
        kurt_add = np.zeros(n)
        temp_add = np.zeros(n)
        flow_scale = np.ones(n)
        rise_scale = np.ones(n)
        current_scale = np.ones(n)
        pressure_noise_bar = np.full(n, 0.015)
        flow_noise = np.full(n, 0.01)
        plan = spec.fault
        if plan is not None:
            lin = severity(t, plan, 1.0)
            sp2 = speed_frac**2
            if plan.kind is MachineFault.BEARING_WEAR:
                d = severity(t, plan, 2.5)  # spalls spread faster as they grow
                vib_add = 8.0 * d * sp2
                # Early spalls give sharp impacts (high kurtosis); widespread damage
                # raises the whole level and kurtosis falls back.
                kurt_add = (5.0 * np.sqrt(lin) * (1.0 - lin) + 0.6 * lin) * on
                temp_add = 30.0 * d
            elif plan.kind is MachineFault.IMPELLER_WEAR:
                d = severity(t, plan, 1.5)
                flow_scale = 1.0 - 0.3 * d
                rise_scale = 1.0 - 0.3 * d
                current_scale = 1.0 + 0.2 * d  # worn vanes waste power in recirculation
                vib_add = 1.0 * d * sp2
            elif plan.kind is MachineFault.CAVITATION:
                burst_u = self.noise.take("burst_u", n)
                burst_amp = self.noise.take("burst_amp", n)
                d = severity(t, plan, 1.5)
                burst = (burst_u < 0.35 * d) & on
                vib_add = np.where(burst, 9.0 * burst_amp * d, 0.6 * d) * sp2
                kurt_add = np.where(burst, 10.0 * burst_amp * d, 0.5 * d) * on
                rise_scale = 1.0 - 0.12 * d
                flow_scale = 1.0 - 0.08 * d
                pressure_noise_bar = 0.015 + 0.45 * d
                flow_noise = 0.01 + 0.05 * d
            elif plan.kind is MachineFault.SEAL_LEAK:
                d = severity(t, plan, 2.0)
                flow_scale = 1.0 - 0.25 * d  # leaked liquid never reaches the flow meter
                rise_scale = 1.0 - 0.2 * d
                current_scale = 1.0 + 0.04 * d
                pressure_noise_bar = 0.015 + 0.05 * d
            elif plan.kind is MachineFault.MISALIGNMENT:
                d = severity(t, plan, 1.7)
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
        daily = daily_swing_c(hour)
        temp_target = (
            p.ambient_c + daily + p.temp_rise_c * (0.3 + 0.7 * speed_frac**2) * on + temp_add
        )
        temp = self.temp_lag(temp_target)
        vib = np.where(on, p.base_vib_mm_s * (0.3 + 0.7 * speed_frac**2), 0.05) + vib_add

        clean: dict[str, FloatArray] = {
            "vib_rms_mm_s": np.abs(vib * (1.0 + 0.04 * noise["vib_rms_mm_s"])),
            "vib_kurtosis": 3.0 + kurt_add + 0.12 * noise["vib_kurtosis"],
            "bearing_temp_c": temp + 0.15 * noise["bearing_temp_c"],
            "motor_current_a": np.abs(current * (1.0 + 0.01 * noise["motor_current_a"]))
            + 0.05 * np.abs(noise["motor_current_a"]) * on,
            "discharge_pressure_bar": pressure
            + pressure_noise_bar * noise["discharge_pressure_bar"],
            "flow_m3_h": np.abs(flow * (1.0 + flow_noise * noise["flow_m3_h"])),
            "speed_rpm": np.abs(
                p.rated_speed_rpm * speed_frac + 2.0 * noise["speed_rpm"] * (speed_frac > 0.01)
            ),
        }
        return Sampled(p, clean, running)


#: The pump as a machine kind: ``pump-001`` ..., on the root of the seed tree.
PUMP: MachineKind[PumpParams] = MachineKind("pump", (), SENSOR_DECIMALS, MachineFault, _Pump)
asset_name = PUMP.asset_name
#: Which pumps fail, how and when: :meth:`simulators.physics.MachineKind.plan_fleet`.
plan_fleet = PUMP.plan_fleet
#: One pump's run: :meth:`simulators.physics.MachineKind.simulate_asset`.
simulate_asset = PUMP.simulate_asset
