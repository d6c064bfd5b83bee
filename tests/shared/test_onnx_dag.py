"""The ONNX graph of a DAG bundle (format version 3), run in ONNX Runtime, gives the reference
interpreter's integer logits exactly, from every carrier: each op on its own (hand-made graphs
at their edges: one-channel depthwise, relu6's clamp, accumulators into an add, saturating
adds, pools on odd sizes), a MobileNet- and ResNet-like net wide enough for the "fast" graph's
QLinearConv, and random DAGs mixing them all. (Chains: test_onnx_export.py, and
test_onnx_chain_bytes.py for their unchanged bytes.)"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from shared.bundle import Bundle
from shared.engine.reference import run_reference
from shared.onnx import UNSAFE_FUSIONS, to_onnx
from tests.factories import GraphBuilder, random_codes, random_dag_bundle

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CARRIERS = ["int", "float", "fast"]


def logits_of(bundle: Bundle, carrier: str, q: np.ndarray) -> np.ndarray:
    model = to_onnx(bundle, carrier=carrier)  # type: ignore[arg-type]
    session = ort.InferenceSession(
        model, providers=["CPUExecutionProvider"], disabled_optimizers=UNSAFE_FUSIONS
    )
    return session.run(["logits"], {"codes": q.astype(np.uint8)})[0]


def codes_for(bundle: Bundle, n: int, seed: int) -> np.ndarray:
    """Random codes, plus one all-top and one all-zero image (the extremes of every sum)."""
    q = random_codes(bundle, n, seed)
    q[0], q[1] = (1 << bundle.manifest["activation_bits"]) - 1, 0
    return q


def assert_exact(bundle: Bundle, carrier: str, seed: int = 0, n: int = 6) -> None:
    q = codes_for(bundle, n, seed)
    got = logits_of(bundle, carrier, q)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, run_reference(bundle.manifest, bundle.tensors, q))


def shared_pool(b: GraphBuilder) -> str:
    """A max-pool after a convolution (it goes into the convolution's requantisation) whose
    codes two nodes read: a convolution and an add."""
    pooled = b.maxpool(b.conv("input", 3, 1), 2, 1)
    return b.add(b.conv(pooled, 3, 1), pooled)


# one graph per op (or per edge of one), each ending in a linear layer's accumulators
OPS: dict[str, Callable[[GraphBuilder], str]] = {
    "grouped_conv": lambda b: b.conv("input", 6, 3, padding=1, groups=3),
    "depthwise_one_channel": lambda b: b.depthwise(b.conv("input", 1, 1), 3, padding=1),
    "depthwise_stride2_borders": lambda b: b.depthwise("input", 3, stride=2, padding=1),
    "conv_relu6": lambda b: b.conv("input", 4, 3, activation="relu6", gain=4.0),
    "linear_relu6": lambda b: b.linear(b.flatten("input"), 7, activation="relu6", gain=4.0),
    "add_accumulators": lambda b: b.add(
        b.conv("input", 3, 3, padding=1, activation="none"), "input"
    ),
    "add_saturating": lambda b: b.add(b.conv("input", 3, 1), "input", gain=8.0),
    "add_relu6": lambda b: b.add(
        b.conv("input", 3, 3, padding=1, activation="none"), "input", activation="relu6"
    ),
    "add_then_maxpool": lambda b: b.maxpool(b.add(b.conv("input", 3, 1), "input"), 3, 2),
    "maxpool_after_conv": lambda b: b.maxpool(b.conv("input", 4, 3), 2, 2),
    "maxpool_shared": lambda b: shared_pool(b),
    "avgpool_odd": lambda b: b.avgpool("input", 3, 2),
    "avgpool_overlapping": lambda b: b.avgpool(b.conv("input", 2, 1), 2, 1),
    "global_avgpool": lambda b: b.global_avgpool(b.conv("input", 5, 3, stride=2)),
}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("case", sorted(OPS))
@pytest.mark.parametrize("bits", [2, 8])
def test_every_op_equals_the_reference(case, carrier, bits):
    b = GraphBuilder(bits, (3, 9, 7), activation_bits=bits, weight_bits=3)
    x = OPS[case](b)
    if len(b.shapes[x]) == 3:
        x = b.flatten(x)
    bundle = b.bundle(b.linear(x, 4, activation="none"))
    assert_exact(bundle, carrier, seed=bits)


def test_relu6_clamps_at_clamp_max():
    # clamp_max 3 of 15, multipliers that push most codes past it: the clamp must bite
    b = GraphBuilder(0, (1, 6, 6))
    x = b.conv("input", 4, 3, activation="relu6", clamp_max=3, gain=8.0)
    codes = b.bundle(b.linear(b.flatten(x), 2, activation="none"))
    q = codes_for(codes, 4, 0)
    for carrier in CARRIERS:
        np.testing.assert_array_equal(
            logits_of(codes, carrier, q), run_reference(codes.manifest, codes.tensors, q)
        )


def wide_net(seed: int, bits: int) -> Bundle:
    """MobileNet- and ResNet-like blocks with 16 channels and more (the "fast" graph runs
    those as QLinearConv, depthwise included), at photo-like input."""
    b = GraphBuilder(seed, (3, 13, 11), activation_bits=bits, weight_bits=2 if bits == 8 else 4)
    x = b.conv("input", 16, 3, stride=2, padding=1, activation="relu6")
    branch = b.conv(b.depthwise(x, 3, padding=1, activation="relu6"), 16, 1, activation="none")
    x = b.add(branch, x, gain=1.0 + seed % 3)
    x = b.conv(b.depthwise(x, 3, stride=2, padding=1), 24, 1, activation="relu6")
    x = b.avgpool(b.maxpool(b.conv(x, 24, 3, padding=1, groups=4), 2, 1), 2, 1)
    return b.bundle(b.linear(b.global_avgpool(x), 5, activation="none"))


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("seed,bits", [(0, 4), (1, 8), (2, 2), (3, 4)])
def test_wide_separable_and_residual_blocks(seed, bits, carrier):
    bundle = wide_net(seed, bits)
    if carrier == "fast" and bits == 4:  # (at 8 bits int8 pairs could saturate: no QLinearConv)
        model = onnx.load_from_string(to_onnx(bundle, carrier="fast"))
        groups = [
            a.i
            for n in model.graph.node
            if n.op_type == "QLinearConv"
            for a in n.attribute
            if a.name == "group"
        ]
        assert 16 in groups  # the depthwise layer's QLinearConv form is what is tested
    assert_exact(bundle, carrier, seed=seed, n=8)


def test_random_dags_equal_the_reference():
    # every carrier on random DAGs mixing every op: odd sizes, stride 2, padding at the
    # borders, depthwise with one channel, adds of accumulators or codes, saturating adds
    options = [
        {},
        {"activation_bits": 8, "weight_bits": 2},
        {"activation_bits": 2, "weight_bits": 1, "saturate": True},
        {"saturate": True},
    ]
    for seed in range(16):
        bundle = random_dag_bundle(seed, **options[seed % len(options)])
        for carrier in CARRIERS:
            assert_exact(bundle, carrier, seed=seed, n=4)


@pytest.mark.parametrize("carrier", CARRIERS)
def test_dag_models_are_valid_onnx_and_quantise_images(carrier):
    bundle = wide_net(5, 4)
    model = to_onnx(bundle, carrier=carrier, inputs="images")  # type: ignore[arg-type]
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    x = np.random.default_rng(5).random((4, 3, 13, 11)).astype(np.float32)
    session = ort.InferenceSession(
        model, providers=["CPUExecutionProvider"], disabled_optimizers=UNSAFE_FUSIONS
    )
    top = (1 << bundle.manifest["activation_bits"]) - 1
    q = np.clip(np.floor(x.astype(np.float64) * top + 0.5), 0, top).astype(np.int64)
    np.testing.assert_array_equal(
        session.run(["logits"], {"images": x})[0],
        run_reference(bundle.manifest, bundle.tensors, q),
    )


@pytest.mark.parametrize("depthwise", [False, True])
def test_qlinearconv_requantises_as_the_export_assumes(depthwise):
    # the "fast" graph's QLinearConv layers rest on ONNX Runtime computing
    # clip(round_half_even(float32(acc + bias) * scale), 0, 255), in its depthwise kernels
    # too: probe each on accumulators spread over float32's integers and around ties
    from onnx import TensorProto, helper, numpy_helper

    from shared.network import scaled_requantize

    rng = np.random.default_rng(0)
    for scale in np.float32(rng.uniform(1e-5, 1e-2, 8)):
        ties = np.round((rng.integers(0, 255, 2048) + 0.5) / np.float64(scale)).astype(np.int64)
        n = np.concatenate([rng.integers(-(2**23), 2**23, 2048), ties + rng.integers(-2, 3, 2048)])
        n = n[np.abs(n) < 2**24]
        c = len(n) if depthwise else 1
        w = np.zeros((len(n), 1, 3, 3), np.int8)  # zero weights: the accumulators are the bias
        inits = {
            "xs": np.float32(1), "xz": np.uint8(0), "ws": scale, "wz": np.int8(0),
            "ys": np.float32(1), "yz": np.uint8(0), "w": w, "b": n.astype(np.int32),
        }  # fmt: skip
        node = helper.make_node(
            "QLinearConv",
            ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
            ["y"],
            group=c,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        )
        graph = helper.make_graph(
            [node],
            "probe",
            [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, 3, 3])],
            [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
            [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        got = session.run(None, {"x": np.zeros((1, c, 3, 3), np.uint8)})[0][0]  # (len(n), 3, 3)
        want = scaled_requantize(n, scale, 8, "half_even")
        np.testing.assert_array_equal(got, np.broadcast_to(want[:, None, None], got.shape))


@pytest.mark.parametrize("bits", [8, 28])
def test_global_avgpool_sums_in_int64_where_int32_could_overflow(bits):
    # no bundle has maps big enough to pass 2^31 at 8 bits; wide codes make the case here
    from shared.onnx import proto as pb
    from shared.onnx.graph import GraphBuilder as OnnxGraph
    from shared.onnx.graph import Value
    from shared.onnx.layers import global_avgpool

    g = OnnxGraph()
    y = global_avgpool(g, {"name": "gap"}, Value("x", np.dtype(np.int64)), 5 * 3, bits)
    assert y.dtype == (np.int64 if bits == 28 else np.int32)
    g.op("Identity", [y.name], "out", out="y")
    model = pb.model(
        pb.graph(
            "probe",
            g.nodes,
            g.initializers,
            [pb.value_info("x", np.int64, [2, 4, 5, 3])],
            [pb.value_info("y", y.dtype, [2, 4])],
        ),  # fmt: skip
        opset=17,
        ir_version=8,
        producer="test",
    )
    x = np.random.default_rng(bits).integers(0, 1 << bits, (2, 4, 5, 3))
    got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, (x.sum(axis=(2, 3)) + 7) // 15)
