from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain import RejectReason, dead_letter, truncate_for_storage
from agent.errors import PayloadError
from agent.ingest.decode import DecodeLimits, decode_payload
from agent.settings import IngestSettings

NOW_MS = 1_790_000_000_000
NOW_S = NOW_MS / 1000
LIMITS = DecodeLimits(
    max_payload_bytes=4096, max_batch=10, max_future_ms=300_000, max_past_ms=86_400_000
)
RENAME = {"temp_c": "bearing_temp_c", "x": "x_renamed"}


def decode(
    payload: bytes | dict[str, Any],
    limits: DecodeLimits = LIMITS,
    rename: dict[str, str] | None = None,
) -> Any:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return decode_payload("pump-1", "plant1", raw, now_ms=NOW_MS, limits=limits, rename=rename)


def test_single_reading() -> None:
    (reading,) = decode({"ts": NOW_S, "values": {"temp_c": 41.5, "vib_mm_s": 2}})
    assert (reading.site, reading.asset, reading.ts_ms) == ("plant1", "pump-1", NOW_MS)
    assert reading.values == {"temp_c": 41.5, "vib_mm_s": 2.0}
    assert all(type(v) is float for v in reading.values.values())


def test_rfc3339_timestamps() -> None:
    (utc,) = decode({"ts": "2026-09-21T14:13:20Z", "values": {"x": 1.0}})
    assert utc.ts_ms == NOW_MS
    (offset,) = decode({"ts": "2026-09-21T16:13:20.250+02:00", "values": {"x": 1.0}})
    assert offset.ts_ms == NOW_MS + 250
    (lower,) = decode({"ts": "2026-09-21t14:13:20z", "values": {"x": 1.0}})
    assert lower.ts_ms == NOW_MS


def test_batch_is_sorted_by_time() -> None:
    readings = decode(
        {"ts": [NOW_S - 1, NOW_S - 3, NOW_S - 2], "values": {"a": [1, 3, 2], "b": [10, 30, 20]}}
    )
    assert [r.ts_ms for r in readings] == [NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000]
    assert [r.values for r in readings] == [
        {"a": 3.0, "b": 30.0},
        {"a": 2.0, "b": 20.0},
        {"a": 1.0, "b": 10.0},
    ]


def test_batch_with_rfc3339_and_renamed_sensors() -> None:
    readings = decode(
        {
            "ts": ["2026-09-21T14:13:19Z", "2026-09-21T14:13:20Z"],
            "values": {"temp_c": [1.0, 2.0], "vib_mm_s": [0.5, 0.6]},
        },
        rename=RENAME,
    )
    assert [r.ts_ms for r in readings] == [NOW_MS - 1000, NOW_MS]
    assert [r.values for r in readings] == [
        {"bearing_temp_c": 1.0, "vib_mm_s": 0.5},
        {"bearing_temp_c": 2.0, "vib_mm_s": 0.6},
    ]


def test_any_sensor_set_is_accepted_by_the_decoder() -> None:
    # What an asset must carry is judged per asset by the windowing stage.
    for values in ({"a": 1.0}, {"a": 1.0, "b": 2.0, "rpm": 3.0}):
        (reading,) = decode({"ts": NOW_S, "values": values})
        assert reading.values == values


def test_a_rename_onto_an_existing_sensor_is_refused() -> None:
    with pytest.raises(PayloadError) as caught:
        decode({"ts": NOW_S, "values": {"temp_c": 1.0, "bearing_temp_c": 2.0}}, rename=RENAME)
    assert caught.value.reason == RejectReason.SCHEMA
    assert "bearing_temp_c" in caught.value.detail


def test_extra_top_level_keys_are_ignored() -> None:
    (reading,) = decode({"ts": NOW_S, "values": {"x": 1.0}, "seq": 7, "fw": "1.2"})
    assert reading.values == {"x": 1.0}


