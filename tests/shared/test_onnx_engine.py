"""`load_engine`: the client's engine runs the bundle's ONNX graph in onnxruntime and equals the
reference and `IntegerNetwork` exactly; without onnxruntime (or for a bundle no ONNX graph can
carry exactly) it is `IntegerNetwork`."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from shared.bundle import decode_bundle
from shared.engine import IntegerNetwork, load_engine
from tests.factories import make_random_bundle
from tests.shared.reference import reference_logits

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("arch", ["lenet", "photo", "gray_strided"])
@pytest.mark.parametrize("wbits,abits", [(1, 2), (4, 4), (8, 8)])
@pytest.mark.parametrize("threads", [1, 2])
def test_engine_equals_reference_and_numpy(arch, wbits, abits, threads):
    bundle = decode_bundle(
        make_random_bundle(7, arch=arch, weight_bits=wbits, activation_bits=abits)
    )
    engine, numpy_net = load_engine(bundle, threads=threads), IntegerNetwork(bundle)
    assert engine.backend == "onnxruntime"
    x = np.random.default_rng(wbits).random((7, *numpy_net.input_shape)).astype(np.float32)
    q = numpy_net.quantize_input(x)
    got = engine.forward_int(q)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, reference_logits(bundle, q))
    labels, probs = engine.predict(x)
    want_labels, want_probs = numpy_net.predict(x)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(probs, want_probs)  # same logits: the same float64 softmax
    np.testing.assert_array_equal(engine.predict(x[0])[0], want_labels[:1])  # one image
    np.testing.assert_array_equal(engine.predict(x.astype(np.float64))[1], want_probs)


def test_the_session_keeps_the_arithmetic_it_was_given(tmp_path):
    # ONNX Runtime may rewrite a graph; what it runs must still be plain exact ops (no
    # Mul or Add folded into weights, no fused float kernels we have not reasoned about)
    from shared.engine.onnx_engine import OnnxEngine
    from shared.onnx import UNSAFE_FUSIONS

    bundle = decode_bundle(make_random_bundle(1, per_channel=True))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    model = OnnxEngine(bundle).model
    ort.InferenceSession(
        model, options, providers=["CPUExecutionProvider"], disabled_optimizers=UNSAFE_FUSIONS
    )
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node}
    plain = {"Conv", "MaxPool", "Mul", "Add", "Div", "Floor", "Round", "Clip", "Flatten", "Cast"}
    layout = {"ReorderInput", "ReorderOutput", "Transpose", "NhwcMaxPool"}
    assert ops <= plain | layout | {"MatMulInteger", "MatMul", "Gemm", "QLinearConv"}, ops


def test_bad_input_is_refused():
    engine = load_engine(decode_bundle(make_random_bundle(0)))
    with pytest.raises(ValueError, match="shape"):
        engine.predict(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(ValueError, match="0..15"):
        engine.forward_int(np.full((1, 1, 28, 28), 16))


def test_backends_can_be_chosen_and_numpy_is_the_fallback(monkeypatch):
    bundle = decode_bundle(make_random_bundle(0))
    assert isinstance(load_engine(bundle, backend="numpy"), IntegerNetwork)
    with pytest.raises(ValueError):
        load_engine(bundle, backend="tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "shared.engine.onnx_engine", raising=False)
    assert isinstance(load_engine(bundle), IntegerNetwork)
    with pytest.raises(ImportError):
        load_engine(bundle, backend="onnxruntime")


def test_bundles_without_an_exact_graph_fall_back_to_numpy():
    # 12-bit codebooks, 8-bit activations: accumulators past 2^24 and weights past int8
    bundle = decode_bundle(
        make_random_bundle(5, weight_bits=8, activation_bits=8, codebook_bits=16)
    )
    engine = load_engine(bundle)
    assert isinstance(engine, IntegerNetwork)


@pytest.mark.parametrize("seed", range(6))
def test_dag_bundles_are_served_by_onnxruntime_exactly(seed):
    # format version 3: load_engine("auto") runs the DAG's ONNX graph, equal to the reference
    # interpreter and to the numpy engine, logits and probabilities
    from shared.engine.reference import run_reference
    from tests.factories import random_dag_bundle

    bundle = random_dag_bundle(seed, saturate=seed % 2 == 1)
    engine, numpy_net = load_engine(bundle), IntegerNetwork(bundle)
    assert engine.backend == "onnxruntime"
    x = np.random.default_rng(seed).random((5, *numpy_net.input_shape)).astype(np.float32)
    q = numpy_net.quantize_input(x)
    np.testing.assert_array_equal(
        engine.forward_int(q), run_reference(bundle.manifest, bundle.tensors, q)
    )
    labels, probs = engine.predict(x)
    want_labels, want_probs = numpy_net.predict(x)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(probs, want_probs)


def test_the_session_keeps_the_arithmetic_of_a_dag(tmp_path):
    # the DAG's adds and pool divisions are integer ops ONNX Runtime must run as written
    from shared.engine.onnx_engine import OnnxEngine
    from shared.onnx import UNSAFE_FUSIONS
    from tests.factories import random_dag_bundle

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    ops: set[str] = set()
    for seed in range(4):
        model = OnnxEngine(random_dag_bundle(seed)).model
        ort.InferenceSession(
            model, options, providers=["CPUExecutionProvider"], disabled_optimizers=UNSAFE_FUSIONS
        )
        for node in onnx.load(str(tmp_path / "optimised.onnx")).graph.node:
            ops.add(node.op_type)
            if node.op_type == "FusedConv":  # the Clip(0, B) of the accumulators, and no sum
                assert {a.name: a.s for a in node.attribute}["activation"] == b"Clip"
                assert len(node.input) == 3
    ops.discard("FusedConv")
    plain = {"Conv", "MaxPool", "Mul", "Add", "Div", "Floor", "Round", "Clip", "Flatten", "Cast"}
    integer = {"Max", "Min", "ReduceSum", "MatMulInteger", "ConvInteger", "QLinearConv"}
    layout = {"ReorderInput", "ReorderOutput", "Transpose", "NhwcMaxPool"}
    assert ops <= plain | integer | layout | {"MatMul", "Gemm"}, ops
    assert {"ReduceSum", "Div", "Max", "Min"} <= ops  # the adds and pools are there
