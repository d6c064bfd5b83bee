"""The layers of a bundle's integer network as ONNX nodes, each exact (docs/ARCHITECTURE.md,
"Exactness"; the carriers and the requantisation forms: `shared.onnx.export`'s docstring).

- `quantize_images`: float32 images to input codes, `quant.quantize_input`'s float64 ops.
- `weighted`: a layer with ReLU (and the max-pool after it): multiply-adds (`accumulate`,
  float32 or int32), then requantisation to the next layer's codes (`scaled_requant`, a
  `qlinear_conv`, the affine float form, or the int64 formula).
- `accumulators`: a layer without requantisation: its accumulators plus bias (the logits,
  or an add's first input).
- `add`: two values brought to one scale by integer multipliers and one shift, in int64.
- `avgpool`, `global_avgpool`: window or map sums in integers, divided with rounding.
- `takes_uint8`: whether a layer will want its input codes as uint8 (so the layer before
  can end in a truncating Cast).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from shared.bundle import Bundle
from shared.errors import SIQError
from shared.network.graph import clamp_top, groups, requantises
from shared.network.quant import (
    FLOAT32_EXACT,
    ROUNDINGS,
    accumulator_bound,
    fit_affine_requant,
    fit_input_quant,
    fit_scaled_requant,
    requant_thresholds,
)
from shared.onnx import proto as pb
from shared.onnx.graph import GraphBuilder, Value, cast, maxpool

__all__ = [
    "QLINEAR_MIN_CHANNELS",
    "Carrier",
    "ExportError",
    "accumulators",
    "add",
    "avgpool",
    "global_avgpool",
    "quantize_images",
    "takes_uint8",
    "weighted",
]

Carrier = Literal["int", "float", "fast"]
QLINEAR_MIN_CHANNELS = 8  # `_qlinear`


class ExportError(SIQError):
    """A valid bundle this export cannot express exactly (for example codebooks wider than
    int8 for the integer carrier): the request is fine, the network is out of its reach."""

    code = "not_exportable"
    http_status = 422


def quantize_images(g: GraphBuilder, name: str, scale: float, bits: int) -> Value:
    """clip(floor(x / scale + 0.5), 0, 2^bits - 1) in float64, as `quant.quantize_input`;
    as clip(round(x * factor), ...) where `fit_input_quant` found a factor equal on every
    float32 image (two nodes fewer: each costs a few microseconds at batch 1)."""
    x = g.op("Cast", [name], "images64", to=pb.DTYPES[np.dtype(np.float64)])
    factor = fit_input_quant(scale, bits)
    if factor is not None:
        x = g.op("Mul", [x, g.const("input_factor", np.float64(factor))], "scaled")
        x = g.op("Round", [x], "rounded")
    else:
        x = g.op("Div", [x, g.const("input_scale", np.float64(scale))], "scaled")
        x = g.op("Add", [x, g.const("half", np.float64(0.5))], "shifted")
        x = g.op("Floor", [x], "rounded")
    top = np.float64((1 << bits) - 1)
    x = g.op("Clip", [x, g.const("zero", np.float64(0)), g.const("top", top)], "clipped")
    return Value(x, np.dtype(np.float64))  # the first layer casts to what it multiplies in


def _floats(carrier: Carrier, layer: dict[str, Any], exact32: bool, weights: int) -> bool:
    """Whether a layer multiplies in float32: never for "int"; for "float" where exact; for
    "fast" where exact, except linear layers of 2^16 weights or more: ONNX Runtime's float32
    convolutions beat ConvInteger, MatMulInteger beats a large float32 MatMul, and a small
    linear layer is not worth the Casts to and from uint8 around it (the timings:
    bench/results/tuning_notes.md)."""
    if carrier == "int" or not exact32:
        return False
    return carrier == "float" or layer["op"] == "conv2d" or weights < 2**16


def takes_uint8(
    g: GraphBuilder, bundle: Bundle, layer: dict[str, Any], carrier: Carrier, bits: int
) -> bool:
    """Whether the layer (likely) takes its input codes as uint8: an integer op, or a
    QLinearConv (`_qlinear`; if its constants are then not found, it casts to float32)."""
    w = g.weights(bundle, layer)
    bias = bundle.tensors[f"{layer['name']}.bias"].astype(np.int64)
    exact32 = int(accumulator_bound(w, bias, bits).max()) < FLOAT32_EXACT
    floats = _floats(carrier, layer, exact32, w.size)
    return not floats or (requantises(layer) and _qlinear(layer, carrier == "fast"))


def _accumulate(
    g: GraphBuilder,
    layer: dict[str, Any],
    x: Value,
    w: np.ndarray,
    floats: bool,
    top_code: int,
    bias: np.ndarray | None = None,
) -> Value:
    """The layer's multiply-adds on codes 0..top_code: float32 (floats) or int32
    accumulators, plus `bias` when given (float Conv only: integers, so every partial sum
    stays exact)."""
    name = layer["name"]
    weights = w if layer["op"] == "conv2d" else w.T  # MatMul takes (inputs, outputs)
    if floats:
        x = cast(g, x, np.float32)
        operands = [x.name, g.const(f"{name}_weights", weights.astype(np.float32))]
        if bias is not None:
            operands.append(g.const(f"{name}_bias", bias.astype(np.float32)))
    else:
        if np.abs(w).max(initial=0) > 127:
            raise ExportError(
                f"layer {name}: weights beyond int8 (codebook_bits > 8) have no integer "
                "ONNX convolution; export with carrier='float'"
            )
        # ONNX Runtime's uint8 x int8 kernels on AVX2 add pairs of products in saturating
        # int16 (vpmaddubsw): exact only while 2 * A * max|w| <= 32767 (A = the top code;
        # 255 * 127 * 2 overflows: measured, logits off by 10^5). Beyond that the weights go
        # as uint8 w + 128 with zero point 128, which its kernels widen before multiplying.
        x = cast(g, x, np.uint8)
        operands = [x.name]
        if _int8_exact(w, top_code):
            operands += [
                g.const(f"{name}_weights", weights.astype(np.int8)),
                g.const("zero_u8", np.uint8(0)),
                g.const("zero_i8", np.int8(0)),
            ]
        else:
            operands += [
                g.const(f"{name}_weights", (weights + 128).astype(np.uint8)),
                g.const("zero_u8", np.uint8(0)),
                g.const("zero_point_128", np.uint8(128)),
            ]
    dtype = np.dtype(np.float32 if floats else np.int32)
    if layer["op"] == "conv2d":
        op = "Conv" if floats else "ConvInteger"
        acc = g.op(op, operands, name, **_conv_attributes(layer))
    else:
        acc = g.op("MatMul" if floats else "MatMulInteger", operands, name)
    return Value(acc, dtype)


def weighted(
    g: GraphBuilder,
    bundle: Bundle,
    layer: dict[str, Any],
    x: Value,
    bits: int,
    carrier: Carrier,
    pool: dict[str, Any] | None,
    uint8_next: bool = False,
) -> Value:
    """A layer with ReLU or ReLU6: accumulate, (pool,) requantise to the next layer's codes
    (which the next layer takes as uint8 when `uint8_next`), clipped at the node's top code
    (`clamp_top`: A, or relu6's clamp_max, which commutes with the max-pool)."""
    name, t = layer["name"], bundle.tensors
    w = g.weights(bundle, layer)
    bias = t[f"{name}.bias"].astype(np.int64)
    multiplier = t[f"{name}.multiplier"].astype(np.int64)
    shift = t[f"{name}.shift"].astype(np.int64)
    exact32 = int(accumulator_bound(w, bias, bits).max()) < FLOAT32_EXACT
    floats = _floats(carrier, layer, exact32, w.size)
    # a float32 Conv adds the (integer) bias itself; then the requantisation's offset is one
    # number for the layer, not one per channel (a scalar Add is the faster one)
    conv_bias = floats and layer["op"] == "conv2d"
    channels = (1, -1, 1, 1) if layer["op"] == "conv2d" else (1, -1)
    top, clip_top = (1 << bits) - 1, clamp_top(layer, bits)
    if conv_bias:
        scaled = _scaled_requant(
            g, layer, x, w, bias, multiplier, shift, bits, pool, uint8_next, carrier == "fast"
        )
        if scaled is not None:
            return scaled
    acc = _accumulate(g, layer, x, w, floats, top, bias if conv_bias else None)
    rest = np.zeros_like(bias) if conv_bias else bias  # the bias still to be added
    bound = accumulator_bound(w, bias if conv_bias else rest, bits)  # |acc| as it arrives
    for dtype in (np.float32, np.float64) if exact32 else (np.float64,):
        # one bound for all channels first: with per-layer multipliers, one offset then
        fitted = fit_affine_requant(
            rest, multiplier, shift, bits, np.full_like(bound, bound.max()), dtype
        ) or fit_affine_requant(rest, multiplier, shift, bits, bound, dtype)
        if fitted is None:
            continue
        scale, offset = fitted
        if np.all(offset == offset[0]):
            offset = offset[:1]
        y = cast(g, acc, dtype)
        if pool is not None and y.dtype == np.float32:  # monotone requantisation: pool first
            y, pool = maxpool(g, y, pool), None
        shape = channels if len(scale) > 1 else ()
        v = g.op("Mul", [y.name, g.const(f"{name}_scale", scale.reshape(shape))], name)
        shape = channels if len(offset) > 1 else ()
        v = g.op("Add", [v, g.const(f"{name}_offset", offset.reshape(shape))], name)
        v = g.op("Floor", [v], name)
        lo, hi = g.const("zero", np.zeros((), dtype)), g.const("top", np.array(clip_top, dtype))
        codes = Value(g.op("Clip", [v, lo, hi], name), np.dtype(dtype))
        break
    else:  # the int64 formula
        wide = cast(g, acc, np.int64).name
        v = g.op("Add", [wide, g.const(f"{name}_bias", rest.reshape(channels))], name)
        v = g.op("Mul", [v, g.const(f"{name}_multiplier", multiplier.reshape(channels))], name)
        half = np.left_shift(np.int64(1), shift - 1).reshape(channels)
        v = g.op("Add", [v, g.const(f"{name}_half", half)], name)
        v = g.op("Max", [v, g.const("zero", np.int64(0))], name)
        step = np.left_shift(np.int64(1), shift).reshape(channels)
        v = g.op("Div", [v, g.const(f"{name}_step", step)], name)
        hi = g.const("top", np.int64(clip_top))
        codes = Value(g.op("Min", [v, hi], name), np.dtype(np.int64))
    return maxpool(g, codes, pool) if pool is not None else codes


def _scaled_requant(
    g: GraphBuilder,
    layer: dict[str, Any],
    x: Value,
    w: np.ndarray,
    bias: np.ndarray,
    multiplier: np.ndarray,
    shift: np.ndarray,
    bits: int,
    pool: dict[str, Any] | None,
    uint8_next: bool,
    qlinear: bool = False,
) -> Value | None:
    """A float32 convolution requantised without an Add (`quant.fit_scaled_requant`: the
    offset goes into the convolution's bias), or None where no such constants exist.

    With one scale and one top threshold B for all channels (per-layer multipliers):
    Conv -> Clip(0, B) -> [MaxPool] -> Mul -> Round, where ONNX Runtime fuses the Clip
    into the convolution (clipping the accumulators at the threshold of the top code is
    the clip of the codes, Mul and rounding being non-decreasing); before a layer that takes
    uint8 codes, the floor rounding ends at that layer's Cast (truncation). Otherwise
    Conv -> [MaxPool] -> Mul -> Round -> Clip. Each node saved is time saved at batch 1.
    The top code is the node's (`clamp_top`): B is then the threshold of relu6's clamp_max."""
    name, top, clip_top = layer["name"], (1 << bits) - 1, clamp_top(layer, bits)
    raw = accumulator_bound(w, np.zeros_like(bias), bits)
    order = ("floor", "half_even") if uint8_next and not _qlinear(layer, qlinear) else ROUNDINGS
    fitted = fit_scaled_requant(bias, multiplier, shift, bits, raw, order)
    if fitted is None:
        return None
    rounding, scale, offset = fitted
    n_bias = bias + offset  # what the convolution adds
    if _qlinear(layer, qlinear) and rounding == "half_even" and _int8_exact(w, top):
        return _qlinear_conv(g, layer, x, w, n_bias, scale, clip_top, pool)
    acc = _accumulate(g, layer, x, w, True, top, n_bias)
    # the least arriving value with the top code, per channel (past float32's integers:
    # none reaches it, and the most that arrives is the clip)
    ceiling = requant_thresholds(bias, multiplier, shift, bits)[:, clip_top - 1] + n_bias
    rounded = np.rint if rounding == "half_even" else np.floor
    if len(scale) == 1 and np.all(ceiling == ceiling[0]):
        c = np.float32(ceiling[0] if ceiling[0] < FLOAT32_EXACT else (raw + n_bias).max())
        if c > 0 and rounded(np.float32(c * scale[0])) <= clip_top:  # checked: none past it
            hi = g.const(f"{name}_ceiling", c)
            acc = Value(
                g.op("Clip", [acc.name, g.const("zero", np.float32(0)), hi], name), acc.dtype
            )
            if pool is not None:
                acc = maxpool(g, acc, pool)
            v = g.op("Mul", [acc.name, g.const(f"{name}_scale", scale.reshape(()))], name)
            if rounding == "floor":
                return Value(v, np.dtype(np.float32), floor_pending=True)
            return Value(g.op("Round", [v], name), np.dtype(np.float32))
    if pool is not None:  # monotone requantisation: pool first
        acc = maxpool(g, acc, pool)
    shape = (1, -1, 1, 1) if len(scale) > 1 else ()
    v = g.op("Mul", [acc.name, g.const(f"{name}_scale", scale.reshape(shape))], name)
    v = g.op("Round" if rounding == "half_even" else "Floor", [v], name)
    lo, hi = g.const("zero", np.float32(0)), g.const("top", np.float32(clip_top))
    return Value(g.op("Clip", [v, lo, hi], name), np.dtype(np.float32))


def _qlinear(layer: dict[str, Any], allowed: bool) -> bool:
    """Whether a float-exact convolution runs as QLinearConv: where allowed ("fast") and it
    has QLINEAR_MIN_CHANNELS input channels or more: ONNX Runtime's int8 kernels beat its
    float Conv where they have channels to work on, and lose on a first layer with one
    (the timings: bench/results/tuning_notes.md)."""
    return allowed and layer["op"] == "conv2d" and layer["in_channels"] >= QLINEAR_MIN_CHANNELS


def _int8_exact(w: np.ndarray, top: int) -> bool:
    """Whether a uint8 x int8 kernel multiplies codes 0..top by w exactly (see _accumulate:
    AVX2 adds pairs of products in saturating int16)."""
    biggest = int(np.abs(w).max(initial=0))
    return biggest <= 127 and 2 * top * biggest <= 32767


def _conv_attributes(layer: dict[str, Any]) -> dict[str, Any]:
    """A convolution node's attributes; `group` only where there are groups (a chain's
    convolutions export as they always did)."""
    k, s, p = layer["kernel_size"], layer["stride"], layer["padding"]
    attributes: dict[str, Any] = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4}
    if groups(layer) > 1:
        attributes["group"] = groups(layer)
    return attributes


