"""/recognize with SIQ_INFERENCE_PROCESSES (client/serving/children.py): the answers of the
in-process route, each request's own errors, and a child that dies is replaced."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from client.settings import ClientSettings
from tests.client.conftest import build_app, png_bytes
from tests.client.test_app import bomb_png, jpeg_truncated
from tests.samples import mnist_test_digits


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return 255 - mnist_test_digits(8)


def _app(tmp_path_factory, bundle: bytes, **overrides):
    root = tmp_path_factory.mktemp("proc")
    path = root / "a.siq"
    path.write_bytes(bundle)
    return build_app(root, str(path), **overrides)


@pytest.fixture(scope="module")
def both(tmp_path_factory, bundle_a):
    """(in-process client, client with one inference process), their lifespans running."""
    inline = TestClient(_app(tmp_path_factory, bundle_a))
    child = TestClient(_app(tmp_path_factory, bundle_a, inference_processes=1))
    with inline, child:
        yield inline, child


def _post(http, files):
    return http.post("/recognize", files=files)


def _metric(http, name: str) -> float | None:
    """A sample's value on /metrics (`name` with its labels), None when it is not there."""
    for line in http.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_answers_equal_the_in_process_route(both, digits):
    inline, child = both
    files = [("files", (f"d{i}.png", png_bytes(d), "image/png")) for i, d in enumerate(digits)]
    a, b = _post(inline, files), _post(child, files)
    assert a.status_code == b.status_code == 200, b.text
    for x, y in zip(a.json()["results"], b.json()["results"], strict=True):
        assert x["label"] == y["label"] and x["filename"] == y["filename"]
        assert x["probabilities"] == y["probabilities"]
    assert set(b.json()["timings_ms"]) == {"decode", "preprocess", "inference", "total"}
    assert child.app.state.pipeline.runner.pool.pids()  # it ran in a child
    metrics = child.get("/metrics").text  # its batch sizes, as in process
    assert "siq_client_batch_images_count" in metrics
    count = next(x for x in metrics.splitlines() if x.startswith("siq_client_batch_images_count"))
    assert float(count.split()[-1]) >= 1
    assert _metric(child, "siq_client_inference_processes") == 1
    assert _metric(inline, "siq_client_inference_processes") == 0


@pytest.mark.parametrize(
    "name,data,status,words",
    [
        ("a.txt", b"hello", 415, "not an image"),
        ("t.jpg", None, 422, "truncated"),
        ("w.png", png_bytes(np.full((28, 28), 255, np.uint8)), 422, "blank"),
        ("b.png", bomb_png(5000, 5000), 413, "limit"),
    ],
)
def test_a_bad_image_gets_the_same_4xx_and_the_others_are_served(both, digits, name, data, status, words):  # fmt: skip
    inline, child = both
    data = jpeg_truncated(digits) if data is None else data
    for http in (inline, child):
        answer = _post(http, {"file": (name, data)})
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"]["message"].lower()
    ok = _post(child, {"file": ("d.png", png_bytes(digits[0]), "image/png")})
    assert ok.status_code == 200


