"""Bad input on purpose: malformed messages mixed into a good stream, with a record.

:class:`BadInputInjector` decides, after each good message, whether to send a bad one
next (probability chosen so that bad messages make up ``rate`` of everything sent),
builds it, and returns a :class:`BadMessage` whose :class:`BadRecord` names the message
(topic, sequence number, asset, ts), its kind and the
:class:`agent.domain.RejectReason` the agent is expected to give.

Every bad message carries exactly one defect, so the expected reason does not depend
on the order in which the agent checks things, with one convention: bounds on the
timestamp (``ts_future``/``ts_past``) come before ordering (``duplicate``,
``out_of_order``). Bad messages never disturb the good stream: a rejected message must
not advance the agent's per-asset clock, and each bad message's timestamp is chosen
so that the next good message is in order whatever the agent did with it:

- ``duplicate`` has the timestamp of the last good reading of the asset but a
  different value: an exact repeat is a legitimate QoS 1 redelivery, which the agent
  absorbs silently, while two different readings for one instant are a defect;
- ``out_of_order`` is ``2 * (reorder_samples + 1) + 0.5`` sample periods before the
  last good reading: the agent puts readings up to ``reorder_samples`` back in order
  (``ingest.reorder_samples``), so a reading only just late is not a defect, and the
  factor 2 keeps it out of that window even when a sensor dropout left a gap;
- ``ts_future``/``ts_past`` are offset far from the last good reading;
- every other kind is half a sample period after the last good reading, i.e. between
  two good readings, and valid in every other respect.

No two bad messages are the same topic and payload: the agent stores a dead letter it
already has once (a QoS 1 redelivery), so two equal ones would be one in its table.

``bad_asset_name`` sends a good payload for a name derived from the asset that the
agent refuses (see :func:`agent.domain.name_problem`): too long, ending in a space, or
holding a right-to-left override. Only such names: a broker refuses topics with
control characters or wildcards, and an empty level or ``.`` would name no asset of
this stream's template at all, so the message would never reach the agent as sent.

The record is written as JSON Lines (``.jsonl``), CSV or Parquet, one row per bad
message: ``seq, topic, asset, ts, kind, reason, detail, payload_bytes,
payload_sha256``. ``seq`` counts every message of the run from 0 in publish order.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agent.domain import RejectReason

#: The agent's default payload limit; oversized messages are made just above it.
DEFAULT_MAX_PAYLOAD_BYTES = 64 * 1024
DEFAULT_FUTURE_OFFSET_S = 365.0 * 86_400.0
DEFAULT_PAST_OFFSET_S = 10 * 365.0 * 86_400.0
#: The agent's default ``ingest.reorder_samples``.
DEFAULT_REORDER_SAMPLES = 4
UNKNOWN_SITE = "no-such-site"
_BAD_STREAM = 2**32 - 2


class BadKind(enum.StrEnum):
    """What is wrong with a bad message; the value names the defect, not the verdict."""

    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    SCHEMA = "schema"
    NON_FINITE = "non_finite"
    MISSING_SENSOR = "missing_sensor"
    EMPTY_BATCH = "empty_batch"
    BATCH_MISMATCH = "batch_mismatch"
    TOO_LARGE = "too_large"
    TS_FUTURE = "ts_future"
    TS_PAST = "ts_past"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    UNKNOWN_TOPIC = "unknown_topic"
    BAD_ASSET_NAME = "bad_asset_name"


#: Longer than the agent's 128 characters (agent.domain.NAME_MAX_CHARS).
LONG_NAME_CHARS = 200
#: U+202E: shows the rest of a name reversed in a terminal or a report.
RIGHT_TO_LEFT_OVERRIDE = "\u202e"


EXPECTED_REASON: dict[BadKind, RejectReason] = {kind: RejectReason(kind.value) for kind in BadKind}


def parse_kinds(text: str | Sequence[str]) -> tuple[BadKind, ...]:
    """``"all"`` or a comma-separated list of :class:`BadKind` values."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [i.strip().lower().replace("-", "_") for i in items if i.strip()]
    if not names or names == ["all"]:
        return tuple(BadKind)
    known = {k.value: k for k in BadKind}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown bad-input kind(s) {', '.join(unknown)}; known: {', '.join(known)}"
        )
    return tuple(dict.fromkeys(known[n] for n in names))


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One bad message as sent: enough to find it among the agent's dead letters."""

    seq: int
    topic: str
    asset: str
    ts: float | None
    kind: str
    reason: str
    detail: str
    payload_bytes: int
    payload_sha256: str


