from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from agent.domain import (
    AssetPlan,
    Batch,
    DeadLetter,
    Inbound,
    MessageRef,
    Reading,
    RejectReason,
    Window,
)
from agent.metrics import Metrics
from agent.profiles import PROFILE_CACHE_ASSETS, BundleShape, Profiles
from agent.settings import ModelSettings, ProfileSettings
from agent.windowing.assembler import Phase, WindowAssembler
from agent.windowing.stream import AssetStream

SENSORS = ("a", "b")
BUNDLE = BundleShape(SENSORS, has_rul=True, has_anomaly=True)
PLAN = AssetPlan(SENSORS, from_bundle=True, rul=True)


def profiles(commission_samples: int = 50, *tables: dict[str, object]) -> Profiles:
    return Profiles(
        [ProfileSettings.model_validate(t) for t in tables],
        ModelSettings.model_validate({"commission_samples": commission_samples}),
    )


def assembler(
    commissioned: set[str],
    commission_samples: int = 50,
    *tables: dict[str, object],
    bundle: BundleShape = BUNDLE,
    metrics: Metrics | None = None,
    max_assets: int | None = None,
) -> WindowAssembler:
    return WindowAssembler(
        max_assets=max_assets,
        profiles=profiles(commission_samples, *tables),
        bundle=bundle,
        window=4,
        hop=2,
        reorder_samples=2,
        gap_factor=10,
        commissioned={asset: PLAN for asset in commissioned},
        metrics=metrics or Metrics(),
    )


def p1_assembler(hop: int, bundle: BundleShape = BUNDLE, plan: AssetPlan = PLAN) -> WindowAssembler:
    """One commissioned asset, p1, with windows of 8 (the tests of whole streams)."""
    return WindowAssembler(
        profiles=profiles(),
        bundle=bundle,
        window=8,
        hop=hop,
        reorder_samples=2,
        gap_factor=5,
        commissioned={"p1": plan},
        metrics=Metrics(),
    )


def message(asset: str, *times: int, mid: int = 1) -> Inbound:
    readings = tuple(Reading("s", asset, ts, {"a": ts / 1000, "b": 1.0}) for ts in times)
    return Inbound(MessageRef(mid, 1, 0), 5, readings=readings)


def test_commissioned_assets_yield_windows() -> None:
    asm = assembler({"p1"})
    out = asm.process(message("p1", 1000, 2000, 3000, 4000))
    assert [w.end_ms for w in out.windows] == [4000]
    assert out.accepted.readings == message("p1", 1000, 2000, 3000, 4000).readings
    assert out.accepted.ref == MessageRef(1, 1, 0)


def test_new_asset_is_commissioned_from_its_first_samples() -> None:
    asm = assembler(set(), 50, {"match": "new", "sensors": ["a", "b"]})
    out = asm.process(message("new", *range(1000, 50_000, 1000)))
    assert out.windows == () and out.requests == ()
    out = asm.process(message("new", 50_000, 51_000, 52_000))
    assert len(out.requests) == 1
    request = out.requests[0]
    assert request.samples.shape == (50, 2)
    assert (request.first_ms, request.last_ms) == (1000, 50_000)
    assert request.samples[:, 0].tolist() == list(range(1, 51))
    assert request.plan == PLAN
    # The readings after the baseline are windowed at once (inference holds them
    # until the baseline is ready), the reading that ended the baseline's is not.
    assert [w.end_ms for w in out.windows] == [52_000]
    assert asm.process(message("new", 53_000)).requests == ()  # asked once only
    asm.mark_commissioned("new")
    assert asm.phase_of("new") is Phase.MONITORING
    out = asm.process(message("new", 54_000, 55_000))
    assert out.windows  # scored from now on


def test_an_unknown_machine_learns_its_sensor_set_and_gets_its_own_model() -> None:
    asm = assembler(set(), 50)
    odd = [Reading("s", "rig-1", 1000, {"p_bar": 1.0})]  # one stray message is outvoted
    readings = odd + [
        Reading("s", "rig-1", ts, {"p_bar": 1.0, "t_c": ts / 1000, "i_a": 2.0})
        for ts in range(2000, 80_000, 1000)
    ]
    out = [
        asm.process(Inbound(MessageRef(i, 1, 0), 5, readings=(r,))) for i, r in enumerate(readings)
    ]
    learnt = [e for o in out for e in o.events if e.kind == "sensors_learnt"]
    assert len(learnt) == 1 and learnt[0].detail is not None
    assert learnt[0].detail["sensors"] == ["i_a", "p_bar", "t_c"]
    # Every well-formed reading is kept, the learning ones included.
    assert sum(len(o.accepted.readings) for o in out) == len(readings)
    (request,) = [r for o in out for r in o.requests]
    assert request.plan == AssetPlan(("i_a", "p_bar", "t_c"), from_bundle=False, rul=False)
    # The baseline starts with the readings of the vote that have the set.
    assert request.first_ms == 2000
    assert request.samples[:3, 2].tolist() == [2.0, 3.0, 4.0]


