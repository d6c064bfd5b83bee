"""Bundle format version 2: each weighted layer stored as one compact byte tensor.

A version-2 bundle is a safetensors file like version 1 (docs/ARCHITECTURE.md, "Bundle
layout"), with the same manifest plus `manifest["storage"]`, and one U8 tensor `L.packed` per
weighted layer `L` instead of v1's five tensors (each safetensors tensor costs ~70 header
bytes, a fifth of a pruned conv layer). `L.packed` holds, in order:

    codebook     2^b signed integers, `codebook_bytes` (1, 2 or 4) each, little-endian
    bias         out signed integers, `bias_bytes` each
    multiplier   `requant` int32, then shift: `requant` int8   (ReLU layers; requant 1 or out)
    tables       Huffman code lengths, 4 bits each (shared.bundle.entropy): 2^b for the codes, then
                 2^index_bits for the gaps (layout "sparse")
    masks        layout "block" only: one bit per output unit (row), then one per input
                 column (the rest of the weight's shape, flattened), each padded to bytes
    bits         the Huffman stream(s): layout "sparse": `gaps` gap symbols then `nonzero`
                 codes; "dense": all n codes; "block": the codes of the kept rows x kept
                 columns, row-major; "packed": v1's fixed-width packing, no tables

Layout "sparse" is Deep Compression's relative indexing (Han et al. 2016, section 3): the
`fill` code (the most frequent one: the exact zero of a pruned layer) is implicit, and every
other weight is a (gap, code) pair, gap = number of fill codes skipped since the previous
stored weight. A gap symbol g < E = 2^index_bits - 1 skips g and stores a weight; g == E
skips E and stores nothing (Deep Compression's filler zero, without the filler's code).
Layout "block" is for structured pruning (whole output units and/or input columns pruned,
server/training/prune.py): every weight outside the kept rows x kept columns is the `fill`
code, and the dense sub-block is Huffman-coded, so a kept weight costs its code and nothing
for its position (relative indices cost at least one bit each, ~4.6 at 92 % random sparsity).
The writer tries every layout and index width per layer and keeps the smallest.

`storage[L]` = {"layout", "codebook_bytes", "bias_bytes", "requant", "bytes", "crc32", and for
"sparse": "fill", "index_bits", "gaps", "nonzero"; for "block": "fill", "rows_kept",
"cols_kept"}. `crc32` is zlib's CRC-32 of `L.packed`,
so a damaged stream is refused with a clear error before it is decoded.

Format version 3 (a DAG graph) is stored the same way: its weighted nodes packed, an add's
`multiplier` and `shift` kept as the plain I32 tensors they are (3 and 1 values).

`pack_layers` turns validated v1 tensors into v2 ones; `unpack_layers` turns v2 tensors back
into exactly the v1 tensors (the same integers), which `shared.bundle.validate` then checks
as for any bundle, so the engine never sees the v2 layout.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from shared.bundle import entropy
from shared.bundle.bitpack import pack_codes, packed_size, unpack_codes
from shared.errors import BundleError
from shared.network import codebook_size, weight_shape

__all__ = [
    "VERSION",
    "LAYOUTS",
    "encode_layer",
    "codes_size",
    "decode_layer",
    "pack_layers",
    "unpack_layers",
    "sparse_symbols",
    "block_masks",
]

VERSION = 2
LAYOUTS = ("packed", "dense", "sparse", "block")
INDEX_BITS = range(1, 11)  # gap alphabets of 2..1024 symbols


def _width(values: np.ndarray) -> int:
    """Bytes per value of the narrowest signed integer (1, 2 or 4) holding all `values`."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for width in (1, 2, 4):
        if -(1 << (8 * width - 1)) <= lo and hi < 1 << (8 * width - 1):
            return width
    raise ValueError("value outside int32")


def _ints(values: np.ndarray, width: int) -> bytes:
    return np.asarray(values).astype(f"<i{width}").tobytes()


