"""Payload decoding and validation: bytes in, readings or a reason code out.

Pure and stateless, so it runs for every message without locks and is easy to fuzz.
Checks that need per-asset history (duplicates and ordering across messages) belong
to the windowing stage.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import orjson

from agent.domain import Batch, Reading, RejectReason, clip_detail, sensor_name
from agent.errors import PayloadError
from agent.settings import IngestSettings

_MS_PER_S: Final = 1000
# "YYYY-MM-DDTHH:MM:SSZ" is the shortest RFC 3339 date-time.
_RFC3339_MIN_LEN: Final = 20
_TS_FLOAT_MAX_S: Final = 1e300
# No finite float has more integer digits than this (1.8e308), so a longer JSON
# integer is out of every range we accept; refusing it while parsing also keeps clear
# of Python's int <-> str digit limit (4300), which raises ValueError.
_INT_DIGITS_MAX: Final = 320
_LOG10_2: Final = math.log10(2)
_FLOATS: Final = {float}


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What a payload may be; built once from settings and shared by every decode."""

    max_payload_bytes: int = 65536
    max_batch: int = 1000
    max_future_ms: int = 300_000
    max_past_ms: int = 30 * 86_400_000

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> DecodeLimits:
        return cls(
            max_payload_bytes=ingest.max_payload_bytes,
            max_batch=ingest.max_batch,
            max_future_ms=round(ingest.max_future_s * _MS_PER_S),
            max_past_ms=round(ingest.max_past_s * _MS_PER_S),
        )


def decode_payload(
    asset: str,
    site: str,
    payload: bytes,
    *,
    now_ms: int,
    limits: DecodeLimits,
    rename: Mapping[str, str] | None = None,
) -> Sequence[Reading]:
    """Turn one message into readings, sorted by time, or raise :class:`PayloadError`.

    Accepts ``{"ts": T, "values": {"sensor": x}}`` and the batch form
    ``{"ts": [T, ...], "values": {"sensor": [x, ...]}}`` where T is epoch seconds or
    an RFC 3339 string. Keys other than ``ts`` and ``values`` are ignored. Any sensor
    set is accepted here: what an asset must carry is the windowing stage's to judge.
    ``rename`` maps incoming sensor names to the asset profile's. A batch comes back
    as a :class:`~agent.domain.Batch` (its readings as columns).
    """
    if len(payload) > limits.max_payload_bytes:
        raise PayloadError(
            RejectReason.TOO_LARGE,
            f"{len(payload)} bytes > max_payload_bytes {limits.max_payload_bytes}",
        )
    slow = False
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = _parse_slow(payload)
        slow = True
    if type(doc) is not dict:
        raise PayloadError(RejectReason.SCHEMA, "payload must be a JSON object")
    ts = doc.get("ts")
    values = doc.get("values")
    if type(values) is not dict or not values:
        raise PayloadError(RejectReason.SCHEMA, "'values' must be a non-empty object")
    if slow:
        _check_names(values)
    if rename:
        values = _renamed(values, rename)
    if type(ts) is list:
        return _decode_batch(asset, site, ts, values, now_ms, limits)

    for name, value in values.items():
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise PayloadError(RejectReason.NON_FINITE, f"{sensor_name(name)} is {value}")
        elif kind is int:
            values[name] = _int_value(name, value)
        elif kind is list:
            raise PayloadError(RejectReason.SCHEMA, "'ts' must be a list when values are lists")
        else:
            raise _not_a_number(name, value)
        if not name:
            raise PayloadError(RejectReason.SCHEMA, "sensor names must not be empty")
    ts_ms = _ts_ms(ts, now_ms, limits)
    return (Reading(site, asset, ts_ms, values),)


