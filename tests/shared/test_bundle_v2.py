"""Format version 2: pruned, entropy-coded layers decode to exactly the dense network, a
damaged stream is refused, and version-1 bundles still load and give the same logits."""

import base64
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from shared.bundle import bundle_id, decode_bundle, encode_bundle, with_checksum
from shared.bundle import v2 as bundle_v2
from shared.bundle.bitpack import pack_codes, unpack_codes
from shared.engine import IntegerNetwork
from shared.errors import BundleError
from shared.network import weight_shape
from tests.factories import make_random_network

DATA = Path(__file__).parent / "data"


def _pruned_network(seed: int = 0, density: float = 0.08, bits: int = 4):
    """A random LeNet-shaped network whose conv2 and fc1 keep `density` of their weights:
    the rest take the codebook's exact zero."""
    manifest, tensors = make_random_network(seed, weight_bits=bits)
    rng = np.random.default_rng(seed)
    for layer in manifest["graph"]:
        if layer["name"] not in ("conv2", "fc1"):
            continue
        name, count = layer["name"], int(np.prod(weight_shape(layer)))
        codebook = tensors[f"{name}.codebook"].copy()
        codebook[1] = 0
        codes = unpack_codes(tensors[f"{name}.codes"], bits, count)
        codes[rng.random(count) >= density] = 1
        tensors[f"{name}.codebook"], tensors[f"{name}.codes"] = codebook, pack_codes(codes, bits)
    return manifest, tensors


def _v2(manifest, tensors) -> bytes:
    return encode_bundle(dict(manifest, format_version=2), tensors)


def _logits(bundle, seed: int = 0) -> np.ndarray:
    q = np.random.default_rng(seed).integers(0, 16, size=(8, 1, 28, 28))
    return IntegerNetwork(bundle).forward_int(q)


@pytest.mark.parametrize("density", [0.02, 0.08, 0.5, 1.0])
def test_pruned_entropy_coded_bundle_equals_dense(density):
    manifest, tensors = _pruned_network(density=density)
    dense, compact = (
        decode_bundle(encode_bundle(manifest, tensors)),
        decode_bundle(_v2(manifest, tensors)),
    )
    assert compact.manifest["format_version"] == 2
    assert set(compact.tensors) == set(dense.tensors)
    for key, value in dense.tensors.items():
        assert compact.tensors[key].dtype == value.dtype
        np.testing.assert_array_equal(compact.tensors[key], value)
    np.testing.assert_array_equal(_logits(compact), _logits(dense))
    assert compact.size < dense.size


def test_sparse_layers_use_relative_indices():
    manifest, tensors = _pruned_network(density=0.05)
    storage = decode_bundle(_v2(manifest, tensors)).manifest["storage"]
    assert storage["fc1"]["layout"] == "sparse" and storage["conv2"]["layout"] == "sparse"
    assert storage["fc1"]["fill"] == 1
    # the random, unpruned layers: Huffman cannot beat fixed-width codes there
    assert storage["conv1"]["layout"] in ("packed", "dense")


def test_long_zero_runs_need_escapes():
    codes = np.zeros(5000, dtype=np.int64)
    codes[[0, 1, 4999]] = [2, 3, 1]
    gaps, stored = bundle_v2.sparse_symbols(codes, fill=0, index_bits=3)
    assert stored.tolist() == [2, 3, 1]
    escape = 7
    assert (gaps == escape).sum() == (4999 - 2) // escape
    data, entry = bundle_v2.encode_layer(codes, 2, np.array([0, 1, 2, 3]), np.zeros(4), ())
    out = bundle_v2.decode_layer(data, entry, 5000, 2, 4, "t")
    np.testing.assert_array_equal(unpack_codes(out["codes"], 2, 5000), codes)


def _resave(manifest: dict, tensors: dict) -> bytes:
    """Bundle bytes with a content checksum that matches the edit (shared.bundle.checksum):
    what a writer with a bug would produce, so the v2 reader's own checks are what refuse it."""
    return st_save(tensors, metadata={"siq_manifest": with_checksum(manifest, tensors)})


def _stored_manifest(data: bytes) -> dict:
    """The manifest as written (zlib-compressed in version 2), without any checking."""
    (n,) = struct.unpack("<Q", data[:8])
    packed = json.loads(data[8 : 8 + n])["__metadata__"]["siq_manifest_zlib"]
    return json.loads(zlib.decompress(base64.b64decode(packed)))


