"""/recognize and the other routes, in process (fastapi TestClient), with a bundle from a file
or from the fake server."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from client.settings import load_settings
from shared.bundle import bundle_id, decode_bundle
from shared.engine import IntegerNetwork
from shared.errors import ConfigError
from shared.image import decode_image, preprocess
from tests.client.conftest import png_bytes
from tests.samples import mnist_test_digits


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return 255 - mnist_test_digits(12)  # dark ink on white paper, as people photograph


@pytest.fixture
def http(make_app, bundle_file):
    return TestClient(make_app(str(bundle_file), max_images=8, max_upload_bytes=64 * 1024))


def expected_answers(bundle: bytes, images: list[bytes]):
    net = IntegerNetwork(decode_bundle(bundle))
    x = np.stack([preprocess(decode_image(b), {"kind": "digit"}) for b in images])
    return net.predict(x)


def test_labels_equal_the_engine_on_the_same_arrays(http, bundle_a, digits):
    images = [png_bytes(d) for d in digits]
    labels, probs = expected_answers(bundle_a, images)
    files = [("files", (f"d{i}.png", b, "image/png")) for i, b in enumerate(images[:8])]
    answer = http.post("/recognize", files=files)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["bundle_id"] == bundle_id(bundle_a)
    assert [r["label"] for r in body["results"]] == labels[:8].tolist()
    for r, p in zip(body["results"], probs, strict=False):
        assert np.allclose(r["probabilities"], p, atol=1e-6)
        assert r["class_name"] == f"class{r['label']}" and r["bundle_id"] == body["bundle_id"]
    assert set(body["timings_ms"]) == {"decode", "preprocess", "inference", "total"}
    # one image in `file`, and a raw image/* body, answer the same
    one = http.post("/recognize", files={"file": ("x.png", images[9], "image/png")}).json()
    raw = http.post("/recognize", content=images[9], headers={"content-type": "image/png"})
    assert one["results"][0]["label"] == raw.json()["results"][0]["label"] == labels[9]


def test_bundle_health_ready_and_metrics(http, bundle_a, digits):
    info = http.get("/bundle").json()
    assert info["id"] == bundle_id(bundle_a) and info["source"] == "file"
    assert info["weight_bits"] == 4 and info["activation_bits"] == 4
    assert len(info["class_names"]) == 10 and info["dataset"] == "random-lenet"
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    http.post("/recognize", files={"file": ("x.png", png_bytes(digits[0]), "image/png")})
    text = http.get("/metrics").text
    assert 'siq_client_requests_total{endpoint="/recognize",status="200"} 1.0' in text
    assert "siq_client_request_seconds_bucket" in text
    assert "siq_client_bundle_swaps_total 1.0" in text


def bomb_png(width: int, height: int) -> bytes:
    data = png_bytes(np.zeros((1, 1), np.uint8))
    chunk = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:12] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]


def jpeg_truncated(digits) -> bytes:
    data = png_bytes(np.ascontiguousarray(np.tile(digits[0], (4, 4))), "JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "case,status,words",
    [
        ("not_an_image", 415, "not an image"),
        ("truncated", 422, "truncated"),
        ("empty_file", 422, "empty"),
        ("empty_raw", 422, "empty"),
        ("bomb", 413, "too large"),
        ("too_many_pixels", 413, "limit"),
        ("over_byte_limit", 413, "limit"),
        ("too_many_images", 413, "too many"),
        ("wrong_field", 422, "'file' or 'files'"),
        ("text_field", 422, "file upload"),
        ("no_files", 422, "no image"),
        ("json_body", 415, "multipart"),
        ("bad_multipart", 422, "multipart"),
        ("blank_image", 422, "blank"),
    ],
)
def test_bad_input_gets_a_4xx_and_the_service_keeps_serving(http, digits, case, status, words):
    good = png_bytes(digits[0])
    post = {
        "not_an_image": lambda: http.post("/recognize", files={"file": ("a.txt", b"hello")}),
        "truncated": lambda: http.post("/recognize", files={"file": ("t.jpg", jpeg_truncated(digits))}),
        "empty_file": lambda: http.post("/recognize", files={"file": ("e.png", b"")}),
        "empty_raw": lambda: http.post("/recognize", content=b"", headers={"content-type": "image/png"}),
        "bomb": lambda: http.post("/recognize", files={"file": ("b.png", bomb_png(60000, 60000))}),
        "too_many_pixels": lambda: http.post("/recognize", files={"file": ("b.png", bomb_png(5000, 5000))}),
        "over_byte_limit": lambda: http.post("/recognize", content=b"\0" * 70000, headers={"content-type": "image/png"}),
        "too_many_images": lambda: http.post("/recognize", files=[("files", ("d.png", good))] * 9),
        "wrong_field": lambda: http.post("/recognize", files={"image": ("d.png", good)}),
        "text_field": lambda: http.post("/recognize", data={"file": "not a file"}, files={"files": ("d.png", good)}),
        "no_files": lambda: http.post("/recognize", data={}, headers={"content-type": "multipart/form-data; boundary=xyz"}),
        "json_body": lambda: http.post("/recognize", json={"image": "x"}),
        "bad_multipart": lambda: http.post("/recognize", content=b"garbage", headers={"content-type": "multipart/form-data"}),
        "blank_image": lambda: http.post("/recognize", files={"file": ("w.png", png_bytes(np.full((28, 28), 255, np.uint8)))}),
    }[case]  # fmt: skip
    answer = post()
    assert answer.status_code == status, answer.text
    assert words.lower() in answer.json()["error"]["message"].lower()
    ok = http.post("/recognize", files={"file": ("d.png", good, "image/png")})
    assert ok.status_code == 200


def test_content_length_over_the_limit_is_refused_before_reading(http):
    answer = http.post(
        "/recognize",
        content=iter([b"\0" * 1000]),
        headers={"content-type": "image/png", "content-length": "100000000"},
    )
    assert answer.status_code == 413
    chunked = http.post(  # no Content-Length: counted while reading
        "/recognize", content=iter([b"\0" * 10000] * 7), headers={"content-type": "image/png"}
    )
    assert chunked.status_code == 413 and "limit" in chunked.json()["error"]["message"]


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "I;16", "RGB"])
def test_modes_and_formats_are_recognised(http, digits, mode):
    image = Image.fromarray(digits[3])
    image = (
        Image.fromarray(digits[3].astype(np.uint16) * 257)
        if mode == "I;16"
        else image.convert(mode)
    )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    answer = http.post("/recognize", files={"file": ("m.png", buf.getvalue(), "image/png")})
    assert answer.status_code == 200, answer.text


def test_no_bundle_yet_is_503_not_500(make_app, server):
    app = make_app("latest:digits", server)  # the server has none
    http = TestClient(app)
    assert app.state.manager.refresh() is False
    answer = http.post("/recognize", files={"file": ("d.png", b"whatever")})
    assert answer.status_code == 503 and "no bundle" in answer.json()["error"]["message"]
    assert http.get("/readyz").status_code == 503
    assert http.get("/bundle").status_code == 503
    assert http.get("/healthz").status_code == 200


def test_requests_beyond_the_inference_workers_wait_in_line(
    make_app, bundle_file, digits, monkeypatch
):
    import client.serving.run as run_stage

    running, most = [0], [0]
    lock = threading.Lock()
    original = run_stage.decode_timed  # decode + preprocess

    def tracked(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)  # long enough for the other requests to arrive meanwhile
            return original(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(run_stage, "decode_timed", tracked)
    image = png_bytes(digits[0])
    codes: list[int] = []
    # the limiter lives in the serving event loop: started by the lifespan, as in production
    with TestClient(make_app(str(bundle_file), inference_workers=1)) as http:

        def post():
            answer = http.post("/recognize", files={"file": ("d.png", image)})
            codes.append(answer.status_code)

        threads = [threading.Thread(target=post) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert codes == [200] * 6  # nobody is turned away ...
    assert most[0] == 1  # ... and only one at a time ran


def test_inference_workers_must_be_positive(monkeypatch, tmp_path):
    monkeypatch.setenv("SIQ_BUNDLE", str(tmp_path / "x.siq"))
    monkeypatch.setenv("SIQ_INFERENCE_WORKERS", "0")
    with pytest.raises(ConfigError, match="SIQ_INFERENCE_WORKERS"):
        load_settings()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/bundle", "/metrics", "/", "/v2"])
def test_head_answers_gets_status_and_headers_without_the_body(http, path):
    with http:
        got, head = http.get(path), http.head(path)
    assert head.status_code == got.status_code == 200, head.text
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    if path != "/metrics":  # the metrics text counts the GET just made
        assert head.headers["content-length"] == got.headers["content-length"]
    assert http.post(path).status_code == 405  # only HEAD is GET
