"""Bring your own network (issue 26): a ResNet-style network trained with plain PyTorch code,
exported to ONNX, uploaded over HTTP with a zip of photos, quantised by a job; the bundle the
client serves gives the ONNX export's and the generated C's integer logits. And every hostile
model is answered with its 4xx, leaving nothing on disk, the server still serving."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from fastapi.testclient import TestClient
from onnx import TensorProto, helper, numpy_helper

from server.data import load_dataset
from server.service.app import create_app
from tests.samples import SAMPLE_DIR
from tests.server.api_helpers import REAL_PIPELINE, make_settings, wait_job
from tests.server.byo_nets import TinyResNet, to_onnx

SHAPE = (3, 64, 64)  # office10's images as the server preprocesses them


@pytest.fixture(scope="module")
def trained_onnx() -> bytes:
    """TinyResNet trained a few steps on the sample office10 photos with plain PyTorch."""
    ds = load_dataset("office10", SAMPLE_DIR)
    torch.manual_seed(0)
    model = TinyResNet(ds.num_classes)
    x = torch.from_numpy(ds.train_x).float() / 255.0
    y = torch.from_numpy(ds.train_y).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(5):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return to_onnx(model, SHAPE)


def office_zip() -> bytes:
    out = io.BytesIO()
    root = SAMPLE_DIR / "office10"
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(root).as_posix())
    return out.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    settings = make_settings(
        tmp_path, REAL_PIPELINE, network_max_upload_bytes=2_000_000, network_max_nodes=60
    )
    (tmp_path / "data").mkdir()
    with TestClient(create_app(settings)) as client:
        yield client, settings.networks_dir


def post_network(client: TestClient, body: bytes, name: str = "mynet") -> Any:
    return client.post("/networks", params={"name": name}, content=body)


@pytest.mark.slow
def test_a_pytorch_resnet_is_quantised_and_served_exactly(
    server: tuple[TestClient, Path], trained_onnx: bytes, tmp_path: Path
) -> None:
    from scripts.onchip.toolchain import host_build, host_run, missing_host_tools
    from shared.bundle import decode_bundle
    from shared.cgen import generate_bundle_c
    from shared.engine import load_engine
    from shared.engine.reference import run_reference
    from tests.client.conftest import build_app

    client, _ = server
    resp = client.post("/datasets", params={"name": "photos"}, content=office_zip())
    assert resp.status_code == 201, resp.text
    resp = post_network(client, trained_onnx)
    assert resp.status_code == 201, resp.text
    info = resp.json()
    assert info["input_shape"] == list(SHAPE) and info["num_classes"] == 10
    ops = [n["op"] for n in info["graph"]]
    assert ops.count("add") == 2 and "global_avgpool" in ops and ops[-1] == "linear"
    assert [n["name"] for n in client.get("/networks").json()] == ["mynet"]

    job = {
        "dataset": "photos",
        "network": "mynet",
        "weight_bits": 4,
        "activation_bits": 5,
        "epochs": 0,
        "max_iterations": 1,
        "retrain_epochs": 0.5,
        "train_limit": 20,
        "test_limit": 10,
    }
    resp = client.post("/quantize-jobs", json=job)
    assert resp.status_code == 202, resp.text
    assert client.delete("/networks/mynet").status_code == 409  # a queued job names it
    done = wait_job(client, resp.json()["id"], timeout=600)
    assert done["status"] == "succeeded", done
    assert client.delete("/networks/mynet").status_code == 204
    assert client.get("/networks").json() == []
    bundle_id = done["result"]["bundle_id"]
    data = client.get(f"/bundles/{bundle_id}").content
    bundle = decode_bundle(data)
    assert bundle.manifest["format_version"] == 3

    images = load_dataset("photos", tmp_path / "state" / "datasets").test_x[:6]
    x = images.astype(np.float32) / np.float32(255.0)
    engine = load_engine(bundle)
    q = engine.quantize_input(x)
    want = run_reference(bundle.manifest, bundle.tensors, q)
    np.testing.assert_array_equal(engine.forward_int(q), want)

    (tmp_path / "b.siq").write_bytes(data)  # the client serves it: /v2 logits
    with TestClient(build_app(tmp_path / "client", str(tmp_path / "b.siq"))) as http:
        tensor = {"name": "input", "datatype": "FP32", "shape": list(x.shape)}
        tensor["data"] = x.ravel().tolist()
        answer = http.post("/v2/models/photos/infer", json={"inputs": [tensor]})
        assert answer.status_code == 200, answer.text
        out = {o["name"]: o["data"] for o in answer.json()["outputs"]}
        assert out["logits"] == want.ravel().tolist()

    import onnxruntime as ort

    from shared.onnx import UNSAFE_FUSIONS

    graph = client.get(f"/bundles/{bundle_id}/onnx").content
    session = ort.InferenceSession(
        graph, providers=["CPUExecutionProvider"], disabled_optimizers=UNSAFE_FUSIONS
    )
    np.testing.assert_array_equal(session.run(["logits"], {"codes": q.astype(np.uint8)})[0], want)
    if missing_host_tools() is None:
        exe = host_build(generate_bundle_c(bundle), tmp_path / "c")
        np.testing.assert_array_equal(host_run(exe, images, want.shape[1]), want)
