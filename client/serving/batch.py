"""Stage 4, batch: the images of concurrent requests go through the network in one call.

Why: a network call costs much more per image at batch 1 than in a batch
(bench/results/client.md), and ONNX Runtime releases the GIL while it runs, so a batch run in
a worker thread uses a second core while the event loop goes on reading, decoding and
answering the other requests.

How: a request's preprocessed images join the line of their network and wait on a future. When
no batch of that network is running, a drain task starts: it takes every waiting request (up to
`max_images` images; a larger request goes alone), runs one `network.predict`, hands each
request its rows and takes the next line, until the line is empty. The call runs in a worker
thread, unless the network was measured to cost under `INLINE_S` an image: then handing it to
a thread and back costs more than it frees, and it runs on the event loop, still batched with
the requests that reached the network in the same turn of the loop. There is no timer: a lone
request runs at once in a batch of one, and under load a batch is what arrived while the
previous one ran (Triton's dynamic batcher with a queue delay of 0). When a batch fails, its
requests run one at a time (`predict_each`), so one request's error is only its own.

Used by the in-process runner (client/serving/run.py); an inference process batches the same
way with `predict_each` (client/serving/children.py).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import numpy as np

__all__ = ["Batcher", "INLINE_S", "MAX_BATCH_IMAGES", "predict_each"]

INLINE_S = 0.0002  # between a digit network's cost per image and a photo network's
MAX_BATCH_IMAGES = 64  # where the gain per image of a larger batch levels off


class Network(Protocol):
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


Prediction = tuple[np.ndarray, np.ndarray]  # labels (N,), probabilities (N, classes)
Waiter = asyncio.Future[Prediction]


def predict_each(
    predict: Callable[[np.ndarray], Prediction], inputs: list[np.ndarray]
) -> list[Prediction | Exception]:
    """`predict` once on the inputs stacked, each input's rows its own; when that call fails,
    each input alone, so an input that fails the batch gets its error and the others their
    rows. Pure and synchronous: the batcher runs it inline or in a worker thread, an inference
    process as it is."""
    stacked = inputs[0] if len(inputs) == 1 else np.concatenate(inputs)
    try:
        labels, probs = predict(stacked)
    except Exception as exc:
        if len(inputs) == 1:
            return [exc]
        return [result for x in inputs for result in predict_each(predict, [x])]
    out: list[Prediction | Exception] = []
    start = 0
    for x in inputs:
        end = start + len(x)
        out.append((labels[start:end], probs[start:end]))
        start = end
    return out


@dataclass
class _Line:
    network: Network
    waiting: collections.deque[tuple[np.ndarray, Waiter]] = field(default_factory=collections.deque)
    drain: asyncio.Task[None] | None = None


class Batcher:
    """One per app, used from its event loop only (no lock needed). `observe(images)` is told
    each batch's size (the metrics' histogram)."""

    def __init__(
        self,
        max_images: int = MAX_BATCH_IMAGES,
        observe: Callable[[int], Any] | None = None,
    ) -> None:
        if max_images < 1:
            raise ValueError("max_images must be >= 1")
        self.max_images = max_images
        self._observe = observe
        # per event loop (a TestClient runs one per request), id(network) -> its line while
        # it has work; a loop's lines go with the loop
        self._lines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Line]] = (
            weakref.WeakKeyDictionary()
        )
        # per network, its last measured seconds per image (the least is its cost)
        self._costs: weakref.WeakKeyDictionary[Network, collections.deque[float]] = (
            weakref.WeakKeyDictionary()
        )

    def cost(self, network: Network) -> float | None:
        """Seconds per image of `network`'s calls: the least of the last 8 measured (other
        work only ever adds to a measurement); None before its first call."""
        samples = self._costs.get(network)
        return min(samples) if samples else None

    def inline(self, network: Network) -> bool:
        """Whether its batches run on the event loop: a network measured to cost under
        `INLINE_S` an image costs less than handing its batch to a thread and back."""
        cost = self.cost(network)
        return cost is not None and cost < INLINE_S

    def _timed(self, network: Network, images: np.ndarray) -> Prediction:
        start = time.perf_counter()
        try:
            return network.predict(images)
        finally:
            samples = self._costs.get(network)
            if samples is None:
                samples = self._costs[network] = collections.deque(maxlen=8)
            samples.append((time.perf_counter() - start) / max(1, len(images)))

    async def predict(self, network: Network, images: np.ndarray) -> Prediction:
        """`network.predict(images)`, run in a batch with whatever other requests' images
        wait for the same network."""
        loop = asyncio.get_running_loop()
        lines = self._lines.get(loop)
        if lines is None:
            lines = self._lines[loop] = {}
        line = lines.get(id(network))
        if line is None:
            line = lines[id(network)] = _Line(network)
        future: Waiter = loop.create_future()
        line.waiting.append((images, future))
        if line.drain is None:
            line.drain = loop.create_task(self._drain(lines, id(network), line))
        return await future

    async def _drain(self, lines: dict[int, _Line], key: int, line: _Line) -> None:
        try:
            while line.waiting:
                batch = self._take(line)
                if batch:
                    await self._run(line.network, batch)
        finally:
            line.drain = None
            if lines.get(key) is line:
                del lines[key]
            for _, future in line.waiting:  # only when the loop is shutting down
                if not future.done():
                    future.cancel()

    def _take(self, line: _Line) -> list[tuple[np.ndarray, Waiter]]:
        """The waiting requests of the next batch (those whose callers left are dropped)."""
        batch: list[tuple[np.ndarray, Waiter]] = []
        images = 0
        while line.waiting:
            x, future = line.waiting[0]
            if future.done():  # cancelled: its caller disconnected
                line.waiting.popleft()
                continue
            if batch and images + len(x) > self.max_images:
                break
            batch.append(line.waiting.popleft())
            images += len(x)
        return batch

    async def _run(self, network: Network, batch: list[tuple[np.ndarray, Waiter]]) -> None:
        inputs = [x for x, _ in batch]
        if self._observe is not None:
            self._observe(sum(len(x) for x in inputs))
        timed = functools.partial(self._timed, network)
        try:
            if self.inline(network):
                results = predict_each(timed, inputs)
            else:  # ONNX Runtime releases the GIL: the loop goes on meanwhile
                results = await anyio.to_thread.run_sync(predict_each, timed, inputs)
        except BaseException:  # cancelled (the loop is shutting down): nobody is left waiting
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
