"""Where a request's recognition runs: on the event loop when it is cheap, else in a worker
thread of the inference limiter.

Handing work to a thread and back costs a thread wake-up, a wake-up of the event loop and two
GIL hand-overs. For an MNIST digit that was a quarter of the client's GIL time under load
(py-spy --gil: 25 % in `Condition.notify` alone), more than the network itself; and the work
(small numpy calls) holds the GIL anyway, so a thread buys no parallelism. A photo through a
bigger network is the opposite: milliseconds of decoding, resizing and BLAS that release the
GIL, which a second core can run while the loop serves other connections.

So the dispatcher keeps, per bundle, a moving average of the CPU time one image's recognition
took (measured on one request in 16) (`time.thread_time`: what it cost, not how long it waited for a core on a busy machine).
A request runs inline when its images are estimated to cost under `INLINE_CPU_S` and decode to
at most `INLINE_PIXELS`; otherwise, and until a bundle has been measured, in a thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import anyio

from client.admission import Lanes

__all__ = ["Dispatcher", "INLINE_CPU_S", "INLINE_PIXELS"]

INLINE_CPU_S = 0.0015  # an MNIST digit: 0.25 ms (0.9 ms on a crowded machine); office10: 2-5 ms
INLINE_PIXELS = 65_536  # a 256x256 image; larger uploads decode for longer than that
_KEEP = 0.8  # weight of the old average: about the last five measured requests count
_SAMPLE = 16  # one request in this many is measured
T = TypeVar("T")


class Dispatcher:
    """One per app. `lanes` (the inference limiter and its heavy lane) is set by the lifespan,
    in the serving event loop; before that, threads come from anyio's default limiter."""

    def __init__(self) -> None:
        self._cost: dict[str, float] = {}  # bundle id -> CPU seconds per image
        self._runs = 0
        self.lanes: Lanes | None = None

    def cost(self, key: str) -> float | None:
        return self._cost.get(key)

    def inline(self, key: str, images: int, pixels: int) -> bool:
        cost = self._cost.get(key)
        return cost is not None and cost * images < INLINE_CPU_S and pixels <= INLINE_PIXELS

    def observe(self, key: str, images: int, seconds: float) -> None:
        # a plain dict update: atomic under the GIL, so worker threads may call it too
        per_image = seconds / max(1, images)
        old = self._cost.get(key)
        self._cost[key] = per_image if old is None else _KEEP * old + (1 - _KEEP) * per_image
        if len(self._cost) > 8:  # bundles come and go; keep the newest few
            self._cost.pop(next(iter(self._cost)))

    async def run(self, work: Callable[[], T], *, key: str, images: int, pixels: int) -> T:
        """`work()`, inline or in a worker thread (in the heavy lane when `pixels` say so)."""

        def timed() -> T:
            start = time.thread_time()
            try:
                return work()
            finally:
                self.observe(key, images, time.thread_time() - start)

        self._runs += 1
        # thread_time is a system call (no vDSO), and on a crowded machine a system call is
        # where the kernel likes to preempt a thread holding the GIL (py-spy --gil: 28 % of
        # the GIL time in it when every request measured): measure one request in _SAMPLE
        measured = timed if self._runs % _SAMPLE == 0 or key not in self._cost else work
        if self.inline(key, images, pixels):
            return measured()
        return await self.in_thread(measured, pixels=pixels)

    async def in_thread(self, work: Callable[[], T], *, pixels: int = 0) -> T:
        """`work()` in a worker thread of the inference limiter (and of the heavy lane when
        `pixels` exceed its bound)."""
        lanes = self.lanes
        if lanes is None:  # before the lifespan started: anyio's default limiter
            return await anyio.to_thread.run_sync(work)
        async with lanes.lane(pixels):
            return await anyio.to_thread.run_sync(work, limiter=lanes.inference)
