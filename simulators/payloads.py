"""The wire format of telemetry, exactly as the agent's ingest expects it.

Single reading: ``{"ts": 1767225600.0, "values": {"flow_m3_h": 101.2, ...}}``.
Batch:          ``{"ts": [t0, t1, ...], "values": {"flow_m3_h": [v0, v1, ...], ...}}``.
Times are UTC epoch seconds (float).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

DEFAULT_TOPIC_TEMPLATE = "edgewatch/{site}/{asset}/telemetry"
DEFAULT_SITE = "demo"


def format_topic(template: str, site: str, asset: str) -> str:
    """Fill ``{site}`` and ``{asset}``; other fields are left for the caller to avoid."""
    return template.replace("{site}", site).replace("{asset}", asset)


def encode_single(ts: float, values: Mapping[str, float]) -> bytes:
    return orjson.dumps({"ts": ts, "values": values})


def encode_batch(ts: Sequence[float], values: Mapping[str, Sequence[float]]) -> bytes:
    return orjson.dumps({"ts": ts, "values": values})


#: ``(ts_ms, {sensor: value})`` of each sample of a message.
Samples = list[tuple[int, dict[str, float]]]


def decode_samples(payload: bytes) -> Samples:
    """The samples of a single or batch message, times in epoch milliseconds: what
    the simulator's Sparkplug B node and OPC UA server re-publish."""
    doc = orjson.loads(payload)
    ts, values = doc["ts"], doc["values"]
    if isinstance(ts, list):
        return [
            (round(t * 1000), {name: column[i] for name, column in values.items()})
            for i, t in enumerate(ts)
        ]
    return [(round(ts * 1000), dict(values))]


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive samples of one asset that travel in one message.

    ``truth`` holds per-sample ground-truth columns (fault, RUL, labels) that are
    written beside the stream but never published.
    """

    asset: str
    ts: list[float]
    values: dict[str, list[float]]
    truth: dict[str, list[object]] = field(default_factory=dict)
    as_batch: bool = False

    def __len__(self) -> int:
        return len(self.ts)

    def encode(self) -> bytes:
        if len(self.ts) == 1 and not self.as_batch:
            return encode_single(self.ts[0], {k: v[0] for k, v in self.values.items()})
        return encode_batch(self.ts, self.values)
