"""The ONNX importer (server/networks/onnx_import.py) and the GraphNet it becomes
(server/training/imported.py): the float network SIQ starts from computes what ONNX Runtime
computes on the uploaded model, for a PyTorch export and for hand-made graphs with the ops an
exporter may leave (BatchNormalization, MatMul + Add, Reshape, AveragePool, Clip, Dropout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from bench.byo_nets import TinyResNet, to_onnx
from server.networks import NetworkError, decode_network, encode_network, import_onnx
from server.training.imported import build_network

ort_session = lambda data: ort.InferenceSession(data, providers=["CPUExecutionProvider"])  # noqa: E731


def _float_equal(data: bytes, shape: tuple[int, int, int], tmp_path: Path) -> list[dict]:
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    net = import_onnx(path, 1000)
    model = build_network(decode_network(encode_network(net, {})))
    model.eval()
    x = np.random.default_rng(1).random((4, *shape), dtype=np.float32)
    session = ort_session(data)
    want = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    return net.graph


def test_a_pytorch_export_imports_to_the_same_float_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    graph = _float_equal(to_onnx(TinyResNet(5), (3, 32, 32)), (3, 32, 32), tmp_path)
    adds = [n for n in graph if n["op"] == "add"]
    assert len(adds) == 2 and all(n["activation"] == "relu" for n in adds)
    assert graph[0]["activation"] == "relu6"  # ReLU6 exports as Clip(0, 6)


def _w(name: str, *shape: int, positive: bool = False) -> onnx.TensorProto:
    data = np.random.default_rng(len(name) + sum(shape)).normal(size=shape).astype(np.float32)
    return numpy_helper.from_array(np.abs(data) + 0.5 if positive else data, name)


def test_batchnorm_matmul_reshape_avgpool_and_dropout(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", strides=[2, 2], pads=[1] * 4),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Clip", ["bn", "lo", "hi"], ["r"], name="relu6"),
        helper.make_node(
            "AveragePool", ["r"], ["p"], name="avg", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node("Dropout", ["p"], ["d"], name="drop"),
        helper.make_node("Reshape", ["d", "shape"], ["f"], name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fcb"], ["logits"], name="fc_bias"),
    ]
    inits = [
        _w("w", 6, 2, 3, 3),
        _w("g", 6, positive=True),
        _w("b", 6),
        _w("m", 6),
        _w("v", 6, positive=True),
        numpy_helper.from_array(np.float32(0), "lo"),
        numpy_helper.from_array(np.float32(6), "hi"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
        _w("fc", 6 * 4 * 4, 3),
        _w("fcb", 3),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 16, 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    got = _float_equal(model.SerializeToString(), (2, 16, 16), tmp_path)
    assert [n["op"] for n in got] == ["conv2d", "avgpool2d", "flatten", "linear"]
    assert got[0]["activation"] == "relu6" and "batchnorm_eps" in got[0]


def test_a_relu_on_the_image_names_its_node(tmp_path: Path) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="early_relu")]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["n", 1, 8, 8])],
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(NetworkError, match="Relu node 'early_relu': must follow"):
        import_onnx(path, 100)
