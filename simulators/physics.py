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

Lazy generation: :meth:`MachineKind.iter_chunks` computes a run a chunk of samples at
a time, with memory bounded by the chunk, and gives the same samples bit for bit as
the whole run (:meth:`MachineKind.simulate_asset`, which is the same code with one
chunk). What carries from one chunk to the next: the filters' outputs
(:class:`Lag`), a model's own sequential state, the value a stuck sensor holds, and
the random streams.

Where a model's noise comes from is the run's :class:`NoiseLayout`; the physics is
the same code in both:

- ``WHOLE_RUN`` (the datasets, so ``edgewatch train`` and the shipped bundle's
  training data keep their samples): the asset's stream draws whole-run blocks, one
  after the other (all of one sensor's, then the next sensor's). :class:`RandomBlocks`
  serves each block a chunk at a time from its own copy of the generator, positioned
  at the block's start by drawing through the blocks before it (values discarded).
  That walk grows with the run's length, about 13 ns per sample and noise block on a
  2020s x86 core: 10-15 s before the first chunk of a 30-day, 50-pump fleet at one
  sample a second.
- ``BLOCKS`` (the streaming fleet): every noise has a stream of its own per block of
  :data:`NOISE_BLOCK_SAMPLES` samples, seeded from the asset's node of the seed tree
  (:class:`BlockStreams`). Any block can be drawn without the ones before it, so the
  work before the first chunk is the chunk's, whatever the run's length. The samples
  do not depend on the chunk size (a block is not a chunk). The values differ from
  ``WHOLE_RUN``'s for the same seed; the process is the same (same draws, same
  distributions; the nameplate, plans and operating point are drawn as before).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
ObjectArray = npt.NDArray[np.object_]

#: Namespace separating fleet-level draws from per-asset streams in the seed tree.
_FLEET_STREAM = 2**32 - 1
#: Namespace of the per-block noise streams under an asset's node (``BLOCKS`` layout).
_NOISE_STREAM = 2**32 - 3

#: The machine-fault label of samples before onset and of healthy assets.
NO_FAULT = "none"
#: Hour of the plant's day at the first sample: the day shift, so that short demo
#: runs show load steps rather than a quiet night.
DEFAULT_CLOCK_START_H = 8.0

P = TypeVar("P")

#: Samples per chunk of lazy generation. A chunk in flight takes about 700 bytes a
#: sample as a message stream holds it (arrays, and the lists messages are cut
#: from): about 9 MB for 50 assets.
DEFAULT_CHUNK_SAMPLES = 256
#: Draws per piece when a random stream is walked to a block's start.
_WALK_PIECE = 65536
#: Samples per noise block of the ``BLOCKS`` layout: a generator costs about 12 us to
#: seed, under 1 % of drawing its block, and entering a run at any sample draws at
#: most a block's values per noise (under a millisecond).
NOISE_BLOCK_SAMPLES = 65536


class NoiseLayout(enum.StrEnum):
    """Where a model's noise comes from in the seed tree (see the module's docs)."""

    #: Whole-run blocks drawn one after the other from the asset's stream: the
    #: datasets' samples, as they have always been.
    WHOLE_RUN = "whole-run"
    #: A stream per noise and block of :data:`NOISE_BLOCK_SAMPLES`: enter anywhere.
    BLOCKS = "blocks"


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


def asset_seed(seed: int, index: int, stream: tuple[int, ...] = ()) -> np.random.SeedSequence:
    """Asset ``index``'s node of the seed tree: independent of fleet size and of other assets.

    ``stream`` is the machine kind's branch of the seed tree (empty for pumps).
    """
    return np.random.SeedSequence(seed, spawn_key=(*stream, index))


def asset_rng(seed: int, index: int, stream: tuple[int, ...] = ()) -> np.random.Generator:
    """The random stream of asset ``index`` (:func:`asset_seed`)."""
    return np.random.default_rng(asset_seed(seed, index, stream))


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


