"""The Open Inference Protocol v2 routes spoken to by the unmodified `tritonclient[http]`
package, against a real uvicorn server on loopback (in a thread of this process): health,
readiness, metadata, and `infer` with binary and JSON tensors, whose outputs must equal what
the engine gives for the same images."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import uvicorn

from shared.bundle import bundle_id
from tests.client.conftest import png_bytes
from tests.client.test_oip import MODEL, engine_outputs, sketch_digits

triton = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (dev extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread cannot take signals
        pass


@pytest.fixture
def serve():
    """serve(app) -> 'host:port' of a uvicorn server running the app until the test ends."""
    servers: list[tuple[_Server, threading.Thread]] = []

    def start(app) -> str:
        server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        servers.append((server, thread))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def triton_client(make_app, tmp_path, bundle_a, serve) -> Iterator:
    path = tmp_path / "a.siq"
    path.write_bytes(bundle_a)
    client = triton.InferenceServerClient(serve(make_app(str(path), max_images=8)))
    yield client
    client.close()


def test_health_readiness_and_metadata(triton_client, bundle_a):
    bid = bundle_id(bundle_a)
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready(MODEL)
    assert triton_client.is_model_ready(MODEL, model_version=bid)
    assert not triton_client.is_model_ready(MODEL, model_version="0" * 64)
    assert not triton_client.is_model_ready("mnist")
    assert "binary_tensor_data" in triton_client.get_server_metadata()["extensions"]
    meta = triton_client.get_model_metadata(MODEL)
    assert meta["name"] == MODEL and meta["versions"] == [bid]
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "images": "BYTES",
        "input": "FP32",
    }
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "label": ("INT64", [-1]),
        "class_name": ("BYTES", [-1]),
        "probabilities": ("FP64", [-1, 10]),
        "logits": ("INT64", [-1, 10]),
    }
    assert triton_client.get_model_metadata(MODEL, model_version=bid) == meta
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton_client.get_model_metadata("mnist")


def test_infer_encoded_images_as_binary_bytes(triton_client, bundle_a):
    images = [png_bytes(d) for d in sketch_digits(5)]
    _, labels, probs, logits = engine_outputs(bundle_a, images)
    tensor = triton.InferInput("images", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary by default
    result = triton_client.infer(MODEL, [tensor], request_id="r1")
    response = result.get_response()
    assert response["id"] == "r1" and response["model_version"] == bundle_id(bundle_a)
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert result.as_numpy("label").tolist() == labels.tolist()
    assert np.array_equal(result.as_numpy("probabilities"), probs)  # bit for bit
    assert np.array_equal(result.as_numpy("logits"), logits)
    names = [b.decode() for b in result.as_numpy("class_name")]
    assert names == [f"class{i}" for i in labels]


def test_infer_uint8_tensor_as_json_both_ways(triton_client, bundle_a):
    images = [png_bytes(d) for d in sketch_digits(3, seed=1)]
    x, labels, probs, logits = engine_outputs(bundle_a, images)
    pixels = np.round(x * 255).astype(np.uint8)  # lossless: preprocess gives k/255
    tensor = triton.InferInput("input", list(pixels.shape), "UINT8")
    tensor.set_data_from_numpy(pixels, binary_data=False)
    outputs = [
        triton.InferRequestedOutput(name, binary_data=False)
        for name in ("logits", "probabilities", "label")
    ]
    result = triton_client.infer(MODEL, [tensor], outputs=outputs)
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["logits", "probabilities", "label"]
    assert all("data" in o for o in response["outputs"])  # JSON, no binary part
    assert result.as_numpy("label").tolist() == labels.tolist()
    assert np.array_equal(result.as_numpy("logits"), logits)
    assert np.array_equal(result.as_numpy("probabilities"), probs)  # JSON floats round-trip


def test_infer_fp32_tensor_binary_on_a_versioned_path(triton_client, bundle_a):
    images = [png_bytes(d) for d in sketch_digits(4, seed=2)]
    x, labels, probs, logits = engine_outputs(bundle_a, images)
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    outputs = [triton.InferRequestedOutput("label"), triton.InferRequestedOutput("logits")]
    result = triton_client.infer(
        MODEL, [tensor], model_version=bundle_id(bundle_a), outputs=outputs
    )
    assert result.as_numpy("label").tolist() == labels.tolist()
    assert np.array_equal(result.as_numpy("logits"), logits)
    assert result.as_numpy("probabilities") is None  # not asked for


def test_errors_reach_tritonclient_as_messages(triton_client):
    wrong = triton.InferInput("input", [1, 1, 27, 28], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 1, 27, 28), np.float32))
    with pytest.raises(InferenceServerException, match=r"shape \[N, 1, 28, 28\]"):
        triton_client.infer(MODEL, [wrong])
    junk = triton.InferInput("images", [1], "BYTES")
    junk.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"images\[0\]"):
        triton_client.infer(MODEL, [junk])
    assert triton_client.is_server_live()


def test_not_ready_without_a_bundle(make_app, server, serve):
    server.down = True
    client = triton.InferenceServerClient(serve(make_app("latest:digits", server=server)))
    try:
        assert client.is_server_live()
        assert not client.is_server_ready()
        assert not client.is_model_ready("digits")
        tensor = triton.InferInput("input", [1, 1, 28, 28], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 1, 28, 28), np.float32))
        with pytest.raises(InferenceServerException, match="no bundle"):
            client.infer("digits", [tensor])
    finally:
        client.close()
