"""Load shedding on /recognize (issue 11, item 8; client/serving/admit.py): past
SIQ_MAX_QUEUED_REQUESTS waiting requests a new one is answered 503 with Retry-After at once,
and bodies being read are counted apart (SIQ_MAX_READING_BODIES, issue 28 item 1); and one
worker stays free of requests with large images, so ordinary ones do not wait behind them."""

from __future__ import annotations

import io
import threading
import time

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import client.serving.run as run_stage
from client.serving.admit import Admission
from client.serving.run import HEAVY_PIXELS
from shared.errors import OverloadedError
from tests.client.conftest import png_bytes
from tests.samples import mnist_test_digits

DIGIT = png_bytes(255 - mnist_test_digits(1)[0])


def test_admission_counts_places_and_sheds_past_them():
    admission = Admission(workers=2, queued=1, readers=8, retry_after_s=0.2)
    for _ in range(3):
        admission.admit()
    assert admission.waiting == 1
    with pytest.raises(OverloadedError) as refused:
        admission.admit()
    assert refused.value.retry_after == 1 and admission.shed == 1  # whole seconds, at least 1
    admission.release()
    admission.admit()  # a place came free
    with pytest.raises(ValueError):
        Admission(workers=0, queued=1, readers=8)


def test_bodies_being_read_are_counted_apart_from_places_in_line():
    admission = Admission(workers=1, queued=0, readers=2)
    admission.start_reading()
    admission.start_reading()
    admission.admit()  # a read request's place: the reading count does not take it
    with pytest.raises(OverloadedError, match="2 request bodies are being read") as refused:
        admission.start_reading()
    assert refused.value.retry_after == 1 and admission.shed == 1
    admission.done_reading()
    admission.start_reading()  # a reading place came free
    with pytest.raises(ValueError):
        Admission(workers=1, queued=0, readers=0)


class Gate:
    """Holds recognitions until opened, counting how many run at once (and heavy ones)."""

    def __init__(self, monkeypatch):
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.running = self.most = self.heavy = self.most_heavy = 0
        original = run_stage.decode_timed  # decode + preprocess, in the lanes

        def held(loaded, opened):
            big = opened.pixels > HEAVY_PIXELS
            with self.lock:
                self.running += 1
                self.heavy += big
                self.most = max(self.most, self.running)
                self.most_heavy = max(self.most_heavy, self.heavy)
            try:
                if big:
                    self.open.wait(timeout=20)
                return original(loaded, opened)
            finally:
                with self.lock:
                    self.running -= 1
                    self.heavy -= big

        monkeypatch.setattr(run_stage, "decode_timed", held)


def post_all(http: TestClient, bodies: list[bytes]) -> list:
    answers: list = [None] * len(bodies)

    def post(i: int) -> None:
        answers[i] = http.post("/recognize", files={"file": (f"{i}.png", bodies[i])})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
        time.sleep(0.05)  # in order, so the line fills as it would
    return [answers, threads]


def big_digit() -> bytes:
    image = Image.open(io.BytesIO(DIGIT)).resize((1600, 1600))  # 2.56 M pixels: heavy
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_requests_past_the_queue_bound_get_503_with_retry_after(make_app, bundle_file, monkeypatch):
    gate = Gate(monkeypatch)
    app = make_app(str(bundle_file), inference_workers=1, max_queued_requests=2)
    with TestClient(app) as http:
        answers, threads = post_all(http, [big_digit()] * 6)
        deadline = time.monotonic() + 10
        while sum(a is not None for a in answers) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        shed = [a for a in answers if a is not None]
        assert [a.status_code for a in shed] == [503, 503, 503]  # at once, while 3 are held
        assert all(a.headers["retry-after"] == "1" for a in shed)
        assert shed[0].json()["error"]["code"] == "overloaded"
        gate.open.set()
        for t in threads:
            t.join(timeout=30)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 200, 503, 503, 503] and gate.most == 1
    assert 'siq_client_requests_total{endpoint="/recognize",status="503"} 3.0' in (
        app.state.metrics.render().decode()
    )


def test_a_worker_stays_free_for_ordinary_requests(make_app, bundle_file, monkeypatch):
    gate = Gate(monkeypatch)
    with TestClient(make_app(str(bundle_file), inference_workers=2)) as http:
        answers, threads = post_all(http, [big_digit()] * 2)  # both held by the gate
        start = time.perf_counter()
        ordinary = http.post("/recognize", files={"file": ("d.png", DIGIT)})
        waited = time.perf_counter() - start
        assert ordinary.status_code == 200 and all(a is None for a in answers)
        gate.open.set()
        for t in threads:
            t.join(timeout=30)
    assert [a.status_code for a in answers] == [200, 200]
    assert gate.most_heavy == 1 and waited < 10