class Lag:
    """:func:`first_order_lag` a chunk at a time: the output carries to the next chunk.

    The first chunk starts from ``initial``, or from its own first target when None,
    as the whole-run filter does.
    """

    __slots__ = ("dt_s", "tau_s", "y")

    def __init__(self, dt_s: float, tau_s: float) -> None:
        self.dt_s, self.tau_s = dt_s, tau_s
        self.y: float | None = None

    def __call__(self, target: FloatArray, initial: float | None = None) -> FloatArray:
        if self.y is None:
            self.y = float(target[0]) if initial is None else initial
        out = first_order_lag(target, self.dt_s, self.tau_s, self.y)
        if out.shape[0]:
            self.y = float(out[-1])
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
    return StepProfile(rng, duration_s, max_events)(t)


class StepProfile:
    """:func:`step_profile` drawn once and read at any sample times (chunk by chunk)."""

    __slots__ = ("levels", "starts")

    def __init__(self, rng: np.random.Generator, duration_s: float, max_events: int) -> None:
        interval = min(max(duration_s / 6.0, 30.0), 7200.0)
        self.starts, self.levels = piecewise_levels(rng, duration_s, interval, max_events)

    def __call__(self, t: FloatArray) -> FloatArray:
        return self.levels[np.searchsorted(self.starts, t, side="right") - 1]


#: How a block of draws is made: ``standard_normal(n)``, ``random(n)``, or
#: ``uniform(low, high, n)`` (the last two take one 64-bit draw per value).
Draw = tuple[Literal["normal", "random"]] | tuple[Literal["uniform"], float, float]


class Noise(Protocol):
    """A model's named noise, served a chunk at a time in sample order."""

    def take(self, name: str, count: int) -> FloatArray:
        """The next ``count`` draws of noise ``name``."""
        ...


def _draw(gen: np.random.Generator, draw: Draw, count: int) -> FloatArray:
    """``count`` draws of kind ``draw`` (every noise draw of both layouts goes through here)."""
    if draw[0] == "normal":
        return gen.standard_normal(count)
    if draw[0] == "random":
        return gen.random(count)
    return gen.uniform(draw[1], draw[2], size=count)


class RandomBlocks:
    """Whole-run blocks of draws, served a chunk at a time, as one stream drew them.

    A model used to draw ``n`` values of each block in turn from ``rng``; this gives
    block ``name`` out ``take(name, count)`` at a time, bit for bit the same values.
    Only the blocks in ``needed`` are served, and the stream is walked only as far
    as the last of them starts (a block of uniform draws is skipped in O(1)).
    """

    __slots__ = ("_gens", "_kinds", "_left")

    def __init__(
        self,
        rng: np.random.Generator,
        n: int,
        blocks: Sequence[tuple[str, Draw]],
        needed: frozenset[str] | None = None,
    ) -> None:
        want = {name for name, _ in blocks} if needed is None else set(needed)
        self._gens: dict[str, np.random.Generator] = {}
        self._kinds = dict(blocks)
        self._left = {name: n for name in want}
        last = max((i for i, (name, _) in enumerate(blocks) if name in want), default=-1)
        walker = rng
        for i, (name, draw) in enumerate(blocks[: last + 1]):
            if name in want:
                self._gens[name] = _copy(walker)
            if i == last:
                break
            if draw[0] == "normal":
                done = 0
                while done < n:  # the ziggurat takes a varying number of draws
                    piece = min(_WALK_PIECE, n - done)
                    _draw(walker, draw, piece)
                    done += piece
            else:
                bits = walker.bit_generator
                if not isinstance(bits, np.random.PCG64):
                    raise TypeError("skipping draws needs PCG64 (the asset streams' generator)")
                bits.advance(n)
        # ``rng`` itself is left wherever the walk ended: the model draws nothing after.

    def take(self, name: str, count: int) -> FloatArray:
        left = self._left[name]
        if count > left:
            raise ValueError(f"block {name!r} has {left} draws left, not {count}")
        self._left[name] = left - count
        return _draw(self._gens[name], self._kinds[name], count)


