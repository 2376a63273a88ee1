"""The inference queue: what windowing hands to inference, and what it sheds.

Windows wait per asset, in time order, and assets are served in turn (round robin),
so one asset flooding the gateway cannot starve the others' scoring. When the queue is
full, a new window is not the one dropped: the newest window of an asset is the one
that says how the machine is now (its anomaly score, its remaining life), and the last
window of a burst must be scored. The window dropped instead is the oldest queued
window of the same asset, or, if that asset has none queued, the oldest queued window
of the first asset that has two or more. Only when every queued item is some asset's
only one is the arriving window dropped. Commissioning requests are never dropped: a
full queue makes their ``put`` wait.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque

from agent.domain import CommissionRequest, Window

ToInference = Window | CommissionRequest


class WindowQueue(asyncio.Queue[ToInference]):
    """An asyncio queue of windows per asset with the shedding policy above.

    ``get`` and ``put`` behave as an ``asyncio.Queue``'s (``put`` waits while it is
    full); :meth:`offer` is how windowing hands over a window without waiting.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize <= 0:
            raise ValueError("the inference queue needs a bound")
        self._assets: OrderedDict[str, deque[ToInference]] = OrderedDict()
        self._size = 0
        super().__init__(maxsize)

    def qsize(self) -> int:
        return self._size

    def empty(self) -> bool:
        return self._size == 0

    def full(self) -> bool:
        return self._size >= self.maxsize

    def _put(self, item: ToInference) -> None:
        queued = self._assets.get(item.asset)
        if queued is None:
            queued = self._assets[item.asset] = deque()
        queued.append(item)
        self._size += 1

    def _get(self) -> ToInference:
        asset, queued = next(iter(self._assets.items()))
        item = queued.popleft()
        if queued:
            self._assets.move_to_end(asset)  # its next window after the others'
        else:
            del self._assets[asset]
        self._size -= 1
        return item

    def offer(self, window: Window) -> Window | None:
        """Queue ``window`` now; returns the window dropped to make room, if one was
        (``window`` itself when nothing else could go)."""
        dropped: Window | None = None
        if self.full():
            dropped = self._drop_for(window.asset)
            if dropped is None:
                return window
        self.put_nowait(window)
        return dropped

    def _drop_for(self, asset: str) -> Window | None:
        own = self._assets.get(asset)
        if own is not None:
            dropped = _drop_oldest_window(own, keep=0)
            if dropped is not None:
                self._dropped(asset, own)
                return dropped
        for other, queued in self._assets.items():
            if len(queued) > 1:
                dropped = _drop_oldest_window(queued, keep=1)
                if dropped is not None:
                    self._dropped(other, queued)
                    return dropped
        return None

    def _dropped(self, asset: str, queued: deque[ToInference]) -> None:
        self._size -= 1
        if not queued:
            del self._assets[asset]
        # The dropped window was counted as unfinished when it was put; nobody will
        # mark it done, and the runtime's drain (join) would wait for it for ever.
        self.task_done()


def _drop_oldest_window(queued: deque[ToInference], keep: int) -> Window | None:
    """Remove and return the oldest window of ``queued`` unless it is one of its last
    ``keep`` items (commissioning requests stay)."""
    for i, item in enumerate(queued):
        if i >= len(queued) - keep:
            return None
        if isinstance(item, Window):
            del queued[i]
            return item
    return None
