"""The C generator reads version-2 bundles: decoded to the dense form it takes, a pruned or
unit-pruned, entropy-coded bundle generates exactly the C of the same network stored as
version 1."""

import pytest

from shared.bundle import decode_bundle, encode_bundle
from shared.cgen.emit import generate_c
from shared.cgen.model import dense_model
from tests.shared.test_bundle_v2 import _pruned_network, _unit_pruned_network, _v2


@pytest.mark.parametrize(
    ("network", "layout"),
    [(lambda: _pruned_network(density=0.05), "sparse"), (_unit_pruned_network, "block")],
    ids=["sparse", "block"],
)
def test_v2_bundle_generates_the_same_c_as_v1(network, layout) -> None:
    manifest, tensors = network()
    dense, compact = (
        decode_bundle(encode_bundle(manifest, tensors)),
        decode_bundle(_v2(manifest, tensors)),
    )
    assert compact.manifest["storage"]["fc1"]["layout"] == layout
    c1 = generate_c(dense_model(dense.manifest, dense.tensors))
    c2 = generate_c(dense_model(compact.manifest, compact.tensors))
    assert c1.files == c2.files and c1.arena_bytes == c2.arena_bytes
