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
    from shared.onnx_engine import OnnxEngine
    from shared.onnx_export import UNSAFE_FUSIONS

    bundle = decode_bundle(make_random_bundle(1, per_channel=True))
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.log_severity_level = 3
    model = OnnxEngine(bundle).model
    ort.InferenceSession(
        model, options, providers=["CPUExecutionProvider"], disabled_optimizers=UNSAFE_FUSIONS
    )
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimised.onnx")).graph.node}
    plain = {"Conv", "MaxPool", "Mul", "Add", "Div", "Floor", "Clip", "Flatten", "Cast"}
    assert ops <= plain | {"MatMulInteger", "MatMul", "Gemm", "ReorderInput", "ReorderOutput"}, ops


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
    monkeypatch.delitem(sys.modules, "shared.onnx_engine", raising=False)
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
