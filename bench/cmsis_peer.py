"""Arm's CMSIS-NN as a benchmark peer: a bench bundle's network (the MNIST LeNet, the office10
DAGs: depthwise-separable blocks, residual adds, global pooling), quantised the way TensorFlow
Lite Micro does it, run by CMSIS-NN's kernels in the same firmware harness as SIQ's library.

CMSIS-NN is never part of the product: the bench takes a source tree (`--cmsis-nn DIR`, a
checkout or `git archive` of github.com/ARM-software/CMSIS-NN) and compiles its kernels next
to a generated `siq_model.c` that has SIQ's interface (`siq_predict`), so that the harness,
the sizes and the instruction counts are the same code for both.

The network is the SIQ bundle's own: every node's real-valued function is its integer one
without rounding, in its input's code units: a weighted node `y = clip((W x + b) * M, 0, top)`
(W, b the bundle's integers, M = multiplier / 2^shift, top = 2^bits - 1 or relu6's clamp_max),
or `W x + b` where it has no activation (a residual branch, the logits); an add
`clip(x * Mx + y * My, 0, top)`; pools the mean or maximum of their windows.
TFLite Micro's quantisation of that float network:
- activations asymmetric int8: a clipped node's range [0, top] is (scale top / 255, zero
  point -128), its ReLU / ReLU6 and clip the kernel's [-128, 127]; the input pixel / 255 is
  (1/255, -128); the range of an unclipped node (a residual branch, the logits) is
  calibrated on images; pools keep their input's quantisation;
- weights symmetric, per output channel: int8 in [-127, 127], or int4 in [-7, 7] (packed two
  per byte, the first in the low nibble); arm_fully_connected_s4 is per tensor only;
- int32 biases at input scale x weight scale; requantisation multipliers as TFLite's
  QuantizeMultiplier (a Q31 mantissa and a left shift); an add as TFLite's int8 add
  prepares it (both inputs onto twice the larger scale, a left shift of 20).
Kernels (the wrappers TFLite Micro calls): arm_convolve_wrapper_s8 / _s4 (a 1x1 convolution
goes to arm_convolve_1x1_s8_fast / arm_convolve_1x1_s4_fast), arm_depthwise_conv_wrapper_s8
(arm_depthwise_conv_3x3_s8 for 3x3 at padding <= 1) / arm_depthwise_conv_wrapper_s4,
arm_max_pool_s8, arm_avgpool_s8 (also the global average pool), arm_elementwise_add_s8,
arm_fully_connected_per_channel_s8 / arm_fully_connected_s4. A grouped convolution that is
not depthwise has no CMSIS-NN kernel (refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scripts.onchip.board import HOST_HARNESS_C
from scripts.onchip.toolchain import (
    ARM_GCC,
    Firmware,
    cpu_flags,
    firmware_link,
    host_run,
    link_library,
    run_tool,
)
from shared.bundle import Bundle
from shared.network import graph

__all__ = [
    "KERNEL_DIRS",
    "OWN_FLAGS",
    "PeerLayer",
    "PeerNetwork",
    "missing_cmsis_nn",
    "cmsis_nn_version",
    "quantize_tflite",
    "peer_c_source",
    "peer_kernels",
    "peer_header",
    "peer_firmware",
    "peer_host_logits",
]

KERNEL_DIRS = (
    "ConvolutionFunctions",
    "FullyConnectedFunctions",
    "PoolingFunctions",
    "NNSupportFunctions",
    "BasicMathFunctions",
)
# CMSIS-NN's own build: its CMakeLists.txt's CMSIS_OPTIMIZATION_LEVEL, and its inline-assembly
# requantisation (arm_nnsupportfunctions.h)
OWN_FLAGS = ["-Ofast", "-DCMSIS_NN_USE_REQUANTIZE_INLINE_ASSEMBLY"]


def missing_cmsis_nn(root: Path | None) -> str | None:
    """None when `root` is a CMSIS-NN source tree, else why it cannot be used."""
    if root is None:
        return "no CMSIS-NN source tree given (--cmsis-nn DIR: a checkout of ARM-software/CMSIS-NN)"
    if not (root / "Include" / "arm_nnfunctions.h").is_file():
        return f"{root} is not a CMSIS-NN source tree (no Include/arm_nnfunctions.h)"
    absent = [d for d in KERNEL_DIRS if not (root / "Source" / d).is_dir()]
    if absent:
        return f"{root}/Source lacks {', '.join(absent)}"
    return None


def cmsis_nn_version(root: Path, commit: str | None = None) -> str:
    """The commit (given, or the tree's git HEAD) and the pack version its .pdsc states."""
    if commit is None:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        commit = done.stdout.strip() if done.returncode == 0 else None
    pdsc = root / "ARM.CMSIS-NN.pdsc"
    release = None
    if pdsc.is_file():
        m = re.search(r'<release version="([^"]+)"', pdsc.read_text(errors="replace"))
        release = m.group(1) if m else None
    parts = [f"commit {commit}" if commit else "commit unknown (pass --cmsis-nn-commit)"]
    if release and release != "0.0.0":  # a checkout's .pdsc holds a placeholder
        parts.append(f"latest release in its .pdsc: {release}")
    return ", ".join(parts)


@dataclass
class PeerLayer:
    """One CMSIS-NN call: a node of the bundle's graph. conv / fc weights in OHWI / (O, I)
    order, depthwise ones in (1, kh, kw, O), int8 (int4 ones in [-7, 7] before packing)."""

    name: str
    kind: str  # "conv", "dwconv", "fc", "maxpool", "avgpool", "add"
    in_shape: tuple[int, int, int]  # (H, W, C) of its (first) input; fc: (1, 1, I)
    out_shape: tuple[int, int, int]
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    weights: np.ndarray | None = None  # int8 values (int4 ones in [-7, 7] before packing)
    bias: np.ndarray | None = None  # int32
    multiplier: np.ndarray | None = None  # int32, per output channel (or one)
    shift: np.ndarray | None = None
    input_offset: int = 0  # -input zero point
    output_offset: int = 0  # output zero point
    inputs: tuple[str, ...] = ()  # the tensors it reads: node names, "input" the image
    ch_mult: int = 1  # dwconv: output channels per input channel
    # add: (input_1_offset, input_1_mult, input_1_shift, input_2_offset, input_2_mult,
    # input_2_shift, left_shift, out_mult, out_shift), as TFLite's add prepares them
    add_params: tuple[int, ...] = ()


@dataclass
class PeerNetwork:
    weight_bits: int  # 8 or 4
    input_shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    layers: list[PeerLayer] = field(default_factory=list)
    logit_scale: float = 1.0
    logit_zero: int = 0


def _float_nodes(bundle: Bundle) -> list[dict[str, Any]]:
    """The bundle's graph in DAG form with each weighted node's float function in code units
    (module docstring): `w`, `b` scaled by its real multiplier (1 without one), `top` its clip
    (None: accumulators); an add's `rx`, `ry` (its multipliers / 2^shift)."""
    from shared.bundle import layer_weights

    tensors = bundle.tensors
    bits = int(bundle.manifest["activation_bits"])
    out = []
    for node in graph.as_dag(bundle.manifest["graph"]):
        entry = dict(node)
        name = node["name"]
        if node["op"] in graph.WEIGHTED_OPS:
            w = layer_weights(node, tensors).astype(np.float64)
            b = tensors[f"{name}.bias"].astype(np.float64)
            if graph.requantises(node):
                mult = tensors[f"{name}.multiplier"].astype(np.float64)
                shift = tensors[f"{name}.shift"].astype(np.float64)
                real = np.broadcast_to(mult / np.exp2(shift), (len(w),))
                entry["top"] = graph.clamp_top(node, bits)
            else:
                real, entry["top"] = np.ones(len(w)), None
            entry["w"] = w * real.reshape(-1, *([1] * (w.ndim - 1)))
            entry["b"] = b * real
        elif node["op"] == "add":
            mx, my = (float(v) for v in tensors[f"{name}.multiplier"])
            scale = float(np.exp2(float(tensors[f"{name}.shift"][0])))
            entry["rx"], entry["ry"] = mx / scale, my / scale
            entry["top"] = graph.clamp_top(node, bits)
        out.append(entry)
    return out


def _windows(x: np.ndarray, k: int, s: int) -> list[np.ndarray]:
    """The k * k strided views of NCHW maps, one per kernel position (floor mode)."""
    ho, wo = graph.windows(x.shape[2], k, s), graph.windows(x.shape[3], k, s)
    return [
        x[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
        for i in range(k)
        for j in range(k)
    ]


def _float_node(node: dict[str, Any], xs: list[np.ndarray]) -> np.ndarray:
    """One node's float value (code units, NCHW) from its inputs' values, without rounding."""
    op, x = node["op"], xs[0]
    if op == "conv2d":
        k, s, p, g = node["kernel_size"], node["stride"], node["padding"], graph.groups(node)
        x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        cols = np.stack(_windows(x, k, s), axis=2)  # (N, C, k*k, Ho, Wo)
        n, c, _, ho, wo = cols.shape
        o = len(node["w"])
        cols = cols.reshape(n, g, c // g, k * k, ho, wo)
        w = node["w"].reshape(g, o // g, c // g, k * k)
        y = np.einsum("ngckhw,gock->ngohw", cols, w).reshape(n, o, ho, wo)
        y = y + node["b"][None, :, None, None]
    elif op == "linear":
        y = x.reshape(len(x), -1) @ node["w"].T + node["b"]
    elif op == "add":
        y = x * node["rx"] + xs[1] * node["ry"]
    elif op == "maxpool2d":
        return np.max(_windows(x, node["kernel_size"], node["stride"]), axis=0)
    elif op == "avgpool2d":
        return np.mean(_windows(x, node["kernel_size"], node["stride"]), axis=0)
    elif op == "global_avgpool":
        return x.mean(axis=(2, 3))
    elif op == "flatten":
        return x.reshape(len(x), -1)
    else:
        raise ValueError(f"the CMSIS-NN peer has no kernel for {op!r}")
    return y if node.get("top") is None else np.clip(y, 0, node["top"])


def _float_ranges(nodes: list[dict[str, Any]], x: np.ndarray) -> dict[str, tuple[float, float]]:
    """Every node's (min, max) over the images x (input codes, float), for the calibration
    of the tensors whose range no clip fixes; a value is dropped after its last use."""
    last = {name: i for i, node in enumerate(nodes) for name in node["inputs"]}
    values: dict[str, np.ndarray] = {graph.INPUT: x}
    ranges = {}
    for i, node in enumerate(nodes):
        y = _float_node(node, [values[name] for name in node["inputs"]])
        ranges[node["name"]] = (float(y.min()), float(y.max()))
        values[node["name"]] = y
        for name in node["inputs"]:
            if last[name] == i:
                del values[name]
    return ranges


def quantize_multiplier_q31(real: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: real = multiplier / 2^31 * 2^shift, multiplier a Q31 in
    [2^30, 2^31); shift > 0 is a left shift."""
    if real == 0:
        return 0, 0
    mantissa, exponent = math.frexp(real)
    q = round(mantissa * (1 << 31))
    if q == 1 << 31:
        q //= 2
        exponent += 1
    if exponent < -31:
        return 0, 0
    return int(q), int(exponent)


def _per_channel(w: np.ndarray, bits: int, per_tensor: bool) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric integer weights and their scales, per output channel (or one for all)."""
    top = (1 << (bits - 1)) - 1
    flat = w.reshape(len(w), -1)
    peak = np.abs(flat).max() if per_tensor else np.abs(flat).max(axis=1)
    scale = np.broadcast_to(np.where(peak > 0, peak / top, 1.0), (len(w),)).astype(np.float64)
    q = np.clip(np.round(flat / scale[:, None]), -top, top).astype(np.int8)
    return q.reshape(w.shape), scale


def _asymmetric(lo: float, hi: float) -> tuple[float, int]:
    """TFLite's int8 (scale, zero point) of a calibrated range, widened to hold 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-9) / 255.0
    return scale, int(round(-128 - lo / scale))


def _add_params(r1: float, r2: float, s_out: float, zp: tuple[int, int, int]) -> tuple[int, ...]:
    """TFLite's int8 add (PrepareGeneralSubOp): inputs of real scales r1, r2 onto s_out, with
    a left shift of 20; zp: the zero points of input 1, input 2 and the output."""
    left_shift = 20
    twice = 2 * max(r1, r2)
    m1, m2 = quantize_multiplier_q31(r1 / twice), quantize_multiplier_q31(r2 / twice)
    mo = quantize_multiplier_q31(twice / ((1 << left_shift) * s_out))
    return (-zp[0], *m1, -zp[1], *m2, left_shift, *mo)


def _dims(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) as CMSIS-NN holds a (C, H, W) map or a (features,) vector."""
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else (1, 1, shape[0])


def quantize_tflite(bundle: Bundle, calibration: np.ndarray, weight_bits: int = 8) -> PeerNetwork:
    """The bundle's network as CMSIS-NN layers, int8 activations and int8 or int4 weights;
    `calibration`: uint8 images (N, C, H, W) that set the int8 ranges of the accumulator
    tensors (a residual branch before its add, the logits)."""
    if weight_bits not in (8, 4):
        raise ValueError(f"CMSIS-NN weights are int8 or int4, not {weight_bits} bits")
    m = bundle.manifest
    input_scale = float(m["input"]["scale"])
    nodes = _float_nodes(bundle)
    c, h, w = (int(m["input"][k]) for k in ("channels", "height", "width"))
    ranges = _float_ranges(nodes, calibration.astype(np.float64) / 255.0 / input_scale)
    shapes: dict[str, tuple[int, ...]] = {graph.INPUT: (c, h, w)}
    # each tensor's int8 (scale in its node's code units, zero point); the pixels / 255 are
    # int8 (pixel - 128) at scale 1 / 255
    quant: dict[str, tuple[float, int]] = {graph.INPUT: (1.0 / (255.0 * input_scale), -128)}
    alias: dict[str, str] = {}  # a flatten's name -> the tensor it reads
    net = PeerNetwork(weight_bits, (c, h, w), 0)
    for node in nodes:
        name, op = node["name"], node["op"]
        srcs = tuple(alias.get(x, x) for x in node["inputs"])
        src = node["inputs"][0]
        shapes[name] = out = graph.output_shape(node, shapes[src])
        if op == "flatten":
            alias[name] = srcs[0]
            quant[name] = quant[src]
            continue
        if op in ("maxpool2d", "avgpool2d", "global_avgpool"):
            quant[name] = quant[src]  # pools keep their input's quantisation
            ih, iw, ic = _dims(shapes[src])
            k, s = (ih, 1) if op == "global_avgpool" else (node["kernel_size"], node["stride"])
            kind = "maxpool" if op == "maxpool2d" else "avgpool"
            layer = PeerLayer(name, kind, (ih, iw, ic), _dims(out), kernel=k, stride=s)
            if op == "global_avgpool" and ih != iw:
                raise ValueError(f"{name}: the peer pools square maps only, not {ih}x{iw}")
            net.layers.append(dataclasses.replace(layer, inputs=srcs))
            continue
        top = node.get("top")
        quant[name] = (top / 255.0, -128) if top is not None else _asymmetric(*ranges[name])
        s_out, zp_out = quant[name]
        if op == "add":
            (s1, zp1), (s2, zp2) = quant[node["inputs"][0]], quant[node["inputs"][1]]
            params = _add_params(s1 * node["rx"], s2 * node["ry"], s_out, (zp1, zp2, zp_out))
            layer = PeerLayer(name, "add", _dims(out), _dims(out), add_params=params)
            net.layers.append(dataclasses.replace(layer, inputs=srcs, output_offset=zp_out))
            continue
        s_in, zp_in = quant[src]
        wf = node["w"]
        if op == "conv2d":
            k, s, p, g = node["kernel_size"], node["stride"], node["padding"], graph.groups(node)
            ic = node["in_channels"]
            if g == 1:
                kind, wf = "conv", wf.transpose(0, 2, 3, 1)  # OHWI
            elif g == ic:
                kind = "dwconv"
            else:
                raise ValueError(f"{name}: CMSIS-NN has no grouped convolution ({g} groups)")
        else:
            k, s, p, g, kind = 1, 1, 0, 1, "fc"
            flat = shapes[src]
            origin = shapes[srcs[0]]
            if len(flat) == 1 and len(origin) == 3 and origin[1] * origin[2] > 1:
                fc_, fh, fw = origin  # torch's (C, H, W) flatten order -> NHWC
                wf = wf.reshape(len(wf), fc_, fh, fw).transpose(0, 2, 3, 1).reshape(len(wf), -1)
        per_tensor = kind == "fc" and weight_bits == 4  # arm_fully_connected_s4
        q, s_w = _per_channel(wf, weight_bits, per_tensor)
        if kind == "dwconv":
            q = q[:, 0].transpose(1, 2, 0)[None]  # (O, 1, k, k) -> (1, k, k, O)
        bias = np.round(node["b"] / (s_in * s_w)).astype(np.int64)
        pairs = [quantize_multiplier_q31(s_in * sw / s_out) for sw in s_w]
        in_dims = _dims(shapes[srcs[0]]) if kind != "fc" else (1, 1, int(math.prod(shapes[src])))
        net.layers.append(
            PeerLayer(
                name,
                kind,
                in_dims,
                _dims(out),
                kernel=k,
                stride=s,
                padding=p,
                weights=q,
                bias=np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32),
                multiplier=np.array([a for a, _ in pairs], dtype=np.int32),
                shift=np.array([b for _, b in pairs], dtype=np.int32),
                input_offset=-zp_in,
                output_offset=zp_out,
                inputs=srcs,
                ch_mult=len(q[0, 0, 0]) // in_dims[2] if kind == "dwconv" else 1,
            )
        )
    last = nodes[-1]
    if last["op"] not in graph.WEIGHTED_OPS or last.get("top") is not None:
        raise ValueError("the CMSIS-NN peer needs logits: a last weighted node without a clip")
    net.classes = int(shapes[last["name"]][0])
    net.logit_scale, net.logit_zero = quant[last["name"]]
    return net


def _pack_int4(q: np.ndarray) -> np.ndarray:
    """Sequential int4 values, two per byte, the first in the low nibble (CMSIS-NN's order)."""
    flat = q.reshape(-1).astype(np.int16) & 0xF
    if len(flat) % 2:
        flat = np.append(flat, 0)
    return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).view(np.int8)


def _array(ctype: str, name: str, values: np.ndarray) -> str:
    vals = ", ".join(str(int(v)) for v in np.asarray(values).reshape(-1))
    return f"static const {ctype} {name}[{max(1, np.asarray(values).size)}] = {{ {vals} }};\n"


def peer_header(net: PeerNetwork) -> str:
    c, h, w = net.input_shape
    return f"""/* CMSIS-NN peer of a SIQ bundle (bench/cmsis_peer.py): SIQ's interface, for the harness. */
#ifndef SIQ_MODEL_H
#define SIQ_MODEL_H
#include <stdint.h>
#define SIQ_INPUT_CHANNELS {c}
#define SIQ_INPUT_HEIGHT {h}
#define SIQ_INPUT_WIDTH {w}
#define SIQ_NUM_CLASSES {net.classes}
/* pixels: C x H x W, 8-bit; logits: the int8 outputs (scale {net.logit_scale:.6g}, zero point
   {net.logit_zero}). Returns 0, -1 on a null argument, -2 if a scratch buffer is too small. */
int siq_predict(const uint8_t *pixels, int32_t *logits);
#endif
"""


def _buffers(net: PeerNetwork) -> tuple[dict[str, int], list[int]]:
    """Each tensor's activation buffer (tensor -> index) and the buffers' sizes: a tensor
    takes a buffer whose tensor is no longer read (never one its own layer reads), so a
    chain ping-pongs between two and a residual block holds its shortcut in a third."""
    c, h, w = net.input_shape
    size = {graph.INPUT: c * h * w} | {p.name: math.prod(p.out_shape) for p in net.layers}
    last = {p_in: i for i, p in enumerate(net.layers) for p_in in p.inputs}
    last[net.layers[-1].name] = len(net.layers)  # the logits are read at the end
    where = {graph.INPUT: 0}
    sizes = [size[graph.INPUT]]
    held: list[str] = [graph.INPUT]  # the tensor each buffer holds
    for i, p in enumerate(net.layers):
        free = [b for b, t in enumerate(held) if last.get(t, -1) < i]
        b = max(free, key=lambda j: sizes[j]) if free else len(sizes)
        if b == len(sizes):
            sizes.append(0)
            held.append(p.name)
        sizes[b] = max(sizes[b], size[p.name])
        held[b], where[p.name] = p.name, b
    return where, sizes


def _scratch_bytes(p: PeerLayer, s4: bool) -> int:
    """An upper bound of the scratch its CMSIS-NN wrapper asks for on a DSP core (its
    *_get_buffer_size; siq_predict checks it before each call)."""
    ih, iw, ic = p.in_shape
    if p.kind == "conv":
        if p.kernel == 1 and p.stride == 1 and p.padding == 0 and not s4:
            return 0  # arm_convolve_1x1_s8_fast
        cols = ic * p.kernel * p.kernel
        return 4 * (cols + (-cols) % 4)
    if p.kind == "dwconv":
        if p.kernel == 3 and p.padding <= 1 and p.ch_mult == 1 and not s4:
            return 0  # arm_depthwise_conv_3x3_s8
        return 2 * ic * p.kernel * p.kernel
    if p.kind == "avgpool":
        return 4 * ic
    return 0


def _layer_call(p: PeerLayer, s4: bool, src: list[str], dst: str) -> tuple[list[str], list[str]]:
    """(the constant arrays, the body) of one layer's function."""
    ih, iw, ic = p.in_shape
    oh, ow, oc = p.out_shape
    n = p.name
    if p.kind in ("maxpool", "avgpool"):
        kernel = "arm_max_pool_s8" if p.kind == "maxpool" else "arm_avgpool_s8"
        ctx = "{ scratch, sizeof scratch }" if p.kind == "avgpool" else "{ NULL, 0 }"
        body = [
            f"    const cmsis_nn_context ctx = {ctx};",
            f"    const cmsis_nn_pool_params pp = {{ {{ {p.stride}, {p.stride} }}, {{ 0, 0 }}, {{ -128, 127 }} }};",
            f"    const cmsis_nn_dims in = {{ 1, {ih}, {iw}, {ic} }}, f = {{ 1, {p.kernel}, {p.kernel}, 1 }}, out = {{ 1, {oh}, {ow}, {oc} }};",
        ]
        if p.kind == "avgpool":
            body += [
                f"    if (arm_avgpool_s8_get_buffer_size({ow}, {ic}) > (int32_t)sizeof scratch) {{",
                "        return -2;",
                "    }",
            ]
        return [], [*body, f"    return {kernel}(&ctx, &pp, &in, {src[0]}, &f, &out, {dst});"]
    if p.kind == "add":
        a = p.add_params
        return [], [
            f"    return arm_elementwise_add_s8({src[0]}, {src[1]}, {a[0]}, {a[1]}, {a[2]}, "
            f"{a[3]}, {a[4]}, {a[5]}, {a[6]}, {dst}, {p.output_offset}, {a[7]}, {a[8]}, "
            f"-128, 127, {oh * ow * oc});"
        ]
    assert p.weights is not None and p.bias is not None
    assert p.multiplier is not None and p.shift is not None
    wname = f"cmsis_w_{n}"
    data = [
        _array("int8_t", wname, _pack_int4(p.weights) if s4 else p.weights),
        _array("int32_t", f"cmsis_b_{n}", p.bias),
        _array("int32_t", f"cmsis_m_{n}", p.multiplier),
        _array("int32_t", f"cmsis_s_{n}", p.shift),
    ]
    width = "s4" if s4 else "s8"
    args = f"&in, {src[0]}, &f, {wname}, &bias, cmsis_b_{n}, &out, {dst}"
    dims = [
        f"    const cmsis_nn_dims in = {{ 1, {ih}, {iw}, {ic} }}, out = {{ 1, {oh}, {ow}, {oc} }};",
        f"    const cmsis_nn_dims bias = {{ 1, 1, 1, {oc} }};",
    ]
    if p.kind == "fc":
        body = [
            f"    const cmsis_nn_fc_params fp = {{ {p.input_offset}, 0, {p.output_offset}, {{ -128, 127 }} }};",
            *dims,
            f"    const cmsis_nn_dims f = {{ {ic}, 1, 1, {oc} }};",
            "    const cmsis_nn_context ctx = { NULL, 0 };",
        ]
        if s4:
            return data, [
                *body,
                f"    const cmsis_nn_per_tensor_quant_params q = {{ cmsis_m_{n}[0], cmsis_s_{n}[0] }};",
                f"    return arm_fully_connected_s4(&ctx, &fp, &q, {args});",
            ]
        return data, [
            *body,
            f"    const cmsis_nn_per_channel_quant_params q = {{ (int32_t *)cmsis_m_{n}, (int32_t *)cmsis_s_{n} }};",
            f"    return arm_fully_connected_per_channel_s8(&ctx, &fp, &q, {args});",
        ]
    tiles = (
        f"{{ {p.stride}, {p.stride} }}, {{ {p.padding}, {p.padding} }}, {{ 1, 1 }}, {{ -128, 127 }}"
    )
    if p.kind == "conv":
        params = f"    const cmsis_nn_conv_params cp = {{ {p.input_offset}, {p.output_offset}, {tiles} }};"
        fdims = f"    const cmsis_nn_dims f = {{ {oc}, {p.kernel}, {p.kernel}, {ic} }};"
        size = f"arm_convolve_wrapper_{width}_get_buffer_size(&cp, &in, &f, &out)"
        call = f"arm_convolve_wrapper_{width}(&ctx, &cp, &q, {args})"
    else:
        params = (
            f"    const cmsis_nn_dw_conv_params cp = {{ {p.input_offset}, {p.output_offset}, "
            f"{p.ch_mult}, {tiles} }};"
        )
        fdims = f"    const cmsis_nn_dims f = {{ 1, {p.kernel}, {p.kernel}, {oc} }};"
        size = f"arm_depthwise_conv_wrapper_{width}_get_buffer_size(&cp, &in, &f, &out)"
        call = f"arm_depthwise_conv_wrapper_{width}(&ctx, &cp, &q, {args})"
    return data, [
        params,
        f"    const cmsis_nn_per_channel_quant_params q = {{ (int32_t *)cmsis_m_{n}, (int32_t *)cmsis_s_{n} }};",
        *dims,
        fdims,
        "    const cmsis_nn_context ctx = { scratch, sizeof scratch };",
        f"    if ({size} > (int32_t)sizeof scratch) {{",
        "        return -2;",
        "    }",
        f"    return {call};",
    ]


def peer_c_source(net: PeerNetwork) -> str:
    """siq_model.c: the weights, the activation buffers (`_buffers`), a scratch buffer, and
    one noinline function per layer calling its CMSIS-NN kernel."""
    s4 = net.weight_bits == 4
    c, h, w = net.input_shape
    where, sizes = _buffers(net)
    scratch = max([_scratch_bytes(p, s4) for p in net.layers] + [4])
    parts = [
        '#include <stddef.h>\n#include <stdint.h>\n#include "arm_nnfunctions.h"\n'
        '#include "siq_model.h"\n\n',
        *(
            f"static int8_t buf_{i}[{n}] __attribute__((aligned(4)));\n"
            for i, n in enumerate(sizes)
        ),
        f"static int32_t scratch[{(scratch + 3) // 4}];\n\n",
    ]
    calls = []
    for p in net.layers:
        data, body = _layer_call(
            p, s4, [f"buf_{where[t]}" for t in p.inputs], f"buf_{where[p.name]}"
        )
        parts += data
        calls.append(
            f"static int __attribute__((noinline)) layer_{p.name}(void)\n{{\n"
            + "\n".join(body)
            + "\n}\n\n"
        )
    parts += calls
    steps = "\n".join(
        f"    if (layer_{p.name}() != 0) {{\n        return -2;\n    }}" for p in net.layers
    )
    parts.append(
        f"""int siq_predict(const uint8_t *pixels, int32_t *logits)
{{
    int32_t i;
    if (pixels == NULL || logits == NULL) {{
        return -1;
    }}
    /* C x H x W pixels -> H x W x C int8 (pixel - 128) */
    for (i = 0; i < {h * w * c}; i++) {{
        buf_{where[graph.INPUT]}[(i % {h * w}) * {c} + i / {h * w}] = (int8_t)(pixels[i] - 128);
    }}
{steps}
    for (i = 0; i < {net.classes}; i++) {{
        logits[i] = buf_{where[net.layers[-1].name]}[i];
    }}
    return 0;
}}
"""
    )
    return "".join(parts)


def peer_kernels(net: PeerNetwork) -> list[str]:
    """The CMSIS-NN functions its layers call, in order of first call (a wrapper names the
    wrapper; which kernel it chooses is the module docstring's)."""
    called = re.findall(r"return (arm_\w+)\(", peer_c_source(net))
    return list(dict.fromkeys(called))


def _compile_kernels(root: Path, out: Path, compiler: list[str]) -> list[Path]:
    """Every C file of KERNEL_DIRS compiled once into `out` (a folder per compiler + flags)."""
    out.mkdir(parents=True, exist_ok=True)
    objs = []
    for d in KERNEL_DIRS:
        for src in sorted((root / "Source" / d).glob("*.c")):
            if re.search(r"_f(16|32)$|_flt$", src.stem):
                continue  # the float kernels (off in CMSIS-NN's own build too)
            obj = out / f"{src.stem}.o"
            if not obj.exists():
                run_tool([*compiler, "-c", "-o", str(obj), str(src)])
            objs.append(obj)
    return objs


def _compiler(root: Path, cpu: str | None, opt: list[str]) -> list[str]:
    """gcc (cpu None: the host's) with CMSIS-NN's include folder, unused code removable."""
    # not -ffreestanding: it implies -fno-builtin, and CMSIS-NN reads unaligned words with
    # memcpy(&v, p, 4), which must compile to one load as in its own build
    base = ["gcc"] if cpu is None else [ARM_GCC, *cpu_flags(cpu)]
    defines = ["-DARM_NN_ENABLE_F32=0", "-DARM_NN_ENABLE_F16=0"]  # as its CMakeLists.txt
    return [
        *base,
        "-std=c99",
        *defines,
        *opt,
        "-ffunction-sections",
        "-fdata-sections",
        f"-I{root / 'Include'}",
    ]


def _write_model(net: PeerNetwork, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    (work / "siq_model.h").write_text(peer_header(net))
    src = work / "siq_model.c"
    src.write_text(peer_c_source(net))
    return src


def peer_firmware(
    net: PeerNetwork, root: Path, work: Path, cpu: str, images: np.ndarray, opt: list[str]
) -> Firmware:
    """The peer library (its model + the CMSIS-NN kernels it reaches) and the harness, built
    for `cpu` with `opt` (e.g. OWN_FLAGS, ["-O2"], ["-Os"])."""
    src = _write_model(net, work)
    compiler = _compiler(root, cpu, opt)
    tag = hashlib.sha256(" ".join(compiler).encode()).hexdigest()[:12]  # one folder per command
    kernels = _compile_kernels(root, work.parent / f"cmsis_kernels_{cpu}_{tag}", compiler)
    model = work / f"peer_model_{cpu}.o"
    run_tool([*compiler, "-c", "-o", str(model), str(src)])
    lib = link_library([model, *kernels], work / f"peer_{cpu}.o", ["siq_predict"])
    return firmware_link(lib, work, cpu, images, [*cpu_flags(cpu), *opt])


def peer_host_logits(net: PeerNetwork, root: Path, work: Path, images: np.ndarray) -> np.ndarray:
    """The peer run on the host (CMSIS-NN's portable C path), for its accuracy: int8 logits."""
    src = _write_model(net, work)
    compiler = _compiler(root, None, ["-O2"])
    kernels = _compile_kernels(root, work.parent / "cmsis_kernels_host", compiler)
    (work / "host_main.c").write_text(HOST_HARNESS_C)
    exe = work / "peer_host"
    run_tool(
        [
            *compiler,
            f"-I{work}",
            "-Wl,--gc-sections",
            "-o",
            str(exe),
            str(src),
            str(work / "host_main.c"),
            *map(str, kernels),
        ]
    )
    return host_run(exe, images, net.classes, timeout=600)