@pytest.mark.parametrize("columns", [False, True], ids=["readings", "columns"])
def test_a_machine_sending_batches_learns_its_sensors_from_as_many_readings(
    columns: bool,
) -> None:
    # learn_readings (20) counts readings, not messages: two 10-reading batch payloads
    # learn the set as 20 single-reading messages do. (C-MAPSS engines replayed in
    # 20-reading batches, 7-18 messages each, were never learnt nor scored.)
    asm = assembler(set(), 50)
    learnt_at = []
    for i in range(4):
        batch = tuple(
            Reading("s", "rig-2", ts, {"p_bar": 1.0, "t_c": ts / 1000})
            for ts in range(1000 + 10_000 * i, 11_000 + 10_000 * i, 1000)
        )
        given = Batch.of(batch) if columns else batch
        out = asm.process(Inbound(MessageRef(i, 1, 0), 5, readings=given))
        assert len(out.accepted.readings) == 10
        learnt_at += [i for e in out.events if e.kind == "sensors_learnt"]
    assert learnt_at == [1]
    assert asm.plan_of("rig-2") == AssetPlan(("p_bar", "t_c"), from_bundle=False, rul=False)


def test_an_asset_with_the_bundle_sensors_and_more_uses_the_bundle() -> None:
    metrics = Metrics()
    asm = assembler({"p1"}, metrics=metrics)
    batch = tuple(Reading("s", "p1", ts, {"a": 1.0, "b": 2.0, "extra": 3.0}) for ts in (1000, 2000))
    out = asm.process(Inbound(MessageRef(1, 1, 0), 5, readings=batch))
    assert out.accepted.readings == batch and out.accepted.rejected is None
    assert metrics.sensor_values_ignored == 2
    new = assembler(set())
    for i, ts in enumerate(range(1000, 25_000, 1000)):
        reading = Reading("s", "p2", ts, {"b": 1.0, "a": 2.0, "extra": 3.0})
        new.process(Inbound(MessageRef(i, 1, 0), 5, readings=(reading,)))
    assert new.plan_of("p2") == PLAN


def test_a_rul_only_bundle_scores_from_the_first_window_without_baseline() -> None:
    rul_only = BundleShape(SENSORS, has_rul=True, has_anomaly=False)
    asm = assembler(set(), 50, {"sensors": ["a", "b"]}, bundle=rul_only)
    out = asm.process(message("engine-1", 1000, 2000, 3000, 4000))
    (request,) = out.requests
    assert request.plan == AssetPlan(SENSORS, from_bundle=True, rul=True, baseline=False)
    assert request.samples.shape[0] == 0
    assert [w.end_ms for w in out.windows] == [4000]


def test_extras_from_the_first_message_are_counted_and_never_a_sensor_change() -> None:
    metrics = Metrics()
    rul_only = BundleShape(SENSORS, has_rul=True, has_anomaly=False)
    asm = assembler(set(), 50, bundle=rul_only, metrics=metrics)
    events: list[str] = []
    windows = 0
    for i in range(40):
        values = {"a": float(i), "b": 1.0, "setting": 0.5, "s01": 2.0}
        out = asm.process(_single("engine-1", 1000 * (i + 1), values, mid=i + 1))
        events.extend(e.kind for e in out.events)
        windows += len(out.windows)
    assert asm.plan_of("engine-1") == AssetPlan(SENSORS, from_bundle=True, rul=True, baseline=False)
    # Every reading's two extras, those of the learning vote included.
    assert metrics.sensor_values_ignored == 2 * 40
    assert "sensor_set_changed" not in events and windows > 0


def _single(asset: str, ts: int, values: dict[str, float], mid: int = 1) -> Inbound:
    return Inbound(
        MessageRef(mid, 1, 0),
        5,
        readings=(Reading("s", asset, ts, values),),
        topic=f"edgewatch/s/{asset}/telemetry",
        payload=b'{"raw": 1}',
    )