def _decode_batch(
    asset: str,
    site: str,
    ts: list[Any],
    values: dict[str, Any],
    now_ms: int,
    limits: DecodeLimits,
) -> Batch:
    size = len(ts)
    if size == 0:
        raise PayloadError(RejectReason.EMPTY_BATCH, "'ts' is an empty list")
    if size > limits.max_batch:
        raise PayloadError(
            RejectReason.TOO_LARGE, f"{size} readings > max_batch {limits.max_batch}"
        )
    columns: list[list[float]] = []
    for name, column in values.items():
        if type(column) is not list:
            raise PayloadError(
                RejectReason.SCHEMA, f"{sensor_name(name)} must be a list like 'ts' in a batch"
            )
        if len(column) != size:
            raise PayloadError(
                RejectReason.BATCH_MISMATCH,
                f"{sensor_name(name)} has {len(column)} values for {size} timestamps",
            )
        if not name:
            raise PayloadError(RejectReason.SCHEMA, "sensor names must not be empty")
        # The common case in C (map), element by element only to find what is wrong.
        if set(map(type, column)) != _FLOATS or not all(map(math.isfinite, column)):
            _check_column(name, column)
        columns.append(column)

    stamps = _batch_stamps(ts, now_ms, limits)
    order: range | list[int] = range(size)
    if not all(map(operator.lt, stamps, itertools.islice(stamps, 1, None))):
        # A batch is one device's buffer: it may be in any order, but one instant
        # cannot carry two samples.
        order = sorted(range(size), key=stamps.__getitem__)
        for a, b in itertools.pairwise(order):
            if stamps[a] == stamps[b]:
                raise PayloadError(
                    RejectReason.DUPLICATE, f"timestamp {stamps[a]} ms repeats in the batch"
                )
    # Columns, not an object per reading: the windowing and storage stages read them
    # whole (see Batch).
    times = np.array(stamps, dtype=np.int64)
    matrix = np.array(columns, dtype=np.float64).reshape(len(columns), size)
    if isinstance(order, list):
        index = np.array(order, dtype=np.intp)
        times, matrix = times[index], matrix[:, index]
    return Batch(site, asset, tuple(values), times, matrix)


def _check_column(name: str, column: list[Any]) -> None:
    """Raise for the first bad value of a batch column; ints become floats in place."""
    for index, value in enumerate(column):
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                raise PayloadError(
                    RejectReason.NON_FINITE, f"{sensor_name(name)}[{index}] is {value}"
                )
        elif kind is int:
            column[index] = _int_value(name, value)
        else:
            raise _not_a_number(name, value)


def _batch_stamps(ts: list[Any], now_ms: int, limits: DecodeLimits) -> list[int]:
    """Epoch ms of a batch's timestamps: float seconds in bulk, anything else one by one."""
    if set(map(type, ts)) == _FLOATS and all(map(math.isfinite, ts)):
        try:
            stamps = [round(t * _MS_PER_S) for t in ts]
        except OverflowError:
            stamps = []
        if (
            stamps
            and min(stamps) >= now_ms - limits.max_past_ms
            and max(stamps) <= now_ms + limits.max_future_ms
        ):
            return stamps
    # Also the path of every refusal, so that it names the first bad timestamp.
    return [_ts_ms(t, now_ms, limits) for t in ts]


def _ts_ms(ts: Any, now_ms: int, limits: DecodeLimits) -> int:
    kind = type(ts)
    if kind is float:
        if not math.isfinite(ts):
            raise PayloadError(RejectReason.NON_FINITE, f"timestamp is {ts}")
        # Past this, ts * 1000 overflows to inf; any such time is far outside the window.
        ts_ms = round(ts * _MS_PER_S) if abs(ts) < _TS_FLOAT_MAX_S else int(ts)
    elif kind is int:
        ts_ms = ts * _MS_PER_S
    elif kind is str:
        ts_ms = _rfc3339_ms(ts)
    else:
        raise PayloadError(RejectReason.SCHEMA, "'ts' must be epoch seconds or an RFC 3339 string")
    if ts_ms > now_ms + limits.max_future_ms:
        raise PayloadError(
            RejectReason.TS_FUTURE, f"ts is {_ms(ts_ms - now_ms)} ms ahead of the clock"
        )
    if ts_ms < now_ms - limits.max_past_ms:
        raise PayloadError(RejectReason.TS_PAST, f"ts is {_ms(now_ms - ts_ms)} ms behind the clock")
    return ts_ms


