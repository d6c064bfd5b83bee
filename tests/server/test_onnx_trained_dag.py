"""The networks a photo job trains (mobilenet: depthwise-separable blocks with relu6; resnet:
residual adds of accumulators and codes), folded, quantised, retrained a few steps and exported
as version-3 bundles: their ONNX graph gives the reference interpreter's integer logits in
ONNX Runtime from every carrier, and the client's engine serves them through ONNX Runtime
with the same labels and probabilities as the numpy engine. (Random DAGs:
tests/shared/test_onnx_dag.py; the training side: test_dag_networks.py, whose helpers train
these in seconds.)"""

from __future__ import annotations

import numpy as np
import pytest

from server.data import Dataset
from server.data.dataset import DIGIT_CLASSES
from server.recipes import RECIPES
from server.training.export import encode_quantized
from shared.bundle import decode_bundle
from shared.engine import IntegerNetwork, load_engine
from shared.engine.reference import run_reference
from shared.onnx import UNSAFE_FUSIONS, to_onnx
from tests.server.test_dag_networks import SIZE, _images, _quantised

ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mobilenet", "resnet"])
def test_trained_dag_bundles_are_exact_in_onnx_runtime(arch: str) -> None:
    x = _images(24, 3, seed=3)
    y = x.astype(np.float64).mean((2, 3)).argmax(1)
    sim = _quantised(arch, x, y)
    spec = {"kind": "photo", "resize": SIZE, "crop": SIZE}
    ds = Dataset("t", x, y, x, y, DIGIT_CLASSES, spec, arch, RECIPES["imagefolder"])
    bundle = decode_bundle(encode_quantized(sim, ds, weight_bits=4))
    images = (x.astype(np.float64) / 255.0).astype(np.float32)
    numpy_net = IntegerNetwork(bundle)
    q = numpy_net.quantize_input(images)
    want = run_reference(bundle.manifest, bundle.tensors, q)
    for carrier in ("int", "float", "fast"):
        session = ort.InferenceSession(
            to_onnx(bundle, carrier=carrier),
            providers=["CPUExecutionProvider"],
            disabled_optimizers=UNSAFE_FUSIONS,
        )
        got = session.run(["logits"], {"codes": q.astype(np.uint8)})[0]
        np.testing.assert_array_equal(got, want, err_msg=carrier)
    engine = load_engine(bundle)
    assert engine.backend == "onnxruntime"
    np.testing.assert_array_equal(engine.forward_int(q), want)
    labels, probs = engine.predict(images)
    want_labels, want_probs = numpy_net.predict(images)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(probs, want_probs)
