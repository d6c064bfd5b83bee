"""`python -m client export-onnx`: writes a model that runs in onnxruntime with the engine's
logits; a bad bundle is one clear line and exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

from client.__main__ import main
from shared.bundle import decode_bundle
from shared.engine import IntegerNetwork
from tests.factories import make_random_bundle

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("inputs", ["codes", "images"])
def test_export_writes_a_model_with_the_engine_logits(tmp_path, capsys, inputs):
    data = make_random_bundle(3, arch="photo")
    (tmp_path / "b.siq").write_bytes(data)
    out = tmp_path / "b.onnx"
    assert (
        main(["export-onnx", str(tmp_path / "b.siq"), "--out", str(out), "--inputs", inputs]) == 0
    )
    assert json.loads(capsys.readouterr().out)["bytes"] == out.stat().st_size
    net = IntegerNetwork(decode_bundle(data))
    x = np.random.default_rng(0).random((4, *net.input_shape)).astype(np.float32)
    q = net.quantize_input(x)
    feed = {"codes": q.astype(np.uint8)} if inputs == "codes" else {"images": x}
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(got, net.forward_int(q))


def test_a_bad_bundle_is_one_line_and_status_2(tmp_path, capsys):
    (tmp_path / "bad.siq").write_bytes(b"not a bundle")
    assert main(["export-onnx", str(tmp_path / "bad.siq"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("export-onnx: ") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("carrier", ["int", "float", "fast"])
def test_dag_bundles_export_with_the_reference_logits(tmp_path, capsys, carrier):
    from shared.bundle import encode_bundle
    from shared.engine.reference import run_reference
    from tests.factories import random_codes, random_dag_network

    data = encode_bundle(*random_dag_network(4, saturate=True))
    (tmp_path / "dag.siq").write_bytes(data)
    out = tmp_path / "dag.onnx"
    argv = ["export-onnx", str(tmp_path / "dag.siq"), "--out", str(out), "--carrier", carrier]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == out.stat().st_size
    bundle = decode_bundle(data)
    q = random_codes(bundle, 5)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"codes": q.astype(np.uint8)})[0]
    np.testing.assert_array_equal(got, run_reference(bundle.manifest, bundle.tensors, q))


def test_a_bundle_the_carrier_cannot_express_is_one_line_and_status_2(tmp_path, capsys):
    # 12-bit codebooks have no integer ONNX convolution: say so, suggest the float carrier
    (tmp_path / "wide.siq").write_bytes(make_random_bundle(5, weight_bits=3, codebook_bits=12))
    out = tmp_path / "wide.onnx"
    assert main(["export-onnx", str(tmp_path / "wide.siq"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("export-onnx: ") and "carrier" in err and err.count("\n") == 1
    assert not out.exists()