class BlockStreams:
    """Each noise a run long, drawn from a stream of its own per block of samples.

    Noise ``name``, at position ``i`` of ``blocks``, draws samples ``[j * block_samples,
    (j + 1) * block_samples)`` from the seed tree's node ``(*asset, _NOISE_STREAM, i,
    j)`` under ``asset`` (the asset's node, :func:`asset_seed`). Nothing is drawn for
    a noise not in ``needed``, and no block depends on another, so serving a chunk
    costs the chunk's draws and, at a block's start, seeding one generator. The draws
    do not depend on how the run is cut into ``take`` calls.
    """

    __slots__ = ("_asset", "_block", "_gens", "_index", "_kinds", "_left", "_pos")

    def __init__(
        self,
        asset: np.random.SeedSequence,
        n: int,
        blocks: Sequence[tuple[str, Draw]],
        needed: frozenset[str] | None = None,
        block_samples: int = NOISE_BLOCK_SAMPLES,
    ) -> None:
        if block_samples < 1:
            raise ValueError("block_samples must be >= 1")
        want = {name for name, _ in blocks} if needed is None else set(needed)
        self._asset, self._block = asset, block_samples
        # Positions in the full list, needed or not: a noise's streams never move.
        self._index = {name: i for i, (name, _) in enumerate(blocks)}
        self._kinds = dict(blocks)
        self._left = {name: n for name in want}
        self._pos = {name: 0 for name in want}
        self._gens: dict[str, np.random.Generator] = {}

    def block_stream(self, name: str, block: int) -> np.random.Generator:
        """The generator of noise ``name``'s block ``block``, at the block's start."""
        node = self._asset
        key = (*node.spawn_key, _NOISE_STREAM, self._index[name], block)
        return np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(node.entropy, spawn_key=key))
        )

    def take(self, name: str, count: int) -> FloatArray:
        left = self._left[name]
        if count > left:
            raise ValueError(f"noise {name!r} has {left} draws left, not {count}")
        self._left[name] = left - count
        pos, draw = self._pos[name], self._kinds[name]
        pieces: list[FloatArray] = []
        end = pos + count
        while pos < end:
            block, offset = divmod(pos, self._block)
            if offset == 0:
                self._gens[name] = self.block_stream(name, block)
            gen = self._gens[name]
            piece = min(end - pos, self._block - offset)
            pieces.append(_draw(gen, draw, piece))
            pos += piece
        self._pos[name] = pos
        if len(pieces) == 1:
            return pieces[0]
        return np.concatenate(pieces) if pieces else np.empty(0)


def noise_source(
    rng: np.random.Generator,
    run: RunInfo,
    blocks: Sequence[tuple[str, Draw]],
    needed: frozenset[str] | None = None,
) -> Noise:
    """A model's noise, a run long each, in the run's :class:`NoiseLayout`.

    ``blocks`` names every noise the model has, in a fixed order (the order of the
    whole-run blocks, and the index of each noise's block streams); ``needed`` those
    it will take. ``rng`` is the asset's stream after the model's other draws: the
    ``WHOLE_RUN`` layout draws on from it, ``BLOCKS`` leaves it alone.
    """
    if run.noise is NoiseLayout.WHOLE_RUN:
        return RandomBlocks(rng, run.n_full, blocks, needed)
    return BlockStreams(run.seed, run.n_full, blocks, needed)


def _copy(rng: np.random.Generator) -> np.random.Generator:
    bits = type(rng.bit_generator)()
    bits.state = rng.bit_generator.state
    return np.random.Generator(bits)


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


def _time_at(k: int, rate_hz: float) -> float:
    """Run seconds of sample ``k``, computed as :func:`sample_times` computes it."""
    return float(np.float64(k) * (1.0 / rate_hz))


def _first_at_or_after(limit_s: float, rate_hz: float, n_full: int) -> int:
    """The first sample index whose time is >= ``limit_s`` (``n_full`` if none)."""
    if not limit_s > 0:
        return 0
    k = min(max(math.ceil(limit_s * rate_hz) - 2, 0), n_full)
    while k < n_full and _time_at(k, rate_hz) < limit_s:
        k += 1
    return k


