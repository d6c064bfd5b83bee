"""A bundle's checksum of its own content (issue 11, item 2): a flipped byte anywhere in a
bundle is refused with no id or key at hand, and a file named by its id is checked."""

from __future__ import annotations

import json
import struct

import pytest

from shared.bundle import CHECKSUM_KEY, bundle_id, decode_bundle, read_bundle_file
from shared.errors import BundleError
from tests.factories import make_random_bundle


def tensor_offset(data: bytes, name: str) -> int:
    """File offset of the first byte of tensor `name`."""
    (n,) = struct.unpack("<Q", data[:8])
    begin, _ = json.loads(data[8 : 8 + n])[name]["data_offsets"]
    return 8 + n + begin


def flip(data: bytes, offset: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) >= 1
    return data.replace(old, new, 1)


@pytest.fixture(scope="module")
def data() -> bytes:
    return make_random_bundle(5)


@pytest.mark.parametrize(
    "where", ["conv1.codes", "fc2.codes", "conv2.bias", "fc1.codebook", "conv1.multiplier"]
)
def test_a_flipped_tensor_byte_is_refused_without_an_id(data, where):
    # the lowest bit of the first byte: the bundle stays valid in every other respect
    # (codes stay codes, a multiplier stays positive), so only the checksum can tell
    with pytest.raises(BundleError, match="corrupt"):
        decode_bundle(flip(data, tensor_offset(data, where)))


@pytest.mark.parametrize(
    "old,new",
    [
        (b"class3", b"class8"),  # a class name in the manifest
        (b'"weight_bits\\": 4', b'"weight_bits\\": 5'),  # a number in the manifest
        (b'"dtype":"I32"', b'"dtype":"U32"'),  # the tensor index
    ],
)
def test_a_changed_header_byte_is_refused(data, old, new):
    with pytest.raises(BundleError):
        decode_bundle(replace_once(data, old, new))


def test_the_checksum_itself_is_covered(data):
    start = data.index(f'\\"{CHECKSUM_KEY}\\": \\"sha256:'.encode()) + len(CHECKSUM_KEY) + 16
    with pytest.raises(BundleError, match="corrupt"):
        decode_bundle(flip(data, start, 0x02))  # one hex digit of it: '0'<->'2', 'a'<->'c'...


def test_a_file_named_by_its_id_is_checked_against_it(tmp_path, data):
    good = tmp_path / f"{bundle_id(data)}.siq"
    good.write_bytes(data)
    assert read_bundle_file(good).id == bundle_id(data)
    other = make_random_bundle(6)
    misnamed = tmp_path / f"{bundle_id(data)[:-1]}0.siq"
    misnamed.write_bytes(other)  # a valid bundle, but not the one its name says
    with pytest.raises(BundleError, match="expected id"):
        read_bundle_file(misnamed)
    plain = tmp_path / "exported.siq"
    plain.write_bytes(data)
    assert read_bundle_file(plain).id == bundle_id(data)


def strip_checksum(data: bytes) -> bytes:
    """The same bundle as one written before checksums existed."""
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    manifest = json.loads(header["__metadata__"]["siq_manifest"])
    del manifest[CHECKSUM_KEY]
    header["__metadata__"]["siq_manifest"] = json.dumps(manifest, sort_keys=True)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def test_an_old_bundle_without_a_checksum_needs_its_id(tmp_path, data):
    old = strip_checksum(data)
    with pytest.raises(BundleError, match="no content checksum"):
        decode_bundle(old)
    assert decode_bundle(old, expected_id=bundle_id(old)).manifest["weight_bits"] == 4
    named = tmp_path / f"{bundle_id(old)}.siq"
    named.write_bytes(old)
    assert read_bundle_file(named).id == bundle_id(old)
