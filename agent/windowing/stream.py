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
import itertools
import operator
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from agent.domain import Batch, FloatArray, Reading, Window

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
        period_ms: float | None = None,
        min_rows: int | None = None,
    ) -> None:
        """``period_ms``: the expected sample period, judged from the first interval on
        (default: estimated from the stream once a few intervals are seen).
        ``min_rows``: samples before the first window (default: a whole window); until a
        run has a whole window its windows are front-padded with the run's first sample,
        as a RUL model trained that way expects (:attr:`models.train.RulTrainConfig.min_rows`).
        """
        if window < 1 or hop < 1:
            raise ValueError("window and hop must be positive")
        if min_rows is not None and not 1 <= min_rows <= window:
            raise ValueError(f"min_rows {min_rows} must be within 1..window ({window})")
        self.asset = asset
        self.sensors = sensors
        self.window = window
        self.min_rows = window if min_rows is None else min_rows
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
        self._period: float | None = period_ms
        self._fixed_period = period_ms is not None
        self._until_refresh = 0
        # One C call picks every sensor's value in the model's order.
        self._pick = operator.itemgetter(*sensors)
        #: Windows completed but not made: beyond the limit given to extend().
        self.shed = 0
        #: A batch's sensor order -> the row of each of ours in it (see _rows_of).
        self._rows: dict[tuple[str, ...], list[int]] = {}

    @property
    def newest_ms(self) -> int | None:
        return int(self._ts[self._n - 1]) if self._n else None

    @property
    def last_window_end_ms(self) -> int | None:
        return self._last_end_ms

    def period_ms(self) -> float | None:
        return self._period

    def _note_interval(self, interval: int) -> None:
        if self._fixed_period:
            return
        self._intervals.append(interval)
        self._until_refresh -= 1
        if self._until_refresh <= 0 and len(self._intervals) >= PERIOD_MIN_INTERVALS:
            self._period = float(statistics.median(self._intervals))
            self._until_refresh = PERIOD_REFRESH

    def _vector(self, reading: Reading) -> FloatArray:
        return np.array(self._pick(reading.values), dtype=np.float32)

    def _matrix(self, readings: Sequence[Reading]) -> FloatArray:
        """(sensors, len(readings)) values of ``readings``."""
        rows = np.array([self._pick(r.values) for r in readings], dtype=np.float32)
        return rows.reshape(len(readings), len(self.sensors)).T

    def extend(
        self, readings: Sequence[Reading], start: int = 0, limit: int | None = None
    ) -> tuple[int, list[Window]]:
        """The fast path of batch payloads: append ``readings[start:]`` in bulk.

        Takes the longest run that :meth:`add` would append one by one (each newer
        than the last, no gap) and returns how many it took and the windows they
        completed, exactly as :meth:`add` would have. The caller hands the reading
        that stopped the run to :meth:`add`. A :class:`Batch` is read as columns.
        ``limit``: make only the newest this many windows (at least one); the older
        ones are not made, only counted in :attr:`shed`, as an inference queue with
        that much room would shed them.
        """
        prev = self.newest_ms
        if prev is None:
            return 0, []
        data: npt.NDArray[Any]
        if isinstance(readings, Batch):
            stamps = readings.ts_ms[start:]
            taken = self._run_length(stamps, prev)
            stamps = stamps[:taken]
            data = readings.columns[self._rows_of(readings.names), start : start + taken]
        else:
            taken = self._run_length_of(readings, start, prev)
            run = readings[start : start + taken]
            data = self._matrix(run)
            stamps = np.fromiter((r.ts_ms for r in run), dtype=np.int64, count=taken)
        if not taken:
            return 0, []
        return taken, self._append(data, stamps, limit)

    def _run_length_of(self, readings: Sequence[Reading], start: int, prev: int) -> int:
        # Gaps and the period estimate are judged reading by reading, as add() does.
        end = start
        limit = len(readings)
        while end < limit:
            ts = readings[end].ts_ms
            if ts <= prev:
                break
            period = self._period
            if period is not None and ts - prev > self.gap_factor * period:
                break
            self._note_interval(ts - prev)
            prev = ts
            end += 1
        return end - start

    def _run_length(self, stamps: npt.NDArray[np.int64], prev: int) -> int:
        """:meth:`_run_length_of` on an array: the same verdicts and period updates, a
        stretch of intervals at a time (the period is fixed until its next refresh)."""
        diffs = np.diff(stamps, prepend=np.int64(prev))
        if self._steady(diffs):
            return len(diffs)
        steps: list[int] = diffs.tolist()
        limit = len(steps)
        done = 0
        while done < limit:
            if self._fixed_period:
                span = limit - done
            else:
                # Up to the first interval after which _note_interval would refresh.
                span = max(1, self._until_refresh, PERIOD_MIN_INTERVALS - len(self._intervals))
            part = steps[done : done + span]
            good = len(part)
            period = self._period
            most = None if period is None else self.gap_factor * period
            if min(part) <= 0 or (most is not None and max(part) > most):
                good = next(
                    j
                    for j, step in enumerate(part)
                    if step <= 0 or (most is not None and step > most)
                )
            if good and not self._fixed_period:
                self._intervals.extend(part[:good])
                self._until_refresh -= good
                if self._until_refresh <= 0 and len(self._intervals) >= PERIOD_MIN_INTERVALS:
                    self._period = float(statistics.median(self._intervals))
                    self._until_refresh = PERIOD_REFRESH
            done += good
            if good < len(part):
                break
        return done

    def _steady(self, steps: npt.NDArray[np.int64]) -> bool:
        """Take ``steps`` at once when each equals the estimated period and so does
        every interval it was estimated from: all are appended, and every refresh on
        the way would find the same median, so only the refresh countdown moves.

        A regularly sampled sensor's batch payloads are this case; refreshing the
        median every few intervals of them cost a good part of the bulk path.
        """
        period = self._period
        if self._fixed_period or period is None or not len(steps):
            return False
        step = int(steps[0])
        history = self._intervals
        if (
            step <= 0
            or step != period
            or step > self.gap_factor * period
            or len(history) < PERIOD_HISTORY
            or history.count(step) != len(history)
            or not bool((steps == step).all())
        ):
            return False
        countdown = self._until_refresh - len(steps)
        if countdown <= 0:
            # The first refresh comes at the old countdown's step (the first step if
            # it had already run out), then one every PERIOD_REFRESH steps.
            after_first = len(steps) - max(1, self._until_refresh)
            countdown = PERIOD_REFRESH - after_first % PERIOD_REFRESH
        self._until_refresh = countdown
        return True

    def _rows_of(self, names: tuple[str, ...]) -> list[int]:
        """Where each of this stream's sensors is among a batch's ``names``."""
        rows = self._rows.get(names)
        if rows is None:
            where = {name: j for j, name in enumerate(names)}
            rows = self._rows[names] = [where[sensor] for sensor in self.sensors]
        return rows

    def _append(
        self, data: npt.NDArray[Any], stamps: npt.NDArray[np.int64], limit: int | None
    ) -> list[Window]:
        """Append a run (sensors x samples, each newer than the last, no gap); the
        windows it completes, cut where add() would cut them (see :meth:`extend`
        for ``limit``)."""
        taken = len(stamps)
        windows: list[Window] = []
        done = 0
        while done < taken:
            if self._n == self.capacity:
                self._compact()
            n = self._n
            if self._filled >= self.window and self._last_end_ms is not None:
                # Steady state (no front padding): append as much as fits and cut
                # every window it completes at once.
                chunk = min(self.capacity - n, taken - done)
                self._data[:, n : n + chunk] = data[:, done : done + chunk]
                self._ts[n : n + chunk] = stamps[done : done + chunk]
                # Only the newest windows are made: none of this chunk's when the
                # samples after it complete enough (one every hop, at least).
                later = (taken - done - chunk) // self.hop
                room = None if limit is None else max(0, limit - later)
                windows.extend(self._cut(n, chunk, room))
                done += chunk
                continue
            # Up to the next sample that can complete a window, so that each window
            # is cut where add() would have cut it.
            due = self.min_rows - self._filled
            if self._last_end_ms is not None:
                due = max(due, self.hop - self._since_emit)
            chunk = min(self.capacity - n, taken - done, max(1, due))
            self._data[:, n : n + chunk] = data[:, done : done + chunk]
            self._ts[n : n + chunk] = stamps[done : done + chunk]
            self._n += chunk
            self._filled += chunk
            self._since_emit += chunk
            done += chunk
            window = self._maybe_emit()
            if window is not None:
                windows.append(window)
        if limit is not None and len(windows) > limit:
            self.shed += len(windows) - limit
            del windows[:-limit]
        return windows

    def _cut(self, n: int, chunk: int, limit: int | None) -> list[Window]:
        """Windows completed by the ``chunk`` samples just written at ``n`` (whole
        windows in the buffer, a window emitted before); only the newest ``limit`` of
        them are made, the others counted in :attr:`shed`."""
        first = n + max(1, self.hop - self._since_emit)  # end (exclusive) of the first
        self._n = n + chunk
        self._filled += chunk
        ends = range(first, self._n + 1, self.hop)
        if not ends:
            self._since_emit += chunk
            return []
        self._since_emit = self._n - ends[-1]
        self._last_end_ms = int(self._ts[ends[-1] - 1])
        if limit is not None and limit < len(ends):
            self.shed += len(ends) - limit
            ends = ends[len(ends) - limit :]
            if not ends:
                return []
        if len(ends) == 1:
            # The usual case under load (a message's newest window alone): a slice is
            # far cheaper than a strided view.
            end = ends[0]
            start = end - self.window
            data = self._data[:, start:end].copy()
            return [Window(self.asset, int(self._ts[start]), int(self._ts[end - 1]), data)]
        starts = np.arange(ends[0] - self.window, ends[-1] - self.window + 1, self.hop)
        views = sliding_window_view(self._data[:, : self._n], self.window, axis=1)
        # One copy of all the windows, (windows, sensors, window); each Window holds
        # its own slice of it.
        block = np.ascontiguousarray(views[:, starts, :].transpose(1, 0, 2))
        first_ms: list[int] = self._ts[starts].tolist()
        last_ms: list[int] = self._ts[starts + (self.window - 1)].tolist()
        return list(map(Window, itertools.repeat(self.asset), first_ms, last_ms, block))

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
        if self._filled < self.min_rows:
            return None
        if self._last_end_ms is not None and self._since_emit < self.hop:
            return None
        # A run shorter than the window lies whole in the buffer: compaction keeps more
        # than a window and only starts once the buffer is full.
        have = min(self._filled, self.window, self._n)
        start = self._n - have
        data = self._data[:, start : self._n]
        if have < self.window:
            lead = np.repeat(data[:, :1], self.window - have, axis=1)
            data = np.concatenate([lead, data], axis=1)
        else:
            data = data.copy()
        window = Window(
            asset=self.asset,
            start_ms=int(self._ts[start]),
            end_ms=int(self._ts[self._n - 1]),
            data=data,
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
