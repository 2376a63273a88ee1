"""Points in time as operators type them: ``2h`` (ago), ``7d``, ``now``, or ISO 8601."""

from __future__ import annotations

import re
import time
from datetime import datetime

import typer

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, *, now_ms: int | None = None, option: str = "--since") -> int:
    """Epoch milliseconds for ``text``; a usage error (exit 2) names what is accepted.

    ``90s``, ``15m``, ``2h``, ``7d``, ``2w`` are that long before now; ISO 8601 dates
    and times without a zone are local time (what the operator's clock shows).
    """
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    if text.strip().lower() == "now":
        return now
    match = _RELATIVE.match(text.lower())
    if match:
        return now - int(float(match.group(1)) * _SECONDS[match.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a time: use 2h, 7d, 30m (ago), now, or ISO 8601 "
            "like 2026-11-23 or 2026-11-23T14:00",
            param_hint=option,
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # naive: the local zone
    return int(moment.timestamp() * 1000)


def local_time(ms: int | None, missing: str = "-") -> str:
    """Epoch milliseconds as the operator's clock shows them, to the second."""
    if ms is None:
        return missing
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))
