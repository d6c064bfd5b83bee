"""Canonical Huffman coding of small-alphabet symbol streams, in numpy.

Why Huffman and not an arithmetic/ANS coder (such as the `constriction` package): the streams
a bundle holds are weight codes (2^b <= 256 symbols) and sparse-index gaps, whose order-0
Huffman cost is within a few percent of their entropy (bench/results/compression.md measures
it), and this decoder is ~150 lines of numpy the client already has, where `constriction` adds
a compiled wheel to the client install for those few percent.

The code is canonical (DEFLATE's construction, RFC 1951 section 3.2.2): a table of code
lengths alone defines it, so a stream stores one 4-bit length per symbol (0 = unused) and the
bits. Codes are written most significant bit first into bytes, MSB first; the last byte is
padded with zero bits.

Decoding is table-driven: for every bit position of the stream the next `max_length` bits
index a table of (symbol, length); which positions are symbol starts is then a chain
`p -> p + length`, whose orbit from 0 pointer doubling finds in log2(count) numpy steps.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = [
    "MAX_CODE_LENGTH",
    "code_lengths",
    "canonical_codes",
    "encoded_bits",
    "encode_symbols",
    "decode_symbols",
    "pack_lengths",
    "unpack_lengths",
]

MAX_CODE_LENGTH = 15  # lengths are stored in 4 bits; keeps the decode table at 2^15 entries


def code_lengths(counts: np.ndarray, max_length: int = MAX_CODE_LENGTH) -> np.ndarray:
    """Huffman code lengths (int64, one per symbol, 0 for unused symbols) for symbol counts.

    One used symbol gets length 1. When the optimal tree is deeper than `max_length`, the
    counts are halved (rounding up, so no used symbol vanishes) and the tree is rebuilt:
    flattening the distribution shortens the longest codes, at a small cost in size.
    """
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError("counts must be a 1-D array of non-negative integers")
    if len(counts) > 1 << max_length:
        raise ValueError(f"at most {1 << max_length} symbols fit codes of {max_length} bits")
    lengths = np.zeros(len(counts), dtype=np.int64)
    used = np.flatnonzero(counts)
    if len(used) == 1:
        lengths[used] = 1
    if len(used) <= 1:
        return lengths
    work = counts.copy()
    while True:
        # heap of (weight, tie-break, symbols under this node); every merge deepens its symbols
        heap = [(int(work[s]), int(s), [int(s)]) for s in used]
        heapq.heapify(heap)
        lengths[:] = 0
        tie = len(counts)
        while len(heap) > 1:
            w1, _, s1 = heapq.heappop(heap)
            w2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                lengths[s] += 1
            heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
            tie += 1
        if lengths.max() <= max_length:
            return lengths
        work = np.where(work > 0, (work + 1) // 2, 0)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (int64; meaningless where the length is 0).

    Shorter codes come first; within a length, symbols in increasing order get consecutive
    codes. Raises ValueError if the lengths over-fill the code space (Kraft sum > 1), which
    is how a corrupted length table shows itself.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.ndim != 1 or (lengths < 0).any() or (lengths > MAX_CODE_LENGTH).any():
        raise ValueError(f"code lengths must lie in 0..{MAX_CODE_LENGTH}")
    used = lengths > 0
    kraft = int((np.int64(1) << (MAX_CODE_LENGTH - lengths[used])).sum())
    if kraft > 1 << MAX_CODE_LENGTH:
        raise ValueError("code lengths over-subscribe the code space (not a prefix code)")
    codes = np.zeros(len(lengths), dtype=np.int64)
    code = 0
    prev_len = 0
    order = np.lexsort((np.arange(len(lengths)), lengths))  # by length, then symbol
    for s in order[used[order]]:
        code <<= int(lengths[s]) - prev_len
        prev_len = int(lengths[s])
        codes[s] = code
        code += 1
    return codes


def encoded_bits(symbols: np.ndarray, lengths: np.ndarray) -> int:
    """Bits `encode_symbols` writes for `symbols` (before padding to a byte)."""
    return int(np.asarray(lengths, dtype=np.int64)[np.asarray(symbols, dtype=np.int64)].sum())


def encode_symbols(symbols: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The bit stream (uint8 bytes, MSB first, zero padded) of `symbols` under `lengths`."""
    sym = np.asarray(symbols, dtype=np.int64).ravel()
    lengths = np.asarray(lengths, dtype=np.int64)
    if sym.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if sym.min() < 0 or sym.max() >= len(lengths) or (lengths[sym] == 0).any():
        raise ValueError("a symbol has no code (length 0 or outside the table)")
    codes = canonical_codes(lengths)
    n_bits = lengths[sym]  # (n,)
    total = int(n_bits.sum())
    owner = np.repeat(np.arange(sym.size), n_bits)  # (total,) which symbol each bit belongs to
    starts = np.cumsum(n_bits) - n_bits
    offset = np.arange(total) - starts[owner]  # bit index within its code, MSB first
    bits = (codes[sym][owner] >> (n_bits[owner] - 1 - offset)) & 1
    return np.packbits(bits.astype(np.uint8))


