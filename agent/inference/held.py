"""Windows held while their asset's baseline is learnt, stored without repetition.

Consecutive windows of one stream overlap by all but ``hop`` samples, so a window
held as a whole costs ``window / hop`` times the samples it adds (32 times for the
shipped bundles): an as-fast-as-possible replay of a few dozen recordings would
hit any sensible bound while the first asset is still commissioning. Here each run
of overlapping windows keeps its first window whole and then only the ``hop`` new
samples of each next one; the windows are rebuilt, in order, when they are taken.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

from agent.domain import FloatArray, Window

_FLOAT_BYTES = 4
#: Two int64 timestamps per held window.
_STAMP_BYTES = 16


@dataclass
class _Run:
    """Windows of one asset that each start ``hop`` samples after the previous one."""

    window: int
    hop: int
    columns: FloatArray
    used: int
    starts: array[int] = field(default_factory=lambda: array("q"))
    ends: array[int] = field(default_factory=lambda: array("q"))
    taken: int = 0

    @classmethod
    def first(cls, w: Window, hop: int) -> _Run:
        sensors, length = w.data.shape
        columns = np.empty((sensors, max(2 * length, 64)), dtype=np.float32)
        columns[:, :length] = w.data
        run = cls(length, hop, columns, length)
        run.starts.append(w.start_ms)
        run.ends.append(w.end_ms)
        return run

    def last(self) -> FloatArray:
        return self.columns[:, self.used - self.window : self.used]

    def extends(self, w: Window) -> bool:
        h = self.hop
        return (
            w.data.shape == (self.columns.shape[0], self.window)
            and h < self.window
            and bool(np.array_equal(self.last()[:, h:], w.data[:, :-h], equal_nan=True))
        )

    def append(self, w: Window) -> None:
        h = self.hop
        if self.used + h > self.columns.shape[1]:
            grown = np.empty((self.columns.shape[0], 2 * self.columns.shape[1]), np.float32)
            grown[:, : self.used] = self.columns[:, : self.used]
            self.columns = grown
        self.columns[:, self.used : self.used + h] = w.data[:, -h:]
        self.used += h
        self.starts.append(w.start_ms)
        self.ends.append(w.end_ms)

    def __len__(self) -> int:
        return len(self.ends) - self.taken

    def take(self, asset: str, n: int) -> list[Window]:
        out = []
        for i in range(self.taken, min(len(self.ends), self.taken + n)):
            a = i * self.hop
            data = self.columns[:, a : a + self.window].copy()
            out.append(Window(asset, self.starts[i], self.ends[i], data))
        self.taken += len(out)
        return out


@dataclass
class HeldWindows:
    """Held windows of every asset being commissioned, within ``max_bytes`` in all."""

    hop: int
    max_bytes: int
    nbytes: int = 0
    _runs: dict[str, list[_Run]] = field(default_factory=dict)

    def hold(self, asset: str) -> None:
        """Start holding ``asset``'s windows (a no-op if already held)."""
        self._runs.setdefault(asset, [])

    def holding(self, asset: str) -> bool:
        return asset in self._runs

    def add(self, w: Window) -> bool:
        """Keep ``w`` (its asset is held); False when the bound leaves no room for it."""
        runs = self._runs[w.asset]
        if runs and runs[-1].extends(w):
            cost = w.data.shape[0] * self.hop * _FLOAT_BYTES + _STAMP_BYTES
            if self.nbytes + cost > self.max_bytes:
                return False
            runs[-1].append(w)
        else:
            cost = w.data.size * _FLOAT_BYTES + _STAMP_BYTES
            if self.nbytes + cost > self.max_bytes:
                return False
            runs.append(_Run.first(w, self.hop))
        self.nbytes += cost
        return True

    def count(self, asset: str) -> int:
        return sum(len(r) for r in self._runs.get(asset, []))

    def take(self, asset: str, n: int) -> list[Window]:
        """Up to ``n`` of ``asset``'s oldest held windows, removed from the store."""
        runs = self._runs.get(asset, [])
        out: list[Window] = []
        while runs and len(out) < n:
            out.extend(runs[0].take(asset, n - len(out)))
            if not runs[0]:
                self.nbytes -= _run_bytes(runs.pop(0))
        return out

    def release(self, asset: str) -> int:
        """Stop holding ``asset``; returns how many windows were still held."""
        runs = self._runs.pop(asset, [])
        for run in runs:
            self.nbytes -= _run_bytes(run)
        return sum(len(r) for r in runs)


def _run_bytes(run: _Run) -> int:
    """What :meth:`HeldWindows.add` charged for ``run``'s windows."""
    n = len(run.ends)
    sensors = int(run.columns.shape[0])
    return sensors * (run.window + (n - 1) * run.hop) * _FLOAT_BYTES + n * _STAMP_BYTES
