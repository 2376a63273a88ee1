"""Windows held during commissioning: the same windows back, in order, in fewer bytes."""

from __future__ import annotations

import numpy as np

from agent.domain import Window
from agent.inference.held import HeldWindows

SENSORS, LENGTH, HOP = 8, 32, 1


def stream(asset: str, n: int, seed: int, *, hop: int = HOP, t0: int = 0) -> list[Window]:
    """The windows an assembler emits for one gap-free stream of ``n`` samples."""
    samples = np.random.default_rng(seed).normal(size=(SENSORS, n)).astype(np.float32)
    samples[2, 5] = np.nan  # a missing value must not break the sharing
    return [
        Window(
            asset, t0 + i * 1000, t0 + (i + LENGTH - 1) * 1000, samples[:, i : i + LENGTH].copy()
        )
        for i in range(0, n - LENGTH + 1, hop)
    ]


def same(a: list[Window], b: list[Window]) -> bool:
    return len(a) == len(b) and all(
        x.asset == y.asset
        and x.start_ms == y.start_ms
        and x.end_ms == y.end_ms
        and np.array_equal(x.data, y.data, equal_nan=True)
        for x, y in zip(a, b, strict=True)
    )


def test_windows_come_back_whole_and_in_order_across_gaps_and_assets() -> None:
    held = HeldWindows(HOP, 1 << 30)
    held.hold("a")
    held.hold("b")
    # A gap restarts the stream: its windows no longer overlap the previous ones.
    a = stream("a", 300, 1) + stream("a", 100, 2, t0=10**9)
    b = stream("b", 200, 3)
    for w in sorted(a + b, key=lambda w: w.end_ms):
        assert held.add(w)
    assert held.count("a") == len(a) and held.count("b") == len(b)
    got = []
    while batch := held.take("a", 64):
        got.extend(batch)
    assert same(got, a)
    assert same(held.take("b", 10_000), b)
    assert held.release("a") == 0 and held.release("b") == 0
    assert held.nbytes == 0


def test_overlapping_windows_cost_their_new_samples_only() -> None:
    held = HeldWindows(HOP, 1 << 30)
    held.hold("a")
    windows = stream("a", 10_031, 4)
    for w in windows:
        held.add(w)
    whole = sum(w.data.nbytes for w in windows)
    assert held.nbytes < whole / 15  # ~32 B of samples + 16 B of timestamps, not 1 KiB
    # A hop the store was not told of still gives the windows back, just less compactly.
    other = HeldWindows(4, 1 << 30)
    other.hold("a")
    for w in stream("a", 500, 5):
        other.add(w)
    assert same(other.take("a", 10_000), stream("a", 500, 5))


def test_the_bound_refuses_windows_and_taking_frees_room() -> None:
    windows = stream("a", 1_000, 6)
    held = HeldWindows(HOP, 4096)
    held.hold("a")
    kept = [w for w in windows if held.add(w)]
    assert 0 < len(kept) < len(windows)
    assert held.nbytes <= 4096
    assert same(held.take("a", len(kept)), kept)
    assert held.nbytes == 0
    assert held.add(windows[0])
