"""The bundle's bytes: one safetensors file holding a whole integer network
(docs/ARCHITECTURE.md, "Bundle layout"). Its id is the SHA-256 of its bytes. Bundles as files
on disk: shared/bundle/files.py.

`encode_bundle` and `decode_bundle` run the same `validate` so that no bundle that would be
rejected on reading can be written, and nothing unchecked reaches the engine.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from shared.bundle import v2 as bundle_v2
from shared.bundle.bitpack import packed_size, unpack_codes
from shared.bundle.checksum import check_content, with_checksum
from shared.errors import BundleError
from shared.network import (
    KNOWN_OPS,
    MAX_ACCUMULATOR,
    WEIGHTED_OPS,
    accumulator_bound,
    carries_relu,
    codebook_size,
    output_shape,
    weight_shape,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "MANIFEST_KEY",
    "MANIFEST_ZLIB_KEY",
    "MAX_BUNDLE_BYTES",
    "Bundle",
    "bundle_id",
    "encode_bundle",
    "decode_bundle",
    "layer_weights",
    "validate",
]

FORMAT = "siq-bundle"
FORMAT_VERSION = 1  # written when a manifest names none
FORMAT_VERSIONS = (1, bundle_v2.VERSION)  # 2: compact per-layer storage (shared/bundle/v2.py)
MANIFEST_KEY = "siq_manifest"
# version 2 stores the same canonical manifest text zlib-compressed (level 9) and base64'd:
# the JSON, escaped inside the header's JSON, was a large share of a small pruned bundle
# (the sizes: docs/ARCHITECTURE.md, "Bundle layout (format version 2)")
MANIFEST_ZLIB_KEY = "siq_manifest_zlib"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """A decoded, validated bundle. `tensors` maps names such as `conv1.codes` to arrays."""

    id: str
    manifest: dict[str, Any]
    tensors: dict[str, np.ndarray]
    size: int

    @property
    def dataset(self) -> str | None:
        return self.manifest.get("provenance", {}).get("dataset")

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["input"]["class_names"])


def bundle_id(data: bytes) -> str:
    """The content address of a bundle: hex SHA-256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def layer_weights(layer: dict[str, Any], tensors: dict[str, np.ndarray]) -> np.ndarray:
    """Integer weights `codebook[codes]` of a weighted layer, int64 in `weight_shape`."""
    shape = weight_shape(layer)
    name, bits = layer["name"], layer["weight_bits"]
    codes = unpack_codes(tensors[f"{name}.codes"], bits, int(np.prod(shape)))
    return tensors[f"{name}.codebook"].astype(np.int64)[codes].reshape(shape)