def sensor_fault_range(sf: SensorFaultPlan, rate_hz: float, n_full: int) -> tuple[int, int]:
    """Sample indices ``[lo, hi)`` the fault covers in a run of ``n_full`` samples.

    Samples at times in ``[start_s, end_s)``; a fault between two samples covers the
    one at ``int(start_s * rate_hz)`` (the last sample if that is past the end).
    """
    lo = _first_at_or_after(sf.start_s, rate_hz, n_full)
    hi = _first_at_or_after(sf.end_s, rate_hz, n_full)
    if hi <= lo:
        lo = min(int(sf.start_s * rate_hz), n_full - 1)
        hi = lo + 1
    return lo, hi


def failure_cut(plan: FaultPlan | None, duration_s: float, rate_hz: float, n_full: int) -> int:
    """Samples a run keeps before the cut at failure (``n_full`` when it does not fail)."""
    if plan is not None and plan.failure_s <= duration_s:
        return min(math.floor(plan.failure_s * rate_hz + 1e-9) + 1, n_full)
    return n_full


@dataclass
class _FaultState:
    """What sensor faults carry from one chunk to the next."""

    #: Plan position -> the value a stuck sensor holds (its first faulty sample's).
    stuck: dict[int, float] = field(default_factory=dict)
    #: Plan position -> mean absolute value of the drifting sensor over the whole run.
    drift_mean: dict[int, float] = field(default_factory=dict)


def _apply_sensor_faults(
    values: dict[str, FloatArray],
    k: npt.NDArray[np.int64],
    t: FloatArray,
    rate_hz: float,
    n_full: int,
    plans: Sequence[SensorFaultPlan],
    decimals: Mapping[str, int],
    state: _FaultState,
    drift_mean: Callable[[int], float],
) -> tuple[ObjectArray, BoolArray]:
    """Corrupt one chunk's ``values`` in place (samples ``k``, times ``t``).

    Returns the label per sample and which samples are sent. ``drift_mean(j)`` is
    plan ``j``'s whole-run mean absolute value of its sensor (with the plans before
    it applied).
    """
    n = t.shape[0]
    dt = 1.0 / rate_hz
    sensor_label = np.full(n, "", dtype=object)
    keep = np.ones(n, dtype=np.bool_)
    for j, sf in enumerate(plans):
        lo, hi = sensor_fault_range(sf, rate_hz, n_full)
        mask = (k >= lo) & (k < hi)
        if not mask.any():
            continue
        sensor_label[mask] = sf.label
        series = values[sf.sensor]
        if sf.kind is SensorFault.STUCK:
            if j not in state.stuck:
                state.stuck[j] = float(series[int(np.argmax(mask))])
            series[mask] = state.stuck[j]
        elif sf.kind is SensorFault.SPIKE:
            series[mask] = np.round(series[mask] * sf.magnitude + sf.magnitude, 3)
        elif sf.kind is SensorFault.DRIFT:
            if j not in state.drift_mean:
                state.drift_mean[j] = drift_mean(j)
            ramp = np.clip((t[mask] - sf.start_s) / max(sf.end_s - sf.start_s, dt), 0.0, 1.0)
            offset = sf.magnitude * max(state.drift_mean[j], 1.0) * ramp
            series[mask] = np.round(series[mask] + offset, decimals[sf.sensor])
        elif sf.kind is SensorFault.DROPOUT:
            keep &= ~mask
    return sensor_label, keep