@dataclass(frozen=True, slots=True)
class BadMessage:
    topic: str
    payload: bytes
    asset: str
    ts: float | None
    kind: BadKind
    detail: str

    def record(self, seq: int) -> BadRecord:
        return BadRecord(
            seq=seq,
            topic=self.topic,
            asset=self.asset,
            ts=self.ts,
            kind=self.kind.value,
            reason=EXPECTED_REASON[self.kind].value,
            detail=self.detail,
            payload_bytes=len(self.payload),
            payload_sha256=hashlib.sha256(self.payload).hexdigest(),
        )


def _dumps(obj: object) -> bytes:
    # The stdlib writes NaN/Infinity tokens, as many real devices do; orjson cannot.
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


class BadInputInjector:
    """Seeded source of bad messages, one defect each (see the module docs)."""

    def __init__(
        self,
        rate: float,
        seed: int,
        *,
        kinds: Sequence[BadKind] = tuple(BadKind),
        topic_template: str,
        site: str,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        future_offset_s: float = DEFAULT_FUTURE_OFFSET_S,
        past_offset_s: float = DEFAULT_PAST_OFFSET_S,
        reorder_samples: int = DEFAULT_REORDER_SAMPLES,
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError("bad-input rate must be within [0, 1)")
        if not kinds:
            raise ValueError("at least one bad-input kind is needed")
        self.rate = rate
        # Insert after a good message with p = r / (1 - r): then bad / all = r.
        self._p_insert = rate / (1.0 - rate)
        self.kinds = tuple(kinds)
        self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_BAD_STREAM,)))
        self._template = topic_template
        self._site = site
        self.max_payload_bytes = max_payload_bytes
        self.future_offset_s = future_offset_s
        self.past_offset_s = past_offset_s
        self.late_periods = 2.0 * (reorder_samples + 1) + 0.5
        self.records: list[BadRecord] = []

    def maybe_bad(
        self,
        *,
        asset: str,
        topic: str,
        last_ts: float,
        period_s: float,
        last_values: Mapping[str, float],
    ) -> BadMessage | None:
        """Called after each good message of ``asset``: a bad message to send next, or None.

        ``last_ts``/``last_values`` are the newest good reading sent for the asset and
        ``period_s`` its sample period.
        """
        # Both draws every time, so the choice of kind does not shift the stream.
        u = float(self._rng.random())
        k = int(self._rng.integers(len(self.kinds)))
        if u >= self._p_insert:
            return None
        return self.build(
            self.kinds[k],
            asset=asset,
            topic=topic,
            last_ts=last_ts,
            period_s=period_s,
            last_values=last_values,
        )

    def build(
        self,
        kind: BadKind,
        *,
        asset: str,
        topic: str,
        last_ts: float,
        period_s: float,
        last_values: Mapping[str, float],
    ) -> BadMessage:
        """A bad message of ``kind`` for ``asset``, relative to its last good reading."""
        rng = self._rng
        sensors = list(last_values)
        values = dict(last_values)
        pick = sensors[int(rng.integers(len(sensors)))]
        between = last_ts + 0.5 * period_s
        ts: float | None = between
        detail = ""
        payload: bytes
        if kind is BadKind.INVALID_UTF8:
            good = _dumps({"ts": between, "values": values})
            cut = good.index(pick.encode()) + 1
            # Latin-1 bytes from a misconfigured device: not valid UTF-8.
            payload = good[:cut] + b"\xe9\xff" + good[cut:]
            detail = f"bytes 0xe9 0xff inside {pick!r}"
        elif kind is BadKind.INVALID_JSON:
            good = _dumps({"ts": between, "values": values})
            payload = good[: max(1, len(good) // 2)]
            detail = "truncated"
        elif kind is BadKind.SCHEMA:
            variant = int(rng.integers(4))
            if variant == 0:
                values[pick] = "ERR"  # type: ignore[assignment]
                detail = f"{pick} is a string"
                payload = _dumps({"ts": between, "values": values})
            elif variant == 1:
                payload = _dumps({"ts": "not-a-time", "values": values})
                detail = "ts is not a time"
            elif variant == 2:
                payload = _dumps({"ts": between, "values": list(values.values())})
                detail = "values is a list"
            else:
                values[pick] = [values[pick]]  # type: ignore[assignment]
                detail = f"{pick} is a list in a single reading"
                payload = _dumps({"ts": between, "values": values})
        elif kind is BadKind.NON_FINITE:
            token = (math.nan, math.inf, -math.inf)[int(rng.integers(3))]
            values[pick] = token
            payload = _dumps({"ts": between, "values": values})
            detail = f"{pick}={json.dumps(token)}"
        elif kind is BadKind.MISSING_SENSOR:
            del values[pick]
            payload = _dumps({"ts": between, "values": values})
            detail = f"no {pick}"
        elif kind is BadKind.EMPTY_BATCH:
            # "sent" (a key the agent ignores) tells two empty batches of an asset
            # apart: the agent stores a message it already has once, as a redelivery.
            payload = _dumps({"ts": [], "values": {s: [] for s in sensors}, "sent": between})
            ts = None
            detail = "no readings"
        elif kind is BadKind.BATCH_MISMATCH:
            second = last_ts + 0.75 * period_s
            arrays: dict[str, list[float]] = {s: [v, v] for s, v in values.items()}
            arrays[pick] = arrays[pick][:1]
            payload = _dumps({"ts": [between, second], "values": arrays})
            detail = f"{pick} has 1 value for 2 timestamps"
        elif kind is BadKind.TOO_LARGE:
            good = _dumps({"ts": between, "values": values})
            # Valid JSON padded with whitespace: the size is the only defect.
            payload = good + b" " * (self.max_payload_bytes + 1 - len(good))
            detail = f"{len(payload)} bytes > {self.max_payload_bytes}"
        elif kind is BadKind.TS_FUTURE:
            ts = last_ts + self.future_offset_s
            payload = _dumps({"ts": ts, "values": values})
            detail = f"+{self.future_offset_s:.0f}s"
        elif kind is BadKind.TS_PAST:
            ts = max(last_ts - self.past_offset_s, 1.0)
            payload = _dumps({"ts": ts, "values": values})
            detail = f"-{self.past_offset_s:.0f}s"
        elif kind is BadKind.DUPLICATE:
            ts = last_ts
            values[pick] = round(values[pick] + 1.0, 6)
            payload = _dumps({"ts": ts, "values": values})
            detail = f"last timestamp again, {pick} differs"
        elif kind is BadKind.OUT_OF_ORDER:
            ts = last_ts - self.late_periods * period_s
            payload = _dumps({"ts": ts, "values": values})
            detail = f"{self.late_periods * period_s:g}s before the last reading"
        elif kind is BadKind.UNKNOWN_TOPIC:
            topic = self._template.replace("{site}", UNKNOWN_SITE).replace("{asset}", asset)
            payload = _dumps({"ts": between, "values": values})
            detail = f"site {UNKNOWN_SITE!r}"
        elif kind is BadKind.BAD_ASSET_NAME:
            variant = int(rng.integers(3))
            if variant == 0:
                asset = f"{asset}-".ljust(LONG_NAME_CHARS, "x")
                detail = f"{LONG_NAME_CHARS} characters"
            elif variant == 1:
                asset = f"{asset} "
                detail = "trailing space"
            else:
                asset = f"{RIGHT_TO_LEFT_OVERRIDE}{asset}"
                detail = "right-to-left override"
            topic = self._template.replace("{site}", self._site).replace("{asset}", asset)
            payload = _dumps({"ts": between, "values": values})
        else:  # pragma: no cover - exhaustive over BadKind
            raise AssertionError(kind)
        return BadMessage(topic, payload, asset, ts, kind, detail)

    def note_sent(self, message: BadMessage, seq: int) -> BadRecord:
        record = message.record(seq)
        self.records.append(record)
        return record


def records_frame(records: Sequence[BadRecord]) -> pd.DataFrame:
    columns = list(BadRecord.__slots__)
    return pd.DataFrame([asdict(r) for r in records], columns=columns)


def write_records(path: str | Path, records: Sequence[BadRecord]) -> Path:
    """Write the record as ``.jsonl`` (default), ``.csv`` or ``.parquet`` by suffix."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        records_frame(records).to_parquet(out, index=False)
    elif suffix == ".csv":
        records_frame(records).to_csv(out, index=False)
    else:
        with out.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(asdict(r), allow_nan=False) + "\n")
    return out


def read_records(path: str | Path) -> list[BadRecord]:
    """Read a record written by :func:`write_records`."""
    src = Path(path)
    suffix = src.suffix.lower()
    rows: list[dict[str, object]]
    if suffix in (".parquet", ".csv"):
        frame = pd.read_parquet(src) if suffix == ".parquet" else pd.read_csv(src)
        frame = frame.astype(object).where(frame.notna(), None)
        rows = [{str(k): v for k, v in row.items()} for row in frame.to_dict("records")]
    else:
        rows = [json.loads(line) for line in src.read_text("utf-8").splitlines() if line]
    out = []
    for row in rows:
        ts = row["ts"]
        out.append(
            BadRecord(
                seq=int(str(row["seq"])),
                topic=str(row["topic"]),
                asset=str(row["asset"]),
                ts=None if ts is None else float(str(ts)),
                kind=str(row["kind"]),
                reason=str(row["reason"]),
                detail=str(row["detail"]) if row["detail"] is not None else "",
                payload_bytes=int(str(row["payload_bytes"])),
                payload_sha256=str(row["payload_sha256"]),
            )
        )
    return out