def _edit_packed(data: bytes, name: str, edit, fix_crc: bool) -> bytes:
    """Bundle bytes with `edit(bytearray)` applied to one layer's packed tensor."""
    manifest = _stored_manifest(data)
    tensors = st_load(data)
    packed = bytearray(tensors[f"{name}.packed"].tobytes())
    edit(packed)
    tensors[f"{name}.packed"] = np.frombuffer(bytes(packed), dtype=np.uint8)
    if fix_crc:
        manifest["storage"][name]["crc32"] = zlib.crc32(bytes(packed))
        manifest["storage"][name]["bytes"] = len(packed)
    return _resave(manifest, tensors)


def _flip_last(packed: bytearray) -> None:
    packed[-1] ^= 0x01


def test_corrupted_stream_is_refused():
    data = bytearray(_v2(*_pruned_network()))
    data[-3] ^= 0x10  # a flipped bit in the last layer's stream: the content checksum
    with pytest.raises(BundleError, match="corrupt"):
        decode_bundle(bytes(data))
    # with a content checksum that matches the damage, the layer's CRC-32 refuses it
    with pytest.raises(BundleError, match="CRC-32"):
        decode_bundle(_edit_packed(bytes(data), "fc1", _flip_last, fix_crc=False))


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.__delitem__(slice(len(p) - 3, None)),  # truncated stream
        lambda p: p.extend(b"\x00"),  # trailing garbage
        lambda p: p.__setitem__(slice(len(p) - 40, None), b"\xff" * 40),  # noise in the codes
    ],
)
def test_stream_damage_is_refused_even_with_a_matching_crc(edit):
    data = _v2(*_pruned_network())
    with pytest.raises(BundleError, match="layer fc1"):
        decode_bundle(_edit_packed(data, "fc1", edit, fix_crc=True))


def test_missing_storage_is_refused():
    manifest, tensors = _pruned_network()
    data = _v2(manifest, tensors)
    m = _stored_manifest(data)
    del m["storage"]["conv2"]
    with pytest.raises(BundleError, match="conv2"):
        decode_bundle(_resave(m, st_load(data)))


def test_version_1_bundle_written_before_v2_loads_with_the_same_logits():
    """The file and its logits were made by the reader before version 2 existed."""
    data = (DATA / "v1_lenet_w3.siq").read_bytes()
    bundle = decode_bundle(data, expected_id=bundle_id(data))  # no content checksum back then
    assert bundle.manifest["format_version"] == 1
    net = IntegerNetwork(bundle)
    x = np.load(DATA / "v1_lenet_w3_inputs.npy").astype(np.float64)
    np.testing.assert_array_equal(
        net.forward_int(net.quantize_input(x)), np.load(DATA / "v1_lenet_w3_logits.npy")
    )


def test_version_1_bundle_re_encoded_as_version_2_keeps_its_logits():
    data = (DATA / "v1_lenet_w3.siq").read_bytes()
    v1 = decode_bundle(data, expected_id=bundle_id(data))
    v2 = decode_bundle(_v2(v1.manifest, v1.tensors))
    np.testing.assert_array_equal(_logits(v2), _logits(v1))


def _header(data: bytes) -> dict:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n])


def _with_metadata(data: bytes, metadata: dict) -> bytes:
    header = dict(_header(data), __metadata__=metadata)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (n,) = struct.unpack("<Q", data[:8])
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def test_manifest_is_stored_compressed_and_the_plain_form_still_loads():
    manifest, tensors = _pruned_network()
    data = _v2(manifest, tensors)
    meta = _header(data)["__metadata__"]
    assert set(meta) == {"siq_manifest_zlib"}
    text = zlib.decompress(base64.b64decode(meta["siq_manifest_zlib"])).decode()
    assert len(meta["siq_manifest_zlib"]) < len(text) / 2  # what it is there for
    bundle = decode_bundle(data)
    assert json.loads(text) == bundle.manifest
    # a version-2 bundle as first written (plain manifest): the same network
    plain = decode_bundle(_with_metadata(data, {"siq_manifest": text}))
    assert plain.manifest == bundle.manifest
    for name, t in bundle.tensors.items():
        np.testing.assert_array_equal(plain.tensors[name], t)


@pytest.mark.parametrize(
    "meta,message",
    [
        (lambda z, t: {"siq_manifest_zlib": z[:-8]}, "compressed manifest is corrupt"),
        (lambda z, t: {"siq_manifest_zlib": "!!" + z}, "compressed manifest is corrupt"),
        (lambda z, t: {"siq_manifest_zlib": z, "siq_manifest": t}, "two manifests"),
        (
            lambda z, t: {
                "siq_manifest_zlib": base64.b64encode(
                    zlib.compress(t.encode())[:-1] + b"x"
                ).decode()
            },
            "compressed manifest is corrupt",
        ),
    ],
)
def test_damaged_compressed_manifest_is_refused(meta, message):
    data = _v2(*_pruned_network())
    z = _header(data)["__metadata__"]["siq_manifest_zlib"]
    text = zlib.decompress(base64.b64decode(z)).decode()
    with pytest.raises(BundleError, match=message):
        decode_bundle(_with_metadata(data, meta(z, text)))