@dataclass(frozen=True, slots=True)
class Timeline:
    """The sample times of a run, or of one chunk of it, as a machine model sees them."""

    #: Run seconds of every sample (of the chunk).
    t: FloatArray
    dt_s: float
    duration_s: float
    #: Hour of the plant's day at each sample.
    hour: FloatArray
    #: Index of the first sample in the run, and the run's length in samples.
    start: int = 0
    n_full: int = 0


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a model knows of the whole run before its first chunk."""

    dt_s: float
    duration_s: float
    #: Samples of a full (not failing) run; every noise is this long.
    n_full: int
    #: The asset's node of the seed tree (:func:`asset_seed`).
    seed: np.random.SeedSequence
    #: Where the model's noise comes from (:func:`noise_source`).
    noise: NoiseLayout = NoiseLayout.WHOLE_RUN


@dataclass(frozen=True, slots=True)
class Sampled(Generic[P]):
    """What a machine model computes for one asset, before quantisation and sensor faults."""

    params: P
    clean: dict[str, FloatArray]
    #: True while the machine's motor turns.
    running: BoolArray


class ChunkModel(Protocol[P]):
    """One asset's model, ready to compute its run a chunk at a time, in order."""

    @property
    def params(self) -> P: ...

    def chunk(self, timeline: Timeline) -> Sampled[P]: ...