def sparse_symbols(codes: np.ndarray, fill: int, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gap symbols, stored codes) of the relative-index layout (see the module doc)."""
    escape = (1 << index_bits) - 1
    where = np.flatnonzero(codes != fill)  # (nonzero,) positions of stored weights
    gaps = np.diff(where, prepend=-1) - 1  # fill codes skipped before each stored weight
    escapes = gaps // escape
    symbols = np.full(int((escapes + 1).sum()), escape, dtype=np.int64)
    symbols[np.cumsum(escapes + 1) - 1] = gaps % escape
    return symbols, codes[where].astype(np.int64)


def _huffman(symbols: np.ndarray, alphabet: int) -> tuple[np.ndarray, int]:
    lengths = entropy.code_lengths(np.bincount(symbols, minlength=alphabet))
    return lengths, entropy.encoded_bits(symbols, lengths)


def encode_layer(
    codes: np.ndarray,
    bits: int,
    codebook: np.ndarray,
    bias: np.ndarray,
    requant: tuple[np.ndarray, ...],
    rows: int = 1,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The smallest `L.packed` bytes and `storage[L]` entry for one layer's integers.
    `codes` (n,) in [0, 2^b), `rows` output units of n / rows weights each (the block
    layout's rows; 1: no block layout); `requant` = (multiplier, shift) arrays, or () for
    the last layer."""
    codes = np.asarray(codes, dtype=np.int64).ravel()
    cb_w, bias_w = _width(codebook), _width(bias)
    head = _ints(codebook, cb_w) + _ints(bias, bias_w)
    entry: dict[str, Any] = {"codebook_bytes": cb_w, "bias_bytes": bias_w, "requant": 0}
    if requant:
        multiplier, shift = requant
        head += _ints(multiplier, 4) + _ints(shift, 1)
        entry["requant"] = int(len(multiplier))
    fields, body = _smallest_body(codes, bits, rows, estimate_only=False)
    entry.update(fields)
    data = np.frombuffer(head + body, dtype=np.uint8).copy()
    entry["bytes"] = int(data.size)
    entry["crc32"] = zlib.crc32(data.tobytes())
    return data, entry


def codes_size(codes: np.ndarray, bits: int, rows: int = 1) -> int:
    """Bytes the smallest layout needs for these codes (tables and bit stream, without the
    codebook, bias and requantisation constants); computes sizes, encodes nothing."""
    fields, _ = _smallest_body(np.asarray(codes, dtype=np.int64).ravel(), bits, rows, True)
    return int(fields["size"])


