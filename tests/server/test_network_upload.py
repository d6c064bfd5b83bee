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

from bench.byo_nets import TinyResNet, to_onnx
from server.data import load_dataset
from server.service.app import create_app
from tests.samples import SAMPLE_DIR
from tests.server.api_helpers import REAL_PIPELINE, make_settings, wait_job

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


# --- hostile models ------------------------------------------------------------------------


def _init(name: str, *shape: int) -> onnx.TensorProto:
    data = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    return numpy_helper.from_array(data, name)


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    inputs: tuple[str, ...] = ("image",),
    output: str = "logits",
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(i, TensorProto.FLOAT, ["n", *SHAPE]) for i in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


HEAD = [  # conv -> relu -> global pool -> flatten -> gemm: a network the contract takes
    helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1] * 4),
    helper.make_node("Relu", ["c"], ["r"], name="relu"),
    helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
    helper.make_node("Flatten", ["p"], ["f"], name="flat"),
    helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
]
INITS = [_init("w", 4, 3, 3, 3), _init("fc", 10, 4), _init("fcb", 10)]


def _too_many_nodes() -> bytes:
    chain = [helper.make_node("Identity", ["image"], ["i0"], name="id0")]
    chain += [helper.make_node("Identity", [f"i{k}"], [f"i{k + 1}"]) for k in range(70)]
    head = [helper.make_node("Conv", ["i70", "w"], ["c"], name="conv", pads=[1] * 4), *HEAD[1:]]
    return _model(chain + head, INITS)


def _unsupported_op() -> bytes:
    sig = helper.make_node("Sigmoid", ["c"], ["r"], name="squash")
    return _model([HEAD[0], sig, *HEAD[2:]], INITS)


def _dynamic_weights() -> bytes:
    make_w = helper.make_node("Identity", ["image"], ["w_run"], name="weights_from_image")
    conv = helper.make_node("Conv", ["image", "w_run"], ["c"], name="conv", pads=[1] * 4)
    return _model([make_w, conv, *HEAD[1:]], INITS[1:])


def _second_input() -> bytes:
    return _model(HEAD, INITS, inputs=("image", "mask"))


def _bad_attribute() -> bytes:
    conv = helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 0, 0])
    return _model([conv, *HEAD[1:]], INITS)


def _add_without_relu() -> bytes:
    conv2 = helper.make_node("Conv", ["image", "w"], ["c2"], name="conv2", pads=[1] * 4)
    relu2 = helper.make_node("Relu", ["c2"], ["r2"], name="relu2")
    add = helper.make_node("Add", ["r", "r2"], ["s"], name="residual")
    pool = helper.make_node("GlobalAveragePool", ["s"], ["p"], name="pool")
    return _model([HEAD[0], HEAD[1], conv2, relu2, add, pool, *HEAD[3:]], INITS)