def _qlinear_conv(
    g: GraphBuilder,
    layer: dict[str, Any],
    x: Value,
    w: np.ndarray,
    n_bias: np.ndarray,
    scale: np.ndarray,
    top: int,
    pool: dict[str, Any] | None,
) -> Value:
    """Convolution and requantisation in one QLinearConv on uint8 codes: int32 accumulators
    plus the int32 bias, times x_scale * w_scale / y_scale = 1 * scale / 1 in float32,
    rounded half to even, saturated to 0..255: `scaled_requantize(n, scale, 8, "half_even")`
    with the ReLU's clip at 0 (measured equal on 1.6M accumulators, ties included, and
    checked by the tests against the reference); then a uint8 Clip at the top code. ONNX
    Runtime runs it in NHWC with int8 dot products, faster than its float Conv."""
    name = layer["name"]
    per_channel = len(scale) > 1
    operands = [
        cast(g, x, np.uint8).name,
        g.const("one", np.float32(1)),
        g.const("zero_u8", np.uint8(0)),
        g.const(f"{name}_weights", w.astype(np.int8)),
        g.const(f"{name}_scale", scale.astype(np.float32) if per_channel else scale[0]),
        g.const(f"{name}_zero", np.zeros(len(w), np.int8) if per_channel else np.int8(0)),
        g.const("one", np.float32(1)),
        g.const("zero_u8", np.uint8(0)),
        g.const(f"{name}_bias", n_bias.astype(np.int32)),
    ]
    y = Value(
        g.op("QLinearConv", operands, name, **_conv_attributes(layer)),
        np.dtype(np.uint8),
    )
    if pool is not None:  # max-pool and clip commute
        y = maxpool(g, y, pool)
    if top < 255:
        lo, hi = g.const("zero_u8", np.uint8(0)), g.const("top_u8", np.uint8(top))
        y = Value(g.op("Clip", [y.name, lo, hi], name), np.dtype(np.uint8))
    return y