#: A machine model: the asset's plan, its random stream (nameplate draws first) and
#: the run in; an object that computes clean sensor values and running state a chunk
#: at a time out. It must make every draw whether or not the asset has a fault, so
#: that twins stay aligned.
Model = Callable[[AssetSpec, np.random.Generator, RunInfo], ChunkModel[P]]


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
        noise: NoiseLayout = NoiseLayout.WHOLE_RUN,
    ) -> MachineRun[P]:
        """Simulate one asset from ``start_ts`` for ``duration_s`` (or until it fails).

        Samples are at ``start_ts + k / rate_hz``; a failing asset's last sample is the
        last one at or before its failure time (RUL 0 or just above). Shifts and the
        ambient temperature follow the plant's clock, which reads ``clock_start_h`` at
        the first sample: the samples do not depend on ``start_ts``, so a live run
        started at any time of day gives the same values as another run in the same
        ``noise`` layout.

        The whole run as one chunk of :meth:`iter_chunks`.
        """
        n_full = sample_times(duration_s, rate_hz).shape[0] if rate_hz > 0 else 0
        chunks = list(
            self.iter_chunks(
                spec,
                seed=seed,
                start_ts=start_ts,
                duration_s=duration_s,
                rate_hz=rate_hz,
                clock_start_h=clock_start_h,
                chunk_samples=max(n_full, 1),
                noise=noise,
            )
        )
        return concat_runs(chunks)

    def planned_samples(self, spec: AssetSpec, *, duration_s: float, rate_hz: float) -> int:
        """How many samples :meth:`iter_chunks` yields, without simulating any."""
        n_full = math.floor(duration_s * rate_hz + 1e-9) + 1
        cut = failure_cut(spec.fault, duration_s, rate_hz, n_full)
        dropped = sorted(
            sensor_fault_range(sf, rate_hz, n_full)
            for sf in spec.sensor_faults
            if sf.kind is SensorFault.DROPOUT
        )
        gone, reach = 0, 0
        for lo, hi in dropped:
            lo, hi = max(lo, reach), min(hi, cut)
            if hi > lo:
                gone += hi - lo
            reach = max(reach, hi)
        return cut - gone

    def iter_chunks(
        self,
        spec: AssetSpec,
        *,
        seed: int,
        start_ts: float,
        duration_s: float,
        rate_hz: float,
        clock_start_h: float = DEFAULT_CLOCK_START_H,
        chunk_samples: int = DEFAULT_CHUNK_SAMPLES,
        noise: NoiseLayout = NoiseLayout.WHOLE_RUN,
    ) -> Iterator[MachineRun[P]]:
        """:meth:`simulate_asset` a chunk of ``chunk_samples`` samples at a time.

        Each chunk is a :class:`MachineRun` of the samples kept in it (dropouts left
        out, so it may be short or empty); their concatenation is the whole run, bit
        for bit. Generation stops at the cut at failure. The work before the first
        chunk grows with the run's length in the ``WHOLE_RUN`` noise layout, not in
        ``BLOCKS`` (see the module's docs).
        """
        if chunk_samples < 1:
            raise ValueError("chunk_samples must be >= 1")
        if rate_hz <= 0 or duration_s < 0:
            raise ValueError("rate_hz must be > 0 and duration_s >= 0")
        _check_spec(spec, self.faults, self.sensors)
        n_full = math.floor(duration_s * rate_hz + 1e-9) + 1
        cut = failure_cut(spec.fault, duration_s, rate_hz, n_full)
        return self._chunks(
            spec,
            seed,
            start_ts,
            duration_s,
            rate_hz,
            clock_start_h,
            chunk_samples,
            n_full,
            cut,
            NoiseLayout(noise),
        )

    def _chunks(
        self,
        spec: AssetSpec,
        seed: int,
        start_ts: float,
        duration_s: float,
        rate_hz: float,
        clock_start_h: float,
        chunk_samples: int,
        n_full: int,
        stop: int,
        noise: NoiseLayout,
    ) -> Iterator[MachineRun[P]]:
        """Chunks of samples ``[0, stop)``."""
        dt = 1.0 / rate_hz
        node = asset_seed(seed, spec.index, self.stream)
        model = self.model(
            spec, np.random.default_rng(node), RunInfo(dt, duration_s, n_full, node, noise)
        )
        plans = spec.sensor_faults
        state = _FaultState()
        failed = spec.fault is not None and spec.fault.failure_s <= duration_s

        def drift_mean(j: int) -> float:
            # The mean over every sample of the run (none cut or dropped) of the
            # sensor as the plans before j leave it: a second pass over the whole
            # run, the first time a chunk reaches the drift.
            before = tuple(sf for sf in plans[:j] if sf.kind is not SensorFault.DROPOUT)
            series = np.concatenate(
                [
                    c.values[plans[j].sensor]
                    for c in self._chunks(
                        replace(spec, sensor_faults=before),
                        seed,
                        start_ts,
                        duration_s,
                        rate_hz,
                        clock_start_h,
                        chunk_samples,
                        n_full,
                        n_full,
                        noise,
                    )
                ]
            )
            return float(np.mean(np.abs(series)))

        for a in range(0, stop, chunk_samples):
            b = min(a + chunk_samples, stop)
            k = np.arange(a, b, dtype=np.int64)
            t = np.arange(a, b, dtype=np.float64) * dt
            timeline = Timeline(t, dt, duration_s, plant_hour(t, clock_start_h), a, n_full)
            sampled = model.chunk(timeline)
            # Quantise before sensor faults so that stuck values repeat exactly.
            values = {s: np.round(sampled.clean[s], d) for s, d in self.decimals.items()}
            labels, keep = _apply_sensor_faults(
                values, k, t, rate_hz, n_full, plans, self.decimals, state, drift_mean
            )
            plan = spec.fault
            rul = np.full(b - a, math.inf) if not failed or plan is None else plan.failure_s - t
            yield MachineRun(
                spec=spec,
                params=model.params,
                ts=(start_ts + t)[keep],
                values={s: values[s][keep] for s in self.decimals},
                fault=[str(x) for x in fault_labels(t, plan)[keep]],
                rul_s=np.asarray(rul[keep], dtype=np.float64),
                sensor_fault=[str(x) for x in labels[keep]],
                failed=failed,
                running=sampled.running[keep],
            )


def concat_runs(chunks: Sequence[MachineRun[P]]) -> MachineRun[P]:
    """The chunks of one run (:meth:`MachineKind.iter_chunks`) as one run."""
    first = chunks[0]
    return MachineRun(
        spec=first.spec,
        params=first.params,
        ts=np.concatenate([c.ts for c in chunks]),
        values={s: np.concatenate([c.values[s] for c in chunks]) for s in first.values},
        fault=[x for c in chunks for x in c.fault],
        rul_s=np.concatenate([c.rul_s for c in chunks]),
        sensor_fault=[x for c in chunks for x in c.sensor_fault],
        failed=first.failed,
        running=np.concatenate([c.running for c in chunks]),
    )
