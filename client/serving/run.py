"""Stage 5, run: where a request's images are decoded and its network runs, behind one
interface, `Runner`:

    start()                      on the serving event loop, before the first request
    warm(loaded)                 a bundle goes into service
    recognize(loaded, uploads)   /recognize: (labels, probabilities, timings in ms)
    infer(loaded, call)          /v2 infer: (answer body, headers, image count)
    close()                      the app stops

Two runners, chosen once by `SIQ_INFERENCE_PROCESSES` (`make_runner`):

`InProcess` runs in the serving process. Each request's decoding runs inline on the event loop
or in a worker thread, whichever its measured cost says is cheaper (`Costs`); the network runs
through the `Batcher` (client/serving/batch.py), batched with other requests'.
- Inline, when the request's images are estimated to cost under `INLINE_CPU_S` of CPU and
  decode to at most `INLINE_PIXELS`: handing small work to a thread and back (a thread wake-up,
  a loop wake-up, two GIL hand-overs) costs more than the work, which holds the GIL anyway.
- In a thread otherwise, and until a bundle has been measured: a photo's decoding and BLAS
  release the GIL, and a second core runs them while the loop serves other connections. At most
  `workers` requests run at once (the inference limiter); a request of more than
  `HEAVY_PIXELS` also needs a place in the heavy lane (`workers - 1`, at least 1), so that one
  worker stays free for ordinary requests while large uploads decode for seconds.

`InChildren` runs in inference processes (client/serving/children.py), which have GILs of
their own: the serving process only reads and answers. A request that would decode to more
than a child's pixel bound comes back unrun, and its `local` InProcess runs it (the heavy
lane), so seconds of decoding never hold up a child's whole batch.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import numpy as np

from client.manager import LoadedBundle
from client.oip_model import Limits, finish, infer_bytes, prepare
from client.serving.batch import Batcher
from client.serving.children import InferencePool
from client.serving.decode import decode_timed, open_uploads
from client.serving.read import Uploads

__all__ = [
    "Runner",
    "InProcess",
    "InChildren",
    "InferCall",
    "Recognized",
    "Inferred",
    "Costs",
    "Lanes",
    "INLINE_CPU_S",
    "INLINE_PIXELS",
    "INLINE_BODY_BYTES",
    "HEAVY_PIXELS",
]

INLINE_CPU_S = 0.001  # a digit costs less; a photo through the photo network costs more
INLINE_PIXELS = 160_000  # a 400x400 image; larger ones decode for longer than a loop turn
INLINE_BODY_BYTES = 32 * 1024  # an inference request small enough to parse on the loop
HEAVY_PIXELS = 2_000_000  # decoding this many takes a worker for a noticeable time
_WINDOW = 8  # measurements kept per bundle
_SAMPLE = 16  # one request in this many is measured
T = TypeVar("T")

Recognized = tuple[np.ndarray, np.ndarray, dict[str, float]]  # labels, probabilities, timings
Inferred = tuple[bytes, dict[str, str], int]  # the answer's body and headers, images run


@dataclass(frozen=True, slots=True)
class InferCall:
    """An Open Inference Protocol infer request as read: what `oip_model.prepare` takes."""

    body: bytes
    header_length: str | None  # Inference-Header-Content-Length
    content_encoding: str | None
    limits: Limits


class Runner(Protocol):
    """Where a request's images are decoded and its network runs (see the module)."""

    def start(self) -> None: ...
    def warm(self, loaded: LoadedBundle) -> None: ...
    async def recognize(self, loaded: LoadedBundle, uploads: Uploads) -> Recognized: ...
    async def infer(self, loaded: LoadedBundle, call: InferCall) -> Inferred: ...
    def close(self) -> None: ...


class Costs:
    """Per bundle (or any key), the least CPU time (`time.thread_time`: what the work cost,
    not how long it waited for a core) one image took over the last `_WINDOW` measurements.
    Other work on the machine only ever adds to a measurement, so the least is the cost."""

    def __init__(self) -> None:
        self._samples: dict[str, collections.deque[float]] = {}  # key -> s per image

    def cost(self, key: str) -> float | None:
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

    def measured(self, key: str) -> bool:
        return key in self._samples