def _unit_pruned_network(seed: int = 0, units: int = 8, columns: int = 96):
    """A random LeNet-shaped network whose fc1 keeps `units` whole output units and only
    `columns` of its inputs (structured pruning), and whose fc2 keeps only those units'
    columns: the rest take the codebook's exact zero."""
    manifest, tensors = make_random_network(seed, weight_bits=2)
    rng = np.random.default_rng(seed)
    graph = {g["name"]: g for g in manifest["graph"]}
    alive = rng.permutation(graph["fc1"]["out_features"])[:units]
    live_in = rng.permutation(graph["fc1"]["in_features"])[:columns]
    for name, keep in (("fc1", np.ix_(alive, live_in)), ("fc2", (slice(None), alive))):
        shape = weight_shape(graph[name])
        codebook = tensors[f"{name}.codebook"].copy()
        codebook[1] = 0
        codes = unpack_codes(tensors[f"{name}.codes"], 2, int(np.prod(shape))).reshape(shape)
        grid = np.full(shape, 1)
        grid[keep] = codes[keep]
        tensors[f"{name}.codebook"] = codebook
        tensors[f"{name}.codes"] = pack_codes(grid.ravel(), 2)
    return manifest, tensors


def test_unit_pruned_layers_use_the_block_layout_and_equal_dense():
    manifest, tensors = _unit_pruned_network()
    dense, compact = (
        decode_bundle(encode_bundle(manifest, tensors)),
        decode_bundle(_v2(manifest, tensors)),
    )
    entry = compact.manifest["storage"]["fc1"]
    assert entry["layout"] == "block" and entry["fill"] == 1
    assert entry["rows_kept"] <= 8 and entry["cols_kept"] <= 96
    # the block's codes and two masks: far below what relative indices would take
    count = int(np.prod(weight_shape(next(g for g in manifest["graph"] if g["name"] == "fc1"))))
    codes = unpack_codes(tensors["fc1.codes"], 2, count)
    assert bundle_v2.codes_size(codes, 2, 32) < 0.7 * bundle_v2.codes_size(codes, 2)
    for key, value in dense.tensors.items():
        np.testing.assert_array_equal(compact.tensors[key], value)
    np.testing.assert_array_equal(_logits(compact), _logits(dense))


def test_block_layout_round_trip_of_rows_and_columns():
    rng = np.random.default_rng(1)
    grid = np.zeros((40, 30), dtype=np.int64)
    grid[np.ix_([1, 7, 8, 39], [0, 5, 6, 29])] = rng.integers(0, 4, size=(4, 4))
    grid[7, 5] = 3  # each kept row and column holds a stored weight
    grid[[1, 8, 39], 0], grid[1, [6, 29]] = 2, 1
    data, entry = bundle_v2.encode_layer(grid.ravel(), 2, np.arange(4), np.zeros(40), (), 40)
    assert entry["layout"] == "block" and (entry["rows_kept"], entry["cols_kept"]) == (4, 4)
    out = bundle_v2.decode_layer(data, entry, grid.size, 2, 40, "t")
    np.testing.assert_array_equal(unpack_codes(out["codes"], 2, grid.size), grid.ravel())
    # without the rows, no block layout is tried
    _, plain = bundle_v2.encode_layer(grid.ravel(), 2, np.arange(4), np.zeros(40), ())
    assert plain["layout"] != "block"


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda e, p: e.update(rows_kept=e["rows_kept"] - 1), "row mask"),
        (lambda e, p: e.update(cols_kept=10**6), "cols_kept"),
        (lambda e, p: e.update(fill=4), "fill"),
        (lambda e, p: p.extend(b"\x00"), "layer fc1"),
        (lambda e, p: p.__delitem__(slice(len(p) - 2, None)), "layer fc1"),
    ],
)
def test_damaged_block_layer_is_refused(damage, message):
    data = _v2(*_unit_pruned_network())
    manifest = _stored_manifest(data)
    tensors = st_load(data)
    packed = bytearray(tensors["fc1.packed"].tobytes())
    entry = manifest["storage"]["fc1"]
    assert entry["layout"] == "block"
    damage(entry, packed)
    entry["crc32"], entry["bytes"] = zlib.crc32(bytes(packed)), len(packed)
    tensors["fc1.packed"] = np.frombuffer(bytes(packed), dtype=np.uint8)
    with pytest.raises(BundleError, match=message):
        decode_bundle(_resave(manifest, tensors))
