"""Bit packing of weight codes: `n` codes of `bits` bits each, packed LSB-first into bytes.

Code `i` occupies bits `[i*bits, (i+1)*bits)` of the little-endian bit stream, so a 4-bit code
pair `(c0, c1)` becomes the byte `c0 | c1 << 4`. Trailing bits of the last byte are zero.
"""

from __future__ import annotations

import numpy as np

__all__ = ["packed_size", "pack_codes", "unpack_codes"]


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int | np.integer) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")


def packed_size(count: int, bits: int) -> int:
    """Bytes needed for `count` codes of `bits` bits."""
    _check_bits(bits)
    return (count * bits + 7) // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Pack integer codes in `[0, 2^bits)` (any shape, read in C order) into a uint8 vector."""
    _check_bits(bits)
    flat = np.asarray(codes).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit packing")
    flat = flat.astype(np.uint8)
    if bits == 8:
        return flat.copy()
    # (n, bits) matrix of the codes' bits, least significant first, then one bit stream
    bit_matrix = (flat[:, None] >> np.arange(bits, dtype=np.uint8)) & 1
    return np.packbits(bit_matrix.reshape(-1), bitorder="little")


def unpack_codes(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_codes`: the first `count` codes as a uint8 vector.

    Raises ValueError when `packed` has the wrong length for `count` codes, or when the
    padding bits after the last code are not zero (a sign of corruption).
    """
    _check_bits(bits)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise ValueError("packed codes must be a 1-D uint8 array")
    if packed.size != packed_size(count, bits):
        raise ValueError(
            f"{count} codes of {bits} bits need {packed_size(count, bits)} bytes, got {packed.size}"
        )
    if bits == 8:
        return packed.copy()
    stream = np.unpackbits(packed, bitorder="little")
    if stream[count * bits :].any():
        raise ValueError("non-zero padding bits after the last code")
    bit_matrix = stream[: count * bits].reshape(count, bits)  # (n, bits), LSB first
    weights = (1 << np.arange(bits)).astype(np.uint8)
    return (bit_matrix * weights).sum(axis=1, dtype=np.uint16).astype(np.uint8)