def block_masks(codes: np.ndarray, rows: int, fill: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows (rows,), kept columns (n / rows,)) of the block layout: those holding any
    code other than `fill`."""
    grid = np.asarray(codes).reshape(rows, -1) != fill
    return grid.any(axis=1), grid.any(axis=0)


def _smallest_body(
    codes: np.ndarray, bits: int, rows: int, estimate_only: bool
) -> tuple[dict[str, Any], bytes]:
    """(storage fields, body bytes) of the smallest layout; sizes are computed for every
    candidate first and only the winner is encoded."""
    k = codebook_size(bits)
    best: tuple[int, dict[str, Any]] = (packed_size(len(codes), bits), {"layout": "packed"})
    lengths, n_bits = _huffman(codes, k)
    dense = (k + 1) // 2 + (n_bits + 7) // 8
    if dense < best[0]:
        best = (dense, {"layout": "dense"})
    if codes.size:
        fill = int(np.bincount(codes, minlength=k).argmax())
        for index_bits in INDEX_BITS:
            gaps, stored = sparse_symbols(codes, fill, index_bits)
            _, gap_bits = _huffman(gaps, 1 << index_bits)
            _, val_bits = _huffman(stored, k)
            size = (k + 1) // 2 + ((1 << index_bits) + 1) // 2 + (gap_bits + val_bits + 7) // 8
            if size < best[0]:
                best = (
                    size,
                    {
                        "layout": "sparse",
                        "fill": fill,
                        "index_bits": index_bits,
                        "gaps": int(len(gaps)),
                        "nonzero": int(len(stored)),
                    },
                )
        if rows > 1 and codes.size % rows == 0:
            keep_r, keep_c = block_masks(codes, rows, fill)
            block = codes.reshape(rows, -1)[np.ix_(keep_r, keep_c)].ravel()
            _, blk_bits = _huffman(block, k)
            size = (k + 1) // 2 + (rows + 7) // 8 + (keep_c.size + 7) // 8 + (blk_bits + 7) // 8
            if size < best[0]:
                best = (
                    size,
                    {
                        "layout": "block",
                        "fill": fill,
                        "rows_kept": int(keep_r.sum()),
                        "cols_kept": int(keep_c.sum()),
                    },
                )
    size, fields = best
    if estimate_only:
        return {"size": size}, b""
    if fields["layout"] == "packed":
        return fields, pack_codes(codes, bits).tobytes()
    if fields["layout"] == "dense":
        body = entropy.pack_lengths(lengths).tobytes()
        return fields, body + entropy.encode_symbols(codes, lengths).tobytes()
    if fields["layout"] == "block":
        keep_r, keep_c = block_masks(codes, rows, int(fields["fill"]))
        block = codes.reshape(rows, -1)[np.ix_(keep_r, keep_c)].ravel()
        blk_lengths, _ = _huffman(block, k)
        return fields, (
            entropy.pack_lengths(blk_lengths).tobytes()
            + np.packbits(keep_r).tobytes()
            + np.packbits(keep_c).tobytes()
            + entropy.encode_symbols(block, blk_lengths).tobytes()
        )
    fill, index_bits = int(fields["fill"]), int(fields["index_bits"])
    gaps, stored = sparse_symbols(codes, fill, index_bits)
    gap_lengths, _ = _huffman(gaps, 1 << index_bits)
    val_lengths, _ = _huffman(stored, k)
    stream = np.concatenate([_bits(gaps, gap_lengths), _bits(stored, val_lengths)])
    body = (
        entropy.pack_lengths(val_lengths).tobytes()
        + entropy.pack_lengths(gap_lengths).tobytes()
        + np.packbits(stream).tobytes()
    )
    return fields, body


def _bits(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Unpadded bit array (uint8 0/1) of `symbols` under `lengths`."""
    n = entropy.encoded_bits(symbols, lengths)
    return np.unpackbits(entropy.encode_symbols(symbols, lengths))[:n]


class _Reader:
    """Consumes a layer's byte sections in order; BundleError when one runs short."""

    def __init__(self, data: np.ndarray, where: str):
        self.data, self.pos, self.where = data, 0, where

    def take(self, size: int) -> np.ndarray:
        if size < 0 or self.pos + size > self.data.size:
            raise BundleError(f"{self.where}: packed data is truncated")
        out = self.data[self.pos : self.pos + size]
        self.pos += size
        return out

    def ints(self, count: int, width: int) -> np.ndarray:
        return self.take(count * width).view(f"<i{width}").astype(np.int64)


def _field(entry: dict[str, Any], key: str, allowed: Any, where: str) -> Any:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value not in allowed:
        raise BundleError(f"{where}: storage '{key}' is {value!r}, not one of the allowed values")
    return value