def test_a_child_that_dies_is_replaced(both, digits):
    _, child = both
    good = {"file": ("d.png", png_bytes(digits[1]), "image/png")}
    assert _post(child, good).status_code == 200
    (pid,) = child.app.state.pipeline.runner.pool.pids()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)  # still there (until its parent reaps it)?
        except ProcessLookupError:
            break
        if _post(child, good).status_code == 200:
            break
        time.sleep(0.05)
    answers = [_post(child, good).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert child.app.state.pipeline.runner.pool.pids() != [pid]
    # an operator sees it: one child lost because it exited, one running again
    assert _metric(child, 'siq_client_inference_process_losses_total{reason="exited"}') == 1
    assert _metric(child, "siq_client_inference_processes") == 1


def test_inference_processes_cannot_be_negative():
    with pytest.raises(ValueError):
        ClientSettings(bundle="x.siq", inference_processes=-1)


def test_a_new_bundle_gets_new_children(bundle_a, bundle_b, digits):
    from client.manager import load_network
    from client.serving.children import InferencePool
    from client.serving.decode import decode_timed, open_uploads
    from shared.bundle import decode_bundle
    from tests.conftest import run_async

    uploads = [(f"d{i}.png", png_bytes(d)) for i, d in enumerate(digits[:3])]
    a, b = decode_bundle(bundle_a), decode_bundle(bundle_b)
    pool = InferencePool(1, max_pixels=10**6)

    async def main():
        try:
            first = await pool.recognize(a, uploads)
            pid_a = pool.pids()
            second = await pool.recognize(b, uploads)
            return first, pid_a, second, pool.pids()
        finally:
            pool.close()

    first, pid_a, second, pid_b = run_async(main)
    assert pid_a and pid_b and pid_a != pid_b
    for bundle, (labels, probs, _) in ((a, first), (b, second)):
        loaded = load_network(bundle, "test")
        batch, _ = decode_timed(loaded, open_uploads(uploads, max_pixels=10**6))
        want_labels, want_probs = loaded.network.predict(batch)
        assert labels.tolist() == want_labels.tolist()
        assert np.array_equal(probs, want_probs)


def test_concurrent_requests_share_batches_and_each_gets_its_own_rows(bundle_a, digits):
    import asyncio

    from client.manager import load_network
    from client.serving.children import MAX_BATCH_IMAGES, InferencePool
    from client.serving.decode import decode_timed, open_uploads
    from shared.bundle import decode_bundle
    from tests.conftest import run_async

    bundle = decode_bundle(bundle_a)
    pngs = [png_bytes(d) for d in digits]
    requests = [[(f"r{r}d{i}.png", pngs[(r + i) % len(pngs)]) for i in range(8)] for r in range(20)]
    pool = InferencePool(1, max_pixels=10**6)

    async def main():
        try:
            return await asyncio.gather(*(pool.recognize(bundle, up) for up in requests))
        finally:
            pool.close()

    answers = run_async(main)
    assert 8 * len(requests) > 2 * MAX_BATCH_IMAGES  # more than two batches' worth
    loaded = load_network(bundle, "test")
    for uploads, (labels, probs, _) in zip(requests, answers, strict=True):
        batch, _ = decode_timed(loaded, open_uploads(uploads, max_pixels=10**6))
        want_labels, want_probs = loaded.network.predict(batch)
        assert labels.tolist() == want_labels.tolist()
        assert np.array_equal(probs, want_probs)  # integer logits: batching changes nothing


def _hang(conn, bundle, **limits):  # a child whose decoder never returns
    conn.send(("ready", None))
    conn.recv()
    time.sleep(3600)


def test_a_child_that_never_answers_is_killed_and_its_requests_get_503(bundle_a, digits):
    import asyncio

    from client.serving.children import InferencePool
    from shared.bundle import decode_bundle
    from shared.errors import NotReadyError
    from tests.conftest import run_async

    losses: list[str] = []
    pool = InferencePool(1, max_pixels=10**6, batch_timeout_s=0.5, target=_hang, lost=losses.append)
    uploads = [("d.png", png_bytes(digits[0]))]

    async def main():
        try:
            started = time.monotonic()
            task = asyncio.ensure_future(pool.recognize(decode_bundle(bundle_a), uploads))
            while not pool.pids():
                await asyncio.sleep(0.01)
            (pid,) = pool.pids()
            with pytest.raises(NotReadyError, match="no answer in 0.5 s"):
                await asyncio.wait_for(task, 20)  # without the deadline: a failure, not a hang
            return time.monotonic() - started, pid
        finally:
            pool.close()

    waited, pid = run_async(main)
    assert waited < 30  # the spawn, then the 0.5 s deadline: not for ever
    assert losses == ["unanswered"]
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)


