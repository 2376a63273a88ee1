from __future__ import annotations

import numpy as np
import pytest

from agent.domain import Batch, Reading
from agent.windowing.stream import AssetStream, Verdict

SENSORS = ("a", "b")


def reading(ts_ms: int, a: float | None = None) -> Reading:
    value = float(ts_ms) if a is None else a
    return Reading("s", "p1", ts_ms, {"b": -value, "a": value})


def stream(window: int = 4, hop: int = 2, reorder: int = 2) -> AssetStream:
    return AssetStream("p1", SENSORS, window=window, hop=hop, reorder_samples=reorder, gap_factor=5)


def feed(s: AssetStream, times: list[int]) -> list[tuple[int, int]]:
    spans = []
    for ts in times:
        result = s.add(reading(ts))
        if result.window is not None:
            spans.append((result.window.start_ms, result.window.end_ms))
    return spans


def test_first_window_after_window_samples_then_every_hop() -> None:
    s = stream()
    assert feed(s, [1000 * i for i in range(10)]) == [
        (0, 3000),
        (2000, 5000),
        (4000, 7000),
        (6000, 9000),
    ]


def test_window_data_is_sensors_by_time_in_bundle_order() -> None:
    s = stream(window=3, hop=3)
    window = None
    for ts in (10, 20, 30):
        window = s.add(reading(ts)).window
    assert window is not None
    np.testing.assert_array_equal(window.data, [[10, 20, 30], [-10, -20, -30]])
    assert window.data.dtype == np.float32


def test_buffer_wraps_many_times_without_losing_order() -> None:
    s = stream(window=5, hop=1)
    last = None
    for i in range(1000):
        result = s.add(reading(i * 10))
        last = result.window or last
    assert last is not None
    np.testing.assert_array_equal(last.data[0], [9950, 9960, 9970, 9980, 9990])


def test_small_reordering_is_absorbed() -> None:
    s = stream(window=4, hop=4, reorder=2)
    for ts in (1000, 2000, 4000):
        assert s.add(reading(ts)).verdict is Verdict.APPENDED
    result = s.add(reading(3000))
    assert result.verdict is Verdict.REORDERED
    assert result.window is not None
    np.testing.assert_array_equal(result.window.data[0], [1000, 2000, 3000, 4000])


def test_duplicates_and_late_readings_are_reported() -> None:
    s = stream(window=4, hop=1, reorder=1)
    feed(s, [1000, 2000, 3000, 4000, 5000])
    assert s.add(reading(5000)).verdict is Verdict.DUPLICATE
    # within the reorder distance, but already part of a scored window
    assert s.add(reading(4500)).verdict is Verdict.LATE
    assert s.add(reading(1500)).verdict is Verdict.LATE


def test_a_long_gap_restarts_the_window() -> None:
    s = stream(window=4, hop=1)
    feed(s, [1000 * i for i in range(6)])
    result = s.add(reading(60_000))
    assert result.restarted_after_ms == 55_000
    assert result.window is None
    spans = feed(s, [61_000, 62_000, 63_000])
    assert spans == [(60_000, 63_000)]


def test_resume_continues_the_hop_phase() -> None:
    s = stream(window=4, hop=3)
    for ts in range(0, 7000, 1000):
        s.add(reading(ts))
    s.resume_after(5000)  # the last scored window ended at 5000 before a restart
    spans = feed(s, [7000, 8000])
    assert spans == [(5000, 8000)]


def test_min_rows_emits_front_padded_windows_until_the_window_is_whole() -> None:
    # A RUL model trained on front-padded windows gives a young asset an estimate
    # after min_rows samples; the window repeats the run's first sample before it.
    s = AssetStream("p1", SENSORS, window=4, hop=1, reorder_samples=2, gap_factor=5, min_rows=2)
    windows = [w for w in (s.add(reading(ts)).window for ts in (10, 20, 30, 40, 50)) if w]
    assert [(w.start_ms, w.end_ms) for w in windows] == [(10, 20), (10, 30), (10, 40), (20, 50)]
    np.testing.assert_array_equal(windows[0].data[0], [10, 10, 10, 20])
    np.testing.assert_array_equal(windows[1].data[0], [10, 10, 20, 30])
    np.testing.assert_array_equal(windows[3].data[0], [20, 30, 40, 50])
    # After a gap the run starts over, padded with its own first sample.
    after = [w for w in (s.add(reading(ts)).window for ts in (500, 510)) if w]
    assert [w.end_ms for w in after] == [510]
    np.testing.assert_array_equal(after[0].data[1], [-500, -500, -500, -510])


def test_min_rows_outside_the_window_is_refused() -> None:
    with pytest.raises(ValueError, match="min_rows 5"):
        AssetStream("p1", SENSORS, window=4, hop=1, reorder_samples=2, gap_factor=5, min_rows=5)


@pytest.mark.parametrize("seed", range(4))
def test_regular_batches_leave_the_stream_as_one_reading_at_a_time_does(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches of a regularly sampled sensor skip the period's median refreshes
    # (AssetStream._steady); the verdicts, windows and the estimate's state after
    # each batch must be the ones reading-by-reading appends give, jitter and gaps
    # included.
    rng = np.random.default_rng(seed)
    stamps: list[int] = []
    ts = 0
    for _ in range(40):
        period = int(rng.choice([100, 1000]))
        jitter = bool(rng.random() < 0.3)
        for _ in range(int(rng.integers(1, 200))):
            ts += period + (int(rng.integers(-20, 20)) if jitter else 0)
            stamps.append(ts)
        if rng.random() < 0.1:
            ts += 50 * period
    steady = AssetStream._steady
    taken_whole = 0

    def counted(self: AssetStream, steps: np.ndarray) -> bool:
        nonlocal taken_whole
        whole = steady(self, steps)
        taken_whole += whole
        return whole

    monkeypatch.setattr(AssetStream, "_steady", counted)
    one, bulk = stream(window=8, hop=3), stream(window=8, hop=3)
    i = 0
    while i < len(stamps):
        size = int(rng.integers(1, 70))
        part = stamps[i : i + size]
        i += size
        want = feed(one, part)
        batch = Batch.of([reading(t) for t in part])
        got: list[tuple[int, int]] = []
        j = 0
        while j < len(batch):
            taken, windows = bulk.extend(batch, j)
            got.extend((w.start_ms, w.end_ms) for w in windows)
            if taken:
                j += taken
                continue
            result = bulk.add(batch[j])
            j += 1
            if result.window is not None:
                got.append((result.window.start_ms, result.window.end_ms))
        assert got == want
        assert (bulk.period_ms(), bulk._until_refresh, list(bulk._intervals)) == (
            one.period_ms(),
            one._until_refresh,
            list(one._intervals),
        )
    assert taken_whole >= 10
