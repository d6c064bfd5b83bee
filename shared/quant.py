"""Pure quantisation primitives shared by the server (which chooses the constants) and the
integer engine (which applies them). Semantics: docs/ARCHITECTURE.md, "The integer network".
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "MAX_ACCUMULATOR",
    "round_half_up",
    "quantize_input",
    "quantize_multiplier",
    "requantize",
    "accumulator_bound",
]

# acc * multiplier (multiplier < 2^31) must fit in int64.
MAX_ACCUMULATOR = 2**31


def round_half_up(x: np.ndarray) -> np.ndarray:
    """floor(x + 0.5): the one rounding rule of SIQ (ties go up, also for negatives)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def quantize_input(x: np.ndarray, scale: float, bits: int) -> np.ndarray:
    """Float image values (about [0, 1]) to unsigned `bits`-bit codes, int64, same shape."""
    top = (1 << bits) - 1
    q = round_half_up(np.asarray(x, dtype=np.float64) / scale)
    return np.clip(q, 0, top).astype(np.int64)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Represent a positive real factor as `multiplier / 2^shift`.

    `multiplier` is normalised into [2^30, 2^31) and `shift` lies in 1..62; factors too small
    for that lose low multiplier bits (they are then tiny enough to round to zero anyway).
    """
    if not math.isfinite(real) or real <= 0:
        raise ValueError(f"requantisation factor must be positive and finite, got {real!r}")
    mantissa, exponent = math.frexp(real)  # real = mantissa * 2^exponent, mantissa in [0.5, 1)
    multiplier = round(mantissa * (1 << 31))
    if multiplier == 1 << 31:
        multiplier //= 2
        exponent += 1
    shift = 31 - exponent
    if shift < 1:
        raise ValueError(f"requantisation factor {real!r} is too large (>= 2^30)")
    if shift > 62:
        multiplier >>= shift - 62
        shift = 62
        multiplier = max(multiplier, 1)
    return int(multiplier), int(shift)


def requantize(
    acc: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    bits: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """clip((acc * multiplier + 2^(shift-1)) >> shift, 0, 2^bits - 1), computed in int64.

    `multiplier` and `shift` broadcast against `acc` (per layer or per output channel). The
    codes (< 2^8, exact in any dtype) go into `out` when given, e.g. acc's own float buffer,
    else into a new int64 array.
    """
    shift = np.asarray(shift, dtype=np.int64)
    q = np.array(acc, dtype=np.int64)  # a copy: the products need 64 bits
    q *= np.asarray(multiplier, dtype=np.int64)
    q += np.left_shift(np.int64(1), shift - 1)
    q >>= shift
    np.maximum(q, 0, out=q)
    return np.minimum(q, (1 << bits) - 1, out=q if out is None else out, casting="unsafe")


def accumulator_bound(weights: np.ndarray, bias: np.ndarray, bits: int) -> np.ndarray:
    """Per output channel, the largest |accumulator| any `bits`-bit input can produce.

    `weights` has the output channel first (O, ...); the result is int64 of shape (O,).
    """
    w = np.abs(np.asarray(weights, dtype=np.int64)).reshape(len(weights), -1)
    top = (1 << bits) - 1
    return top * w.sum(axis=1) + np.abs(np.asarray(bias, dtype=np.int64))
