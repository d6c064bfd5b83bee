"""The client serves a DAG bundle (format version 3: depthwise-separable and residual blocks,
global average pooling) of a photo-shaped input through /recognize, the Open Inference Protocol
(/v2) and its page, with the ONNX Runtime backend and with the numpy one: the answers are the
reference interpreter's."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from fastapi.testclient import TestClient

from client import manager
from shared.bundle import bundle_id, decode_bundle, encode_bundle
from shared.engine import load_engine, softmax
from shared.engine.reference import run_reference
from shared.image import decode_image, preprocess
from shared.network import quantize_input
from tests.client.conftest import png_bytes
from tests.factories import GraphBuilder

MODEL = "random-dag"  # the data set of tests.factories' DAG bundles
BACKENDS = ["onnxruntime", "numpy"]


def dag_network() -> bytes:
    """A small MobileNet/ResNet-like photo network: stem, a depthwise-separable block whose
    pointwise accumulators add to the stem's codes, a strided separable block, an average
    pool, a global average pool and a linear layer; 3 x 16 x 16 photos, 4 classes."""
    b = GraphBuilder(11, (3, 16, 16))
    x = b.conv("input", 8, 3, stride=2, padding=1, activation="relu6")
    branch = b.conv(b.depthwise(x, 3, padding=1, activation="relu6"), 8, 1, activation="none")
    x = b.add(branch, x)
    x = b.conv(b.depthwise(x, 3, stride=2, padding=1), 12, 1, activation="relu6")
    x = b.global_avgpool(b.avgpool(x, 2, 1))
    return encode_bundle(*b.network(b.linear(x, 4, activation="none")))


@pytest.fixture(scope="module")
def dag_bundle() -> bytes:
    return dag_network()


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    rng = np.random.default_rng(3)
    return [png_bytes(rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8)) for i in range(5)]


@pytest.fixture(params=BACKENDS)
def http(request, monkeypatch, make_app, tmp_path, dag_bundle) -> TestClient:
    """The client serving the DAG bundle from a file, with one backend or the other."""
    chosen = functools.partial(load_engine, backend=request.param)
    monkeypatch.setattr(manager, "load_engine", chosen)
    path = tmp_path / "dag.siq"
    path.write_bytes(dag_bundle)
    http = TestClient(make_app(str(path), max_images=8))
    http.backend = request.param  # type: ignore[attr-defined]
    return http


def reference(bundle_bytes: bytes, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer logits and probabilities of preprocessed images, by the reference interpreter."""
    bundle = decode_bundle(bundle_bytes)
    m = bundle.manifest
    q = quantize_input(x, float(m["input"]["scale"]), int(m["activation_bits"]))
    logits = run_reference(m, bundle.tensors, q)
    return logits, softmax(logits * float(m["logit_scale"]))


def test_the_bundle_route_and_the_page_say_what_serves(http):
    info = http.get("/bundle").json()
    assert info["backend"] == http.backend
    assert info["network"]["format_version"] == 3
    assert {"add": 1, "global_avgpool": 1, "avgpool2d": 1}.items() <= info["network"]["ops"].items()
    assert info["preprocess"]["kind"] == "photo"
    page = http.get("/")
    assert page.status_code == 200 and 'data-testid="upload"' in page.text
    assert "body.network" in http.get("/static/app.js").text  # the page shows the network


def test_recognize_answers_with_the_reference_labels(http, dag_bundle, photos):
    spec = decode_bundle(dag_bundle).manifest["input"]["preprocess"]
    x = np.stack([preprocess(decode_image(p), spec) for p in photos])
    logits, probs = reference(dag_bundle, x)
    files = [("files", (f"p{i}.png", p, "image/png")) for i, p in enumerate(photos)]
    answer = http.post("/recognize", files=files)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["label"] for r in results] == logits.argmax(axis=1).tolist()
    for r, p in zip(results, probs, strict=True):
        assert np.allclose(r["probabilities"], p, atol=1e-6)
        assert r["bundle_id"] == bundle_id(dag_bundle)


def test_open_inference_protocol_metadata_and_logits(http, dag_bundle):
    meta = http.get(f"/v2/models/{MODEL}").json()
    assert meta["versions"] == [bundle_id(dag_bundle)]
    shapes = {t["name"]: t["shape"] for t in meta["inputs"] + meta["outputs"]}
    assert shapes["input"] == [-1, 3, 16, 16] and shapes["logits"] == [-1, 4]
    x = np.random.default_rng(4).integers(0, 256, (3, 3, 16, 16)).astype(np.float32) / 255
    tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape)}
    tensor["data"] = x.ravel().tolist()
    answer = http.post(f"/v2/models/{MODEL}/infer", json={"inputs": [tensor]})
    assert answer.status_code == 200, answer.text
    out = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    logits, _ = reference(dag_bundle, x)
    assert out["logits"] == logits.ravel().tolist()
    assert out["label"] == logits.argmax(axis=1).tolist()
