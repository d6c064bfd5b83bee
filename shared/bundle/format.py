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
    ACCUMULATORS,
    CHAIN_OPS,
    MAX_ACCUMULATOR,
    MAX_ADD_SUM,
    WEIGHTED_OPS,
    GraphError,
    accumulator_bound,
    add_bound,
    as_dag,
    carries_relu,
    check_graph,
    codebook_size,
    requantises,
    weight_shape,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSIONS",
    "DAG_VERSION",
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
DAG_VERSION = 3  # the graph as a DAG of named nodes (docs/ARCHITECTURE.md)
# 2: compact per-layer storage (shared/bundle/v2.py); 3: the DAG, stored as version 2 is
FORMAT_VERSIONS = (1, bundle_v2.VERSION, DAG_VERSION)
PACKED_VERSIONS = (bundle_v2.VERSION, DAG_VERSION)
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
    if manifest["format_version"] in PACKED_VERSIONS:
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
    if _packed(manifest.get("format_version")):
        tensors = bundle_v2.unpack_layers(manifest, tensors)  # the v1 tensors, same integers
    validate(manifest, tensors)
    return Bundle(id=digest, manifest=manifest, tensors=tensors, size=len(data))


def _packed(version: Any) -> bool:
    return not isinstance(version, bool) and version in PACKED_VERSIONS


# --- validation ---------------------------------------------------------------------------


def _stored_manifest(data: bytes) -> str:
    """The manifest's JSON text as stored in the header (after `_read_manifest` passed)."""
    (header_len,) = struct.unpack("<Q", data[:8])
    return _manifest_text(json.loads(data[8 : 8 + header_len])["__metadata__"])


def _manifest_text(metadata: dict[str, Any]) -> str:
    """The manifest text from the header's metadata: plain under MANIFEST_KEY (version 1,
    and version 2 as first written), or compressed under MANIFEST_ZLIB_KEY (versions 2 and 3)."""
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
    version: Any = manifest.get("format_version")
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
    if version < DAG_VERSION:
        _check_chain(graph, version)
    else:
        for i, node in enumerate(graph):
            _require(
                isinstance(node, dict) and "inputs" in node,
                f"graph[{i}]: a version-{version} node must be an object with 'inputs'",
            )
    dag = as_dag(graph)
    try:
        values = check_graph(dag, (channels, height, width), a_bits)
    except GraphError as exc:
        raise BundleError(str(exc)) from exc
    expected: set[str] = set()
    bounds: dict[str, np.ndarray] = {}  # per weighted node, the |accumulator| bound per channel
    for node in dag:
        name, where = node["name"], f"layer {node['name']}"
        if node["op"] in WEIGHTED_OPS:
            bounds[name] = _check_weighted(node, tensors, a_bits, cb_bits, where)
            expected.update(f"{name}.{t}" for t in ("codes", "codebook", "bias"))
        if requantises(node):
            expected.update((f"{name}.multiplier", f"{name}.shift"))
            if node["op"] == "add":
                first = node["inputs"][0]
                bound = bounds[first] if values[first].kind == ACCUMULATORS else (1 << a_bits) - 1
                _check_add(node, tensors, bound, a_bits, where)
            else:
                _check_requant(node, tensors, where)
    shape = values[dag[-1]["name"]].shape
    _require(
        shape == (len(names),), f"network output shape {shape} does not match {len(names)} classes"
    )
    extra = set(tensors) - expected
    missing = expected - set(tensors)
    _require(not missing, f"bundle lacks tensors: {', '.join(sorted(missing))}")
    _require(not extra, f"bundle has unexpected tensors: {', '.join(sorted(extra))}")


def _check_chain(graph: list[Any], version: int) -> None:
    """What a version 1 or 2 graph must be beyond the DAG rules: a chain of the chain ops,
    without DAG fields, a `relu` flag on every weighted layer but the last."""
    weighted = [n for n in graph if isinstance(n, dict) and n.get("op") in WEIGHTED_OPS]
    done = 0
    for i, node in enumerate(graph):
        _require(isinstance(node, dict), f"graph[{i}] is not an object")
        op = node.get("op")
        _require(
            op in CHAIN_OPS,
            f"graph[{i}]: unknown op {op!r} for a version-{version} bundle "
            f"(known: {', '.join(CHAIN_OPS)}; the others need format version {DAG_VERSION})",
        )
        dag_fields = sorted({"inputs", "activation", "groups"} & set(node))
        _require(
            not dag_fields,
            f"graph[{i}]: {', '.join(dag_fields)} need format version {DAG_VERSION}",
        )
        if op in WEIGHTED_OPS:
            _require(
                node.get("relu") is carries_relu(done, len(weighted)),
                f"layer {node.get('name')}: every weighted layer but the last must have relu "
                "true, the last false",
            )
            done += 1


def _tensor(tensors: dict[str, np.ndarray], key: str, dtype: type, where: str) -> np.ndarray:
    _require(key in tensors, f"{where}: missing tensor {key}")
    t = tensors[key]
    _require(
        t.dtype == dtype, f"{where}: tensor {key} must be {np.dtype(dtype).name}, not {t.dtype}"
    )
    return t


def _check_weighted(
    layer: dict[str, Any],
    tensors: dict[str, np.ndarray],
    a_bits: int,
    cb_bits: int,
    where: str,
) -> np.ndarray:
    """A weighted node's codes, codebook and bias (its fields and shapes passed
    check_graph); returns its accumulator bound per output channel."""
    name, bits = layer["name"], layer["weight_bits"]
    cout = weight_shape(layer)[0]
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
    bound = accumulator_bound(weights, bias, a_bits)
    _require(
        int(bound.max()) < MAX_ACCUMULATOR,
        f"{where}: accumulators may reach {int(bound.max())}, beyond the exact bound 2^31",
    )
    return bound


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


def _check_add(
    node: dict[str, Any],
    tensors: dict[str, np.ndarray],
    bound_x: np.ndarray | int,
    a_bits: int,
    where: str,
) -> None:
    """An add's multiplier (2,) `[M_x, M_y]` in [0, 2^31), shift (1,) in 1..62, and the
    bound `|x| * M_x + A * M_y < 2^62` with |x| bounded by its first input."""
    name = node["name"]
    multiplier = _tensor(tensors, f"{name}.multiplier", np.int32, where)
    shift = _tensor(tensors, f"{name}.shift", np.int32, where)
    _require(
        multiplier.shape == (2,) and shift.shape == (1,),
        f"{where}: an add's multiplier must have shape (2,) and its shift (1,)",
    )
    _require(bool((multiplier >= 0).all()), f"{where}: multipliers must lie in 0..2^31-1")
    _require(1 <= int(shift[0]) <= 62, f"{where}: shift must lie in 1..62")
    bound = add_bound(bound_x, multiplier, a_bits)
    _require(
        bound < MAX_ADD_SUM, f"{where}: the add's sum may reach {bound}, beyond the bound 2^62"
    )
