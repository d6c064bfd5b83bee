"""Slow uploads cannot shut out recognition (issue 28, item 1): a place in line is taken only
once a body is read; bodies being read are bounded on their own (503 past the bound); a body
slower than the minimum rate, or later than the whole-body deadline, gets 408. And every 503
`overloaded`, /v2 infer's included, says when to retry (issue 28, item 7).

Trickling callers are driven through the ASGI interface in the test's own event loop: each
sends one byte of its declared 100,000 at a time, for as long as the test holds it open."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from client.oip_model import model_name
from tests.client.conftest import png_bytes
from tests.conftest import run_async
from tests.samples import mnist_test_digits

DIGIT = png_bytes(255 - mnist_test_digits(1)[0])
MODEL_INFER = "/v2/models/{model}/infer"


class Trickler:
    """One caller uploading a body of `length` bytes one byte every `interval` s, until
    `stop` is set (then it disconnects)."""

    def __init__(self, app: Any, path: str, stop: asyncio.Event, interval: float = 0.05):
        self.app, self.path, self.stop, self.interval = app, path, stop, interval
        self.bytes_sent = 0
        self.messages: list[dict] = []

    async def run(self) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"test"),
                (b"content-type", b"image/png"),
                (b"content-length", b"100000"),
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("test", 80),
        }

        async def receive() -> dict:
            if self.stop.is_set():
                return {"type": "http.disconnect"}
            stopped = asyncio.ensure_future(self.stop.wait())
            await asyncio.wait([stopped], timeout=self.interval)
            stopped.cancel()
            if self.stop.is_set():
                return {"type": "http.disconnect"}
            self.bytes_sent += 1
            return {"type": "http.request", "body": b"\x89", "more_body": True}

        async def send(message: dict) -> None:
            self.messages.append(message)

        await self.app(scope, receive, send)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )


async def _settled(tricklers: list[Trickler], task_of: dict, timeout: float = 20) -> None:
    """Until every trickler is being read (it sent a byte) or has its answer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not all(t.bytes_sent > 1 or task_of[t].done() for t in tricklers):
        assert asyncio.get_running_loop().time() < deadline, "the tricklers never settled"
        await asyncio.sleep(0.01)


def _ordinary(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_trickling_uploads_do_not_take_the_places_of_read_requests(make_app, bundle_file):
    # 1 worker + 1 waiting place; 5 callers trickle their bodies for as long as we like
    app = make_app(str(bundle_file), inference_workers=1, max_queued_requests=1, body_min_rate=0)

    async def main() -> tuple[list[int | None], int, int]:
        stop = asyncio.Event()
        tricklers = [Trickler(app, "/recognize", stop) for _ in range(5)]
        tasks = {t: asyncio.ensure_future(t.run()) for t in tricklers}
        try:
            await _settled(tricklers, tasks)
            async with _ordinary(app) as http:
                answers = [
                    await http.post("/recognize", files={"file": ("d.png", DIGIT)})
                    for _ in range(3)
                ]
            still_reading = sum(not task.done() for task in tasks.values())
        finally:
            stop.set()
            await asyncio.wait(tasks.values(), timeout=10)
        return [a.status_code for a in answers], still_reading, len(tricklers)

    codes, still_reading, tricklers = run_async(main)
    assert codes == [200, 200, 200]
    assert still_reading == tricklers  # none was refused: they wait in the reading count


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        # ~20 bytes/s against 1000 after 0.2 s: 408 then, not after the whole 600 s
        ({"body_min_rate": 1000, "body_rate_grace_s": 0.2, "body_timeout_s": 600},
         b"too slowly: "),
        ({"body_min_rate": 0, "body_timeout_s": 0.3}, b"did not arrive within 0.3 s"),
    ],
)  # fmt: skip
def test_a_body_slower_than_the_minimum_rate_or_the_deadline_gets_408(
    make_app, bundle_file, limits, words
):
    app = make_app(str(bundle_file), **limits)

    async def main() -> Trickler:
        stop = asyncio.Event()
        trickler = Trickler(app, "/recognize", stop)
        try:
            await asyncio.wait_for(trickler.run(), 10)
        finally:
            stop.set()
        return trickler

    trickler = run_async(main)
    assert trickler.status == 408 and words in trickler.body, trickler.body


@pytest.mark.parametrize("path", ["/recognize", MODEL_INFER])
def test_bodies_read_at_once_are_bounded_and_the_503_says_when_to_retry(
    make_app, bundle_file, path
):
    app = make_app(str(bundle_file), max_reading_bodies=2, body_min_rate=0, max_queued_requests=0)
    model = model_name(app.state.manager.current)

    async def main() -> httpx.Response:
        stop = asyncio.Event()
        tricklers = [Trickler(app, "/recognize", stop) for _ in range(2)]
        tasks = {t: asyncio.ensure_future(t.run()) for t in tricklers}
        try:
            await _settled(tricklers, tasks)
            async with _ordinary(app) as http:
                return await http.post(
                    path.format(model=model), content=DIGIT, headers={"content-type": "image/png"}
                )
        finally:
            stop.set()
            await asyncio.wait(tasks.values(), timeout=10)

    refused = run_async(main)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "request bodies are being read already" in refused.text