def accumulators(
    g: GraphBuilder,
    bundle: Bundle,
    layer: dict[str, Any],
    x: Value,
    carrier: Carrier,
    dtype: Any = None,
    out: str | None = None,
) -> Value:
    """A weighted node without requantisation (activation "none"): its accumulators plus
    bias, in `dtype` (None: the carrier's, float32 or int32, both exact), named `out` when
    given (the graph's `logits`). They are the logits, or an add's first input."""
    name = layer["name"]
    w = g.weights(bundle, layer)
    bias = bundle.tensors[f"{name}.bias"].astype(np.int64)
    bits = int(bundle.manifest["activation_bits"])
    bound = int(accumulator_bound(w, bias, bits).max())
    floats = _floats(carrier, layer, bound < FLOAT32_EXACT, w.size)
    conv_bias = floats and layer["op"] == "conv2d"  # a float Conv adds the bias itself
    acc = _accumulate(g, layer, x, w, floats, (1 << bits) - 1, bias if conv_bias else None)
    dtype = acc.dtype if dtype is None else np.dtype(dtype)
    if dtype == np.float32 and bound >= FLOAT32_EXACT:
        raise ExportError(f"layer {name}: logits up to {bound} are not exact in float32")
    # exact in both: |acc + bias| < 2^24 in float32, < 2^31 (the bundle's bound) in int32
    if conv_bias:
        total = acc.name
    else:
        channels = (-1, 1, 1) if layer["op"] == "conv2d" else (-1,)
        bias_const = g.const(f"{name}_bias", bias.astype(acc.dtype).reshape(channels))
        if acc.dtype == dtype:
            return Value(g.op("Add", [acc.name, bias_const], name, out=out), dtype)
        total = g.op("Add", [acc.name, bias_const], name)
    if acc.dtype == dtype and out is None:
        return Value(total, dtype)
    return Value(g.op("Cast", [total], name, out=out, to=pb.DTYPES[dtype]), dtype)