class Lanes:
    """The inference limiter (`workers` at once; by default as many as CPUs: more threads
    than cores only contend for the GIL) and the heavy lane inside it. anyio limiters belong
    to an event loop: made by `InProcess.start`, on the serving loop."""

    def __init__(self, workers: int):
        self.inference = anyio.CapacityLimiter(workers)
        self.heavy = anyio.CapacityLimiter(max(1, workers - 1))

    @contextlib.asynccontextmanager
    async def lane(self, pixels: int) -> AsyncIterator[None]:
        """Hold a heavy-lane place while running a request of `pixels` decoded pixels."""
        if pixels <= HEAVY_PIXELS:
            yield
            return
        async with self.heavy:
            yield


class InProcess:
    """The serving process runs each request: inline or in a worker thread (see the module)."""

    def __init__(
        self,
        workers: int,
        *,
        max_pixels: int,
        max_request_pixels: int | None,
        observe: Callable[[int], Any] | None = None,  # told each batch's size (metrics)
    ) -> None:
        self.workers = workers
        self.max_pixels, self.max_request_pixels = max_pixels, max_request_pixels
        self.costs = Costs()
        self.batcher = Batcher(observe=observe)
        self.lanes: Lanes | None = None  # before `start`: anyio's default limiter
        self._runs = 0

    def start(self) -> None:
        self.lanes = Lanes(self.workers)

    def warm(self, loaded: LoadedBundle) -> None:
        pass  # the serving process loaded the network with the bundle

    def close(self) -> None:
        pass

    async def recognize(self, loaded: LoadedBundle, uploads: Uploads) -> Recognized:
        opened = open_uploads(
            uploads, max_pixels=self.max_pixels, max_request_pixels=self.max_request_pixels
        )
        batch, timings = await self.call(
            functools.partial(decode_timed, loaded, opened),
            key=loaded.bundle.id,
            images=len(uploads),
            pixels=opened.pixels,
        )
        t = time.perf_counter()
        labels, probs = await self.batcher.predict(loaded.network, batch)
        timings["inference"] = round((time.perf_counter() - t) * 1e3, 3)
        return labels, probs, timings

    async def infer(self, loaded: LoadedBundle, call: InferCall) -> Inferred:
        read = functools.partial(
            prepare,
            loaded,
            call.body,
            header_length=call.header_length,
            content_encoding=call.content_encoding,
            limits=call.limits,
        )
        small = call.content_encoding is None and len(call.body) <= INLINE_BODY_BYTES
        prepared = read() if small else await self.in_thread(read)
        return await self.call(  # decoding and the network, once their cost is known
            functools.partial(finish, loaded, prepared),
            key=f"oip:{loaded.bundle.id}",
            images=prepared.images,
            pixels=prepared.pixels,
        )

    async def call(self, work: Callable[[], T], *, key: str, images: int, pixels: int) -> T:
        """`work()`, inline or in a worker thread, by the measured cost of `key`'s images."""

        def timed() -> T:
            start = time.thread_time()
            try:
                return work()
            finally:
                self.costs.observe(key, images, time.thread_time() - start)

        self._runs += 1
        # thread_time is a system call, where the kernel likes to preempt a thread holding
        # the GIL on a crowded machine: only one request in _SAMPLE is measured
        sampled = self._runs % _SAMPLE == 0 or not self.costs.measured(key)
        measured = timed if sampled else work
        if self.costs.inline(key, images, pixels):
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
        `pixels` exceed `HEAVY_PIXELS`)."""
        lanes = self.lanes
        if lanes is None:
            return await anyio.to_thread.run_sync(work)
        async with lanes.lane(pixels):
            return await anyio.to_thread.run_sync(work, limiter=lanes.inference)


class InChildren:
    """Inference processes run each request; `local` runs those they hand back."""

    def __init__(self, pool: InferencePool, local: InProcess) -> None:
        self.pool, self.local = pool, local

    def start(self) -> None:
        self.local.start()

    def warm(self, loaded: LoadedBundle) -> None:
        self.pool.warm(loaded.bundle)  # the children load the network before a request

    def close(self) -> None:
        self.pool.close()

    async def recognize(self, loaded: LoadedBundle, uploads: Uploads) -> Recognized:
        # the child reads the headers and enforces the pixel budgets itself
        done = await self.pool.recognize(loaded.bundle, uploads)
        return done if done is not None else await self.local.recognize(loaded, uploads)

    async def infer(self, loaded: LoadedBundle, call: InferCall) -> Inferred:
        work = functools.partial(  # work(loaded) in the child: parse, decode, run, encode
            infer_bytes,
            body=call.body,
            header_length=call.header_length,
            content_encoding=call.content_encoding,
            limits=call.limits,
            max_pixels=self.pool.child_pixels,
        )
        done = await self.pool.run(loaded.bundle, work)
        return done if done is not None else await self.local.infer(loaded, call)
