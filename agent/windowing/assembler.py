"""The windowing stage: readings in, windows (and commissioning requests) out.

Input: :class:`~agent.domain.Inbound` from the subscriber. Outputs, in order:

- to the recorder, one :class:`~agent.domain.Accepted` per message (readings to keep,
  late readings to judge, the dead letter) plus :class:`~agent.domain.Event` items;
- to inference, :class:`~agent.domain.Window` for commissioned assets and one
  :class:`~agent.domain.CommissionRequest` per new asset once its baseline is full.

Shedding policy: the recorder queue is never shed (a full one blocks the subscriber,
which stops acknowledging, which stops the broker). The inference queue sheds: when
it is full, the new window is dropped and counted (``windows_shed``); the readings
are still stored, so nothing is lost for retraining and the next window of the asset
covers the same samples.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from agent.domain import (
    Accepted,
    CommissionRequest,
    Event,
    FloatArray,
    Inbound,
    Reading,
    RejectReason,
    Window,
)
from agent.logs import fields
from agent.metrics import Metrics
from agent.windowing.stream import AssetStream, Verdict

log = logging.getLogger(__name__)

#: Shed windows are logged at most this often.
SHED_LOG_INTERVAL_S = 30.0

ToRecorder = Accepted | Event
ToInference = Window | CommissionRequest


@dataclass
class _Collector:
    """First samples of an asset that has no baseline yet."""

    rows: FloatArray
    ts: list[int] = field(default_factory=list)
    requested: bool = False


@dataclass(frozen=True, slots=True)
class Output:
    accepted: Accepted
    windows: tuple[Window, ...]
    requests: tuple[CommissionRequest, ...]
    events: tuple[Event, ...]


class WindowAssembler:
    """Owns every asset's :class:`AssetStream`; runs on the event loop."""

    def __init__(
        self,
        *,
        sensors: tuple[str, ...],
        window: int,
        hop: int,
        reorder_samples: int,
        gap_factor: float,
        commission_samples: int,
        commissioned: Iterable[str],
        metrics: Metrics,
    ) -> None:
        self.sensors = sensors
        self.window = window
        self.hop = hop
        self.reorder_samples = reorder_samples
        self.gap_factor = gap_factor
        self.commission_samples = commission_samples
        self.metrics = metrics
        self._streams: dict[str, AssetStream] = {}
        self._commissioned = set(commissioned)
        self._collectors: dict[str, _Collector] = {}
        self._last_shed_log = 0.0
        self._shed_since_log = 0

    def stream(self, asset: str) -> AssetStream:
        stream = self._streams.get(asset)
        if stream is None:
            stream = AssetStream(
                asset,
                self.sensors,
                window=self.window,
                hop=self.hop,
                reorder_samples=self.reorder_samples,
                gap_factor=self.gap_factor,
            )
            self._streams[asset] = stream
        return stream

    def is_commissioned(self, asset: str) -> bool:
        return asset in self._commissioned

    def mark_commissioned(self, asset: str) -> None:
        self._commissioned.add(asset)
        self._collectors.pop(asset, None)

    def recommission(self, asset: str) -> None:
        """Forget the asset's baseline: its next samples become the new one."""
        self._commissioned.discard(asset)
        self._collectors.pop(asset, None)

    def prime(
        self, asset: str, readings: Iterable[Reading], last_window_end_ms: int | None
    ) -> None:
        """Refill an asset's buffer from stored readings after a restart (no output)."""
        stream = self.stream(asset)
        for reading in readings:
            stream.add(reading)
        stream.resume_after(last_window_end_ms)

    def process(self, inbound: Inbound) -> Output:
        """Pure step for one message; :meth:`run` wires it to the queues."""
        windows: list[Window] = []
        requests: list[CommissionRequest] = []
        events: list[Event] = []
        kept: list[Reading] = []
        late: list[tuple[Reading, RejectReason]] = []
        readings = inbound.readings
        i = 0
        while i < len(readings):
            reading = readings[i]
            stream = self.stream(reading.asset)
            commissioned = reading.asset in self._commissioned
            # A message carries one asset; a batch of it in time order goes in bulk
            # (a single reading is cheaper through add()).
            taken, completed = stream.extend(readings, i) if len(readings) > 1 else (0, [])
            if taken:
                run = readings[i : i + taken]
                i += taken
                kept.extend(run)
                if commissioned:
                    windows.extend(completed)
                else:
                    requests.extend(r for r in map(self._collect, run) if r is not None)
                continue
            i += 1
            result = stream.add(reading)
            if not result.accepted:
                reason = (
                    RejectReason.DUPLICATE
                    if result.verdict is Verdict.DUPLICATE
                    else RejectReason.OUT_OF_ORDER
                )
                late.append((reading, reason))
                continue
            kept.append(reading)
            if result.restarted_after_ms is not None:
                self.metrics.window_restarts += 1
                events.append(
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
            if commissioned:
                if result.window is not None:
                    windows.append(result.window)
            else:
                request = self._collect(reading)
                if request is not None:
                    requests.append(request)
        self.metrics.readings_accepted += len(kept)
        accepted = Accepted(
            ref=inbound.ref,
            received_ms=inbound.received_ms,
            readings=tuple(kept),
            late=tuple(late),
            rejected=inbound.rejected,
        )
        return Output(accepted, tuple(windows), tuple(requests), tuple(events))

    def _collect(self, reading: Reading) -> CommissionRequest | None:
        collector = self._collectors.get(reading.asset)
        if collector is None:
            collector = _Collector(
                rows=np.empty((self.commission_samples, len(self.sensors)), dtype=np.float32)
            )
            self._collectors[reading.asset] = collector
        if collector.requested:
            return None
        i = len(collector.ts)
        collector.rows[i] = [reading.values[name] for name in self.sensors]
        collector.ts.append(reading.ts_ms)
        if len(collector.ts) < self.commission_samples:
            return None
        collector.requested = True
        order = np.argsort(np.asarray(collector.ts), kind="stable")
        return CommissionRequest(
            asset=reading.asset,
            sensors=self.sensors,
            samples=collector.rows[order],
            first_ms=min(collector.ts),
            last_ms=max(collector.ts),
        )

    def commissioning_failed(self, asset: str) -> None:
        """Collect a fresh baseline for ``asset`` after a failed attempt."""
        self._collectors.pop(asset, None)

    async def run(
        self,
        inbox: asyncio.Queue[Inbound],
        record: Callable[[ToRecorder], Awaitable[None]],
        to_inference: asyncio.Queue[ToInference],
    ) -> None:
        """Consume ``inbox`` until cancelled; the runtime drains it before stopping.

        ``record`` puts an item on the recorder's queue (waiting while it is full).
        """
        while True:
            inbound = await inbox.get()
            try:
                out = self.process(inbound)
                for event in out.events:
                    await record(event)
                await record(out.accepted)
                for request in out.requests:
                    await to_inference.put(request)
                for window in out.windows:
                    self._offer(window, to_inference)
            finally:
                inbox.task_done()

    def _offer(self, window: Window, queue: asyncio.Queue[ToInference]) -> None:
        try:
            queue.put_nowait(window)
            self.metrics.windows_emitted += 1
        except asyncio.QueueFull:
            self.metrics.windows_shed += 1
            self._shed_since_log += 1
            now = time.monotonic()
            if now - self._last_shed_log >= SHED_LOG_INTERVAL_S:
                log.warning(
                    "inference is behind: windows shed",
                    extra=fields(shed=self._shed_since_log, interval_s=SHED_LOG_INTERVAL_S),
                )
                self._last_shed_log = now
                self._shed_since_log = 0
