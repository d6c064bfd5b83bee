"""A bundle trained by the real pipeline recognises MNIST digits through /recognize however they
are drawn: the original, inverted (light on dark vs dark on light), RGBA on transparency, and
off-centre on a larger page. Trains a small MNIST model (3000 images, one epoch, one SIQ pass: ~40 s on 2 busy cores)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.samples import mnist_test_digits, mnist_test_labels

pipeline = pytest.importorskip("server.training.pipeline")

N = 60


@pytest.fixture(scope="module")
def trained_bundle(mnist_w4a4_bytes: bytes) -> bytes:
    return mnist_w4a4_bytes  # trained once per session (tests/conftest.py)


def variant_png(a: np.ndarray, variant: str, rng: np.random.Generator) -> bytes:
    if variant == "original":
        image = Image.fromarray(a)
    elif variant == "inverted":
        image = Image.fromarray(255 - a)
    elif variant == "rgba":
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., 3] = a  # black ink, opacity = ink
        image = Image.fromarray(rgba, "RGBA")
    else:  # off-centre, dark ink on a 120x90 light page
        page = np.full((120, 90), 235, np.uint8)
        y, x = rng.integers(0, 92), rng.integers(0, 62)
        page[y : y + 28, x : x + 28] -= (a * 0.85).astype(np.uint8)
        image = Image.fromarray(page)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_variants_are_recognised_like_the_original(make_app, tmp_path, trained_bundle):
    path = tmp_path / "trained.siq"
    path.write_bytes(trained_bundle)
    http = TestClient(make_app(str(path)))
    digits, truth = mnist_test_digits(N), mnist_test_labels(N)
    rng = np.random.default_rng(0)
    predicted = {}
    for variant in ("original", "inverted", "rgba", "off_centre"):
        files = [
            ("files", (f"{i}.png", variant_png(a, variant, rng))) for i, a in enumerate(digits)
        ]
        answer = http.post("/recognize", files=files)
        assert answer.status_code == 200, answer.text
        predicted[variant] = np.array([r["label"] for r in answer.json()["results"]])
    accuracy = {v: float((p == truth).mean()) for v, p in predicted.items()}
    agreement = {v: float((p == predicted["original"]).mean()) for v, p in predicted.items()}
    # a quick 3000-image, one-epoch model: ~0.8 on MNIST; the point is that every drawing of
    # a digit gets the label its centred original gets
    assert accuracy["original"] >= 0.7, accuracy
    for variant in ("inverted", "rgba", "off_centre"):
        assert accuracy[variant] >= accuracy["original"] - 0.1, (accuracy, agreement)
        assert agreement[variant] >= 0.9, (accuracy, agreement)


@pytest.mark.slow
def test_onnx_export_and_served_engine_are_exact_on_a_trained_bundle(trained_bundle):
    # the integer-only export, the client's engine, and the reference agree to the last bit
    ort = pytest.importorskip("onnxruntime")
    from shared.bundle import decode_bundle
    from shared.engine import IntegerNetwork, load_engine
    from shared.onnx import to_onnx
    from tests.shared.reference import reference_logits

    bundle = decode_bundle(trained_bundle)
    images = mnist_test_digits(N)[:, None].astype(np.float32) / 255  # (N, 1, 28, 28)
    q = IntegerNetwork(bundle).quantize_input(images)
    want = reference_logits(bundle, q)
    session = ort.InferenceSession(to_onnx(bundle), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"codes": q.astype(np.uint8)})[0], want)
    engine = load_engine(bundle)
    np.testing.assert_array_equal(engine.forward_int(q), want)
    labels, probs = engine.predict(images)
    np.testing.assert_array_equal(labels, want.argmax(axis=1))
