"""A chain bundle (format versions 1 and 2) exports to the same ONNX bytes as before the graph
became a DAG (issue 25): the digests below were taken from the chain-only export. A changed
digest means the export of every client's existing bundles changed; if that is intended,
say why in the commit and take the new digests."""

from __future__ import annotations

import hashlib

import pytest

from shared.bundle import decode_bundle
from shared.onnx import to_onnx
from tests.factories import make_random_bundle

BUNDLES = {  # arch: (factory options, the bundle's id: the factory still makes the same one)
    "lenet": (
        {"weight_bits": 4, "activation_bits": 4},
        "8c2cfd61e4cae32004babfd2cc37f143e662e04c051f55b744f1ee9c11068987",
    ),
    "photo": (
        {"weight_bits": 2, "activation_bits": 8, "per_channel": True},
        "f780e480faa645f9ecd232ed2e8f2318dec4dcd158586b2a6225fb8d8a9a097f",
    ),
    "gray_strided": (
        {"weight_bits": 1, "activation_bits": 2},
        "abe09f6e7ed868912deaa216bf4142572128657461472e930883ac15adb8536a",
    ),
}
DIGESTS = {  # (arch, carrier, inputs): the first 16 hex digits of the model's sha256
    ("lenet", "int", "codes"): "240a7f4d3dd8092d",
    ("lenet", "int", "images"): "c9587145580cba87",
    ("lenet", "float", "codes"): "9a7148aca2c05c93",
    ("lenet", "float", "images"): "695204a5e6fc8a0d",
    ("lenet", "fast", "codes"): "058e7ff3c1041aae",
    ("lenet", "fast", "images"): "64a2e0830349c763",
    ("lenet", "engine", "images"): "ab6656732879330f",
    ("photo", "int", "codes"): "cab8a8650260197b",
    ("photo", "int", "images"): "2f56b64480a46377",
    ("photo", "float", "codes"): "21eccec962f21ae1",
    ("photo", "float", "images"): "ec751fd5e98eee3f",
    ("photo", "fast", "codes"): "46af600d671e7294",
    ("photo", "fast", "images"): "50d5246a8f0f0f4d",
    ("photo", "engine", "images"): "b211c59458d74e0c",
    ("gray_strided", "int", "codes"): "082d73ce86a68b8b",
    ("gray_strided", "int", "images"): "4e8833ed0b9b3b79",
    ("gray_strided", "float", "codes"): "8d5382a7f3f2e53f",
    ("gray_strided", "float", "images"): "beb071527b44467e",
    ("gray_strided", "fast", "codes"): "84c2c9f63015dccd",
    ("gray_strided", "fast", "images"): "f733c00f06752781",
    ("gray_strided", "engine", "images"): "649b1ef1cf8650b2",
}


@pytest.mark.parametrize("arch", sorted(BUNDLES))
def test_chain_bundles_export_the_same_bytes(arch):
    options, bundle_id = BUNDLES[arch]
    bundle = decode_bundle(make_random_bundle(3, arch=arch, **options))
    assert bundle.id == bundle_id, "the factory changed: these digests pin another bundle"
    for (a, carrier, inputs), digest in DIGESTS.items():
        if a != arch:
            continue
        if carrier == "engine":  # what OnnxEngine builds
            model = to_onnx(bundle, carrier="fast", inputs=inputs, logits_dtype=None)
        else:
            model = to_onnx(bundle, carrier=carrier, inputs=inputs)  # type: ignore[arg-type]
        assert hashlib.sha256(model).hexdigest()[:16] == digest, (arch, carrier, inputs)


def test_a_version_2_bundle_exports_the_graph_of_its_version_1_twin():
    # the compact storage changes the file, not the network: the same ONNX graph
    onnx = pytest.importorskip("onnx")
    from shared.bundle import encode_bundle
    from tests.factories import make_random_network

    manifest, tensors = make_random_network(3, arch="photo", per_channel=True)
    v1 = decode_bundle(encode_bundle(manifest, tensors))
    v2 = decode_bundle(encode_bundle(dict(manifest, format_version=2), tensors))
    for carrier in ("int", "float", "fast"):
        graphs = [
            onnx.load_from_string(to_onnx(b, carrier=carrier)).graph.SerializeToString()
            for b in (v1, v2)
        ]
        assert graphs[0] == graphs[1], carrier