HOSTILE: dict[str, tuple[Any, int, str]] = {
    "not onnx": (lambda: b"PK\x03\x04 this is a zip, not a model" * 10, 422, "not an ONNX model"),
    "truncated": (lambda: _model(HEAD, INITS)[:300], 422, "not an ONNX model"),
    "unsupported op": (_unsupported_op, 422, "Sigmoid node 'squash'"),
    "unsupported attribute": (_bad_attribute, 422, "Conv node 'conv': pads"),
    "add without relu": (_add_without_relu, 422, "Add node 'residual'"),
    "too many nodes": (_too_many_nodes, 413, "SIQ_NETWORK_MAX_NODES"),
    "too large": (lambda: b"\x00" * 2_100_000, 413, "SIQ_NETWORK_MAX_UPLOAD_BYTES"),
    "second input": (_second_input, 422, "2 inputs"),
    "dynamic weights": (_dynamic_weights, 422, "must be a constant (an initializer)"),
    "empty": (lambda: b"", 422, "empty"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_model_is_refused_and_leaves_nothing(
    server: tuple[TestClient, Path], case: str
) -> None:
    client, networks = server
    make, status, words = HOSTILE[case]
    resp = post_network(client, make())
    assert resp.status_code == status, resp.text
    assert words in resp.json()["error"]["message"], resp.json()
    assert client.get("/healthz").status_code == 200
    assert client.get("/networks").json() == []
    assert list(networks.iterdir()) == []  # no staging folder, no stored network


def test_the_plain_model_is_taken_and_names_are_checked(server: tuple[TestClient, Path]) -> None:
    client, networks = server
    resp = post_network(client, _model(HEAD, INITS), "plain")
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == "/networks/plain"
    assert [n["op"] for n in resp.json()["graph"]] == ["conv2d", "global_avgpool", "linear"]
    assert post_network(client, _model(HEAD, INITS), "plain").status_code == 409
    assert post_network(client, _model(HEAD, INITS), "../evil").status_code == 422
    assert client.get("/networks/plain").json()["parameters"] == 4 * 27 + 10 * 4 + 10
    assert client.get("/networks/nope").status_code == 404
    assert client.delete("/networks/nope").status_code == 404
    assert [p.name for p in networks.iterdir()] == ["plain.safetensors"]


def test_a_job_whose_data_set_does_not_fit_the_network_is_422(
    server: tuple[TestClient, Path],
) -> None:
    client, _ = server
    assert post_network(client, _model(HEAD, INITS), "photo10").status_code == 201
    job = {"dataset": "digits", "network": "photo10", "weight_bits": 4, "activation_bits": 4}
    resp = client.post("/quantize-jobs", json=job)
    assert resp.status_code == 422, resp.text
    assert "takes images of shape [3, 64, 64]" in resp.json()["error"]["message"]
    resp = client.post("/quantize-jobs", json={**job, "network": "absent"})
    assert resp.status_code == 422 and "no network named 'absent'" in resp.text
    resp = client.post("/quantize-jobs", json={**job, "arch": "lenet"})
    assert resp.status_code == 422 and "not both" in resp.text


def test_the_cli_quantises_an_onnx_file_on_an_image_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from server.cli import quantize_main
    from shared.bundle import decode_bundle

    torch.manual_seed(0)
    model = tmp_path / "my net.onnx"
    model.write_bytes(to_onnx(TinyResNet(10), SHAPE))
    argv = ["--network", str(model), "--dataset", str(SAMPLE_DIR / "office10")]
    argv += ["--weight-bits", "4", "--activation-bits", "5", "--max-iterations", "1"]
    argv += ["--retrain-epochs", "0.2", "--train-limit", "20", "--test-limit", "10"]
    assert quantize_main([*argv, "--out", str(tmp_path / "out")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    bundle = decode_bundle(Path(result["bundle_path"]).read_bytes())
    assert bundle.manifest["provenance"]["config"]["network"] == "my_net"
    assert quantize_main([*argv[:1], str(tmp_path / "absent.onnx"), *argv[2:], "--out", "x"]) == 2


def test_epochs_fine_tune_the_brought_weights_and_none_keep_them(
    trained_onnx: bytes, tmp_path: Path
) -> None:
    from server.networks import decode_network, encode_network, import_onnx
    from server.params import JobParams
    from server.training.imported import build_network, network_float_model

    path = tmp_path / "m.onnx"
    path.write_bytes(trained_onnx)
    network = encode_network(import_onnx(path, 1000), {})
    ds = load_dataset("office10", SAMPLE_DIR, train_limit=20, test_limit=10)
    brought = build_network(decode_network(network)).state_dict()
    for epochs, changed in ((None, False), (0, False), (1, True)):
        config = JobParams(dataset="office10", network="n", epochs=epochs)
        fm = network_float_model(network, ds, config)
        weight = "ops.fc_Gemm.weight"
        assert (not torch.equal(fm.model.state_dict()[weight], brought[weight])) is changed
