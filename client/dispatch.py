"""Where a request's recognition runs: on the event loop when it is cheap, else in a worker
thread of the inference limiter.

Handing work to a thread and back costs a thread wake-up, a wake-up of the event loop and two
GIL hand-overs. For an MNIST digit that was a quarter of the client's GIL time under load
(py-spy --gil: 25 % in `Condition.notify` alone), more than the network itself; and the work
(small numpy calls) holds the GIL anyway, so a thread buys no parallelism. A photo through a
bigger network is the opposite: milliseconds of decoding, resizing and BLAS that release the
GIL, which a second core can run while the loop serves other connections.

So the dispatcher keeps, per bundle, the least CPU time (`time.thread_time`: what it cost, not
how long it waited for a core) one image's recognition took over its last 8 measurements (one
request in 16 is measured). A request runs inline when its images are estimated to cost under `INLINE_CPU_S` and decode to
at most `INLINE_PIXELS`; otherwise, and until a bundle has been measured, in a thread.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TypeVar

import anyio

from client.admission import Lanes

__all__ = ["Dispatcher", "INLINE_CPU_S", "INLINE_PIXELS", "INLINE_BODY_BYTES"]

INLINE_CPU_S = 0.001  # an MNIST digit: 0.25-0.9 ms (a quiet or a crowded machine); office10: 2-5
INLINE_PIXELS = 160_000  # a 400x400 image (a 300x300 JPEG drafted: 0.3 ms); larger ones take longer
INLINE_BODY_BYTES = 32 * 1024  # an inference request parsed on the loop (one photo: ~27 KB)
_WINDOW = 8  # measurements kept per bundle
_SAMPLE = 16  # one request in this many is measured
T = TypeVar("T")


class Dispatcher:
    """One per app. `lanes` (the inference limiter and its heavy lane) is set by the lifespan,
    in the serving event loop; before that, threads come from anyio's default limiter."""

    def __init__(self) -> None:
        self._samples: dict[str, collections.deque[float]] = {}  # bundle id -> s per image
        self._runs = 0
        self.lanes: Lanes | None = None

    def cost(self, key: str) -> float | None:
        """CPU seconds per image: the least of the last measurements (other work on the
        machine only ever adds to a measurement, through caches and preemption)."""
        samples = self._samples.get(key)
        return min(samples) if samples else None

    def inline(self, key: str, images: int, pixels: int) -> bool:
        cost = self.cost(key)
        return cost is not None and cost * images < INLINE_CPU_S and pixels <= INLINE_PIXELS

    def observe(self, key: str, images: int, seconds: float) -> None:
        # plain dict and deque updates: atomic under the GIL, so worker threads may call it
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = collections.deque(maxlen=_WINDOW)
            if len(self._samples) > 8:  # bundles come and go; keep the newest few
                self._samples.pop(next(iter(self._samples)))
        samples.append(seconds / max(1, images))

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
        measured = timed if self._runs % _SAMPLE == 0 or key not in self._samples else work
        if self.inline(key, images, pixels):
            lanes = self.lanes
            if lanes is None:
                return measured()
            # inline work takes a worker's place too (at most `workers` requests at once),
            # without awaiting one: when all are taken it waits in line like the others
            try:
                lanes.inference.acquire_nowait()
            except anyio.WouldBlock:
                pass
            else:
                try:
                    return measured()
                finally:
                    lanes.inference.release()
        return await self.in_thread(measured, pixels=pixels)

    async def in_thread(self, work: Callable[[], T], *, pixels: int = 0) -> T:
        """`work()` in a worker thread of the inference limiter (and of the heavy lane when
        `pixels` exceed its bound)."""
        lanes = self.lanes
        if lanes is None:  # before the lifespan started: anyio's default limiter
            return await anyio.to_thread.run_sync(work)
        async with lanes.lane(pixels):
            return await anyio.to_thread.run_sync(work, limiter=lanes.inference)
