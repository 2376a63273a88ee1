"""In-process counters and gauges shared by the stages (no dependencies).

Stages increment plain attributes from the event loop or their worker thread; the
health reporter and ``edgewatch bench`` read snapshots. Integer increments are
atomic enough under the GIL for counters that are only ever added to.
"""

from __future__ import annotations

import bisect
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Seconds: from a few ms (a warm batch) to a stalled SD card.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Windows per inference batch (powers of two: the predictor pads to them).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Histogram:
    """Cumulative-bucket histogram, cheap enough for the hot path (one bisect, two adds).

    ``counts[i]`` counts observations <= ``bounds[i]``, exclusive of lower buckets;
    the last slot counts those above every bound. Readers (the Prometheus exporter)
    take :meth:`cumulative` snapshots.
    """

    __slots__ = ("bounds", "count", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            running += n
            out.append((bound, running))
        return out

    def quantile(self, q: float) -> float | None:
        """Upper bound of the bucket holding the ``q`` quantile; None before any data."""
        if self.count == 0:
            return None
        target = q * self.count
        for bound, seen in self.cumulative():
            if seen >= target:
                return bound
        return float("inf")


@dataclass
class Metrics:
    started_monotonic: float = field(default_factory=time.monotonic)
    messages_received: int = 0
    readings_accepted: int = 0
    readings_redelivered: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    windows_emitted: int = 0
    windows_shed: int = 0
    window_restarts: int = 0
    #: Values of sensors an asset's plan does not use (ignored, not stored apart).
    sensor_values_ignored: int = 0
    #: Readings stored but not scored: their asset's sensor set changed for good.
    readings_unscored: int = 0
    #: Windows of assets being commissioned, held until their baseline is ready and
    #: dropped beyond the bound (counted here too).
    windows_held_dropped: int = 0
    #: Idle uncommissioned assets forgotten to make room for new ones (ingest.max_assets).
    assets_evicted: int = 0
    predictions: int = 0
    inference_batches: int = 0
    inference_windows: int = 0
    alerts_opened: int = 0
    alerts_closed: int = 0
    commits: int = 0
    rows_written: int = 0
    acks_sent: int = 0
    acks_dropped_stale: int = 0
    broker_connects: int = 0
    broker_disconnects: int = 0
    broker_connected: bool = False
    queue_depths: dict[str, int] = field(default_factory=dict)
    #: The reading's own timestamp (end of the window) to its prediction, in seconds:
    #: backlog plus the device's clock offset, so replayed history shows up as lag.
    prediction_lag_s: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    inference_batch_windows: Histogram = field(default_factory=lambda: Histogram(BATCH_BUCKETS))
    inference_s: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    #: One SQLite write transaction (the recorder's batched commit).
    commit_s: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    sync_backlog: int = 0
    sync_uploaded: int = 0
    sync_errors: int = 0
    #: Messages per second over the last health interval (see :meth:`rate_tick`).
    messages_per_s: float = 0.0
    _rate_mark: tuple[float, int] = (0.0, 0)

    def rate_tick(self) -> float:
        """Update and return :attr:`messages_per_s` since the previous call."""
        now = time.monotonic()
        then, seen = self._rate_mark
        if then > 0 and now > then:
            self.messages_per_s = round((self.messages_received - seen) / (now - then), 1)
        self._rate_mark = (now, self.messages_received)
        return self.messages_per_s

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_monotonic

    def snapshot(self) -> dict[str, Any]:
        """Plain data for health messages, heartbeats and benchmarks."""
        return {
            "uptime_s": round(self.uptime_s(), 1),
            "messages_received": self.messages_received,
            "readings_accepted": self.readings_accepted,
            "readings_redelivered": self.readings_redelivered,
            "dead_letters": {str(reason): n for reason, n in self.dead_letters.items()},
            "dead_letters_total": sum(self.dead_letters.values()),
            "windows_emitted": self.windows_emitted,
            "windows_shed": self.windows_shed,
            "window_restarts": self.window_restarts,
            "sensor_values_ignored": self.sensor_values_ignored,
            "readings_unscored": self.readings_unscored,
            "windows_held_dropped": self.windows_held_dropped,
            "assets_evicted": self.assets_evicted,
            "predictions": self.predictions,
            "inference_batches": self.inference_batches,
            "alerts_opened": self.alerts_opened,
            "alerts_closed": self.alerts_closed,
            "commits": self.commits,
            "rows_written": self.rows_written,
            "acks_sent": self.acks_sent,
            "broker_connected": self.broker_connected,
            "broker_connects": self.broker_connects,
            "queue_depths": dict(self.queue_depths),
            "messages_per_s": self.messages_per_s,
            "sync_backlog": self.sync_backlog,
            "sync_errors": self.sync_errors,
        }


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), imports included; else None."""
    try:
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    # Field 22 of /proc/<pid>/stat (index 19 after the command name) is the start
    # time in clock ticks since boot.
    return uptime_s - int(stat[19]) / os.sysconf("SC_CLK_TCK")
