"""The windowing stage: readings in, windows (and commissioning requests) out.

Input: :class:`~agent.domain.Inbound` from the subscriber. Outputs, in order:

- to the recorder, one :class:`~agent.domain.Accepted` per message (readings to keep,
  late readings to judge, the dead letter) plus :class:`~agent.domain.Event` items;
- to inference, :class:`~agent.domain.Window` for commissioned assets and one
  :class:`~agent.domain.CommissionRequest` per new asset once its baseline is full.

Shedding policy: the recorder queue is never shed (a full one blocks the subscriber,
which stops acknowledging, which stops the broker). The inference queue sheds (see
:mod:`agent.windowing.queue`): when it is full, an older queued window makes way for the
new one, so the newest window of each asset is the one scored; every window dropped is
counted (``windows_shed``). The readings are still stored, so nothing is lost for
retraining. A message completing more windows than the queue has room for makes only
its newest ones (at least one); the others are never cut, only counted.

Asset cap (``max_assets``): every asset costs a stream buffer and, until its baseline
is requested, its learning votes or baseline samples, so a publisher inventing asset
names would grow memory without end. When a message brings a new asset and the cap is
reached, the least recently seen asset still learning or collecting is forgotten
(``assets_evicted``; its readings are already stored, only their copy in memory goes,
and it starts over if it comes back). Assets commissioning or monitoring are never
evicted; when only those are left, the new asset's message is a dead letter
(``too_many_assets``) and one event says so until a new asset fits again.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.domain import (
    Accepted,
    AssetPlan,
    Batch,
    CommissionRequest,
    DeadLetter,
    Event,
    FloatArray,
    Inbound,
    Reading,
    RejectReason,
    Window,
    dead_letter,
    sensor_names,
)
from agent.errors import PayloadError
from agent.logs import fields
from agent.metrics import Metrics
from agent.profiles import LEARN_GIVE_UP_FACTOR, BundleShape, Profiles, majority_set
from agent.windowing.queue import WindowQueue
from agent.windowing.stream import AssetStream, Verdict

log = logging.getLogger(__name__)

#: Shed windows and evicted assets are logged at most this often.
SHED_LOG_INTERVAL_S = 30.0

ToRecorder = Accepted | Event

#: Messages in a row that must show the same different sensor set before it counts
#: as a change for good (one event) rather than a bad message (a dead letter).
SENSOR_CHANGE_MESSAGES = 10


class Phase(enum.Enum):
    LEARNING = "learning"  # voting on the sensor set
    COLLECTING = "collecting"  # filling the baseline
    COMMISSIONING = "commissioning"  # baseline requested; windows go on to inference
    MONITORING = "monitoring"


#: Phases whose state can be dropped and rebuilt from the asset's next messages:
#: nothing downstream (inference, alerting) holds anything for them yet.
EVICTABLE = frozenset({Phase.LEARNING, Phase.COLLECTING})


@dataclass
class _Collector:
    """First samples of an asset that has no baseline yet."""

    rows: FloatArray
    ts: list[int] = field(default_factory=list)


@dataclass
class _Asset:
    """What the windowing stage knows of one asset."""

    phase: Phase
    plan: AssetPlan | None = None
    #: The plan's sensors as a set (compared with every message's).
    planned: frozenset[str] = frozenset()
    stream: AssetStream | None = None
    votes: list[frozenset[str]] = field(default_factory=list)
    #: Readings seen while learning: they become the start of the baseline.
    learnt: list[Reading] = field(default_factory=list)
    collector: _Collector | None = None
    #: A sensor set seen instead of the plan's in the last messages, and how often.
    other: frozenset[str] | None = None
    other_count: int = 0
    #: The set last reported in a ``sensor_set_changed`` event (None: none reported).
    reported: frozenset[str] | None = None


@dataclass
class _Out:
    """What one message is becoming (see :class:`Output`)."""

    #: The readings kept, as the runs they were kept in: a batch kept whole stays one
    #: :class:`Batch` (columns) all the way to storage.
    kept: list[Sequence[Reading]] = field(default_factory=list)
    late: list[tuple[Reading, RejectReason]] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)
    requests: list[CommissionRequest] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    rejected: DeadLetter | None = None
    #: Room left in the inference queue (None: unbounded), and windows shed for the
    #: lack of it without being made.
    room: int | None = None
    shed: int = 0


@dataclass(frozen=True, slots=True)
class Output:
    accepted: Accepted
    windows: tuple[Window, ...]
    requests: tuple[CommissionRequest, ...]
    events: tuple[Event, ...]
    shed: int = 0


class WindowAssembler:
    """Owns every asset's sensor set and :class:`AssetStream`; runs on the event loop.

    An asset's life here: its sensor set is learnt from its first messages (or
    taken from its profile), which fixes its plan; its first readings fill the
    baseline, then a :class:`CommissionRequest` goes to inference; from then on its
    windows go to inference too (which holds them until the baseline is ready), and
    the asset is monitoring once the runtime calls :meth:`mark_commissioned`.
    """

    def __init__(
        self,
        *,
        profiles: Profiles,
        bundle: BundleShape,
        window: int,
        hop: int,
        reorder_samples: int,
        gap_factor: float,
        commissioned: Mapping[str, AssetPlan],
        metrics: Metrics,
        dead_letter_max_bytes: int = 4096,
        max_assets: int | None = None,
    ) -> None:
        """``max_assets``: most assets held at once (None: no cap), see the module doc."""
        self.profiles = profiles
        self.max_assets = max_assets
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.bundle = bundle
        self.window = window
        self.hop = hop
        self.reorder_samples = reorder_samples
        self.gap_factor = gap_factor
        self.metrics = metrics
        self._assets: dict[str, _Asset] = {}
        #: The assets in an EVICTABLE phase, least recently seen first.
        self._idle: OrderedDict[str, None] = OrderedDict()
        #: A new asset was refused and no new one admitted since (one event per spell).
        self._refusing = False
        for asset, plan in commissioned.items():
            state = self._asset(asset)
            self._start(asset, state, plan)
            self._enter(asset, state, Phase.MONITORING)
        self._last_shed_log = 0.0
        self._shed_since_log = 0
        self._last_evict_log = 0.0
        self._evicted_since_log = 0

    @property
    def asset_count(self) -> int:
        """Assets whose state is held in memory."""
        return len(self._assets)

    def _enter(self, asset: str, state: _Asset, phase: Phase) -> None:
        state.phase = phase
        if phase in EVICTABLE:
            self._idle[asset] = None
            self._idle.move_to_end(asset)
        else:
            self._idle.pop(asset, None)

    def _asset(self, asset: str) -> _Asset:
        state = self._assets.get(asset)
        if state is None:
            state = self._assets[asset] = _Asset(Phase.LEARNING)
            self._enter(asset, state, Phase.LEARNING)
            fixed = self.profiles.fixed_sensors(asset)
            if fixed is not None:
                self._start(asset, state, self.profiles.plan(asset, fixed, self.bundle))
        return state

    def _admit(self, asset: str, inbound: Inbound, out: _Out) -> _Asset | None:
        """State for a new asset, evicting an idle one at the cap; None: refused."""
        cap = self.max_assets
        if cap is not None and len(self._assets) >= cap:
            if not self._idle:
                self._refuse(asset, inbound, out)
                return None
            victim, _ = self._idle.popitem(last=False)
            del self._assets[victim]
            self._note_eviction(victim)
        self._refusing = False
        return self._asset(asset)

    def _refuse(self, asset: str, inbound: Inbound, out: _Out) -> None:
        reason = RejectReason.TOO_MANY_ASSETS
        detail = (
            f"{self.max_assets} assets held, all commissioning or monitoring: "
            "none idle to make room (ingest.max_assets)"
        )
        out.rejected = dead_letter(
            inbound.topic,
            inbound.payload,
            PayloadError(reason, detail),
            inbound.received_ms,
            self.dead_letter_max_bytes,
            asset,
        )
        self.metrics.dead_letters[reason.value] += 1
        if self._refusing:
            return
        self._refusing = True
        log.warning("asset cap reached: new assets refused", extra=fields(max=self.max_assets))
        out.events.append(
            Event(
                ts_ms=inbound.received_ms,
                kind="too_many_assets",
                level="warning",
                message=(
                    f"{self.max_assets} assets are commissioning or monitoring "
                    f"(ingest.max_assets): messages of new assets such as {asset!r} are "
                    "dead letters (too_many_assets) until one fits"
                ),
                detail={"max_assets": self.max_assets, "first_refused": asset},
            )
        )

    def _note_eviction(self, asset: str) -> None:
        self.metrics.assets_evicted += 1
        self._evicted_since_log += 1
        now = time.monotonic()
        if now - self._last_evict_log >= SHED_LOG_INTERVAL_S:
            log.warning(
                "asset cap reached: idle uncommissioned assets evicted",
                extra=fields(evicted=self._evicted_since_log, max=self.max_assets, latest=asset),
            )
            self._last_evict_log = now
            self._evicted_since_log = 0

    def _start(self, asset: str, state: _Asset, plan: AssetPlan) -> None:
        period_s = self.profiles.for_asset(asset).sample_period_s
        state.plan = plan
        state.planned = frozenset(plan.sensors)
        state.stream = AssetStream(
            asset,
            plan.sensors,
            window=self.window,
            hop=self.hop,
            reorder_samples=self.reorder_samples,
            gap_factor=self.gap_factor,
            period_ms=None if period_s is None else period_s * 1000,
            # Only an asset the bundle scores with nothing to learn: a baseline is
            # learnt from, and judged on, whole windows.
            min_rows=self.bundle.min_rows if plan.from_bundle and not plan.baseline else None,
        )
        self._enter(asset, state, Phase.COLLECTING)

    def plan_of(self, asset: str) -> AssetPlan | None:
        state = self._assets.get(asset)
        return None if state is None else state.plan

    def phase_of(self, asset: str) -> Phase | None:
        state = self._assets.get(asset)
        return None if state is None else state.phase

    def is_commissioned(self, asset: str) -> bool:
        state = self._assets.get(asset)
        return state is not None and state.phase is Phase.MONITORING

    def mark_commissioned(self, asset: str) -> None:
        state = self._assets.get(asset)
        if state is not None and state.plan is not None:
            self._enter(asset, state, Phase.MONITORING)
            state.collector = None

    def recommission(self, asset: str) -> None:
        """Forget the asset's baseline: its sensor set is learnt again (unless its
        profile lists it) and its next samples become the new baseline."""
        self._assets.pop(asset, None)
        self._idle.pop(asset, None)

    def commissioning_failed(self, asset: str) -> None:
        """Collect a fresh baseline for ``asset`` after a failed attempt."""
        state = self._assets.get(asset)
        if state is not None and state.plan is not None:
            self._enter(asset, state, Phase.COLLECTING)
            state.collector = None

    def prime(
        self, asset: str, readings: Iterable[Reading], last_window_end_ms: int | None
    ) -> list[Window]:
        """Refill an asset's buffer from stored readings after a restart. Returns the
        windows of the readings stored after its last scored window: a stop or a crash
        between storing readings and scoring their windows left them unscored, and
        they are scored before anything new (see queries.recent_readings)."""
        state = self._assets.get(asset)
        if state is None or state.stream is None or state.plan is None:
            return []
        needed = set(state.plan.sensors)
        stream = state.stream
        windows: list[Window] = []
        last_end = last_window_end_ms
        resumed = False
        for reading in readings:
            if not needed <= reading.values.keys():
                continue
            if last_end is not None and not resumed and reading.ts_ms > last_end:
                stream.resume_after(last_end)
                resumed = True
            result = stream.add(reading)
            if resumed and result.window is not None:
                windows.append(result.window)
        if not resumed:
            stream.resume_after(last_end)
        return windows

    def process(self, inbound: Inbound, room: int | None = None) -> Output:
        """Pure step for one message; :meth:`run` wires it to the queues.

        ``room``: what the inference queue can take now; of the windows a message
        completes, only the newest ``room`` (at least one) are made, the older ones
        are shed without being made (counted in ``Output.shed``).
        """
        readings = inbound.readings
        out = _Out(room=room)
        if readings:
            # A message carries one asset (its topic), and a batch one sensor set.
            asset = readings[0].asset
            state = self._assets.get(asset)
            if state is None:
                state = self._admit(asset, inbound, out)  # None: refused, out says why
            elif state.phase in EVICTABLE:
                self._idle.move_to_end(asset)
            if state is not None and state.plan is None:
                self._learn(asset, state, readings, out)
            elif state is not None and self._sensors_fit(inbound, state, out):
                self._take(state, readings, out)
        kept = out.kept
        readings_kept: Sequence[Reading] = (
            kept[0] if len(kept) == 1 else tuple(itertools.chain.from_iterable(kept))
        )
        self.metrics.readings_accepted += len(readings_kept)
        accepted = Accepted(
            ref=inbound.ref,
            received_ms=inbound.received_ms,
            readings=readings_kept,
            late=tuple(out.late),
            rejected=inbound.rejected if out.rejected is None else out.rejected,
        )
        return Output(
            accepted, tuple(out.windows), tuple(out.requests), tuple(out.events), out.shed
        )

    def _learn(self, asset: str, state: _Asset, readings: Sequence[Reading], out: _Out) -> None:
        # Kept as they come: a well-formed reading is stored whatever the vote says.
        out.kept.append(readings)
        needed = self.profiles.for_asset(asset).learn_readings
        # A vote per reading, however they are packed: a batch payload of 20 readings
        # weighs what 20 single-reading messages do (it was one vote, so a machine
        # sending batches stayed unlearnt, unscored, for 20 messages).
        if isinstance(readings, Batch):
            state.votes.extend([frozenset(readings.names)] * len(readings))
        else:
            state.votes.extend(frozenset(r.values) for r in readings)
        del state.votes[: -LEARN_GIVE_UP_FACTOR * needed]
        room = self.profiles.commission_samples(asset) - len(state.learnt)
        state.learnt.extend(readings[:room])
        sensors = majority_set(state.votes, needed)
        if sensors is None:
            return
        plan = self.profiles.plan(asset, sensors, self.bundle)
        self._start(asset, state, plan)
        learnt = sorted(state.learnt, key=lambda r: r.ts_ms)
        state.votes, state.learnt = [], []
        out.events.append(
            Event(
                ts_ms=readings[-1].ts_ms,
                kind="sensors_learnt",
                asset=asset,
                message=(
                    f"{asset}: {len(plan.sensors)} sensors learnt"
                    + (" (the model bundle's)" if plan.from_bundle else " (own model)")
                ),
                detail={
                    "sensors": list(plan.sensors),
                    "from_bundle": plan.from_bundle,
                    "rul": plan.rul,
                },
            )
        )
        # The readings of the vote that have the set start the baseline; the stream
        # judges their order as it would have live (they are already kept).
        assert state.stream is not None
        usable = set(plan.sensors)
        if sensors != usable:
            # The set it was learnt from carries sensors the plan does not use (a
            # bundle's subset): those are ignored from the start, not a change later.
            state.other = state.reported = sensors
        for reading in learnt:
            if not usable <= reading.values.keys():
                continue
            self.metrics.sensor_values_ignored += len(reading.values) - len(usable)
            if state.stream.add(reading).accepted and state.phase is Phase.COLLECTING:
                self._collect(asset, state, reading, out)

    def _sensors_fit(self, inbound: Inbound, state: _Asset, out: _Out) -> bool:
        """Does the message carry the plan's sensors? Extras are counted and ignored;
        a missing sensor makes the message a dead letter, unless the asset's set has
        changed for good (then its readings are kept, unscored, and one event says so)."""
        assert state.plan is not None
        readings = inbound.readings
        names = readings.names if isinstance(readings, Batch) else readings[0].values.keys()
        planned = state.plan.sensors
        extra = len(names) - len(planned)
        if extra == 0 and state.planned.issuperset(names):
            state.other_count = 0
            state.reported = None
            return True
        seen = frozenset(names)
        if seen == state.other:
            state.other_count += 1
        else:
            state.other, state.other_count = seen, 1
        missing = set(planned) - seen
        asset = readings[0].asset
        if state.other_count >= SENSOR_CHANGE_MESSAGES and state.reported != seen:
            state.reported = seen
            out.events.append(self._changed_event(asset, planned, seen, readings[-1].ts_ms))
        if not missing:
            self.metrics.sensor_values_ignored += (len(seen) - len(planned)) * len(readings)
            return True
        if state.reported == seen:
            out.kept.append(readings)  # stored, not scored: nothing lost, no flood
            self.metrics.readings_unscored += len(readings)
            return False
        error = PayloadError(RejectReason.MISSING_SENSOR, f"missing {sensor_names(missing)}")
        out.rejected = dead_letter(
            inbound.topic,
            inbound.payload,
            error,
            inbound.received_ms,
            self.dead_letter_max_bytes,
            asset,
        )
        self.metrics.dead_letters[RejectReason.MISSING_SENSOR.value] += 1
        return False

    def _changed_event(
        self, asset: str, planned: tuple[str, ...], seen: frozenset[str], ts_ms: int
    ) -> Event:
        removed = sorted(set(planned) - seen)
        added = sorted(seen - set(planned))
        what = []
        if removed:
            what.append(f"{len(removed)} missing ({', '.join(removed[:5])})")
        if added:
            what.append(f"{len(added)} new ({', '.join(added[:5])})")
        scored = "its readings are stored but not scored" if removed else "new ones are ignored"
        return Event(
            ts_ms=ts_ms,
            kind="sensor_set_changed",
            level="warning",
            asset=asset,
            message=(
                f"{asset}: sensor set changed for good, {' and '.join(what)}; {scored}. "
                f"Run `edgewatch baseline reset {asset}` to commission it with its new sensors"
            ),
            detail={"removed": removed, "added": added, "hint": "edgewatch baseline reset"},
        )

    def _take(self, state: _Asset, readings: Sequence[Reading], out: _Out) -> None:
        stream = state.stream
        assert stream is not None
        keep = None if out.room is None else max(1, out.room)
        i = 0
        while i < len(readings):
            # A batch in time order goes in bulk (a single reading is cheaper
            # through add()).
            taken, completed = stream.extend(readings, i, keep) if len(readings) > 1 else (0, [])
            if taken:
                run = readings[i : i + taken]
                i += taken
                out.kept.append(run)
                after_ms: int | None = None  # windows ending after this are scored
                for r in run if state.phase is Phase.COLLECTING else ():
                    if state.phase is not Phase.COLLECTING:
                        break
                    self._collect(r.asset, state, r, out)
                    after_ms = r.ts_ms
                if state.phase is not Phase.COLLECTING:
                    out.windows.extend(
                        w for w in completed if after_ms is None or w.end_ms > after_ms
                    )
                continue
            reading = readings[i]
            i += 1
            result = stream.add(reading)
            if not result.accepted:
                reason = (
                    RejectReason.DUPLICATE
                    if result.verdict is Verdict.DUPLICATE
                    else RejectReason.OUT_OF_ORDER
                )
                out.late.append((reading, reason))
                continue
            out.kept.append((reading,))
            if result.restarted_after_ms is not None:
                self.metrics.window_restarts += 1
                out.events.append(
                    Event(
                        ts_ms=reading.ts_ms,
                        kind="window_restart",
                        level="warning",
                        asset=reading.asset,
                        message=(
                            f"{result.restarted_after_ms / 1000:.1f} s gap in the stream: "
                            "window restarted"
                        ),
                        detail={"gap_ms": result.restarted_after_ms},
                    )
                )
            if state.phase is Phase.COLLECTING:
                self._collect(reading.asset, state, reading, out)
            elif result.window is not None:
                out.windows.append(result.window)
        if keep is not None and len(out.windows) > keep:
            out.shed += len(out.windows) - keep
            del out.windows[:-keep]
        # Windows the stream did not make for the lack of room (see process).
        out.shed += stream.shed
        stream.shed = 0

    def _collect(self, asset: str, state: _Asset, reading: Reading, out: _Out) -> None:
        plan = state.plan
        assert plan is not None
        if not plan.baseline:
            # Nothing to learn (a RUL-only bundle): scored from the first full window.
            self._enter(asset, state, Phase.MONITORING)
            out.requests.append(
                CommissionRequest(asset, plan, np.empty((0, len(plan.sensors)), np.float32), 0, 0)
            )
            return
        collector = state.collector
        if collector is None:
            size = self.profiles.commission_samples(asset)
            collector = state.collector = _Collector(
                rows=np.empty((size, len(plan.sensors)), dtype=np.float32)
            )
        i = len(collector.ts)
        collector.rows[i] = [reading.values[name] for name in plan.sensors]
        collector.ts.append(reading.ts_ms)
        if len(collector.ts) < len(collector.rows):
            return
        self._enter(asset, state, Phase.COMMISSIONING)
        state.collector = None
        order = np.argsort(np.asarray(collector.ts), kind="stable")
        out.requests.append(
            CommissionRequest(
                asset=asset,
                plan=plan,
                samples=collector.rows[order],
                first_ms=min(collector.ts),
                last_ms=max(collector.ts),
            )
        )

    async def run(
        self,
        inbox: asyncio.Queue[Inbound],
        record: Callable[[ToRecorder], Awaitable[None]],
        to_inference: WindowQueue,
    ) -> None:
        """Consume ``inbox`` until cancelled; the runtime drains it before stopping.

        ``record`` puts an item on the recorder's queue (waiting while it is full).
        """
        while True:
            inbound = await inbox.get()
            try:
                out = self.process(inbound, to_inference.maxsize - to_inference.qsize())
                if out.shed:
                    self._note_shed(out.shed)
                for event in out.events:
                    await record(event)
                await record(out.accepted)
                for request in out.requests:
                    await to_inference.put(request)
                for window in out.windows:
                    self._offer(window, to_inference)
            finally:
                inbox.task_done()

    def _offer(self, window: Window, queue: WindowQueue) -> None:
        dropped = queue.offer(window)
        if dropped is not window:
            self.metrics.windows_emitted += 1
        if dropped is not None:
            self._note_shed(1)

    def _note_shed(self, count: int) -> None:
        self.metrics.windows_shed += count
        self._shed_since_log += count
        now = time.monotonic()
        if now - self._last_shed_log >= SHED_LOG_INTERVAL_S:
            log.warning(
                "inference is behind: windows shed",
                extra=fields(shed=self._shed_since_log, interval_s=SHED_LOG_INTERVAL_S),
            )
            self._last_shed_log = now
            self._shed_since_log = 0
