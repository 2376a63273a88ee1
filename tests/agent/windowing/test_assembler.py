from __future__ import annotations

import numpy as np

from agent.domain import DeadLetter, Inbound, MessageRef, Reading, RejectReason, Window
from agent.metrics import Metrics
from agent.windowing.assembler import WindowAssembler
from agent.windowing.stream import AssetStream

SENSORS = ("a", "b")


def assembler(commissioned: set[str], commission_samples: int = 6) -> WindowAssembler:
    return WindowAssembler(
        sensors=SENSORS,
        window=4,
        hop=2,
        reorder_samples=2,
        gap_factor=10,
        commission_samples=commission_samples,
        commissioned=commissioned,
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
    asm = assembler(set(), commission_samples=6)
    out = asm.process(message("new", *range(1000, 6000, 1000)))
    assert out.windows == () and out.requests == ()
    out = asm.process(message("new", 6000, 7000))
    assert len(out.requests) == 1
    request = out.requests[0]
    assert request.samples.shape == (6, 2)
    assert (request.first_ms, request.last_ms) == (1000, 6000)
    assert request.samples[:, 0].tolist() == [1, 2, 3, 4, 5, 6]
    assert asm.process(message("new", 8000)).requests == ()  # asked once only
    asm.mark_commissioned("new")
    out = asm.process(message("new", 9000, 10000))
    assert out.windows  # scored from now on


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


def test_batches_give_exactly_the_windows_of_one_reading_at_a_time() -> None:
    # Batch payloads take a bulk path (AssetStream.extend); it must cut the same
    # windows, restart at the same gaps and turn away the same readings as add().
    for seed in range(5):
        readings = _messy_stream(seed)
        reference = AssetStream("p1", SENSORS, window=8, hop=3, reorder_samples=2, gap_factor=5)
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

        asm = WindowAssembler(
            sensors=SENSORS,
            window=8,
            hop=3,
            reorder_samples=2,
            gap_factor=5,
            commission_samples=6,
            commissioned={"p1"},
            metrics=Metrics(),
        )
        rng = np.random.default_rng(seed + 100)
        got_windows: list[Window] = []
        got_late: list[int] = []
        got_kept, got_restarts = 0, 0
        i = 0
        while i < len(readings):
            size = int(rng.integers(1, 60))  # up to beyond the buffer's capacity
            batch = tuple(readings[i : i + size])
            i += size
            out = asm.process(Inbound(MessageRef(i, 1, 0), 5, readings=batch))
            got_windows.extend(out.windows)
            got_late.extend(r.ts_ms for r, _ in out.accepted.late)
            got_kept += len(out.accepted.readings)
            got_restarts += len(out.events)
        assert got_late == want_late
        assert got_kept == len(readings) - len(want_late)
        assert got_restarts == restarts > 0
        assert [(w.start_ms, w.end_ms) for w in got_windows] == [
            (w.start_ms, w.end_ms) for w in want_windows
        ]
        for got, want in zip(got_windows, want_windows, strict=True):
            np.testing.assert_array_equal(got.data, want.data)
