"""The exported ONNX graph, run in onnxruntime, gives the reference's integer logits exactly:
on random bundles of several shapes and bit widths, on inputs at the extremes, through each
requantisation path. (A bundle trained by the real pipeline: tests/client/test_trained_bundle.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from shared.bundle import decode_bundle, encode_bundle
from shared.engine import IntegerNetwork
from shared.onnx import ExportError, to_onnx
from shared.onnx import export as onnx_export
from shared.onnx import layers as onnx_layers
from tests.factories import make_random_bundle, make_random_network
from tests.shared.reference import reference_logits

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CARRIERS = ["int", "float", "fast"]


def run_onnx(model: bytes, name: str, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(["logits"], {name: x})[0]


def codes_for(bundle, n: int, seed: int) -> np.ndarray:
    """Random codes, plus one all-top and one all-zero image (the accumulator extremes)."""
    top = (1 << bundle.manifest["activation_bits"]) - 1
    shape = IntegerNetwork(bundle).input_shape
    q = np.random.default_rng(seed).integers(0, top + 1, size=(n, *shape))
    q[0], q[1] = top, 0
    return q


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("arch", ["lenet", "photo", "gray_strided"])
@pytest.mark.parametrize(
    "wbits,abits,per_channel", [(1, 2, False), (2, 8, True), (4, 4, False), (8, 3, True)]
)
def test_onnx_logits_equal_the_reference(carrier, arch, wbits, abits, per_channel):
    bundle = decode_bundle(
        make_random_bundle(
            wbits + abits,
            arch=arch,
            weight_bits=wbits,
            activation_bits=abits,
            per_channel=per_channel,
        )
    )
    model = to_onnx(bundle, carrier=carrier)
    onnx.checker.check_model(onnx.load_from_string(model), full_check=True)
    q = codes_for(bundle, 6, wbits)
    got = run_onnx(model, "codes", q.astype(np.uint8))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, reference_logits(bundle, q))


@pytest.mark.parametrize("carrier", CARRIERS)
def test_image_input_is_quantised_like_the_engine(carrier):
    bundle = decode_bundle(make_random_bundle(2, arch="photo"))
    net = IntegerNetwork(bundle)
    rng = np.random.default_rng(2)
    x = rng.random((5, *net.input_shape)).astype(np.float32)
    x[0] = (np.arange(x[0].size).reshape(x[0].shape) % 16) / 15  # exactly on the half steps
    x[1] = np.clip(x[1] * 1.4 - 0.2, -0.1, 1.1)  # out of [0, 1]
    got = run_onnx(to_onnx(bundle, carrier=carrier, inputs="images"), "images", x)
    np.testing.assert_array_equal(got, net.forward_int(net.quantize_input(x)))


@pytest.mark.parametrize("carrier", CARRIERS)
def test_extreme_weights_and_codes_do_not_saturate(carrier):
    # every product is 255 * +-127: ONNX Runtime's uint8 x int8 kernels on AVX2 saturate
    # such pairs in int16, which is why the integer graph carries uint8 weights
    manifest, tensors = make_random_network(1, weight_bits=1, activation_bits=8)
    for key in tensors:
        if key.endswith(".codebook"):
            tensors[key] = np.array([-127, 127], np.int32)
    bundle = decode_bundle(encode_bundle(manifest, tensors))
    q = codes_for(bundle, 4, 1)
    got = run_onnx(to_onnx(bundle, carrier=carrier), "codes", q.astype(np.uint8))
    np.testing.assert_array_equal(got, reference_logits(bundle, q))


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("path", ["float64", "int64"])
def test_fallback_requantisations_agree(monkeypatch, carrier, path):
    real = onnx_layers.fit_affine_requant

    def fit(*args):  # no float32 constants (float64 path) or none at all (int64 path)
        return None if path == "int64" or args[-1] == np.float32 else real(*args)

    monkeypatch.setattr(onnx_layers, "fit_affine_requant", fit)
    bundle = decode_bundle(make_random_bundle(4, per_channel=True))
    model = to_onnx(bundle, carrier=carrier)
    ops = {n.op_type for n in onnx.load_from_string(model).graph.node}
    assert ("Div" in ops) == (path == "int64")
    q = codes_for(bundle, 5, 4)
    np.testing.assert_array_equal(
        run_onnx(model, "codes", q.astype(np.uint8)), reference_logits(bundle, q)
    )


def test_wide_codebooks_need_a_float_carrier():
    bundle = decode_bundle(make_random_bundle(5, weight_bits=3, codebook_bits=12))
    with pytest.raises(ExportError, match="int8"):
        to_onnx(bundle, carrier="int")
    q = codes_for(bundle, 4, 5)
    got = run_onnx(to_onnx(bundle, carrier="float"), "codes", q.astype(np.uint8))
    np.testing.assert_array_equal(got, reference_logits(bundle, q))


def test_bad_options_are_refused():
    bundle = decode_bundle(make_random_bundle(0))
    with pytest.raises(ValueError):
        to_onnx(bundle, carrier="float16")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        to_onnx(bundle, inputs="pixels")


def test_the_model_says_what_it_holds():
    bundle = decode_bundle(make_random_bundle(0))
    model = onnx.load_from_string(to_onnx(bundle))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["siq_bundle_id"] == bundle.id
    assert meta["siq_class_names"].split(",") == bundle.class_names
    assert [i.name for i in model.graph.input] == ["codes"]
    assert model.opset_import[0].version == onnx_export.OPSET
