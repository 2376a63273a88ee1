from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.domain import CommissionRequest, Inbound, MessageRef, Reading, Window
from agent.metrics import Metrics
from agent.windowing.assembler import WindowAssembler
from agent.windowing.queue import ToInference, WindowQueue
from tests.agent.windowing.test_assembler import BUNDLE, PLAN, profiles

WAIT_S = 5.0


def window(asset: str, end_ms: int) -> Window:
    return Window(asset, end_ms - 3, end_ms, np.zeros((2, 4), np.float32))


def request(asset: str) -> CommissionRequest:
    return CommissionRequest(asset, PLAN, np.empty((0, 2), np.float32), 0, 0)


def drain(queue: WindowQueue) -> list[tuple[str, int | None]]:
    taken: list[tuple[str, int | None]] = []
    while not queue.empty():
        item = queue.get_nowait()
        queue.task_done()
        taken.append((item.asset, item.end_ms if isinstance(item, Window) else None))
    return taken


def test_a_full_queue_drops_the_oldest_window_of_the_arriving_asset() -> None:
    queue = WindowQueue(4)
    for end in (1, 2, 3):
        assert queue.offer(window("a", end)) is None
    assert queue.offer(window("b", 1)) is None
    dropped = queue.offer(window("a", 4))
    assert dropped is not None and (dropped.asset, dropped.end_ms) == ("a", 1)
    assert queue.qsize() == 4
    # Served in turn, each asset's windows in time order.
    assert drain(queue) == [("a", 2), ("b", 1), ("a", 3), ("a", 4)]


def test_an_asset_with_nothing_queued_takes_the_place_of_a_window_of_a_busy_one() -> None:
    queue = WindowQueue(3)
    queue.offer(window("a", 1))
    queue.offer(window("b", 1))
    queue.offer(window("b", 2))
    dropped = queue.offer(window("c", 1))
    assert dropped is not None and (dropped.asset, dropped.end_ms) == ("b", 1)
    assert sorted(drain(queue)) == [("a", 1), ("b", 2), ("c", 1)]


def test_when_every_queued_window_is_its_assets_only_one_the_arriving_is_dropped() -> None:
    queue = WindowQueue(2)
    queue.offer(window("a", 1))
    queue.offer(window("b", 1))
    arriving = window("c", 1)
    assert queue.offer(arriving) is arriving
    assert drain(queue) == [("a", 1), ("b", 1)]


def test_commissioning_requests_are_never_dropped_and_wait_for_room() -> None:
    queue = WindowQueue(2)
    queue.put_nowait(request("a"))
    queue.offer(window("a", 1))
    # The asset's window goes, its request stays (and stays first).
    dropped = queue.offer(window("a", 2))
    assert dropped is not None and dropped.end_ms == 1
    with pytest.raises(asyncio.QueueFull):  # put() would wait for room
        queue.put_nowait(request("b"))
    assert drain(queue) == [("a", None), ("a", 2)]
    # A request alone is not dropped for a window: the window is.
    only = WindowQueue(1)
    only.put_nowait(request("x"))
    arriving = window("x", 1)
    assert only.offer(arriving) is arriving
    assert drain(only) == [("x", None)]


def test_dropped_windows_do_not_hold_up_a_drain() -> None:
    async def scenario() -> None:
        queue = WindowQueue(3)
        for end in range(10):
            queue.offer(window("a", end))
        assert [end for _, end in drain(queue)] == [7, 8, 9]
        async with asyncio.timeout(WAIT_S):
            await queue.join()

    asyncio.run(scenario())


def test_after_a_burst_the_newest_window_of_every_asset_is_queued() -> None:
    # Nothing is scored while the burst lasts (the worst case): the queue, far smaller
    # than the burst, ends holding each asset's last window.
    async def scenario() -> None:
        asm = WindowAssembler(
            profiles=profiles(),
            bundle=BUNDLE,
            window=8,
            hop=1,
            reorder_samples=2,
            gap_factor=5,
            commissioned={asset: PLAN for asset in ("p1", "p2", "p3")},
            metrics=Metrics(),
        )
        inbox: asyncio.Queue[Inbound] = asyncio.Queue()
        queue = WindowQueue(8)
        last: dict[str, int] = {}
        for k in range(300):
            asset = ("p1", "p2", "p3")[k // 100]  # one asset after the other
            ts = 1000 * (k % 100 + 1)
            last[asset] = ts
            inbox.put_nowait(
                Inbound(
                    MessageRef(k, 1, 0),
                    5,
                    readings=(Reading("s", asset, ts, {"a": 1.0, "b": 2.0}),),
                )
            )

        async def record(_: object) -> None:
            return None

        task = asyncio.create_task(asm.run(inbox, record, queue))
        async with asyncio.timeout(WAIT_S):
            await inbox.join()
        task.cancel()
        queued: list[ToInference] = []
        while not queue.empty():
            queued.append(queue.get_nowait())
        newest = {item.asset: item.end_ms for item in queued if isinstance(item, Window)}
        assert newest == last
        assert asm.metrics.windows_shed > 0

    asyncio.run(scenario())
