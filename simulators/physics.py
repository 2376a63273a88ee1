"""Building blocks every simulated machine shares: plans, random streams, run records.

A machine module (:mod:`simulators.pump`, :mod:`simulators.compressor`) draws its own
nameplate figures and computes clean sensor values from its physics (its *model*);
a :class:`MachineKind` wraps the model with everything that is the same for every
machine: asset names, which assets fail and how (:meth:`MachineKind.plan_fleet`),
the seeded random stream of each asset, and the last steps of a run (quantisation,
sensor faults, the cut at failure, ground truth) in :meth:`MachineKind.simulate_asset`.
Thermal lags, severity curves, load steps and the plant clock are here for models.

Each machine kind draws from its own branch of the seed tree (``stream``), so adding
compressors to a fleet moves no pump's samples, and vice versa.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

#: Namespace separating fleet-level draws from per-asset streams in the seed tree.
_FLEET_STREAM = 2**32 - 1

#: The machine-fault label of samples before onset and of healthy assets.
NO_FAULT = "none"
#: Hour of the plant's day at the first sample: the day shift, so that short demo
#: runs show load steps rather than a quiet night.
DEFAULT_CLOCK_START_H = 8.0

P = TypeVar("P")


class SensorFault(enum.StrEnum):
    """What is wrong with one sensor (the machine itself is unaffected)."""

    STUCK = "stuck"
    SPIKE = "spike"
    DRIFT = "drift"
    DROPOUT = "dropout"  # the device sends nothing: samples are missing from the stream


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A machine fault: starts at ``onset_s``, fails the asset at ``failure_s``.

    Times are seconds since the start of the run; ``kind`` is one of the machine's
    own fault enum (e.g. :class:`simulators.pump.MachineFault`).
    """

    kind: enum.StrEnum
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
class MachineRun(Generic[P]):
    """One asset's samples and their ground truth, all arrays of the same length.

    ``params`` are the asset's nameplate figures (the machine's own dataclass);
    ``rul_s`` is seconds until failure (``inf`` for an asset that never fails in the
    run); ``fault`` is the machine fault label per sample; ``sensor_fault`` is
    ``"<kind>:<sensor>"`` while a sensor fault is active, else ``""``; ``running`` is
    True while the machine's motor turns.
    """

    spec: AssetSpec
    params: P
    ts: FloatArray
    values: dict[str, FloatArray]
    fault: list[str]
    rul_s: FloatArray
    sensor_fault: list[str]
    failed: bool
    running: BoolArray = field(repr=False)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def sensors(self) -> tuple[str, ...]:
        """The machine's sensors, in the order it reports them."""
        return tuple(self.values)


def asset_rng(seed: int, index: int, stream: tuple[int, ...] = ()) -> np.random.Generator:
    """The random stream of asset ``index``: independent of fleet size and of other assets.

    ``stream`` is the machine kind's branch of the seed tree (empty for pumps).
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*stream, index)))


def fleet_rng(seed: int, stream: tuple[int, ...] = ()) -> np.random.Generator:
    """The random stream for fleet-level choices (which assets fail, and how)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*stream, _FLEET_STREAM)))


