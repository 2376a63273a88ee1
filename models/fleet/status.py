"""``edgewatch fleet status``: what the gateways have uploaded, from the bucket alone.

Per gateway (site/agent): objects and bytes per kind, the last upload (the newest
object's modification time) and the newest data time its keys name. The bucket cannot
show a gateway's outbox; what is derivable here is how far each kind's newest data lags
behind now (``lag_s``) and the loss-ledger entries (data a gateway had to drop). The
gateway's own backlog is ``edgewatch sync status`` on it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from models.fleet.catalog import KINDS, Entry

_STAMP = re.compile(r"^(\d{8})T(\d{2})(\d{2})?(\d{2})?(\d{3})?")


def data_ms(entry: Entry) -> int | None:
    """The data time an object's name starts with (hour precision for retraining)."""
    m = _STAMP.match(entry.name)
    if m is None:
        return None
    day, hour, minute, second, milli = m.groups()
    stamp = datetime.strptime(f"{day}{hour}{minute or '00'}{second or '00'}", "%Y%m%d%H%M%S")
    return int(stamp.replace(tzinfo=UTC).timestamp() * 1000) + int(milli or 0)


@dataclass
class KindStats:
    objects: int = 0
    bytes: int = 0
    newest_data_ms: int | None = None
    last_upload_ms: int | None = None

    def add(self, entry: Entry) -> None:
        self.objects += 1
        self.bytes += entry.size
        stamp = data_ms(entry)
        if stamp is not None:
            self.newest_data_ms = max(self.newest_data_ms or stamp, stamp)
        self.last_upload_ms = max(self.last_upload_ms or entry.modified_ms, entry.modified_ms)


@dataclass
class GatewayStatus:
    gateway: str
    assets: set[str] = field(default_factory=set)
    kinds: dict[str, KindStats] = field(default_factory=dict)

    @property
    def last_upload_ms(self) -> int | None:
        stamps = [k.last_upload_ms for k in self.kinds.values() if k.last_upload_ms is not None]
        return max(stamps) if stamps else None

    def as_dict(self, now_ms: int) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "assets": len(self.assets - {"_agent"}),
            "last_upload_ms": self.last_upload_ms,
            "ledger_entries": self.kinds.get("ledger", KindStats()).objects,
            "kinds": {
                kind: {
                    "objects": s.objects,
                    "bytes": s.bytes,
                    "newest_data_ms": s.newest_data_ms,
                    "lag_s": None
                    if s.newest_data_ms is None
                    else round((now_ms - s.newest_data_ms) / 1000, 1),
                    "last_upload_ms": s.last_upload_ms,
                }
                for kind, s in sorted(self.kinds.items())
            },
        }


def fleet_status(entries: Sequence[Entry], now_ms: int | None = None) -> dict[str, Any]:
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    gateways: dict[str, GatewayStatus] = {}
    totals = {kind: KindStats() for kind in KINDS}
    for e in entries:
        gw = gateways.setdefault(e.gateway, GatewayStatus(e.gateway))
        gw.assets.add(e.asset)
        gw.kinds.setdefault(e.kind, KindStats()).add(e)
        totals[e.kind].add(e)
    return {
        "now_ms": now,
        "gateways": [gateways[g].as_dict(now) for g in sorted(gateways)],
        "kinds": {
            kind: {"objects": s.objects, "bytes": s.bytes}
            for kind, s in totals.items()
            if s.objects
        },
    }