def add(g: GraphBuilder, bundle: Bundle, node: dict[str, Any], x: Value, y: Value) -> Value:
    """`clip((x * M_x + y * M_y + 2^(s-1)) >> s, 0, top)` in int64, as the contract writes
    it: x codes or accumulators, y codes; the sum stays below 2^62 (the bundle's add bound),
    and for the non-negative values that survive the clip an int64 Div is the floor."""
    name, t = node["name"], bundle.tensors
    mx, my = (np.int64(m) for m in t[f"{name}.multiplier"].astype(np.int64))
    shift = int(t[f"{name}.shift"][0])
    top = clamp_top(node, int(bundle.manifest["activation_bits"]))
    v = g.op("Mul", [cast(g, x, np.int64).name, g.const(f"{name}_multiplier_x", mx)], name)
    u = g.op("Mul", [cast(g, y, np.int64).name, g.const(f"{name}_multiplier_y", my)], name)
    v = g.op("Add", [v, u], name)
    v = g.op("Add", [v, g.const(f"{name}_half", np.int64(1 << (shift - 1)))], name)
    v = g.op("Max", [v, g.const("zero", np.int64(0))], name)
    v = g.op("Div", [v, g.const(f"{name}_step", np.int64(1 << shift))], name)
    return Value(g.op("Min", [v, g.const("top", np.int64(top))], name), np.dtype(np.int64))