REJECTS: list[tuple[str, bytes | dict[str, Any], RejectReason, DecodeLimits]] = [
    ("not utf-8", b'{"ts": 1, "values": {"x": "\xff"}}', RejectReason.INVALID_UTF8, LIMITS),
    ("not json", b'{"ts": 1, "values": ', RejectReason.INVALID_JSON, LIMITS),
    ("garbage", b"hello", RejectReason.INVALID_JSON, LIMITS),
    ("empty", b"", RejectReason.INVALID_JSON, LIMITS),
    ("deep nesting", b"[" * 3000 + b"]" * 3000, RejectReason.TOO_LARGE, LIMITS),
    ("deep nesting fits", b"[" * 2000 + b"]" * 2000, RejectReason.INVALID_JSON, LIMITS),
    ("NaN token", b'{"ts": 1790000000, "values": {"x": NaN}}', RejectReason.NON_FINITE, LIMITS),
    (
        "Infinity",
        b'{"ts": 1790000000, "values": {"x": -Infinity}}',
        RejectReason.NON_FINITE,
        LIMITS,
    ),
    ("NaN ts", b'{"ts": NaN, "values": {"x": 1}}', RejectReason.NON_FINITE, LIMITS),
    ("1e400", b'{"ts": 1790000000, "values": {"x": 1e400}}', RejectReason.NON_FINITE, LIMITS),
    (
        "huge int",
        b'{"ts": 1790000000, "values": {"x": 1' + b"0" * 400 + b"}}",
        RejectReason.NON_FINITE,
        LIMITS,
    ),
    ("array", b"[1, 2]", RejectReason.SCHEMA, LIMITS),
    ("no values", {"ts": NOW_S}, RejectReason.SCHEMA, LIMITS),
    ("empty values", {"ts": NOW_S, "values": {}}, RejectReason.SCHEMA, LIMITS),
    ("no ts", {"values": {"x": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("string value", {"ts": NOW_S, "values": {"x": "1.0"}}, RejectReason.SCHEMA, LIMITS),
    ("bool value", {"ts": NOW_S, "values": {"x": True}}, RejectReason.SCHEMA, LIMITS),
    ("null value", {"ts": NOW_S, "values": {"x": None}}, RejectReason.SCHEMA, LIMITS),
    ("bool ts", {"ts": True, "values": {"x": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("naive ts", {"ts": "2026-09-21T14:13:20", "values": {"x": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("date only", {"ts": "2026-09-21", "values": {"x": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("bad date", {"ts": "2026-13-21T13:33:20Z", "values": {"x": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("empty sensor name", {"ts": NOW_S, "values": {"": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("list value, scalar ts", {"ts": NOW_S, "values": {"x": [1.0]}}, RejectReason.SCHEMA, LIMITS),
    ("scalar in batch", {"ts": [NOW_S], "values": {"x": 1.0}}, RejectReason.SCHEMA, LIMITS),
    ("bool in batch", {"ts": [NOW_S], "values": {"x": [False]}}, RejectReason.SCHEMA, LIMITS),
    ("empty batch", {"ts": [], "values": {"x": []}}, RejectReason.EMPTY_BATCH, LIMITS),
    (
        "mismatch",
        {"ts": [NOW_S, NOW_S - 1], "values": {"x": [1.0]}},
        RejectReason.BATCH_MISMATCH,
        LIMITS,
    ),
    (
        "batch too long",
        {"ts": [NOW_S - i for i in range(11)], "values": {"x": [1.0] * 11}},
        RejectReason.TOO_LARGE,
        LIMITS,
    ),
    (
        "payload too large",
        {"ts": NOW_S, "values": {"x": 1.0}, "pad": "x" * 5000},
        RejectReason.TOO_LARGE,
        LIMITS,
    ),
    ("future", {"ts": NOW_S + 301, "values": {"x": 1.0}}, RejectReason.TS_FUTURE, LIMITS),
    ("epoch ms by mistake", {"ts": NOW_MS, "values": {"x": 1.0}}, RejectReason.TS_FUTURE, LIMITS),
    ("huge float ts", {"ts": 1e305, "values": {"x": 1.0}}, RejectReason.TS_FUTURE, LIMITS),
    ("past", {"ts": NOW_S - 86_401, "values": {"x": 1.0}}, RejectReason.TS_PAST, LIMITS),
    ("negative ts", {"ts": -5, "values": {"x": 1.0}}, RejectReason.TS_PAST, LIMITS),
    (
        "past in batch",
        {"ts": [NOW_S, 1.0], "values": {"x": [1.0, 2.0]}},
        RejectReason.TS_PAST,
        LIMITS,
    ),
    (
        "duplicate in batch",
        {"ts": [NOW_S - 1, NOW_S - 2, NOW_S - 1], "values": {"x": [1.0, 2, 3]}},
        RejectReason.DUPLICATE,
        LIMITS,
    ),
]


@pytest.mark.parametrize(
    ("payload", "reason", "limits"), [r[1:] for r in REJECTS], ids=[r[0] for r in REJECTS]
)
def test_rejected_with_reason(
    payload: bytes | dict[str, Any], reason: RejectReason, limits: DecodeLimits
) -> None:
    with pytest.raises(PayloadError) as caught:
        decode(payload, limits)
    assert caught.value.reason == reason
    assert caught.value.detail
    assert len(caught.value.detail) <= 300


def test_every_reason_but_the_stateful_ones_is_covered() -> None:
    covered = {reason for _, _, reason, _ in REJECTS}
    # unknown_topic and bad_asset_name are the topic matcher's; out_of_order and
    # missing_sensor need per-asset history (windowing), too_many_assets the
    # windowing's asset count; unknown_sensor is no longer given (extras are ignored
    # and counted).
    assert set(RejectReason) - covered == {
        RejectReason.UNKNOWN_TOPIC,
        RejectReason.BAD_ASSET_NAME,
        RejectReason.OUT_OF_ORDER,
        RejectReason.MISSING_SENSOR,
        RejectReason.UNKNOWN_SENSOR,
        RejectReason.TOO_MANY_ASSETS,
        # Sparkplug B's, covered by tests/agent/ingest/test_sparkplug.py.
        RejectReason.INVALID_PROTOBUF,
        RejectReason.NO_BIRTH,
    }


HUGE = "9" * 4300  # Python's int <-> str limit: str() of anything longer raises


@pytest.mark.parametrize(
    "payload",
    [
        f'{{"ts": {HUGE}, "values": {{"x": 1}}}}',
        f'{{"ts": -{HUGE}, "values": {{"x": 1}}}}',
        f'{{"ts": {HUGE}9, "values": {{"x": 1}}}}',  # over the limit while parsing
        f'{{"ts": [{HUGE}], "values": {{"x": [1]}}}}',
        f'{{"ts": 1, "values": {{"x": {HUGE}}}}}',
        f'{{"ts": 1, "values": {{"x": [1, {HUGE}]}}}}',
        '{"ts": ' + "9" * 400 + ', "values": {"x": 1}}',
    ],
    ids=["ts", "negative ts", "ts past the limit", "batch ts", "value", "batch value", "400"],
)
def test_integers_of_thousands_of_digits_are_out_of_range(payload: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode(payload.encode(), DecodeLimits(max_payload_bytes=10_000))
    assert caught.value.reason == RejectReason.NON_FINITE
    assert "digits is out of range" in caught.value.detail
    assert len(caught.value.detail) < 100


def test_long_integers_that_fit_a_float_keep_their_verdict() -> None:
    with pytest.raises(PayloadError) as caught:
        decode(b'{"ts": 1' + b"0" * 300 + b', "values": {"x": 1}}')
    assert caught.value.reason == RejectReason.TS_FUTURE
    assert "~1e30" in caught.value.detail  # the order of magnitude, not 300 digits


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1, "values": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "invalid_json"),
        (b'{"ts": 1e400, "values": {"x": 1}}', "non_finite"),
        (b'{"ts": -Infinity, "values": {"x": 1}}', "non_finite"),
        (b'{"ts": 1, "values": {"x": 1e999}}', "non_finite"),
        (b'{"ts": 1, "values": {"\\ud800": 1}}', "schema"),
        (b'{"ts": "2026-09-21T14:13:20\\udfffZ", "values": {"x": 1}}', "schema"),
        (b"\xef\xbb\xbf{}", "invalid_json"),
        (b"[]", "schema"),
        (b"null", "schema"),
        (b'"x"', "schema"),
        (b'{"ts": true, "values": {"x": 1}}', "schema"),
        (b'{"ts": {"a": 1}, "values": {"x": 1}}', "schema"),
        (b'{"ts": "9999-12-31T23:59:59-23:59", "values": {"x": 1}}', "ts_future"),
        (b'{"ts": "0001-01-01T00:00:00+23:59", "values": {"x": 1}}', "ts_past"),
    ],
    ids=[
        "deep list",
        "deep object",
        "huge float ts",
        "Infinity ts",
        "huge float value",
        "lone surrogate sensor",
        "lone surrogate ts",
        "BOM",
        "list",
        "null",
        "string",
        "bool ts",
        "object ts",
        "year 9999",
        "year 1",
    ],
)
def test_hostile_json(payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        decode(payload, DecodeLimits(max_payload_bytes=1_000_000, max_past_ms=86_400_000))
    assert caught.value.reason == reason
    caught.value.detail.encode("utf-8")  # storable as it is


def test_limits_from_settings() -> None:
    limits = DecodeLimits.from_settings(
        IngestSettings.model_validate(
            {"max_future_s": 1.5, "max_past_s": 60, "max_batch": 5, "max_payload_bytes": 100}
        )
    )
    assert (limits.max_future_ms, limits.max_past_ms, limits.max_batch) == (1500, 60_000, 5)
    assert limits.max_payload_bytes == 100


def test_dead_letter_truncates_and_keeps_the_size() -> None:
    payload = b"x" * 100
    with pytest.raises(PayloadError) as caught:
        decode(payload)
    letter = dead_letter("t/a", payload, caught.value, NOW_MS, 10, asset="a")
    assert letter.payload == b"x" * 10
    assert letter.payload_size == 100
    assert letter.reason is RejectReason.INVALID_JSON
    assert (letter.topic, letter.asset, letter.received_ms) == ("t/a", "a", NOW_MS)
    assert truncate_for_storage(b"abc", 10) == b"abc"
    assert truncate_for_storage(b"abc", 0) == b""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
timestamps = st.one_of(
    st.floats(NOW_S - 100_000, NOW_S + 1000),
    st.integers(),
    st.text(max_size=30),
    st.just("2026-09-21T14:13:20Z"),
)
plausible = st.fixed_dictionaries(
    {
        "ts": timestamps | st.lists(timestamps, max_size=12),
        "values": st.dictionaries(
            st.sampled_from(["temp_c", "vib_mm_s", "x", ""]),
            st.floats()
            | st.integers()
            | st.lists(st.floats() | st.integers(), max_size=12)
            | json_values,
            max_size=4,
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=300))
def test_random_bytes_only_raise_payload_error(payload: bytes) -> None:
    for rename in (None, RENAME):
        try:
            decode(payload, rename=rename)
        except PayloadError as exc:
            assert exc.reason in set(RejectReason)


@settings(max_examples=400, deadline=None)
@given(doc=plausible | json_values)
def test_json_documents_only_raise_payload_error(doc: Any) -> None:
    text = json.dumps(doc)  # stdlib: writes NaN/Infinity tokens like some devices
    for rename in (None, RENAME):
        try:
            readings = decode(text.encode(), rename=rename)
        except PayloadError as exc:
            assert exc.reason in set(RejectReason)
        else:
            assert readings
            stamps = [r.ts_ms for r in readings]
            assert stamps == sorted(set(stamps))
            for reading in readings:
                assert all(type(v) is float and math.isfinite(v) for v in reading.values.values())


# Raw JSON text, so that it can hold what json.dumps never writes: integers past the
# int <-> str limit, NaN/Infinity tokens, lone surrogate escapes, deep nesting.
hostile_numbers = st.one_of(
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=1, max_value=6000).map(lambda n: "-1" + "0" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "0.0"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers().map(str),
    st.just(str(NOW_S)),
)
hostile_strings = st.one_of(
    st.text(max_size=12).map(json.dumps),
    st.sampled_from(['"\\ud800"', '"\\udfff x"', '"2026-09-21T14:13:20Z"', '""', '"\\u0000"']),
)


def _nest(depth: int, inner: str) -> str:
    return "[" * depth + inner + "]" * depth


hostile_values = st.recursive(
    hostile_numbers | hostile_strings | st.sampled_from(["true", "null", "{}", "[]"]),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        st.lists(st.tuples(hostile_strings, inner), max_size=4).map(
            lambda pairs: "{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}"
        ),
        st.builds(_nest, st.integers(min_value=1, max_value=5000), inner),
    ),
    max_leaves=10,
)
hostile_docs = st.one_of(
    hostile_values,
    st.builds(
        '{{"ts": {}, "values": {{{}: {}}}}}'.format,
        hostile_values,
        hostile_strings,
        hostile_values,
    ),
)


@settings(max_examples=500, deadline=None)
@given(text=hostile_docs)
def test_hostile_json_text_only_raises_payload_error(text: str) -> None:
    limits = DecodeLimits(max_payload_bytes=1_000_000, max_past_ms=10**15)
    raw = text.encode("utf-8", "surrogatepass")
    for rename in (None, RENAME):
        try:
            readings = decode(raw, limits, rename=rename)
        except PayloadError as exc:
            assert exc.reason in set(RejectReason)
            exc.detail.encode("utf-8")  # a dead letter's detail is stored as it is
        else:
            for reading in readings:
                assert all(type(v) is float and math.isfinite(v) for v in reading.values.values())
                for name in reading.values:
                    name.encode("utf-8")
