"""Pure quantisation primitives shared by the server (which chooses the constants) and the
integer engine (which applies them). Semantics: docs/ARCHITECTURE.md, "The integer network".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.network.graph import round_half_up

__all__ = [
    "MAX_ACCUMULATOR",
    "FLOAT32_EXACT",
    "FLOAT64_EXACT",
    "carrier_dtype",
    "quantize_input",
    "quantize_multiplier",
    "requantize",
    "requant_thresholds",
    "fit_affine_requant",
    "affine_requantize",
    "fit_scaled_requant",
    "scaled_requantize",
    "fit_input_quant",
    "scaled_quantize_input",
    "accumulator_bound",
    "MAX_ADD_SUM",
    "quantize_add_multipliers",
    "add_bound",
    "relu6_clamp_max",
]

# acc * multiplier (multiplier < 2^31) must fit in int64.
MAX_ACCUMULATOR = 2**31
# an add's |x| * M_x + A * M_y, so that the sum plus its rounding term 2^(shift-1) fits int64
MAX_ADD_SUM = 2**62
# Integers below these magnitudes, and every sum of them that stays below, are exact in
# float32 / float64 (24 and 53 bits of significand).
FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53


def carrier_dtype(bound: int) -> np.dtype:
    """The cheapest dtype in which every accumulator with |acc| <= bound is exact."""
    if bound < FLOAT32_EXACT:
        return np.dtype(np.float32)
    if bound < FLOAT64_EXACT:
        return np.dtype(np.float64)
    return np.dtype(np.int64)


def quantize_input(
    x: np.ndarray,
    scale: float,
    bits: int,
    out: np.ndarray | None = None,
    work: np.ndarray | None = None,
) -> np.ndarray:
    """Float image values (about [0, 1]) to unsigned `bits`-bit codes: clip(round_half_up(x /
    scale), 0, 2^bits - 1), computed in float64 (in `work`, float64 of x's shape, if given).
    Returns int64 codes of x's shape, or writes them into `out` (any dtype, e.g. a view)."""
    top = (1 << bits) - 1
    q = np.divide(x, scale, dtype=np.float64, out=work)
    round_half_up(q, out=q)
    if out is None:
        return np.clip(q, 0, top, out=q).astype(np.int64)
    return np.clip(q, 0, top, out=out, casting="unsafe")  # integers: exact in any dtype


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


def quantize_add_multipliers(ratio_x: float, ratio_y: float) -> tuple[np.ndarray, np.ndarray]:
    """An add's constants for `out = clip((x * M_x + y * M_y + 2^(s-1)) >> s, 0, top)` with
    `M_x / 2^s ~ ratio_x`, `M_y / 2^s ~ ratio_y` (ratio = input scale / output scale): one
    shared shift, chosen for the larger ratio as `quantize_multiplier` does; the other
    multiplier is rounded to that shift. Returns (multiplier int32 (2,), shift int32 (1,))."""
    big = max(ratio_x, ratio_y)
    if not (math.isfinite(ratio_x) and math.isfinite(ratio_y)) or min(ratio_x, ratio_y) <= 0:
        raise ValueError(f"add ratios must be positive and finite, got {ratio_x!r}, {ratio_y!r}")
    m, shift = quantize_multiplier(big)
    # the other ratio rounded half up at that shift (never above the larger's multiplier)
    pair = [m if r == big else min(m, math.floor(r * 2.0**shift + 0.5)) for r in (ratio_x, ratio_y)]
    return np.array(pair, dtype=np.int32), np.array([shift], dtype=np.int32)


def add_bound(bound_x: np.ndarray | int, multiplier: np.ndarray, bits: int) -> int:
    """The largest |x * M_x + y * M_y| of an add whose first input is bounded by `bound_x`
    (per channel, or A for codes) and whose second is codes; must stay below MAX_ADD_SUM."""
    mx, my = (int(v) for v in np.asarray(multiplier, dtype=np.int64))
    return int(np.max(bound_x)) * mx + ((1 << bits) - 1) * my


def relu6_clamp_max(output_scale: float, bits: int) -> int:
    """The code of 6.0 at a relu6 node's output scale, `min(A, round_half_up(6 / s_y))`:
    the upper clip that the writer stores as `clamp_max`."""
    top = (1 << bits) - 1
    return int(max(1, min(top, math.floor(6.0 / output_scale + 0.5))))


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


def requant_thresholds(
    bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, bits: int
) -> np.ndarray:
    """Where `requantize(acc + bias, ...)` steps: t[o, k-1] is the smallest integer `acc` whose
    code is >= k, for k = 1 .. 2^bits - 1; int64 (O, 2^bits - 1), saturated at +-2^61.

    code >= k  <=>  (acc + b) * m + 2^(s-1) >= k * 2^s  <=>  acc >= ceil((2k - 1) 2^(s-1) / m) - b,
    evaluated with Python integers (the numerator reaches 2^70).
    """
    bias = np.asarray(bias, dtype=np.int64).reshape(-1)
    m, s = _per_channel(multiplier, len(bias)), _per_channel(shift, len(bias))
    top = (1 << bits) - 1
    cap = 1 << 61
    steps: dict[tuple[int, int], np.ndarray] = {}
    out = np.empty((len(bias), top), dtype=np.int64)
    for o, (mo, so) in enumerate(zip(m.tolist(), s.tolist(), strict=True)):
        if (mo, so) not in steps:
            steps[(mo, so)] = np.array(
                [min(-((-(2 * k - 1) << (so - 1)) // mo), cap) for k in range(1, top + 1)],
                dtype=np.int64,
            )
        out[o] = steps[(mo, so)] - bias[o]
    return out


def _per_channel(values: np.ndarray, channels: int) -> np.ndarray:
    """A per-layer (1,) or per-channel (O,) integer constant as int64 of shape (O,)."""
    return np.broadcast_to(np.asarray(values, dtype=np.int64).reshape(-1), (channels,))


def affine_requantize(
    acc: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    bits: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """clip(floor(acc * scale + offset), 0, 2^bits - 1), each step rounded in scale's dtype.

    With constants from `fit_affine_requant` this equals `requantize(acc + bias, ...)` exactly, in
    four passes over a float array instead of seven over int64. `out` (e.g. acc itself) must have
    scale's dtype: a wider intermediate would round differently from what was verified.
    """
    if out is not None and out.dtype != scale.dtype:
        raise TypeError(f"out is {out.dtype}, the constants are {scale.dtype}")
    y = np.multiply(acc, scale, out=out, dtype=scale.dtype)
    y += offset
    np.floor(y, out=y)
    np.clip(y, 0, (1 << bits) - 1, out=y)
    return y


def fit_affine_requant(
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    bits: int,
    bound: np.ndarray,
    dtype: np.dtype | type,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-channel `(scale, offset)` in `dtype` with which `affine_requantize(acc, ...)` equals
    `requantize(acc + bias, multiplier, shift, bits)` for every integer |acc| <= bound[o]
    (acc without the bias), or None when no such pair is found in `dtype`.

    The equality is checked, not assumed. Both sides are non-decreasing in acc (every float
    step is monotonic for a positive scale), so they agree on the whole range as soon as they
    agree on both sides of each threshold of `requant_thresholds` that lies in the range; the
    check evaluates `affine_requantize` itself on those points.
    """
    dtype = np.dtype(dtype)
    top = (1 << bits) - 1
    t = requant_thresholds(bias, multiplier, shift, bits)  # (O, top)
    o = len(t)
    b = _per_channel(bound, o)[:, None]
    if b.max() >= 2 ** (np.finfo(dtype).nmant + 1):
        return None  # the accumulators themselves are not exact in dtype
    k = np.arange(1, top + 1, dtype=np.int64)[None, :]
    # code < k at the last integer below t (if in range), code >= k at t (if in range)
    below_ok = t - 1 >= -b
    below = np.minimum(t - 1, b)
    above_ok = t <= b
    above = np.maximum(t, -b)
    m, s = _per_channel(multiplier, o), _per_channel(shift, o)
    scale = (m.astype(np.float64) * np.exp2(-s.astype(np.float64))).astype(dtype)[:, None]
    # the offset window left by the thresholds for this scale (float64 is only the guess;
    # the check below is what decides)
    a = scale.astype(np.float64)
    lo = np.where(above_ok, k - a * above, -np.inf).max(axis=1, initial=-np.inf)
    hi = np.where(below_ok, k - a * below, np.inf).min(axis=1, initial=np.inf)
    offset = np.where(
        np.isfinite(lo) & np.isfinite(hi),
        (lo + hi) / 2,
        np.where(np.isfinite(lo), lo + 0.5, np.where(np.isfinite(hi), hi - 0.5, 0.0)),
    )
    scale, offset = scale[:, 0], offset.astype(dtype)
    if np.all(scale == scale[0]):
        scale = scale[:1]  # one factor per layer: a broadcast scalar multiplies faster
    if not (np.all(lo < hi) and np.all(scale > 0) and np.all(np.isfinite(offset))):
        return None
    # broadcast along the channel axis, as the engine applies them
    code_below = affine_requantize(below.T.astype(dtype), scale, offset, bits).T
    code_above = affine_requantize(above.T.astype(dtype), scale, offset, bits).T
    if np.any(below_ok & (code_below > k - 1)) or np.any(above_ok & (code_above < k)):
        return None
    return scale, offset


ROUNDINGS = ("half_even", "floor")  # ONNX Round, Floor


def scaled_requantize(n: np.ndarray, scale: Any, bits: int, rounding: str) -> np.ndarray:
    """clip(rounding(float32(n * scale)), 0, 2^bits - 1) for integers n exact in float32:
    requantisation as one Mul, one Round (half to even) or Floor and a Clip, the offset
    already in n (`fit_scaled_requant`)."""
    y = np.multiply(np.asarray(n, dtype=np.float32), scale, dtype=np.float32)
    y = np.rint(y) if rounding == "half_even" else np.floor(y)
    return np.clip(y, 0, (1 << bits) - 1)


def fit_scaled_requant(
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    bits: int,
    bound: np.ndarray,
    roundings: tuple[str, ...] = ROUNDINGS,
) -> tuple[str, np.ndarray, np.ndarray] | None:
    """`(rounding, scale, offset)` with which `scaled_requantize(acc + bias + offset, scale,
    bits, rounding)` equals `requantize(acc + bias, multiplier, shift, bits)` for every integer
    |acc| <= bound[o] (acc without the bias), trying `roundings` in turn: float32 `scale` (one per layer when the
    multipliers are, else per channel) and an integer `offset` per channel, which a float32
    convolution adds with its (integer) bias, so the requantisation needs no Add. None when
    no such constants are found, or `acc + bias + offset` could leave float32's integers.

    Why it can exist: requantize(a) = floor(a * m / 2^s + 1/2), so round(a * m / 2^s) (ties
    aside) and floor((a + 2^(s-1) / m) * m / 2^s) are the same steps; float32 rounds the
    scale and the products, so candidates near them are tried and each is checked, not
    assumed, on both sides of every threshold in range (`fit_affine_requant`'s argument:
    both sides are non-decreasing in acc).
    """
    top = (1 << bits) - 1
    bias = np.asarray(bias, dtype=np.int64).reshape(-1)
    t = requant_thresholds(bias, multiplier, shift, bits)  # (O, top), over acc
    o = len(t)
    b = _per_channel(bound, o)[:, None]
    m, s = _per_channel(multiplier, o), _per_channel(shift, o)
    real = m.astype(np.float64) * np.exp2(-s.astype(np.float64))
    k = np.arange(1, top + 1, dtype=np.int64)[None, :]
    below_ok, below = t - 1 >= -b, np.minimum(t - 1, b)
    above_ok, above = t <= b, np.maximum(t, -b)
    one_scale = bool(np.all(real == real[0]))
    for rounding in roundings:
        step = 0.5 if rounding == "half_even" else 0.0  # code >= k once n * scale >= k - step
        base = np.zeros(o) if rounding == "half_even" else 0.5 / real
        found = _search_scaled(
            bias,
            real,
            base,
            step,
            rounding,
            bits,
            b,
            k,
            below_ok,
            below,
            above_ok,
            above,
            one_scale,
        )
        if found is not None:
            scale, offset = found
            if int((b[:, 0] + np.abs(bias + offset)).max()) >= 2**24:
                continue
            return rounding, scale, offset
    return None


def _search_scaled(
    bias, real, base, step, rounding, bits, b, k, below_ok, below, above_ok, above, one_scale
):
    """Candidates for `fit_scaled_requant` in one rounding: per group of channels (all of
    them when they share the multiplier), integer offsets near `base` and float32 scales
    near the real one or mid-window, each checked exactly. (scale, offset) or None."""
    o = len(bias)
    groups = [np.arange(o)] if one_scale else [np.array([i]) for i in range(o)]
    scales = np.zeros(o, np.float32)
    offsets = np.zeros(o, np.int64)
    for group in groups:
        g0 = group[0]
        hit = None
        for delta in (0, -1, 1, -2, 2, -3, 3):
            offset = np.round(base[group]).astype(np.int64) + delta
            n_above = above[group] + (bias[group] + offset)[:, None]  # n at each threshold
            n_below = below[group] + (bias[group] + offset)[:, None]
            kk = k - step
            ok_a, ok_b = above_ok[group] & (n_above > 0), below_ok[group] & (n_below > 0)
            if np.any(above_ok[group] & (n_above <= 0)):
                continue  # a code >= 1 needs n > 0
            lo = np.where(ok_a, kk / np.maximum(n_above, 1), 0.0).max(initial=0.0)
            hi = np.where(ok_b, kk / np.maximum(n_below, 1), np.inf).min(initial=np.inf)
            if not lo < hi:
                continue
            guess = np.float32(real[g0])
            mid = np.float32((lo + hi) / 2) if np.isfinite(hi) else np.float32(lo * (1 + 2**-20))
            candidates = [guess, mid]
            for c in (guess, mid):
                candidates += [np.nextafter(c, np.float32(np.inf)), np.nextafter(c, np.float32(0))]
            for c in candidates:
                if not c > 0:
                    continue
                code_above = scaled_requantize(n_above, c, bits, rounding)
                code_below = scaled_requantize(n_below, c, bits, rounding)
                if np.any(above_ok[group] & (code_above < k)) or np.any(
                    below_ok[group] & (code_below > k - 1)
                ):
                    continue
                hit = (c, offset)
                break
            if hit is not None:
                break
        if hit is None:
            return None
        scales[group], offsets[group] = hit
    return (scales[:1] if one_scale else scales), offsets


def scaled_quantize_input(x: np.ndarray, factor: float, bits: int) -> np.ndarray:
    """clip(round_half_even(float64(x) * factor), 0, 2^bits - 1): `quantize_input` as one
    Mul and one Round where `fit_input_quant` found the factor."""
    y = np.rint(np.multiply(x, np.float64(factor), dtype=np.float64))
    return np.clip(y, 0, (1 << bits) - 1)


def fit_input_quant(scale: float, bits: int) -> float | None:
    """A float64 factor with which `scaled_quantize_input(x, factor, bits)` equals
    `quantize_input(x, scale, bits)` for every float32 x, or None.

    Both are non-decreasing in x, so they are equal once their 2^bits - 1 thresholds (the
    least float32 reaching each code) are: found by bisection over float32's bit patterns,
    which are ordered like the values for x >= 0 (negatives give code 0 in both)."""
    top = (1 << bits) - 1

    def thresholds(code: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        lo = np.zeros(top, np.int64)
        hi = np.full(top, 0x7F800000, np.int64)  # +inf: code top in both
        want = np.arange(1, top + 1)
        while np.any(lo < hi):
            mid = (lo + hi) // 2
            reached = code(mid.astype(np.uint32).view(np.float32)) >= want
            hi = np.where(reached, mid, hi)
            lo = np.where(reached, lo, mid + 1)
        return lo

    exact = thresholds(lambda x: quantize_input(x, scale, bits))
    factor = 1.0 / scale
    for candidate in [factor, *np.nextafter(factor, [np.inf, 0.0]).tolist()]:

        def scaled(x: np.ndarray, f: float = candidate) -> np.ndarray:
            return scaled_quantize_input(x, f, bits)

        if np.array_equal(thresholds(scaled), exact):
            return float(candidate)
    return None


def accumulator_bound(weights: np.ndarray, bias: np.ndarray, bits: int) -> np.ndarray:
    """Per output channel, the largest |accumulator| any `bits`-bit input can produce.

    `weights` has the output channel first (O, ...); the result is int64 of shape (O,).
    """
    w = np.abs(np.asarray(weights, dtype=np.int64)).reshape(len(weights), -1)
    top = (1 << bits) - 1
    return top * w.sum(axis=1) + np.abs(np.asarray(bias, dtype=np.int64))