def _rfc3339_ms(text: str) -> int:
    # fromisoformat also takes ISO 8601 forms RFC 3339 does not (week dates, no
    # separators, no offset); the shape check keeps to date-times with an offset.
    upper = text.upper()
    if (
        len(upper) < _RFC3339_MIN_LEN
        or upper[4] != "-"
        or upper[7] != "-"
        or upper[10] not in "T "
        or not (upper.endswith("Z") or upper[-6] in "+-")
    ):
        raise PayloadError(
            RejectReason.SCHEMA, f"{clip_detail(text)!r} is not an RFC 3339 date-time"
        )
    try:
        stamp = datetime.fromisoformat(upper)
        if stamp.tzinfo is None:
            raise PayloadError(RejectReason.SCHEMA, f"{clip_detail(text)!r} has no UTC offset")
        return round(stamp.timestamp() * _MS_PER_S)
    except (ValueError, OverflowError):
        raise PayloadError(
            RejectReason.SCHEMA, f"{clip_detail(text)!r} is not an RFC 3339 date-time"
        ) from None


def _parse_slow(payload: bytes) -> Any:
    """Second opinion when orjson refuses: tell bad UTF-8, bad JSON and NaN apart.

    Devices written in Python emit ``NaN``/``Infinity`` tokens, which are not JSON;
    they deserve the precise ``non_finite`` verdict rather than ``invalid_json``.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            RejectReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}"
        ) from None
    constants: list[str] = []

    def constant(token: str) -> float:
        constants.append(token)
        return float(token)

    try:
        doc = json.loads(text, parse_constant=constant, parse_int=_bounded_int)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(RejectReason.INVALID_JSON, clip_detail(str(exc))) from None
    if constants:
        raise PayloadError(RejectReason.NON_FINITE, f"{constants[0]} is not a finite number")
    # Valid JSON orjson refuses (lone surrogates, huge numbers) goes on to the schema
    # checks, which reject whatever is still wrong with it.
    return doc


def _bounded_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > _INT_DIGITS_MAX:
        raise PayloadError(RejectReason.NON_FINITE, f"a number of {digits} digits is out of range")
    return int(text)


def _check_names(values: dict[str, Any]) -> None:
    # Only the stdlib parser lets "\ud800" escapes through as lone surrogates: such a
    # name cannot be stored (SQLite and orjson want valid UTF-8) and would fail a
    # whole commit further down instead of this one message.
    for name in values:
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(
                RejectReason.SCHEMA, f"sensor name {sensor_name(name)} is not valid Unicode"
            ) from None


def _int_value(name: str, value: int) -> float:
    try:
        result = float(value)
    except OverflowError:
        raise PayloadError(
            RejectReason.NON_FINITE, f"{sensor_name(name)} is out of range"
        ) from None
    return result


def _not_a_number(name: str, value: object) -> PayloadError:
    return PayloadError(
        RejectReason.SCHEMA, f"{sensor_name(name)} must be a number, not {type(value).__name__}"
    )


def _renamed(values: dict[str, Any], rename: Mapping[str, str]) -> dict[str, Any]:
    out = {rename.get(name, name): value for name, value in values.items()}
    if len(out) != len(values):
        clash = sorted(set(values) & set(rename.values()))
        raise PayloadError(
            RejectReason.SCHEMA,
            f"renamed sensors clash with sensors of the same name: {', '.join(clash[:5])}",
        )
    return out


def _ms(delta: int) -> str:
    # Absurd timestamps make absurdly long numbers; the order of magnitude is enough,
    # and str() of one past 4300 digits raises ValueError.
    if delta.bit_length() <= 53:
        return str(delta)
    return f"~1e{int(delta.bit_length() * _LOG10_2)}"