def encode_bundle(manifest: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """Serialise a network into bundle bytes, after checking it as a reader would."""
    manifest = json.loads(json.dumps(manifest))  # plain JSON types only
    manifest.setdefault("format", FORMAT)
    manifest.setdefault("format_version", FORMAT_VERSION)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    validate(manifest, tensors)
    if manifest["format_version"] == bundle_v2.VERSION:
        manifest["storage"], tensors = bundle_v2.pack_layers(manifest, tensors)
        text = with_checksum(manifest, tensors)
        packed = base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")
        return st_save(tensors, metadata={MANIFEST_ZLIB_KEY: packed})
    return st_save(tensors, metadata={MANIFEST_KEY: with_checksum(manifest, tensors)})


def decode_bundle(data: bytes, expected_id: str | None = None) -> Bundle:
    """Parse and validate bundle bytes; BundleError says what is wrong with a bad one."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle is {len(data)} bytes, more than the {MAX_BUNDLE_BYTES} limit")
    digest = bundle_id(data)
    if expected_id is not None and digest != expected_id.lower():
        raise BundleError(f"bundle bytes hash to {digest}, not to the expected id {expected_id}")
    manifest = _read_manifest(data)
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise BundleError(f"bundle tensors are unreadable: {exc}") from exc
    check_content(_stored_manifest(data), tensors, id_verified=expected_id is not None)
    if manifest.get("format_version") == bundle_v2.VERSION:
        tensors = bundle_v2.unpack_layers(manifest, tensors)  # the v1 tensors, same integers
    validate(manifest, tensors)
    return Bundle(id=digest, manifest=manifest, tensors=tensors, size=len(data))


# --- validation ---------------------------------------------------------------------------


def _stored_manifest(data: bytes) -> str:
    """The manifest's JSON text as stored in the header (after `_read_manifest` passed)."""
    (header_len,) = struct.unpack("<Q", data[:8])
    return _manifest_text(json.loads(data[8 : 8 + header_len])["__metadata__"])


def _manifest_text(metadata: dict[str, Any]) -> str:
    """The manifest text from the header's metadata: plain under MANIFEST_KEY (version 1,
    and version 2 as first written), or compressed under MANIFEST_ZLIB_KEY (version 2)."""
    if MANIFEST_ZLIB_KEY not in metadata:
        return metadata[MANIFEST_KEY]
    if MANIFEST_KEY in metadata:
        raise BundleError("bundle header holds two manifests (plain and compressed)")
    try:
        raw = base64.b64decode(metadata[MANIFEST_ZLIB_KEY], validate=True)
        inflate = zlib.decompressobj()
        text = inflate.decompress(raw, MAX_HEADER_BYTES)
    except (binascii.Error, zlib.error, TypeError, ValueError) as exc:
        raise BundleError(f"bundle's compressed manifest is corrupt ({exc})") from exc
    if inflate.unconsumed_tail or not inflate.eof or inflate.unused_data:
        raise BundleError(
            "bundle's compressed manifest is corrupt (truncated, trailing bytes, or larger "
            f"than {MAX_HEADER_BYTES} bytes)"
        )
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError("bundle's compressed manifest is not UTF-8 text") from exc


def _read_manifest(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise BundleError(f"bundle is truncated: {len(data)} bytes")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(data):
        raise BundleError("bundle header length is out of bounds (truncated or not a bundle)")
    try:
        header = json.loads(data[8 : 8 + header_len])
        compressed = MANIFEST_ZLIB_KEY in header["__metadata__"]
        manifest = json.loads(_manifest_text(header["__metadata__"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle has no readable manifest ({exc.__class__.__name__})") from exc
    if not isinstance(manifest, dict):
        raise BundleError("bundle manifest is not a JSON object")
    if compressed and manifest.get("format_version") == 1:
        raise BundleError("a version-1 bundle's manifest cannot be compressed")
    return manifest


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise BundleError(message)


def _int_field(obj: dict[str, Any], key: str, lo: int, hi: int, where: str) -> int:
    value: Any = obj.get(key)
    _require(
        isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
        f"{where}: '{key}' must be an integer in {lo}..{hi}, got {value!r}",
    )
    return value


def validate(manifest: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """Check everything the engine relies on: version, graph, shapes, code and constant
    ranges, and the exactness bound. Raises BundleError."""
    _require(
        manifest.get("format") == FORMAT, f"not an SIQ bundle (format {manifest.get('format')!r})"
    )
    version = manifest.get("format_version")
    _require(
        version in FORMAT_VERSIONS and not isinstance(version, bool),
        f"bundle format version {version!r} is not supported (this reader knows "
        f"{', '.join(map(str, FORMAT_VERSIONS))})",
    )
    a_bits = _int_field(manifest, "activation_bits", 2, 8, "manifest")
    _int_field(manifest, "weight_bits", 1, 8, "manifest")
    cb_bits = _int_field(manifest, "codebook_bits", 2, 16, "manifest")
    logit_scale = manifest.get("logit_scale")
    _require(isinstance(logit_scale, int | float) and logit_scale > 0, "manifest: bad logit_scale")
    spec: Any = manifest.get("input")
    _require(isinstance(spec, dict), "manifest: missing 'input'")
    channels = _int_field(spec, "channels", 1, 4, "input")
    height = _int_field(spec, "height", 1, 4096, "input")
    width = _int_field(spec, "width", 1, 4096, "input")
    _require(spec.get("bits") == a_bits, "input: 'bits' must equal activation_bits")
    scale = spec.get("scale")
    _require(isinstance(scale, int | float) and scale > 0, "input: 'scale' must be positive")
    _require(isinstance(spec.get("preprocess"), dict), "input: 'preprocess' must be an object")
    names: Any = spec.get("class_names")
    _require(
        isinstance(names, list) and all(isinstance(n, str) for n in names) and len(names) >= 2,
        "input: 'class_names' must be a list of at least two strings",
    )
    graph: Any = manifest.get("graph")
    _require(isinstance(graph, list) and len(graph) > 0, "manifest: 'graph' must be a list")

    shape: tuple[int, ...] = (channels, height, width)  # per-image activation shape
    expected: set[str] = set()
    weighted = [
        layer for layer in graph if isinstance(layer, dict) and layer.get("op") in WEIGHTED_OPS
    ]
    _require(len(weighted) > 0, "graph has no weighted layer")
    seen: set[str] = set()
    done = 0  # weighted layers checked
    for i, layer in enumerate(graph):
        _require(isinstance(layer, dict), f"graph[{i}] is not an object")
        op, name = layer.get("op"), layer.get("name")
        _require(op in KNOWN_OPS, f"graph[{i}]: unknown op {op!r} (known: {', '.join(KNOWN_OPS)})")
        _require(
            isinstance(name, str) and bool(name) and name not in seen,
            f"graph[{i}]: bad or duplicate name",
        )
        seen.add(name)
        where = f"layer {name}"
        if op == "flatten":
            shape = (int(np.prod(shape)),)
        elif op == "maxpool2d":
            _require(len(shape) == 3, f"{where}: maxpool2d needs a (C, H, W) input")
            k = _int_field(layer, "kernel_size", 1, 64, where)
            _int_field(layer, "stride", 1, 64, where)
            _require(shape[1] >= k and shape[2] >= k, f"{where}: input smaller than the kernel")
            shape = output_shape(layer, shape)
        else:
            shape = _check_weighted(layer, shape, tensors, a_bits, cb_bits, where)
            expected.update(f"{name}.{t}" for t in ("codes", "codebook", "bias"))
            relu = carries_relu(done, len(weighted))
            done += 1
            _require(
                layer.get("relu") is relu,
                f"{where}: every weighted layer but the last must have relu true, the last false",
            )
            if relu:
                expected.update((f"{name}.multiplier", f"{name}.shift"))
                _check_requant(layer, tensors, where)
    _require(
        shape == (len(names),), f"network output shape {shape} does not match {len(names)} classes"
    )
    extra = set(tensors) - expected
    missing = expected - set(tensors)
    _require(not missing, f"bundle lacks tensors: {', '.join(sorted(missing))}")
    _require(not extra, f"bundle has unexpected tensors: {', '.join(sorted(extra))}")


def _tensor(tensors: dict[str, np.ndarray], key: str, dtype: type, where: str) -> np.ndarray:
    _require(key in tensors, f"{where}: missing tensor {key}")
    t = tensors[key]
    _require(
        t.dtype == dtype, f"{where}: tensor {key} must be {np.dtype(dtype).name}, not {t.dtype}"
    )
    return t


def _check_weighted(
    layer: dict[str, Any],
    shape: tuple[int, ...],
    tensors: dict[str, np.ndarray],
    a_bits: int,
    cb_bits: int,
    where: str,
) -> tuple[int, ...]:
    name = layer["name"]
    bits = _int_field(layer, "weight_bits", 1, 8, where)
    if layer["op"] == "conv2d":
        _require(len(shape) == 3, f"{where}: conv2d needs a (C, H, W) input")
        cin = _int_field(layer, "in_channels", 1, 1 << 16, where)
        cout = _int_field(layer, "out_channels", 1, 1 << 16, where)
        k = _int_field(layer, "kernel_size", 1, 64, where)
        _int_field(layer, "stride", 1, 64, where)
        p = _int_field(layer, "padding", 0, 64, where)
        _require(cin == shape[0], f"{where}: in_channels {cin} != incoming {shape[0]}")
        h, w = shape[1] + 2 * p, shape[2] + 2 * p
        _require(h >= k and w >= k, f"{where}: input smaller than the kernel")
        out_shape = output_shape(layer, shape)
    else:
        _require(len(shape) == 1, f"{where}: linear needs a flat input (add a flatten)")
        fin = _int_field(layer, "in_features", 1, 1 << 24, where)
        cout = _int_field(layer, "out_features", 1, 1 << 16, where)
        _require(fin == shape[0], f"{where}: in_features {fin} != incoming {shape[0]}")
        out_shape = output_shape(layer, shape)
    count = int(np.prod(weight_shape(layer)))
    codes = _tensor(tensors, f"{name}.codes", np.uint8, where)
    _require(
        codes.ndim == 1 and codes.size == packed_size(count, bits),
        f"{where}: codes hold {codes.size} bytes, {packed_size(count, bits)} expected for "
        f"{count} {bits}-bit codes",
    )
    codebook = _tensor(tensors, f"{name}.codebook", np.int32, where)
    size = codebook_size(bits)
    _require(codebook.shape == (size,), f"{where}: codebook must have {size} entries")
    limit = (1 << (cb_bits - 1)) - 1
    _require(
        int(np.abs(codebook.astype(np.int64)).max()) <= limit,
        f"{where}: codebook values exceed the {cb_bits}-bit range ±{limit}",
    )
    bias = _tensor(tensors, f"{name}.bias", np.int32, where)
    _require(bias.shape == (cout,), f"{where}: bias must have shape ({cout},)")
    try:
        weights = layer_weights(layer, tensors)
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from exc
    bound = int(accumulator_bound(weights, bias, a_bits).max())
    _require(
        bound < MAX_ACCUMULATOR,
        f"{where}: accumulators may reach {bound}, beyond the exact bound 2^31",
    )
    return out_shape


def _check_requant(layer: dict[str, Any], tensors: dict[str, np.ndarray], where: str) -> None:
    name = layer["name"]
    cout = layer.get("out_channels", layer.get("out_features"))
    multiplier = _tensor(tensors, f"{name}.multiplier", np.int32, where)
    shift = _tensor(tensors, f"{name}.shift", np.int32, where)
    _require(
        multiplier.shape in ((1,), (cout,)) and shift.shape == multiplier.shape,
        f"{where}: multiplier and shift must both have shape (1,) or ({cout},)",
    )
    _require(bool((multiplier >= 1).all()), f"{where}: multiplier must be positive")
    _require(bool(((shift >= 1) & (shift <= 62)).all()), f"{where}: shift must lie in 1..62")