def decode_symbols(
    stream: np.ndarray, lengths: np.ndarray, count: int, start_bit: int = 0
) -> tuple[np.ndarray, int]:
    """Decode `count` symbols starting at bit `start_bit` of `stream` (uint8 bytes).

    Returns (symbols int64 (count,), the bit position after the last one). Raises ValueError
    when the bits are not `count` codes of this table: a bit pattern that is no code, or
    the stream ending inside a code.
    """
    stream = np.asarray(stream)
    if stream.dtype != np.uint8 or stream.ndim != 1:
        raise ValueError("a Huffman stream is a 1-D uint8 array")
    lengths = np.asarray(lengths, dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.int64), start_bit
    if not (lengths > 0).any():
        raise ValueError(f"{count} symbols to decode but the code table is empty")
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    # (2^width,) lookup: every `width`-bit window that begins with a code -> symbol, length
    table_sym = np.full(1 << width, -1, dtype=np.int64)
    table_len = np.zeros(1 << width, dtype=np.int64)
    for s in np.flatnonzero(lengths):
        shift = width - int(lengths[s])
        first = int(codes[s]) << shift
        table_sym[first : first + (1 << shift)] = s
        table_len[first : first + (1 << shift)] = lengths[s]
    bits = np.unpackbits(stream)[start_bit:].astype(np.int64)
    n = bits.size
    padded = np.concatenate([bits, np.zeros(width, dtype=np.int64)])
    window = np.zeros(n, dtype=np.int64)  # (n,) the `width` bits starting at each position
    for j in range(width):
        window = (window << 1) | padded[j : j + n]
    length_at = table_len[window]  # (n,) 0 where no code starts with these bits
    # f(p) = p + length: the start of the next code. The starts are the orbit 0, f(0),
    # f(f(0)), ...; pointer doubling finds it in log2(count) vectorised steps:
    # starts[2^k + j] = f^(2^k)(starts[j]). Position n is a sink for "past the end".
    jump = np.minimum(np.arange(n) + length_at, n)
    jump = np.append(jump, n)  # (n + 1,)
    starts = np.zeros(1, dtype=np.int64)
    while starts.size < count:
        starts = np.concatenate([starts, jump[starts[: count - starts.size]]])
        jump = jump[jump]
    if starts[-1] >= n:
        ended = int(np.argmax(starts >= n))
        raise ValueError(f"stream ends after {ended} of {count} symbols")
    symbols = table_sym[window[starts]]
    if (symbols < 0).any():
        raise ValueError("stream holds a bit pattern that is not a code of its table")
    p = int(starts[-1] + length_at[starts[-1]])
    if p > n:
        raise ValueError("stream ends inside the last code")
    return symbols, start_bit + p


def pack_lengths(lengths: np.ndarray) -> np.ndarray:
    """Code lengths (0..15) as 4-bit nibbles, two per byte (low nibble first)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths < 0).any() or (lengths > MAX_CODE_LENGTH).any():
        raise ValueError(f"code lengths must lie in 0..{MAX_CODE_LENGTH}")
    padded = np.zeros(2 * ((len(lengths) + 1) // 2), dtype=np.uint8)
    padded[: len(lengths)] = lengths
    return (padded[0::2] | (padded[1::2] << 4)).astype(np.uint8)


def unpack_lengths(packed: np.ndarray, count: int) -> np.ndarray:
    """Inverse of `pack_lengths`: `count` code lengths (int64)."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.size != (count + 1) // 2:
        raise ValueError(f"{count} code lengths need {(count + 1) // 2} bytes, got {packed.size}")
    out = np.empty(2 * packed.size, dtype=np.int64)
    out[0::2] = packed & 0x0F
    out[1::2] = packed >> 4
    if count % 2 and out[-1] != 0:
        raise ValueError("non-zero padding nibble after the last code length")
    return out[:count]