def test_the_child_enforces_the_pixel_budgets_and_hands_back_larger_requests(bundle_a, digits):
    from client.serving.children import InferencePool
    from shared.bundle import decode_bundle
    from shared.errors import ImageTooLargeError
    from tests.conftest import run_async

    one = [("d.png", png_bytes(digits[0]))]
    # the serving process no longer reads headers: the child refuses a request over the
    # request budget (413 on the route) and hands back one over its own pixel limit
    observed: list[int] = []
    pool = InferencePool(
        1,
        max_pixels=10**6,
        max_request_pixels=3 * 784,
        child_pixels=784,
        observe=observed.append,
    )

    async def main():
        try:
            bundle = decode_bundle(bundle_a)
            small = await pool.recognize(bundle, one)
            handed_back = await pool.recognize(bundle, one * 2)
            with pytest.raises(ImageTooLargeError, match="limit per request"):
                await pool.recognize(bundle, one * 4)
            return small, handed_back
        finally:
            pool.close()

    small, handed_back = run_async(main)
    assert small is not None and len(small[0]) == 1
    assert handed_back is None
    assert observed == [1]  # the batch metric counts what the child ran: not the handed back


def test_the_request_budget_holds_with_inference_processes(tmp_path_factory, bundle_a, digits):
    app = _app(
        tmp_path_factory,
        bundle_a,
        inference_processes=1,
        max_request_pixels=3 * 784,
        max_pixels=784,
    )
    png = png_bytes(digits[0])
    with TestClient(app) as http:
        ok = _post(http, [("files", (f"d{i}.png", png, "image/png")) for i in range(3)])
        refused = _post(http, [("files", (f"d{i}.png", png, "image/png")) for i in range(4)])
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 413 and "limit per request" in refused.text


def test_children_start_with_each_bundle_put_into_service(tmp_path, server, bundle_a, bundle_b, digits):  # fmt: skip
    """Not with the first request: a bundle going into service (at start, or swapped in by
    the poller) gets its children then, and the request finds them loaded."""
    from shared.bundle import bundle_id
    from tests.client.conftest import build_app
    from tests.conftest import wait_until

    server.publish(bundle_a)
    app = build_app(tmp_path, "latest:digits", server, inference_processes=1, poll_interval_s=0.05)
    app.state.manager.refresh()  # serving from the start, as from the cache
    pool = app.state.pipeline.runner.pool
    with TestClient(app) as http:
        first = wait_until(pool.pids, 30, 0.02, what="a child before any request")
        assert _metric(http, "siq_client_inference_processes") == 1
        server.publish(bundle_b)
        swapped = wait_until(
            lambda: pool.pids() != first and pool.pids(), 30, 0.02, what="the new bundle's child"
        )
        answer = _post(http, {"file": ("d.png", png_bytes(digits[0]), "image/png")})
        assert answer.status_code == 200 and answer.json()["bundle_id"] == bundle_id(bundle_b)
        assert pool.pids() == swapped  # the child started with the swap, not by the request


def _pid(loaded) -> int:
    return os.getpid()


def _refuse(loaded) -> None:
    from client.oip_codec import ProtocolError

    raise ProtocolError("refused in the child")


def test_run_does_a_requests_work_in_the_child_and_raises_its_error_here(bundle_a):
    import asyncio
    import functools

    from client.oip_codec import ProtocolError
    from client.serving.children import InferencePool
    from shared.bundle import decode_bundle
    from tests.conftest import run_async

    pool = InferencePool(1, max_pixels=10**6)
    bundle = decode_bundle(bundle_a)

    async def main():
        try:
            # both wait for the child to load, then go in one batch: the one that cannot
            # be pickled fails alone
            pid, bad = await asyncio.gather(
                pool.run(bundle, functools.partial(_pid)),
                pool.run(bundle, lambda loaded: 0),
                return_exceptions=True,
            )
            assert isinstance(bad, RuntimeError) and "pickle" in str(bad)
            with pytest.raises(ProtocolError, match="refused in the child"):
                await pool.run(bundle, _refuse)  # the same class: the same 400
            with pytest.raises(RuntimeError, match="not sent"):
                await pool.run(bundle, lambda loaded: 0)  # a lambda does not pickle
            return pid, pool.pids(), await pool.run(bundle, _pid)  # and it serves on
        finally:
            pool.close()

    pid, pids, again = run_async(main)
    assert pid != os.getpid() and pids == [pid] and again == pid