def plan_assets(
    assets: int,
    rng: np.random.Generator,
    duration_s: float,
    *,
    name: Callable[[int], str],
    sensors: Sequence[str],
    faults: Sequence[enum.StrEnum],
    fault_fraction: float,
    sensor_fault_fraction: float,
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
        sensor_name = sensors[int(rng.integers(len(sensors)))]
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
        specs.append(AssetSpec(name(index), index, fault, sensor_faults))
    return specs


def _check_spec(spec: AssetSpec, kinds: type[enum.StrEnum], sensors: Sequence[str]) -> None:
    """Refuse a plan made for another machine: a fault or sensor this one does not have."""
    if spec.fault is not None and not isinstance(spec.fault.kind, kinds):
        raise ValueError(f"{spec.asset}: {spec.fault.kind!r} is not a {kinds.__name__}")
    for sf in spec.sensor_faults:
        if sf.sensor not in sensors:
            raise ValueError(f"{spec.asset}: no sensor {sf.sensor!r} on this machine")


def sample_times(duration_s: float, rate_hz: float) -> FloatArray:
    """Run seconds of every sample of a full (not failing) run: ``k / rate_hz``."""
    if rate_hz <= 0 or duration_s < 0:
        raise ValueError("rate_hz must be > 0 and duration_s >= 0")
    n_full = math.floor(duration_s * rate_hz + 1e-9) + 1
    return np.arange(n_full, dtype=np.float64) * (1.0 / rate_hz)


def first_order_lag(target: FloatArray, dt_s: float, tau_s: float, initial: float) -> FloatArray:
    """Exact discretisation of dy/dt = (x - y) / tau for piecewise-constant x."""
    alpha = math.exp(-dt_s / tau_s)
    out = np.empty_like(target)
    y = initial
    beta = 1.0 - alpha
    for i, x in enumerate(target.tolist()):
        y = alpha * y + beta * x
        out[i] = y
    return out


def piecewise_levels(
    rng: np.random.Generator, duration_s: float, mean_interval_s: float, max_events: int
) -> tuple[FloatArray, FloatArray]:
    """Event times (starting with 0) and one uniform draw per segment, fixed size."""
    gaps = rng.exponential(mean_interval_s, size=max_events)
    starts = np.concatenate(([0.0], np.cumsum(gaps)[:-1]))
    levels = rng.uniform(-1.0, 1.0, size=max_events)
    keep = starts <= duration_s
    return starts[keep], levels[keep]


def step_profile(
    rng: np.random.Generator, t: FloatArray, duration_s: float, max_events: int
) -> FloatArray:
    """A level in [-1, 1] per sample that steps at random times, several per run.

    The mean time between steps is a sixth of the run, at least 30 s and at most 2 h.
    """
    interval = min(max(duration_s / 6.0, 30.0), 7200.0)
    starts, levels = piecewise_levels(rng, duration_s, interval, max_events)
    return levels[np.searchsorted(starts, t, side="right") - 1]


def plant_hour(t: FloatArray, clock_start_h: float) -> FloatArray:
    """Hour of the plant's day at run second ``t``, the clock reading ``clock_start_h`` at 0."""
    return ((clock_start_h + t / 3600.0) % 24.0).astype(np.float64)


def is_night(hour: FloatArray) -> npt.NDArray[np.bool_]:
    """The night shift, 22:00 to 06:00: lower demand."""
    return (hour >= 22.0) | (hour < 6.0)


def daily_swing_c(hour: FloatArray) -> FloatArray:
    """The plant room's temperature swing over a day, warmest in the afternoon (+-3 C)."""
    return 3.0 * np.sin(2.0 * math.pi * (hour - 9.0) / 24.0)


def severity(t: FloatArray, plan: FaultPlan, exponent: float) -> FloatArray:
    """0 before onset, rising to 1 at failure along ``x ** exponent``."""
    span = max(plan.failure_s - plan.onset_s, 1e-9)
    x = np.clip((t - plan.onset_s) / span, 0.0, 1.0)
    return np.asarray(x**exponent, dtype=np.float64)


def fault_labels(t: FloatArray, plan: FaultPlan | None) -> ObjectArray:
    """The machine fault label per sample: :data:`NO_FAULT` before onset."""
    labels = np.full(t.shape[0], NO_FAULT, dtype=object)
    if plan is not None:
        labels[t >= plan.onset_s] = plan.kind.value
    return labels


def _apply_sensor_faults(
    values: dict[str, FloatArray],
    t: FloatArray,
    rate_hz: float,
    plans: Sequence[SensorFaultPlan],
    decimals: Mapping[str, int],
) -> tuple[ObjectArray, BoolArray]:
    """Corrupt ``values`` in place; the label per sample and which samples are sent."""
    n_full = t.shape[0]
    dt = 1.0 / rate_hz
    sensor_label = np.full(n_full, "", dtype=object)
    keep = np.ones(n_full, dtype=np.bool_)
    for sf in plans:
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
            series[mask] = np.round(series[mask] + offset, decimals[sf.sensor])
        elif sf.kind is SensorFault.DROPOUT:
            keep &= ~mask
    return sensor_label, keep


def _finish_run(
    spec: AssetSpec,
    params: P,
    *,
    t: FloatArray,
    ts: FloatArray,
    rate_hz: float,
    duration_s: float,
    clean: Mapping[str, FloatArray],
    decimals: Mapping[str, int],
    fault_label: ObjectArray,
    running: BoolArray,
) -> MachineRun[P]:
    """Quantise, apply sensor faults, cut a failing run at failure, attach ground truth.

    ``decimals`` names the sensors in the order the machine reports them. A failing
    asset's last sample is the last one at or before its failure time.
    """
    sensors = tuple(decimals)
    # Quantise before sensor faults so that stuck values repeat exactly.
    values = {s: np.round(clean[s], decimals[s]) for s in sensors}
    sensor_label, keep = _apply_sensor_faults(values, t, rate_hz, spec.sensor_faults, decimals)

    plan = spec.fault
    n_full = t.shape[0]
    n = n_full
    failed = False
    if plan is not None and plan.failure_s <= duration_s:
        n = math.floor(plan.failure_s * rate_hz + 1e-9) + 1
        n = min(n, n_full)
        failed = True
    keep[n:] = False
    rul = np.full(n_full, math.inf) if not failed or plan is None else plan.failure_s - t
    return MachineRun(
        spec=spec,
        params=params,
        ts=ts[keep],
        values={s: values[s][keep] for s in sensors},
        fault=[str(x) for x in fault_label[keep]],
        rul_s=np.asarray(rul[keep], dtype=np.float64),
        sensor_fault=[str(x) for x in sensor_label[keep]],
        failed=failed,
        running=running[keep],
    )


@dataclass(frozen=True, slots=True)
class Timeline:
    """The sample times of a run, as a machine model sees them."""

    #: Run seconds of every sample of a full (not failing) run.
    t: FloatArray
    dt_s: float
    duration_s: float
    #: Hour of the plant's day at each sample.
    hour: FloatArray


@dataclass(frozen=True, slots=True)
class Sampled(Generic[P]):
    """What a machine model computes for one asset, before quantisation and sensor faults."""

    params: P
    clean: dict[str, FloatArray]
    #: True while the machine's motor turns.
    running: BoolArray


#: A machine model: the asset's plan, its random stream (nameplate draws first) and
#: the timeline in; nameplate, clean sensor values and running state out. It must
#: make every draw whether or not the asset has a fault, so that twins stay aligned.
Model = Callable[[AssetSpec, np.random.Generator, Timeline], Sampled[P]]


@dataclass(frozen=True, slots=True)
class MachineKind(Generic[P]):
    """One kind of machine: its names, sensors, faults, seed branch and model."""

    #: Asset names are ``<prefix>-001``, ``<prefix>-002`` ...
    prefix: str
    #: Branch of the seed tree; the pumps use the root ``()``.
    stream: tuple[int, ...]
    #: Decimal places per sensor, in the order the machine reports them.
    decimals: Mapping[str, int]
    #: The machine's fault enum, with a ``NONE`` member valued :data:`NO_FAULT`.
    faults: type[enum.StrEnum]
    model: Model[P]

    @property
    def sensors(self) -> tuple[str, ...]:
        return tuple(self.decimals)

    @property
    def fault_kinds(self) -> tuple[enum.StrEnum, ...]:
        """Every fault of the machine, ``NONE`` left out."""
        return tuple(f for f in self.faults if f.value != NO_FAULT)

    def asset_name(self, index: int) -> str:
        return f"{self.prefix}-{index + 1:03d}"

    def plan_fleet(
        self,
        assets: int,
        seed: int,
        duration_s: float,
        *,
        fault_fraction: float = 0.3,
        sensor_fault_fraction: float = 0.0,
        faults: Sequence[enum.StrEnum] | None = None,
    ) -> list[AssetSpec]:
        """:func:`plan_assets` for this kind, from its own fleet-level random stream.

        ``faults`` defaults to every fault of the machine.
        """
        return plan_assets(
            assets,
            fleet_rng(seed, self.stream),
            duration_s,
            name=self.asset_name,
            sensors=self.sensors,
            faults=self.fault_kinds if faults is None else faults,
            fault_fraction=fault_fraction,
            sensor_fault_fraction=sensor_fault_fraction,
        )

    def simulate_asset(
        self,
        spec: AssetSpec,
        *,
        seed: int,
        start_ts: float,
        duration_s: float,
        rate_hz: float,
        clock_start_h: float = DEFAULT_CLOCK_START_H,
    ) -> MachineRun[P]:
        """Simulate one asset from ``start_ts`` for ``duration_s`` (or until it fails).

        Samples are at ``start_ts + k / rate_hz``; a failing asset's last sample is the
        last one at or before its failure time (RUL 0 or just above). Shifts and the
        ambient temperature follow the plant's clock, which reads ``clock_start_h`` at
        the first sample: the samples do not depend on ``start_ts``, so a live run
        started at any time of day gives the same values as the offline dataset.
        """
        t = sample_times(duration_s, rate_hz)
        _check_spec(spec, self.faults, self.sensors)
        rng = asset_rng(seed, spec.index, self.stream)
        timeline = Timeline(t, 1.0 / rate_hz, duration_s, plant_hour(t, clock_start_h))
        sampled = self.model(spec, rng, timeline)
        return _finish_run(
            spec,
            sampled.params,
            t=t,
            ts=start_ts + t,
            rate_hz=rate_hz,
            duration_s=duration_s,
            clean=sampled.clean,
            decimals=self.decimals,
            fault_label=fault_labels(t, spec.fault),
            running=sampled.running,
        )
