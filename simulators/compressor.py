"""An oil-flooded rotary-screw air compressor on load/unload control, sampled at a fixed rate.

The compressor feeds a receiver and the plant's air network. Normal operation is a
duty cycle: *loaded*, the inlet valve is open and the airend delivers its free air
until the receiver reaches the cut-out pressure; *unloaded*, the inlet valve closes,
the motor idles at about a third of its current and the plant draws the receiver
down to the cut-in pressure; unloaded for longer than its standby timer, the motor
stops (*standby*) and restarts at cut-in. Plant demand follows the shifts and steps
at random; the network draws air in proportion to its absolute pressure, so the
receiver pressure relaxes exponentially between the switching points, and the
switching times are solved exactly (the pressure never leaves the band by
sampling). The controller reports ``load_pct``, the loaded share of the last ten
minutes or so. The oil is held at its thermostat setting while the cooler can
keep up; the airend discharge is hotter by the heat of compression. Every operating
point keeps every sensor inside :data:`HEALTHY_LIMITS`.

Machine faults (:class:`CompressorFault`) grow from onset to failure along a
severity curve. Sensor faults, planning, failure and the determinism contract are
every machine's (:class:`simulators.physics.MachineKind`): one node of the seed tree
per ``(seed, asset index)``, on the compressors' own branch of the seed tree so that
they move no pump's samples, and every draw made whether or not the asset has a
fault, so a faulty compressor is the exact twin of the healthy one until onset.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

from simulators.physics import (
    AssetSpec,
    FaultPlan,
    FloatArray,
    Lag,
    MachineKind,
    MachineRun,
    RunInfo,
    Sampled,
    StepProfile,
    Timeline,
    daily_swing_c,
    is_night,
    noise_source,
    severity,
)

SENSORS: tuple[str, ...] = (
    "comp_vib_rms_g",
    "discharge_temp_c",
    "oil_temp_c",
    "motor_current_a",
    "receiver_pressure_bar",
    "load_pct",
    "filter_dp_mbar",
)

#: Decimal places each sensor reports (applied before sensor faults).
SENSOR_DECIMALS: dict[str, int] = {
    "comp_vib_rms_g": 3,
    "discharge_temp_c": 2,
    "oil_temp_c": 2,
    "motor_current_a": 2,
    "receiver_pressure_bar": 3,
    "load_pct": 1,
    "filter_dp_mbar": 1,
}

#: Bounds a healthy compressor never leaves at any operating point (loaded, unloaded,
#: standby, day and night demand): casing vibration, the oil and discharge
#: temperatures short of their alarms, the receiver inside the widest pressure band
#: drawn, the intake filter's clean pressure drop. Each fault leaves at least one of
#: them before failure.
HEALTHY_LIMITS: dict[str, tuple[float, float]] = {
    "comp_vib_rms_g": (0.0, 0.45),
    "discharge_temp_c": (5.0, 95.0),
    "oil_temp_c": (5.0, 65.0),
    "motor_current_a": (0.0, 120.0),
    "receiver_pressure_bar": (6.0, 8.0),
    "load_pct": (0.0, 90.0),
    "filter_dp_mbar": (0.0, 35.0),
}

#: Branch of the seed tree the compressors draw from; the pumps use the root.
COMPRESSOR_STREAM: tuple[int, ...] = (2**32 - 2,)

#: Absolute pressure of the atmosphere; the network's draw scales with absolute pressure.
ATM_BAR = 1.013
#: Share of full-load heat (and power) the airend makes unloaded.
UNLOADED_HEAT = 0.3
#: Loaded motor current at cut-in and its rise to cut-out, as shares of rated current.
LOADED_CURRENT_AT_CUT_IN = 0.9
LOADED_CURRENT_RISE = 0.08
#: Vibration unloaded, as a share of loaded, and of a stopped machine (g, background).
UNLOADED_VIB = 0.7
STANDBY_VIB_G = 0.01
#: Intake filter drop with the inlet valve closed, as a share of loaded.
UNLOADED_FILTER_DP = 0.15
#: Plant demand as a share of the compressor's free air delivery.
DAY_DEMAND = 0.6
NIGHT_DEMAND = 0.25
DEMAND_STEP = 0.15
MIN_DEMAND = 0.1
MAX_DEMAND = 0.8  # a healthy compressor always catches up with the plant
#: Time constants (s): the controller's load average, the oil sump, the discharge line.
LOAD_PCT_TAU_S = 600.0
OIL_TAU_S = 600.0
DISCHARGE_TAU_S = 120.0

_MAX_DEMAND_STEPS = 256

_LOADED, _UNLOADED, _STANDBY = 0, 1, 2


class CompressorFault(enum.StrEnum):
    """What is wrong with the compressor; ``none`` before onset and on healthy assets."""

    NONE = "none"
    #: Airend bearing wear: vibration grows past its limit, the discharge runs hotter.
    BEARING_WEAR = "bearing_wear"
    #: Clogged intake filter: the filter's pressure drop leaves its limit, delivery
    #: falls (longer load phases), the loaded current and discharge temperature rise
    #: with the pressure ratio, and the receiver sags once demand outruns delivery.
    INTAKE_RESTRICTION = "intake_restriction"
    #: Fouled oil cooler: the oil, then the discharge, run past their limits.
    OIL_COOLER_FOULING = "oil_cooler_fouling"
    #: Leaking inlet/blow-down valve: air vents while loaded, delivery falls, each load
    #: phase lasts longer until the machine never unloads (``load_pct`` past its limit)
    #: and the receiver pressure sags below the band.
    VALVE_LEAK = "valve_leak"


COMPRESSOR_FAULTS: tuple[CompressorFault, ...] = tuple(
    f for f in CompressorFault if f is not CompressorFault.NONE
)


@dataclass(frozen=True, slots=True)
class CompressorParams:
    """Nameplate, controller and installation figures of one compressor, drawn per asset."""

    rated_current_a: float
    unloaded_current_a: float
    cut_in_bar: float
    band_bar: float
    #: Pressure rise of receiver and network at full delivery and no draw (bar/s).
    fill_rate_bar_s: float
    standby_after_s: float
    base_vib_g: float
    filter_dp_mbar: float
    ambient_c: float
    thermostat_c: float
    #: Oil above ambient at full heat with a clean cooler.
    cooler_approach_c: float
    discharge_rise_c: float

    @property
    def cut_out_bar(self) -> float:
        return self.cut_in_bar + self.band_bar


#: One compressor's samples and ground truth (see :class:`simulators.physics.MachineRun`).
CompressorRun: TypeAlias = MachineRun[CompressorParams]


def _draw_params(rng: np.random.Generator) -> CompressorParams:
    rated_current = float(rng.uniform(60.0, 110.0))
    return CompressorParams(
        rated_current_a=rated_current,
        unloaded_current_a=float(rng.uniform(0.3, 0.4)) * rated_current,
        cut_in_bar=float(rng.uniform(6.3, 6.8)),
        band_bar=float(rng.uniform(0.6, 1.0)),
        fill_rate_bar_s=float(rng.uniform(0.012, 0.025)),
        standby_after_s=float(rng.uniform(120.0, 300.0)),
        base_vib_g=float(rng.uniform(0.12, 0.3)),
        filter_dp_mbar=float(rng.uniform(12.0, 25.0)),
        ambient_c=float(rng.uniform(15.0, 30.0)),
        thermostat_c=float(rng.uniform(50.0, 55.0)),
        cooler_approach_c=float(rng.uniform(14.0, 20.0)),
        discharge_rise_c=float(rng.uniform(22.0, 30.0)),
    )


@dataclass(frozen=True, slots=True)
class _Cycle:
    """The load/unload cycle sampled: state at each sample, shares of the interval before."""

    pressure_bar: FloatArray
    mode: npt.NDArray[np.int8]
    loaded_share: FloatArray
    running_share: FloatArray


class _DutyCycle:
    """Integrate the receiver exactly, a chunk of samples at a time.

    Inputs hold over the interval ending at each sample. dp/dt = fill_rate *
    (delivery - demand * p_abs / p_abs_nominal) while loaded (no delivery otherwise):
    an exponential relaxation towards an equilibrium, so the time to each switching
    point has a closed form. The receiver pressure, the mode and the time unloaded
    carry from one chunk to the next.
    """

    def __init__(
        self, p: CompressorParams, dt_s: float, initial_bar: float, initial_loaded: bool
    ) -> None:
        self.p, self.dt_s = p, dt_s
        self.initial_loaded = initial_loaded
        self.bar = initial_bar
        self.mode = _LOADED if initial_loaded else _UNLOADED
        self.unloaded_s = 0.0
        self.started = False

    def __call__(self, demand: FloatArray, delivery: FloatArray) -> _Cycle:
        p, dt_s = self.p, self.dt_s
        n = demand.shape[0]
        pressure = np.empty(n)
        mode_at = np.empty(n, dtype=np.int8)
        loaded_share = np.empty(n)
        running_share = np.empty(n)
        nominal_abs = p.cut_in_bar + 0.5 * p.band_bar + ATM_BAR
        cut_in, cut_out = p.cut_in_bar, p.cut_out_bar
        bar, mode, unloaded_s = self.bar, self.mode, self.unloaded_s
        first = 0
        if not self.started and n:
            # The run's first sample: the initial state, no interval before it.
            pressure[0], mode_at[0] = bar, mode
            loaded_share[0], running_share[0] = float(self.initial_loaded), 1.0
            self.started, first = True, 1
        for i in range(first, n):
            draw, supply = float(demand[i]), float(delivery[i])
            tau = nominal_abs / (draw * p.fill_rate_bar_s)
            loaded_s = running_s = 0.0
            left = dt_s
            while left > 0.0:
                standby_due = math.inf
                if mode == _LOADED:
                    eq = supply / draw * nominal_abs - ATM_BAR
                    if bar >= cut_out:
                        due = 0.0
                    elif eq > cut_out:
                        due = tau * math.log((eq - bar) / (eq - cut_out))
                    else:
                        due = math.inf  # delivery cannot reach cut-out: the receiver sags
                else:
                    eq = -ATM_BAR
                    due = 0.0 if bar <= cut_in else tau * math.log((bar - eq) / (cut_in - eq))
                    if mode == _UNLOADED:
                        standby_due = max(p.standby_after_s - unloaded_s, 0.0)
                step = min(left, due, standby_due)
                bar = eq + (bar - eq) * math.exp(-step / tau)
                loaded_s += step if mode == _LOADED else 0.0
                running_s += step if mode != _STANDBY else 0.0
                unloaded_s += step if mode == _UNLOADED else 0.0
                left -= step
                if due <= step:  # reached a switching pressure
                    bar = cut_out if mode == _LOADED else cut_in
                    mode = _UNLOADED if mode == _LOADED else _LOADED
                    unloaded_s = 0.0
                elif standby_due <= step:  # unloaded long enough: the motor stops
                    mode = _STANDBY
            pressure[i], mode_at[i] = bar, mode
            loaded_share[i], running_share[i] = loaded_s / dt_s, running_s / dt_s
        self.bar, self.mode, self.unloaded_s = bar, mode, unloaded_s
        return _Cycle(pressure, mode_at, loaded_share, running_share)


class _Compressor:
    """The compressor's physics a chunk at a time: nameplate, duty cycle, faults.

    The asset's stream is drawn in the order the whole-run model always drew it:
    nameplate, demand steps, the initial receiver state; then the noise of each
    sensor, a run long each, in the run's layout (:func:`noise_source`).
    """

    def __init__(self, spec: AssetSpec, rng: np.random.Generator, run: RunInfo) -> None:
        self.spec = spec
        self.params = p = _draw_params(rng)
        dt = run.dt_s
        # Plant demand: shifts by the site clock and random steps.
        self.steps = StepProfile(rng, run.duration_s, _MAX_DEMAND_STEPS)
        initial_bar = p.cut_in_bar + p.band_bar * float(rng.random())
        initial_loaded = bool(rng.random() < DAY_DEMAND)
        # Noise is drawn unconditionally so that twins stay aligned.
        self.noise = noise_source(rng, run, [(s, ("normal",)) for s in SENSORS])
        self.cycle = _DutyCycle(p, dt, initial_bar, initial_loaded)
        self.oil_lag = Lag(dt, OIL_TAU_S)
        self.rise_lag = Lag(dt, DISCHARGE_TAU_S)
        self.load_lag = Lag(dt, LOAD_PCT_TAU_S)

    def chunk(self, timeline: Timeline) -> Sampled[CompressorParams]:
        p, spec = self.params, self.spec
        t, hour = timeline.t, timeline.hour
        n = t.shape[0]

        shift = np.where(is_night(hour), NIGHT_DEMAND, DAY_DEMAND)
        demand = np.clip(shift + DEMAND_STEP * self.steps(t), MIN_DEMAND, MAX_DEMAND)
        noise = {s: self.noise.take(s, n) for s in SENSORS}

        # Machine faults; every term is exactly neutral before onset.
        plan: FaultPlan | None = spec.fault
        delivery = np.ones(n)
        vib_scale = np.ones(n)
        filter_scale = np.ones(n)
        current_scale = np.ones(n)
        approach_scale = np.ones(n)
        discharge_add = np.zeros(n)
        if plan is not None:
            if plan.kind is CompressorFault.BEARING_WEAR:
                d = severity(t, plan, 2.5)
                vib_scale = 1.0 + 6.0 * d
                discharge_add = 12.0 * d
                current_scale = 1.0 + 0.04 * d
            elif plan.kind is CompressorFault.INTAKE_RESTRICTION:
                d = severity(t, plan, 2.0)
                filter_scale = 1.0 + 6.0 * d
                delivery = 1.0 - 0.5 * d
                current_scale = 1.0 + 0.06 * d  # a higher pressure ratio per m3 delivered
                discharge_add = 10.0 * d
            elif plan.kind is CompressorFault.OIL_COOLER_FOULING:
                approach_scale = 1.0 + 7.0 * severity(t, plan, 1.5)
            elif plan.kind is CompressorFault.VALVE_LEAK:
                delivery = 1.0 - 0.75 * severity(t, plan, 1.5)

        cycle = self.cycle(demand, delivery)
        loaded = cycle.mode == _LOADED
        running = cycle.mode != _STANDBY
        unloaded_share = cycle.running_share - cycle.loaded_share
        heat = cycle.loaded_share + UNLOADED_HEAT * unloaded_share

        ambient = p.ambient_c + daily_swing_c(hour)
        # Running, the thermostat holds the oil at its setting unless the cooler cannot
        # keep up; stopped, the oil cools towards the room.
        cooled = ambient + p.cooler_approach_c * approach_scale * heat
        oil_target = ambient + cycle.running_share * (np.maximum(p.thermostat_c, cooled) - ambient)
        oil = self.oil_lag(oil_target)
        rise_target = p.discharge_rise_c * heat + discharge_add * cycle.running_share
        rise = self.rise_lag(rise_target)
        load_frac = self.load_lag(cycle.loaded_share, initial=float(demand[0]))

        position = (cycle.pressure_bar - p.cut_in_bar) / p.band_bar
        loaded_current = p.rated_current_a * (
            LOADED_CURRENT_AT_CUT_IN + LOADED_CURRENT_RISE * np.clip(position, 0.0, 1.0)
        )
        current = np.where(loaded, loaded_current, np.where(running, p.unloaded_current_a, 0.0))
        current = current * current_scale
        vib_mode = np.where(loaded, 1.0, UNLOADED_VIB)
        vib = np.where(running, p.base_vib_g * vib_mode * vib_scale, STANDBY_VIB_G)
        filter_mode = np.where(loaded, 1.0, np.where(running, UNLOADED_FILTER_DP, 0.0))
        filter_dp = p.filter_dp_mbar * filter_mode * filter_scale

        clean: dict[str, FloatArray] = {
            "comp_vib_rms_g": np.abs(vib * (1.0 + 0.06 * noise["comp_vib_rms_g"])),
            "discharge_temp_c": oil + rise + 0.2 * noise["discharge_temp_c"],
            "oil_temp_c": oil + 0.15 * noise["oil_temp_c"],
            "motor_current_a": np.abs(current * (1.0 + 0.01 * noise["motor_current_a"])),
            "receiver_pressure_bar": cycle.pressure_bar + 0.01 * noise["receiver_pressure_bar"],
            "load_pct": np.clip(100.0 * load_frac + 0.3 * noise["load_pct"], 0.0, 100.0),
            "filter_dp_mbar": np.abs(filter_dp + 0.3 * noise["filter_dp_mbar"] * running),
        }
        return Sampled(p, clean, running)


#: The compressor as a machine kind: ``comp-001`` ..., on its own branch of the seed tree.
COMPRESSOR: MachineKind[CompressorParams] = MachineKind(
    "comp", COMPRESSOR_STREAM, SENSOR_DECIMALS, CompressorFault, _Compressor
)
asset_name = COMPRESSOR.asset_name
#: Which compressors fail, how and when: :meth:`simulators.physics.MachineKind.plan_fleet`.
plan_fleet = COMPRESSOR.plan_fleet
#: One compressor's run: :meth:`simulators.physics.MachineKind.simulate_asset`.
simulate_asset = COMPRESSOR.simulate_asset
