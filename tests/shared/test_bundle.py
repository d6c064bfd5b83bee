import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load as st_load

from shared.bundle import (
    bundle_id,
    decode_bundle,
    encode_bundle,
    read_bundle_file,
    with_checksum,
    write_bundle_atomic,
)
from shared.engine import IntegerNetwork
from shared.errors import BundleError
from tests.factories import make_random_bundle, make_random_network


def test_written_then_read_bundle_gives_identical_logits(tmp_path):
    data = make_random_bundle(7)
    path = write_bundle_atomic(tmp_path, data)
    assert path.name == f"{bundle_id(data)}.siq" and path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    original = decode_bundle(data)
    reread = read_bundle_file(path, expected_id=path.stem)
    q = np.random.default_rng(0).integers(0, 16, size=(6, 1, 28, 28))
    np.testing.assert_array_equal(
        IntegerNetwork(original).forward_int(q), IntegerNetwork(reread).forward_int(q)
    )
    assert reread.id == bundle_id(data) and reread.size == len(data)


def test_encoding_is_deterministic():
    assert make_random_bundle(1) == make_random_bundle(1)


def test_tampered_byte_is_rejected_by_id():
    data = bytearray(make_random_bundle(2))
    good_id = bundle_id(bytes(data))
    data[-5] ^= 0x01
    with pytest.raises(BundleError, match="expected id"):
        decode_bundle(bytes(data), expected_id=good_id)


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_truncated_bundle_is_rejected(keep):
    data = make_random_bundle(2)
    with pytest.raises(BundleError):
        decode_bundle(data[: keep if keep >= 0 else len(data) - 1])


def test_garbage_is_rejected():
    with pytest.raises(BundleError):
        decode_bundle(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")


def _reencode_header(data: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["siq_manifest"])
    edit(manifest)
    # a consistent checksum, so that the validator (not the checksum) is what refuses it
    header["__metadata__"]["siq_manifest"] = with_checksum(manifest, st_load(data))
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m.update(format_version=99), "version 99"),
        (lambda m: m.update(format="other"), "not an SIQ bundle"),
        (lambda m: m["graph"].insert(0, {"op": "softmax", "name": "s"}), "unknown op"),
        (lambda m: m["graph"][0].update(out_channels=9), "conv2: in_channels 8 != incoming 9"),
        (lambda m: m["graph"][-1].update(relu=True), "relu"),
        (lambda m: m["input"].update(class_names=["a", "b"]), "classes"),
        (lambda m: m.update(activation_bits=9), "activation_bits"),
    ],
)
def test_manifest_inconsistencies_are_rejected(edit, message):
    data = _reencode_header(make_random_bundle(0), edit)
    with pytest.raises(BundleError, match=message):
        decode_bundle(data)


def test_writer_refuses_what_a_reader_would_reject():
    manifest, tensors = make_random_network(0)
    tensors["conv1.codebook"] = tensors["conv1.codebook"][:-1]
    with pytest.raises(BundleError, match="codebook"):
        encode_bundle(manifest, tensors)
    manifest, tensors = make_random_network(0)
    tensors["conv1.bias"] = np.full(8, 2**31 - 1, dtype=np.int32)
    with pytest.raises(BundleError, match="exact bound"):
        encode_bundle(manifest, tensors)
    manifest, tensors = make_random_network(0)
    tensors["conv1.shift"] = np.array([63], dtype=np.int32)
    with pytest.raises(BundleError, match="shift"):
        encode_bundle(manifest, tensors)
    manifest, tensors = make_random_network(0)
    tensors["stowaway"] = np.zeros(1, np.uint8)
    with pytest.raises(BundleError, match="unexpected"):
        encode_bundle(manifest, tensors)


def test_missing_file_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError, match="cannot read"):
        read_bundle_file(tmp_path / "nope.siq")