def test_a_missing_sensor_is_a_dead_letter_until_the_change_is_for_good() -> None:
    metrics = Metrics()
    asm = assembler({"p1"}, metrics=metrics)
    ts = 1000
    for _ in range(8):
        asm.process(_single("p1", ts, {"a": 1.0, "b": 2.0}))
        ts += 1000
    out = asm.process(_single("p1", ts, {"a": 1.0}))
    letter = out.accepted.rejected
    assert letter is not None and letter.reason is RejectReason.MISSING_SENSOR
    assert "'b'" in letter.detail and letter.payload == b'{"raw": 1}'
    assert letter.topic == "edgewatch/s/p1/telemetry" and out.accepted.readings == ()
    ts += 1000
    # One reading with the sensor back: a passing fault, not a change.
    assert asm.process(_single("p1", ts, {"a": 1.0, "b": 2.0})).accepted.rejected is None
    events, letters, kept = [], 0, 0
    for _ in range(40):
        ts += 1000
        out = asm.process(_single("p1", ts, {"a": 1.0}))
        events += [e for e in out.events]
        letters += out.accepted.rejected is not None
        kept += len(out.accepted.readings)
    assert [e.kind for e in events] == ["sensor_set_changed"]
    assert events[0].detail is not None and events[0].detail["removed"] == ["b"]
    assert "edgewatch baseline reset p1" in events[0].message
    # Dead letters until the change is known for good, then stored unscored.
    assert letters == 9 and kept == 31
    assert metrics.readings_unscored == 31
    assert metrics.dead_letters["missing_sensor"] == 10
    # The sensor comes back: scored again, and a later change is reported again.
    out = asm.process(_single("p1", ts + 1000, {"a": 1.0, "b": 2.0}))
    assert out.accepted.readings and out.accepted.rejected is None


def test_a_sensor_added_for_good_is_reported_once_and_ignored() -> None:
    metrics = Metrics()
    asm = assembler({"p1"}, metrics=metrics)
    kinds = []
    for i in range(30):
        out = asm.process(_single("p1", 1000 * (i + 1), {"a": 1.0, "b": 2.0, "new_c": 3.0}))
        kinds += [e.kind for e in out.events]
        assert out.accepted.rejected is None and len(out.accepted.readings) == 1
    assert kinds == ["sensor_set_changed"]
    assert metrics.sensor_values_ignored == 30


def test_renames_and_listed_sensors_come_from_the_profile() -> None:
    p = profiles(
        50,
        {"match": "rig-*", "sensors": ["x", "y"], "rename": {"X1": "x"}, "commission_samples": 60},
        {"match": "*", "bundle": "none"},
    )
    assert p.renames("rig-7") == {"X1": "x"} and p.renames("pump-1") is None
    assert p.commission_samples("rig-7") == 60 and p.commission_samples("pump-1") == 50
    assert p.fixed_sensors("rig-7") == ("x", "y")
    # bundle = "none": its own model even with exactly the bundle's sensors.
    assert p.plan("pump-1", SENSORS, BUNDLE) == AssetPlan(SENSORS, from_bundle=False, rul=False)


def test_late_readings_go_to_the_recorder_for_judgement() -> None:
    asm = assembler({"p1"})
    asm.process(message("p1", *range(1000, 9000, 1000)))
    out = asm.process(message("p1", 8000, 1500))
    assert out.accepted.readings == ()
    reasons = [reason for _, reason in out.accepted.late]
    assert reasons == [RejectReason.DUPLICATE, RejectReason.OUT_OF_ORDER]


def test_rejected_messages_pass_through() -> None:
    asm = assembler({"p1"})
    letter = DeadLetter(1, "t", b"x", 1, RejectReason.INVALID_JSON, "bad")
    out = asm.process(Inbound(MessageRef(3, 1, 0), 1, rejected=letter))
    assert out.accepted.rejected == letter
    assert out.windows == ()


def test_gap_restart_is_an_event() -> None:
    asm = assembler({"p1"})
    asm.process(message("p1", *range(1000, 6000, 1000)))
    out = asm.process(message("p1", 600_000))
    assert [e.kind for e in out.events] == ["window_restart"]
    assert out.events[0].asset == "p1"


