"""One asset's stream: a preallocated buffer cut into windows every ``hop`` samples.

The buffer holds ``capacity`` samples of every sensor (float32, sensors x time) and
their timestamps. Appends are O(1); when the buffer is full the newest samples are
moved to the front once (amortised O(1), no allocation on the hot path).

A reading that arrives behind the newest one is put in order when it is at most
``reorder_samples`` back and not older than the end of the last emitted window
(windows already scored are never changed); otherwise the caller is told it is late.
A gap longer than ``gap_factor`` sample periods restarts the window: samples on both
sides of an outage are not one window.
"""

from __future__ import annotations

import enum
import statistics
from collections import deque
from dataclasses import dataclass

import numpy as np

from agent.domain import FloatArray, Reading, Window

#: Intervals kept to estimate the sample period (median, robust to a few outliers).
PERIOD_HISTORY = 15
#: A period estimate needs this many intervals before gaps are judged.
PERIOD_MIN_INTERVALS = 3
#: The period estimate is refreshed every this many intervals (a median per reading
#: would cost more than the rest of the hot path).
PERIOD_REFRESH = 8


class Verdict(enum.Enum):
    APPENDED = "appended"
    REORDERED = "reordered"
    DUPLICATE = "duplicate"  # same timestamp as a sample still in the buffer
    LATE = "late"  # behind the stream beyond what can be put in order


@dataclass(frozen=True, slots=True)
class AddResult:
    verdict: Verdict
    window: Window | None = None
    restarted_after_ms: int | None = None  # gap length when the window restarted

    @property
    def accepted(self) -> bool:
        return self.verdict in (Verdict.APPENDED, Verdict.REORDERED)


class AssetStream:
    """Windows of one asset, sensors in ``sensors`` order."""

    def __init__(
        self,
        asset: str,
        sensors: tuple[str, ...],
        *,
        window: int,
        hop: int,
        reorder_samples: int,
        gap_factor: float,
    ) -> None:
        if window < 1 or hop < 1:
            raise ValueError("window and hop must be positive")
        self.asset = asset
        self.sensors = sensors
        self.window = window
        self.hop = hop
        self.reorder_samples = reorder_samples
        self.gap_factor = gap_factor
        self.capacity = 2 * window + reorder_samples + 16
        self._data: FloatArray = np.zeros((len(sensors), self.capacity), dtype=np.float32)
        self._ts = np.zeros(self.capacity, dtype=np.int64)
        self._n = 0  # valid samples in the buffer, at [0, _n)
        self._since_emit = 0  # samples after the end of the last window
        self._filled = 0  # samples since the last restart (first window needs `window`)
        self._last_end_ms: int | None = None  # end of the last emitted window
        self._intervals: deque[int] = deque(maxlen=PERIOD_HISTORY)
        self._period: float | None = None
        self._until_refresh = 0
        self._order = {name: i for i, name in enumerate(sensors)}

    @property
    def newest_ms(self) -> int | None:
        return int(self._ts[self._n - 1]) if self._n else None

    @property
    def last_window_end_ms(self) -> int | None:
        return self._last_end_ms

    def period_ms(self) -> float | None:
        return self._period

    def _note_interval(self, interval: int) -> None:
        self._intervals.append(interval)
        self._until_refresh -= 1
        if self._until_refresh <= 0 and len(self._intervals) >= PERIOD_MIN_INTERVALS:
            self._period = float(statistics.median(self._intervals))
            self._until_refresh = PERIOD_REFRESH

    def _vector(self, reading: Reading) -> FloatArray:
        column = np.empty(len(self.sensors), dtype=np.float32)
        values = reading.values
        for name, i in self._order.items():
            column[i] = values[name]
        return column

    def add(self, reading: Reading) -> AddResult:
        """Take one reading; returns what happened and the window it completed, if any."""
        ts = reading.ts_ms
        newest = self.newest_ms
        if newest is not None and ts <= newest:
            return self._insert_late(reading)
        restarted = None
        if newest is not None:
            interval = ts - newest
            period = self.period_ms()
            if period is not None and interval > self.gap_factor * period:
                restarted = interval
                self._restart()
            else:
                self._note_interval(interval)
        if self._n == self.capacity:
            self._compact()
        self._data[:, self._n] = self._vector(reading)
        self._ts[self._n] = ts
        self._n += 1
        self._filled += 1
        self._since_emit += 1
        return AddResult(Verdict.APPENDED, self._maybe_emit(), restarted)

    def _insert_late(self, reading: Reading) -> AddResult:
        ts = reading.ts_ms
        valid = self._ts[: self._n]
        pos = int(np.searchsorted(valid, ts))
        if pos < self._n and valid[pos] == ts:
            return AddResult(Verdict.DUPLICATE)
        behind = self._n - pos
        if behind > self.reorder_samples or (
            self._last_end_ms is not None and ts <= self._last_end_ms
        ):
            return AddResult(Verdict.LATE)
        if self._n == self.capacity:
            self._compact()
            pos -= self.capacity - self._n
        self._data[:, pos + 1 : self._n + 1] = self._data[:, pos : self._n]
        self._ts[pos + 1 : self._n + 1] = self._ts[pos : self._n]
        self._data[:, pos] = self._vector(reading)
        self._ts[pos] = ts
        self._n += 1
        self._filled += 1
        self._since_emit += 1
        return AddResult(Verdict.REORDERED, self._maybe_emit())

    def _maybe_emit(self) -> Window | None:
        if self._filled < self.window:
            return None
        if self._last_end_ms is not None and self._since_emit < self.hop:
            return None
        start = self._n - self.window
        window = Window(
            asset=self.asset,
            start_ms=int(self._ts[start]),
            end_ms=int(self._ts[self._n - 1]),
            data=self._data[:, start : self._n].copy(),
        )
        self._since_emit = 0
        self._last_end_ms = window.end_ms
        return window

    def _compact(self) -> None:
        keep = min(self._n, self.window + self.reorder_samples)
        self._data[:, :keep] = self._data[:, self._n - keep : self._n]
        self._ts[:keep] = self._ts[self._n - keep : self._n]
        self._n = keep

    def _restart(self) -> None:
        # The period survives a restart: a gap says nothing about the sample rate.
        self._n = 0
        self._filled = 0
        self._since_emit = 0
        self._last_end_ms = None

    def resume_after(self, last_window_end_ms: int | None) -> None:
        """After replaying stored readings on start: continue the hop phase from the
        last window scored before the restart, so windows land where they would have."""
        if last_window_end_ms is None or self._n == 0:
            return
        valid = self._ts[: self._n]
        self._since_emit = int(np.count_nonzero(valid > last_window_end_ms))
        self._last_end_ms = last_window_end_ms
