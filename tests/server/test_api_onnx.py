"""GET /bundles/{id}/onnx: the stored bundle as an ONNX model whose logits, in onnxruntime,
are the engine's; `latest` and `?inputs=images` work; unknown bundles and bad options are
clear 4xx answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.service.app import create_app
from shared.bundle import decode_bundle, write_bundle_atomic
from shared.engine import IntegerNetwork
from tests.factories import make_random_bundle
from tests.server.api_helpers import make_settings

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def stored(tmp_path: Path):
    settings = make_settings(tmp_path)
    data = make_random_bundle(seed=6)
    path = write_bundle_atomic(settings.bundle_dir, data)
    wide = write_bundle_atomic(
        settings.bundle_dir, make_random_bundle(7, arch="photo", codebook_bits=12)
    )
    with TestClient(create_app(settings)) as client:
        yield client, path.stem, decode_bundle(data), wide.stem


def test_the_model_gives_the_engine_logits(stored) -> None:
    client, bundle_id, bundle, _ = stored
    net = IntegerNetwork(bundle)
    x = np.random.default_rng(0).random((4, *net.input_shape)).astype(np.float32)
    q = net.quantize_input(x)
    for path, params, feed in (
        (f"/bundles/{bundle_id}/onnx", {}, {"codes": q.astype(np.uint8)}),
        ("/bundles/latest/onnx", {"dataset": "random-lenet", "inputs": "images"}, {"images": x}),
    ):
        resp = client.get(path, params=params)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/octet-stream"
        assert resp.headers["X-SIQ-Bundle-Id"] == bundle_id
        session = ort.InferenceSession(resp.content, providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(session.run(None, feed)[0], net.forward_int(q))


def test_bad_requests_are_clear_4xx(stored) -> None:
    client, bundle_id, _, wide_id = stored
    missing = client.get(f"/bundles/{'0' * 64}/onnx")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    bad = client.get(f"/bundles/{bundle_id}/onnx", params={"inputs": "pixels"})
    assert bad.status_code == 422 and "error" in bad.json()
    # 12-bit codebooks have no integer (int8) ONNX convolution
    wide = client.get(f"/bundles/{wide_id}/onnx")
    assert wide.status_code == 422 and wide.json()["error"]["code"] == "not_exportable"


def test_a_dag_bundle_gives_the_reference_logits(tmp_path: Path) -> None:
    # format version 3: depthwise, adds, pools; the route serves its integer-only model
    from shared.bundle import encode_bundle
    from shared.engine.reference import run_reference
    from tests.factories import random_codes, random_dag_network

    settings = make_settings(tmp_path)
    data = encode_bundle(*random_dag_network(2, saturate=True))
    bundle = decode_bundle(data)
    stored_id = write_bundle_atomic(settings.bundle_dir, data).stem
    q = random_codes(bundle, 4)
    with TestClient(create_app(settings)) as client:
        resp = client.get(f"/bundles/{stored_id}/onnx")
    assert resp.status_code == 200, resp.text
    session = ort.InferenceSession(resp.content, providers=["CPUExecutionProvider"])
    got = session.run(None, {"codes": q.astype(np.uint8)})[0]
    np.testing.assert_array_equal(got, run_reference(bundle.manifest, bundle.tensors, q))