def _messy_stream(seed: int, n: int = 600) -> list[Reading]:
    """Readings as devices send them: jitter, gaps, small reorders, repeats, stragglers."""
    rng = np.random.default_rng(seed)
    stamps: list[int] = []
    ts = 1_000_000
    for _ in range(n):
        ts += 1000 + int(rng.integers(-50, 50)) + (30_000 if rng.random() < 0.01 else 0)
        stamps.append(ts)
    for _ in range(n // 20):
        i = int(rng.integers(1, n))
        stamps[i - 1], stamps[i] = stamps[i], stamps[i - 1]
    for _ in range(n // 50):
        i = int(rng.integers(10, n))
        stamps.insert(i, stamps[i - int(rng.integers(1, 10))])
    return [
        Reading("s", "p1", t, {"a": float(rng.normal()), "b": float(i)})
        for i, t in enumerate(stamps)
    ]


def _key(r: Reading) -> tuple[int, list[tuple[str, float]]]:
    return r.ts_ms, sorted(r.values.items())


@pytest.mark.parametrize("columns", [False, True], ids=["readings", "columns"])
@pytest.mark.parametrize("min_rows", [None, 3])
def test_batches_give_exactly_the_windows_of_one_reading_at_a_time(
    min_rows: int | None, columns: bool
) -> None:
    # Batch payloads take a bulk path (AssetStream.extend); it must cut the same
    # windows, restart at the same gaps and turn away the same readings as add(),
    # front-padded windows of a RUL-only bundle included; given as readings or as
    # the columns a decoded batch payload is (Batch).
    bundle, plan = BUNDLE, PLAN
    if min_rows is not None:
        bundle = BundleShape(SENSORS, has_rul=True, has_anomaly=False, min_rows=min_rows)
        plan = AssetPlan(SENSORS, from_bundle=True, rul=True, baseline=False)
    for seed in range(5):
        readings = _messy_stream(seed)
        reference = AssetStream(
            "p1", SENSORS, window=8, hop=3, reorder_samples=2, gap_factor=5, min_rows=min_rows
        )
        want_windows: list[Window] = []
        want_late: list[int] = []
        restarts = 0
        for r in readings:
            result = reference.add(r)
            if result.window is not None:
                want_windows.append(result.window)
            if not result.accepted:
                want_late.append(r.ts_ms)
            restarts += result.restarted_after_ms is not None

        asm = p1_assembler(3, bundle, plan)
        rng = np.random.default_rng(seed + 100)
        got_windows: list[Window] = []
        got_late: list[int] = []
        got_kept, got_restarts = 0, 0
        i = 0
        while i < len(readings):
            size = int(rng.integers(1, 60))  # up to beyond the buffer's capacity
            batch = tuple(readings[i : i + size])
            i += size
            given = Batch.of(batch) if columns else batch
            out = asm.process(Inbound(MessageRef(i, 1, 0), 5, readings=given))
            got_windows.extend(out.windows)
            got_late.extend(r.ts_ms for r, _ in out.accepted.late)
            got_kept += len(out.accepted.readings)
            # Every reading of the message is kept or late, values as sent.
            seen = [*out.accepted.readings, *(r for r, _ in out.accepted.late)]
            assert sorted(seen, key=_key) == sorted(batch, key=_key)
            got_restarts += len(out.events)
        assert got_late == want_late
        assert got_kept == len(readings) - len(want_late)
        assert got_restarts == restarts > 0
        assert [(w.start_ms, w.end_ms) for w in got_windows] == [
            (w.start_ms, w.end_ms) for w in want_windows
        ]
        for got, want in zip(got_windows, want_windows, strict=True):
            np.testing.assert_array_equal(got.data, want.data)


# --- the asset cap (ingest.max_assets) ---


def test_an_asset_flood_is_held_to_the_cap_and_every_reading_is_kept() -> None:
    metrics = Metrics()
    asm = assembler({"p1"}, metrics=metrics, max_assets=100)
    largest = 0
    kept = 0
    for i in range(20_000):
        out = asm.process(_single(f"fake-{i}", 1000, {"a": 1.0, "b": 2.0}, mid=i))
        largest = max(largest, asm.asset_count)
        kept += len(out.accepted.readings)
        assert out.accepted.rejected is None
    assert largest == 100
    assert kept == 20_000  # evicted assets lose their copy in memory, not their readings
    assert metrics.assets_evicted == 20_000 - 99
    assert asm.phase_of("p1") is Phase.MONITORING  # never evicted
    assert asm.phase_of("fake-19999") is Phase.LEARNING
    assert asm.phase_of("fake-0") is None


def test_memory_stays_flat_through_an_asset_flood() -> None:
    def flood(asm: WindowAssembler, first: int, n: int) -> None:
        for i in range(first, first + n):
            asm.process(_single(f"fake-{i}", 1000, {"a": 1.0, "b": 2.0}, mid=i))

    capped = assembler(set(), max_assets=100)
    # Traced from the start, so that what the flood frees counts too.
    tracemalloc.start()
    try:
        # Past the cap (every new asset evicts one) and past the profile lookup
        # cache, which is bounded on its own.
        warm = PROFILE_CACHE_ASSETS + 1000
        flood(capped, 0, warm)
        before = tracemalloc.get_traced_memory()[0]
        flood(capped, warm, 10_000)
        grown = tracemalloc.get_traced_memory()[0] - before
        uncapped = assembler(set())
        before = tracemalloc.get_traced_memory()[0]
        flood(uncapped, 0, 10_000)
        uncapped_grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Without the cap the same flood keeps every asset (~1 KB each here, one reading).
    assert uncapped_grown > 5_000_000
    assert grown < uncapped_grown / 50, f"{grown} bytes kept after 10,000 evictions"


def test_the_least_recently_seen_uncommissioned_asset_is_evicted() -> None:
    asm = assembler(set(), max_assets=3)
    for ts, asset in enumerate(("a", "b", "c", "a"), start=1):
        asm.process(_single(asset, 1000 * ts, {"a": 1.0, "b": 2.0}))
    asm.process(_single("d", 5000, {"a": 1.0, "b": 2.0}))
    assert [asm.phase_of(x) is not None for x in "abcd"] == [True, False, True, True]


def test_collecting_assets_are_evicted_commissioning_ones_are_not() -> None:
    metrics = Metrics()
    fixed: dict[str, object] = {"match": "*", "sensors": ["a", "b"]}
    asm = assembler(set(), 50, fixed, metrics=metrics, max_assets=2)
    # "busy" fills its baseline (50 samples) and is being commissioned.
    out = asm.process(message("busy", *range(1000, 52_000, 1000)))
    assert len(out.requests) == 1 and asm.phase_of("busy") is Phase.COMMISSIONING
    asm.process(message("slow", 1000, 2000))
    assert asm.phase_of("slow") is Phase.COLLECTING
    out = asm.process(message("new", 1000))
    assert asm.phase_of("slow") is None and asm.phase_of("busy") is Phase.COMMISSIONING
    assert out.accepted.readings == message("new", 1000).readings
    # Back again: it starts its baseline over, nothing of the old one is mixed in.
    out = asm.process(message("slow", *range(3000, 53_000, 1000)))
    assert out.requests[0].first_ms == 3000
    # A failed commissioning makes an asset collect again, so evictable again.
    asm.commissioning_failed("busy")
    asm.process(message("newer", 1000))
    assert asm.phase_of("busy") is None
    assert metrics.assets_evicted == 3


def test_new_assets_are_dead_letters_when_none_can_be_evicted_with_one_event() -> None:
    metrics = Metrics()
    asm = assembler({"p1", "p2"}, metrics=metrics, max_assets=2)
    outs = [asm.process(_single(f"fake-{i}", 1000, {"a": 1.0, "b": 2.0})) for i in range(50)]
    assert all(o.accepted.readings == () for o in outs)
    letters = [o.accepted.rejected for o in outs]
    assert all(d is not None and d.reason is RejectReason.TOO_MANY_ASSETS for d in letters)
    assert letters[0] is not None
    assert (letters[0].asset, letters[0].topic, letters[0].payload) == (
        "fake-0",
        "edgewatch/s/fake-0/telemetry",
        b'{"raw": 1}',
    )
    events = [e for o in outs for e in o.events]
    assert [e.kind for e in events] == ["too_many_assets"]  # once, not per message
    assert metrics.dead_letters["too_many_assets"] == 50
    assert asm.asset_count == 2
    # The commissioned ones keep being windowed meanwhile.
    assert asm.process(message("p1", 1000, 2000, 3000, 4000)).windows
    # Room again (a baseline reset): the next new asset gets in, and a later spell of
    # refusals is reported again.
    asm.recommission("p2")
    assert asm.process(_single("fresh", 1000, {"a": 1.0, "b": 2.0})).accepted.rejected is None
    asm.mark_commissioned("fresh")  # no plan yet: stays learning, so evictable
    assert asm.process(_single("fresh-2", 1000, {"a": 1.0, "b": 2.0})).accepted.rejected is None
    assert asm.phase_of("fresh") is None


def test_windows_beyond_the_inference_queues_room_are_shed_without_being_made() -> None:
    # Under load the inference queue is full and most windows of a batch would be
    # shed: only the newest that fit are cut (at least one, which the queue takes in
    # place of an older one), the older ones are not cut at all, and the stream
    # carries on exactly as if they had been (the windows after them are the same).
    readings = tuple(
        Reading("s", "p1", 1000 * (i + 1), {"a": float(i), "b": -float(i)}) for i in range(200)
    )

    def run(rooms: list[int | None]) -> tuple[list[list[Window]], int]:
        asm = p1_assembler(1)
        windows: list[list[Window]] = []
        shed = 0
        for k, room in enumerate(rooms):
            batch = Batch.of(readings[k * 40 : (k + 1) * 40])
            out = asm.process(Inbound(MessageRef(k, 1, 0), 5, readings=batch), room)
            assert len(out.accepted.readings) == 40  # readings are kept all the same
            windows.append(list(out.windows))
            shed += out.shed
        return windows, shed

    everything, none_shed = run([None] * 5)
    limited, shed = run([None, 3, 0, 3, None])
    assert none_shed == 0
    assert shed == (40 - 3) + (40 - 1) + (40 - 3)
    # Each limited message made its newest windows, the ones of the unlimited run.
    for made, every in zip(limited, everything, strict=True):
        assert [w.end_ms for w in made] == [w.end_ms for w in every[len(every) - len(made) :]]
        for w, same in zip(made, every[len(every) - len(made) :], strict=True):
            np.testing.assert_array_equal(w.data, same.data)
    assert [len(made) for made in limited] == [len(everything[0]), 3, 1, 3, 40]
    assert [w.end_ms for w in limited[1]] == [78_000, 79_000, 80_000]
    assert [w.end_ms for w in limited[2]] == [120_000]


def test_a_single_reading_makes_its_window_however_full_the_queue() -> None:
    # A single reading completes at most one window, its asset's newest: it is made
    # even without room (the queue drops an older window for it), so the last reading
    # of a burst is always scored.
    readings = [
        Reading("s", "p1", 1000 * (i + 1), {"a": float(i), "b": -float(i)}) for i in range(60)
    ]

    def run(room_for: Callable[[int], int | None]) -> tuple[list[Window], int]:
        asm = p1_assembler(2)
        windows: list[Window] = []
        shed = 0
        for k, r in enumerate(readings):
            out = asm.process(Inbound(MessageRef(k, 1, 0), 5, readings=(r,)), room_for(k))
            assert out.accepted.readings == (r,)
            windows.extend(out.windows)
            shed += out.shed
        return windows, shed

    everything, _ = run(lambda k: None)
    limited, shed = run(lambda k: 0 if 20 <= k < 40 else 5)
    assert shed == 0
    assert [w.end_ms for w in limited] == [w.end_ms for w in everything]
    for w, same in zip(limited, everything, strict=True):
        np.testing.assert_array_equal(w.data, same.data)


def test_a_restart_scores_the_windows_stored_readings_left_unscored() -> None:
    # Killed after its readings were committed but before their windows were scored:
    # on restart the windows after the last scored one are made again, exactly those
    # (none twice, none skipped), and live readings carry on from there.
    readings = [
        Reading("s", "p1", 1000 * (i + 1), {"a": float(i), "b": -float(i)}) for i in range(80)
    ]

    live = p1_assembler(2)
    everything = [
        w
        for k, r in enumerate(readings)
        for w in live.process(Inbound(MessageRef(k, 1, 0), 5, readings=(r,))).windows
    ]
    last_scored = everything[9].end_ms  # windows after it were lost with the process
    stored = readings[:60]
    restarted = p1_assembler(2)
    recovered = restarted.prime("p1", stored, last_scored)
    after = [
        w
        for k, r in enumerate(readings[60:])
        for w in restarted.process(Inbound(MessageRef(k, 1, 0), 5, readings=(r,))).windows
    ]
    want = [w for w in everything if w.end_ms > last_scored]
    assert [w.end_ms for w in recovered + after] == [w.end_ms for w in want]
    for got, expected in zip(recovered + after, want, strict=True):
        np.testing.assert_array_equal(got.data, expected.data)
    assert recovered and all(w.end_ms <= stored[-1].ts_ms for w in recovered)
