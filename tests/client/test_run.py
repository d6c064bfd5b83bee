"""The in-process runner (client/serving/run.py): cheap recognitions run on the event loop,
costly or unmeasured ones in a worker thread; the cost is the least of the recent
measurements."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import numpy as np
from fastapi.testclient import TestClient

from client.serving.run import INLINE_CPU_S, INLINE_PIXELS, Costs, InProcess
from tests.client.conftest import png_bytes


def test_unmeasured_and_costly_bundles_go_to_a_thread():
    d = Costs()
    assert not d.inline("a", 1, 784)  # nothing measured yet
    d.observe("a", 1, INLINE_CPU_S / 4)
    assert d.inline("a", 1, 784) and d.cost("a") == INLINE_CPU_S / 4
    assert not d.inline("a", 1, INLINE_PIXELS + 1)  # a large upload decodes for long
    assert not d.inline("a", 8, 8 * 784)  # eight images cost more than one
    d.observe("b", 2, 4 * INLINE_CPU_S)  # 2 ms per image
    assert not d.inline("b", 1, 784)


def test_the_least_recent_measurement_decides():
    d = Costs()
    for seconds in (5e-4, 9e-3, 8e-3):  # the machine got busy: later runs measured slower
        d.observe("a", 1, seconds)
    assert d.cost("a") == 5e-4 and d.inline("a", 1, 784)
    for _ in range(8):  # the cheap measurement leaves the window
        d.observe("a", 1, 3e-3)
    assert d.cost("a") == 3e-3 and not d.inline("a", 1, 784)


def test_run_picks_the_loop_or_a_thread():
    d = InProcess(2, max_pixels=10**6, max_request_pixels=None)

    def where() -> int:
        return threading.get_ident()

    async def main() -> tuple[int, int, int, int]:
        loop_thread = threading.get_ident()
        first = await d.call(where, key="k", images=1, pixels=784)  # unmeasured: a thread
        d.costs.observe("k", 1, 1e-5)
        cheap = await d.call(where, key="k", images=1, pixels=784)
        big = await d.call(where, key="k", images=1, pixels=INLINE_PIXELS * 2)
        return loop_thread, first, cheap, big

    # a loop of its own in a thread of its own: other tests (Playwright's sync API) may leave
    # an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loop_thread, first, cheap, big = pool.submit(asyncio.run, main()).result(timeout=60)
    assert first != loop_thread and cheap == loop_thread and big != loop_thread
    assert d.costs.cost("k") is not None


def test_recognize_answers_the_same_inline_and_in_a_thread(make_app, tmp_path, bundle_a):
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    digit = png_bytes(np.pad(np.zeros((14, 8), np.uint8), 7, constant_values=255))
    with TestClient(make_app(str(path))) as http:
        costs = http.app.state.pipeline.runner.costs  # type: ignore[attr-defined]
        answers = []
        for _ in range(3):  # the first runs in a thread and is measured; then inline
            answer = http.post("/recognize", files={"file": ("d.png", digit)})
            assert answer.status_code == 200
            answers.append(answer.json()["results"])
        assert costs.cost(answer.json()["bundle_id"]) is not None
    assert answers[0] == answers[1] == answers[2]