def decode_layer(
    data: np.ndarray, entry: Any, count: int, bits: int, cout: int, where: str
) -> dict[str, np.ndarray]:
    """v1 tensors (`codes`, `codebook`, `bias`, and `multiplier`/`shift` when requant > 0)
    of one layer from its `L.packed` bytes; BundleError on anything inconsistent."""
    if not isinstance(entry, dict):
        raise BundleError(f"{where}: storage entry missing")
    if data.dtype != np.uint8 or data.ndim != 1:
        raise BundleError(f"{where}: packed tensor must be 1-D U8")
    if entry.get("bytes") != data.size:
        raise BundleError(
            f"{where}: packed data is {data.size} bytes, storage says {entry.get('bytes')!r}"
        )
    if entry.get("crc32") != zlib.crc32(data.tobytes()):
        raise BundleError(f"{where}: packed data fails its CRC-32 check (corrupted stream)")
    layout = entry.get("layout")
    if layout not in LAYOUTS:
        raise BundleError(f"{where}: unknown storage layout {layout!r}")
    k = codebook_size(bits)
    r = _Reader(data, where)
    out = {
        "codebook": r.ints(k, _field(entry, "codebook_bytes", (1, 2, 4), where)),
        "bias": r.ints(cout, _field(entry, "bias_bytes", (1, 2, 4), where)),
    }
    requant = _field(entry, "requant", (0, 1, cout), where)
    if requant:
        out["multiplier"] = r.ints(requant, 4)
        out["shift"] = r.ints(requant, 1)
    try:
        if layout == "packed":
            codes = unpack_codes(r.take(packed_size(count, bits)), bits, count)
        elif layout == "dense":
            lengths = entropy.unpack_lengths(r.take((k + 1) // 2), k)
            body = r.take(data.size - r.pos)
            codes, end = entropy.decode_symbols(body, lengths, count)
            _check_padding(body, end, where)
        elif layout == "block":
            codes = _decode_block(r, entry, count, bits, cout, where)
        else:
            codes = _decode_sparse(r, entry, count, bits, where)
    except ValueError as exc:
        raise BundleError(f"{where}: {exc}") from exc
    if r.pos != data.size:
        raise BundleError(f"{where}: {data.size - r.pos} unexpected bytes after the codes")
    result = {key: value.astype(np.int32) for key, value in out.items()}
    result["codes"] = pack_codes(codes, bits)
    return result


def _decode_sparse(r: _Reader, entry: dict, count: int, bits: int, where: str) -> np.ndarray:
    k = codebook_size(bits)
    fill = _field(entry, "fill", range(k), where)
    index_bits = _field(entry, "index_bits", INDEX_BITS, where)
    nonzero = _field(entry, "nonzero", range(count + 1), where)
    gaps_count = _field(entry, "gaps", range(nonzero, count + nonzero + 1), where)
    val_lengths = entropy.unpack_lengths(r.take((k + 1) // 2), k)
    alphabet = 1 << index_bits
    gap_lengths = entropy.unpack_lengths(r.take((alphabet + 1) // 2), alphabet)
    body = r.take(r.data.size - r.pos)
    gaps, end = entropy.decode_symbols(body, gap_lengths, gaps_count)
    stored, end = entropy.decode_symbols(body, val_lengths, nonzero, start_bit=end)
    _check_padding(body, end, where)
    escape = alphabet - 1
    is_weight = gaps != escape
    if int(is_weight.sum()) != nonzero or (gaps_count and not is_weight[-1]):
        raise BundleError(f"{where}: gap stream does not describe {nonzero} stored weights")
    ends = np.cumsum(np.where(is_weight, gaps + 1, escape))  # positions after each symbol
    if gaps_count and ends[-1] > count:
        raise BundleError(f"{where}: gaps run past the layer's {count} weights")
    if (stored == fill).any():
        raise BundleError(f"{where}: a stored weight has the implicit fill code")
    codes = np.full(count, fill, dtype=np.int64)
    codes[ends[is_weight] - 1] = stored
    return codes


def _decode_block(
    r: _Reader, entry: dict, count: int, bits: int, rows: int, where: str
) -> np.ndarray:
    k = codebook_size(bits)
    if count % rows:
        raise BundleError(f"{where}: {count} weights do not split into {rows} rows")
    cols = count // rows
    fill = _field(entry, "fill", range(k), where)
    rows_kept = _field(entry, "rows_kept", range(rows + 1), where)
    cols_kept = _field(entry, "cols_kept", range(cols + 1), where)
    lengths = entropy.unpack_lengths(r.take((k + 1) // 2), k)
    masks = []
    for size, kept, what in ((rows, rows_kept, "row"), (cols, cols_kept, "column")):
        raw = r.take((size + 7) // 8)
        bits_ = np.unpackbits(raw)
        if bits_[size:].any() or int(bits_[:size].sum()) != kept:
            raise BundleError(f"{where}: the {what} mask does not keep {kept} {what}s")
        masks.append(bits_[:size].astype(bool))
    body = r.take(r.data.size - r.pos)
    block, end = entropy.decode_symbols(body, lengths, rows_kept * cols_kept)
    _check_padding(body, end, where)
    codes = np.full((rows, cols), fill, dtype=np.int64)
    codes[np.ix_(masks[0], masks[1])] = block.reshape(rows_kept, cols_kept)
    return codes.ravel()


def _check_padding(body: np.ndarray, end_bit: int, where: str) -> None:
    if (end_bit + 7) // 8 != body.size or np.unpackbits(body)[end_bit:].any():
        raise BundleError(f"{where}: the code stream's length or padding is wrong")


def _weighted(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    return [g for g in manifest["graph"] if g.get("op") in ("conv2d", "linear")]


def _plain_keys(graph: list[Any]) -> set[str]:
    """The tensors stored as they are: an add's multiplier and shift (version 3)."""
    adds = [g.get("name") for g in graph if isinstance(g, dict) and g.get("op") == "add"]
    return {f"{a}.{t}" for a in adds for t in ("multiplier", "shift")}


def pack_layers(
    manifest: dict[str, Any], tensors: dict[str, np.ndarray]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """v2 `storage` and tensors from validated v1 tensors (shared.bundle.encode_bundle)."""
    storage: dict[str, Any] = {}
    packed: dict[str, np.ndarray] = {}
    for layer in _weighted(manifest):
        name, bits = layer["name"], layer["weight_bits"]
        count = int(np.prod(weight_shape(layer)))
        codes = unpack_codes(tensors[f"{name}.codes"], bits, count)
        requant: tuple[np.ndarray, ...] = ()
        if f"{name}.multiplier" in tensors:
            requant = (tensors[f"{name}.multiplier"], tensors[f"{name}.shift"])
        rows = len(tensors[f"{name}.bias"])
        data, entry = encode_layer(
            codes, bits, tensors[f"{name}.codebook"], tensors[f"{name}.bias"], requant, rows
        )
        packed[f"{name}.packed"], storage[name] = data, entry
    packed.update({key: tensors[key] for key in _plain_keys(manifest["graph"])})
    return storage, packed


def unpack_layers(
    manifest: dict[str, Any], tensors: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """v1 tensors from a v2 bundle's tensors (shared.bundle.decode_bundle)."""
    storage = manifest.get("storage")
    graph = manifest.get("graph")
    if not isinstance(storage, dict) or not isinstance(graph, list):
        raise BundleError("version-2 manifest needs 'storage' and 'graph' objects")
    layers = [g for g in graph if isinstance(g, dict) and g.get("op") in ("conv2d", "linear")]
    plain = _plain_keys(graph)
    expected = {f"{g.get('name')}.packed" for g in layers} | plain
    if set(tensors) != expected:
        raise BundleError(
            f"a packed bundle must hold exactly the tensors {', '.join(sorted(expected))}"
        )
    out: dict[str, np.ndarray] = {key: tensors[key] for key in plain}
    for layer in layers:
        name, bits = layer.get("name"), layer.get("weight_bits")
        where = f"layer {name}"
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
            raise BundleError(f"{where}: 'weight_bits' must be an integer in 1..8")
        try:
            count = int(np.prod(weight_shape(layer)))
            cout = int(layer["out_channels" if layer["op"] == "conv2d" else "out_features"])
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise BundleError(f"{where}: incomplete layer description ({exc!r})") from exc
        if not 0 < count <= 1 << 28 or not 0 < cout <= 1 << 16:
            raise BundleError(f"{where}: layer size out of range")
        decoded = decode_layer(
            tensors[f"{name}.packed"], storage.get(name), count, bits, cout, where
        )
        out.update({f"{name}.{key}": value for key, value in decoded.items()})
    return out