def avgpool(
    g: GraphBuilder, node: dict[str, Any], x: Value, channels: int, carrier: Carrier, bits: int
) -> Value:
    """`(sum + n // 2) // n` over each k x k window (n = k * k): the window sums as a
    depthwise convolution with weights 1 (float32, exact: every sum is an integer below
    A * n < 2^24; ConvInteger for the "int" carrier), then an int32 Add and Div (truncation
    is the floor of these non-negative sums)."""
    name, k = node["name"], node["kernel_size"]
    window = {"kernel_size": k, "stride": node["stride"], "padding": 0, "groups": channels}
    floats = carrier != "int" and ((1 << bits) - 1) * k * k < FLOAT32_EXACT
    if floats:
        ones = g.const(f"{name}_ones", np.ones((channels, 1, k, k), np.float32))
        sums = g.op("Conv", [cast(g, x, np.float32).name, ones], name, **_conv_attributes(window))
        sums = g.op("Cast", [sums], name, to=pb.DTYPES[np.dtype(np.int32)])
    else:
        ones = g.const(f"{name}_ones", np.ones((channels, 1, k, k), np.int8))
        operands = [cast(g, x, np.uint8).name, ones, g.const("zero_u8", np.uint8(0))]
        operands.append(g.const("zero_i8", np.int8(0)))
        sums = g.op("ConvInteger", operands, name, **_conv_attributes(window))
    return _divided(g, name, sums, k * k)


def global_avgpool(
    g: GraphBuilder, node: dict[str, Any], x: Value, positions: int, bits: int
) -> Value:
    """(N, C, H, W) -> (N, C): `(sum + n // 2) // n` over each map (n = H * W = positions),
    summed in int32 where every sum fits (A * n + n // 2 < 2^31), else in int64."""
    name = node["name"]
    wide = ((1 << bits) - 1) * positions + positions // 2 >= 2**31
    dtype = np.dtype(np.int64 if wide else np.int32)
    axes = g.const("spatial_axes", np.array([2, 3], np.int64))
    sums = g.op("ReduceSum", [cast(g, x, dtype).name, axes], name, keepdims=0)
    return _divided(g, name, sums, positions, dtype)


def _divided(g: GraphBuilder, name: str, sums: str, n: int, dtype: Any = np.int32) -> Value:
    """Integer sums of n codes to their rounded mean, `(sum + n // 2) // n`, in `dtype`."""
    dtype = np.dtype(dtype)
    v = g.op("Add", [sums, g.const(f"{name}_half", np.array(n // 2, dtype))], name)
    v = g.op("Div", [v, g.const(f"{name}_count", np.array(n, dtype))], name)
    return Value(v, dtype)
