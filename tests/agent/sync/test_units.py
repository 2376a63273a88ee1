"""Small pieces: keys, backoff, URL targets, the file target's atomic writes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from agent import outbox
from agent.errors import SyncError
from agent.sync.targets import FileTarget, S3Target, open_target
from agent.sync.uploader import BACKOFF_BASE_S, backoff_s


def test_keys_are_deterministic_and_partitioned() -> None:
    key = outbox.item_key(
        site="plant-a",
        agent="gw-1",
        kind="summary",
        ts_ms=1_763_856_000_000,
        asset="pump-1",
        name="x.json",
    )
    assert key == "plant-a/gw-1/summary/2025/11/23/pump-1/x.json"
    assert (
        outbox.item_key(
            site="plant-a", agent="gw-1", kind="event", ts_ms=0, asset=None, name="e.json"
        )
        == "plant-a/gw-1/event/1970/01/01/_agent/e.json"
    )


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(1)
    first = [backoff_s(1, 300.0, rng) for _ in range(200)]
    assert min(first) >= BACKOFF_BASE_S * 0.5 and max(first) <= BACKOFF_BASE_S * 1.5
    assert len(set(first)) > 100  # jittered, not a fleet-wide thundering herd
    assert all(backoff_s(30, 60.0, rng) <= 60.0 for _ in range(100))
    assert backoff_s(5, 1000.0, random.Random(2)) > backoff_s(1, 1000.0, random.Random(2))


def test_open_target_by_url(tmp_path: Path) -> None:
    target = open_target((tmp_path / "cloud").as_uri())
    assert isinstance(target, FileTarget) and target.root == tmp_path / "cloud"
    s3 = open_target("s3://bucket/some/prefix")
    assert isinstance(s3, S3Target) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")
    with pytest.raises(SyncError, match="names no bucket"):
        open_target("s3:///prefix")
    with pytest.raises(SyncError, match="local path"):
        open_target("file://host/x")


def test_file_target_overwrites_in_place_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = FileTarget(tmp_path / "cloud")
    target.put("a/b/c.json", b"one", outbox.sha256(b"one"))
    target.put("a/b/c.json", b"one", outbox.sha256(b"one"))  # a retry
    assert target.list_objects() == {"a/b/c.json": b"one"}
    assert [p.name for p in (tmp_path / "cloud" / "a" / "b").iterdir()] == ["c.json"]


def test_file_target_error_is_one_clear_line(tmp_path: Path) -> None:
    blocker = tmp_path / "cloud"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(SyncError, match="cannot write to file://"):
        FileTarget(blocker).put("k.json", b"x", outbox.sha256(b"x"))


async def test_bandwidth_cap_books_the_wire_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.sync import uploader

    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr("agent.sync.uploader.asyncio.sleep", fake_sleep)
    limiter = uploader.RateLimiter(bytes_per_s=1000)
    for _ in range(5):
        await limiter.acquire(500)
    # The first body goes at once; each later one waits for the ones before it: the
    # average rate is the cap (0.5 s per 500 bytes), give or take the loop's own time.
    assert waits and waits[-1] == pytest.approx(2.0, abs=0.1)
    unlimited = uploader.RateLimiter(bytes_per_s=0)
    waits.clear()
    await unlimited.acquire(10**9)
    assert waits == []
