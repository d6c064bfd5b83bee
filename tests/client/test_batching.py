"""Opportunistic batching (client/serving/batch.py): concurrent requests' images go through the
network in one call, each request gets its own rows back, and one request's failure is its
own."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from client.serving import batch as batching
from client.serving.batch import INLINE_S, Batcher, predict_each
from tests.conftest import run_async


class Recording:
    """A network whose label for an image is the image's first pixel, as an int; records the
    batch sizes it was called with and fails any batch holding a negative pixel."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls.append(len(x))
        if (x < 0).any():
            raise ValueError("a negative pixel")
        labels = x.reshape(len(x), -1)[:, 0].astype(np.int64)
        return labels, np.stack([labels * 0.5, labels * 0.25], axis=1)


def images(*firsts: float) -> np.ndarray:
    out = np.zeros((len(firsts), 1, 2, 2), np.float32)
    out[:, 0, 0, 0] = firsts
    return out


def test_requests_that_arrive_together_share_one_network_call():
    net, sizes = Recording(), []
    batcher = Batcher(observe=sizes.append)

    async def main():
        return await asyncio.gather(*(batcher.predict(net, images(i, i)) for i in range(5)))

    answers = run_async(main)
    assert net.calls == [10] and sizes == [10]  # 5 requests of 2 images, one call
    for i, (labels, probs) in enumerate(answers):  # each request its own rows
        assert labels.tolist() == [i, i]
        assert probs.tolist() == [[i * 0.5, i * 0.25]] * 2


def test_a_batch_holds_at_most_max_images_and_the_rest_runs_next():
    net = Recording()
    batcher = Batcher(max_images=4)

    async def main():
        return await asyncio.gather(*(batcher.predict(net, images(i, i, i)) for i in range(3)))

    answers = run_async(main)
    assert net.calls == [3, 3, 3]  # 3 + 3 > 4: one request per call
    assert [a[0].tolist() for a in answers] == [[0] * 3, [1] * 3, [2] * 3]
    big = Batcher(max_images=2)
    labels, _ = run_async(lambda: big.predict(net, images(7, 7, 7)))  # larger than a batch: alone
    assert labels.tolist() == [7, 7, 7]


def test_a_failing_request_fails_alone():
    net = Recording()
    batcher = Batcher()

    async def main():
        return await asyncio.gather(
            batcher.predict(net, images(1)),
            batcher.predict(net, images(-1)),
            batcher.predict(net, images(3)),
            return_exceptions=True,
        )

    first, bad, third = run_async(main)
    assert isinstance(bad, ValueError)
    assert first[0].tolist() == [1] and third[0].tolist() == [3]
    assert net.calls == [3, 1, 1, 1]  # the batch, then each alone


def test_predict_each_gives_each_input_its_rows_or_its_own_error():
    net = Recording()
    rows, bad, last = predict_each(net.predict, [images(1, 2), images(-1), images(5)])
    assert isinstance(bad, ValueError)
    assert rows[0].tolist() == [1, 2] and rows[1].shape == (2, 2) and last[0].tolist() == [5]
    assert net.calls == [4, 2, 1, 1]  # the batch, then each input alone
    (whole,) = predict_each(net.predict, [images(7, 8)])
    assert net.calls[-1] == 2 and whole[0].tolist() == [7, 8]  # one input: one call


def test_a_caller_that_leaves_does_not_hold_up_the_others():
    release = threading.Event()

    class Held(Recording):
        def predict(self, x):
            release.wait(timeout=10)  # the first batch runs until the test lets it go
            return super().predict(x)

    net = Held()
    batcher = Batcher()

    async def main():
        first = asyncio.ensure_future(batcher.predict(net, images(5)))
        await asyncio.sleep(0.05)  # its batch is running now
        waiting = [asyncio.ensure_future(batcher.predict(net, images(i))) for i in (1, 2, 9)]
        await asyncio.sleep(0.01)  # all three are in line
        waiting[2].cancel()  # its caller disconnected while waiting
        release.set()
        done = await asyncio.gather(first, *waiting[:2])
        return [labels.tolist() for labels, _ in done]

    assert run_async(main) == [[5], [1], [2]]
    assert net.calls == [1, 2]  # the cancelled request never ran


def test_networks_batch_separately():
    a, b = Recording(), Recording()
    batcher = Batcher()

    async def main():
        return await asyncio.gather(
            batcher.predict(a, images(1)),
            batcher.predict(b, images(2)),
            batcher.predict(a, images(3)),
        )

    run_async(main)
    assert a.calls == [2] and b.calls == [1]


def test_max_images_must_be_positive():
    with pytest.raises(ValueError):
        Batcher(max_images=0)


def test_a_cheap_network_runs_on_the_loop_and_a_costly_one_in_a_thread(monkeypatch):
    class Clock:  # the batcher's perf_counter: each call advances by the running call's cost
        now, step = 0.0, 0.0

        def perf_counter(self) -> float:
            self.now += self.step
            return self.now

    clock = Clock()
    monkeypatch.setattr(batching, "time", clock)

    class Where(Recording):
        def __init__(self, seconds: float) -> None:
            super().__init__()
            self.seconds, self.threads = seconds, []

        def predict(self, x):
            self.threads.append(threading.get_ident())
            clock.step = self.seconds  # what this call "took"
            return super().predict(x)

    cheap, costly = Where(INLINE_S / 10), Where(INLINE_S * 5)
    batcher = Batcher()

    async def main():
        loop_thread = threading.get_ident()
        for _ in range(4):
            await batcher.predict(cheap, images(1))
            await batcher.predict(costly, images(1))
        return loop_thread

    loop_thread = run_async(main)
    # unmeasured at first: a thread; once measured cheap: the loop's own thread
    assert cheap.threads[0] != loop_thread and cheap.threads[1:] == [loop_thread] * 3
    assert loop_thread not in costly.threads
    assert batcher.cost(costly) == pytest.approx(INLINE_S * 5) and not batcher.inline(costly)
    assert batcher.inline(cheap)
