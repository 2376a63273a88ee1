"""In-process counters and gauges shared by the stages (no dependencies).

Stages increment plain attributes from the event loop or their worker thread; the
health reporter and ``edgewatch bench`` read snapshots. Integer increments are
atomic enough under the GIL for counters that are only ever added to.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
