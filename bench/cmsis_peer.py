"""Arm's CMSIS-NN as a benchmark peer: the bench's MNIST network, quantised the way TensorFlow
Lite Micro does it, run by CMSIS-NN's kernels in the same firmware harness as SIQ's library.

CMSIS-NN is never part of the product: the bench takes a source tree (`--cmsis-nn DIR`, a
checkout or `git archive` of github.com/ARM-software/CMSIS-NN) and compiles its kernels next
to a generated `siq_model.c` that has SIQ's interface (`siq_predict`), so that the harness,
the sizes and the instruction counts are the same code for both.

The network is the SIQ bundle's own: every layer's real-valued function is its integer one
without rounding, `y = clip((W x + b) * M, 0, A)` in the previous layer's code units (W, b
the bundle's integers, M = multiplier / 2^shift, A = 2^bits - 1), the logits `W x + b`.
TFLite Micro's quantisation of that float network:
- activations asymmetric int8: a hidden layer's range [0, A] is (scale A / 255, zero point
  -128), its ReLU and clip the kernel's [-128, 127]; the input pixel / 255 is (1/255, -128);
  the logits' range is calibrated on images;
- weights symmetric, per output channel: int8 in [-127, 127], or int4 in [-7, 7] (packed two
  per byte, the first in the low nibble); arm_fully_connected_s4 is per tensor only;
- int32 biases at input scale x weight scale; requantisation multipliers as TFLite's
  QuantizeMultiplier (a Q31 mantissa and a left shift).
Kernels: arm_convolve_wrapper_s8 / arm_convolve_s4, arm_max_pool_s8,
arm_fully_connected_per_channel_s8 / arm_fully_connected_s4.
"""

from __future__ import annotations

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
    "peer_header",
    "peer_firmware",
    "peer_host_logits",
]

KERNEL_DIRS = (
    "ConvolutionFunctions",
    "FullyConnectedFunctions",
    "PoolingFunctions",
    "NNSupportFunctions",
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
    """One CMSIS-NN call. conv / fc: int8 (or packed int4) weights in OHWI / (O, I) order."""

    name: str
    kind: str  # "conv", "pool", "fc"
    in_shape: tuple[int, int, int]  # (H, W, C); fc: (1, 1, I)
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


@dataclass
class PeerNetwork:
    weight_bits: int  # 8 or 4
    input_shape: tuple[int, int, int]  # (C, H, W)
    classes: int
    layers: list[PeerLayer] = field(default_factory=list)
    logit_scale: float = 1.0
    logit_zero: int = 0


def _float_chain(bundle: Bundle) -> list[dict[str, Any]]:
    """The bundle's chain as float layers in code units (module docstring)."""
    m = bundle.manifest
    chain = graph.as_chain(m["graph"])
    if chain is None:
        raise ValueError("the CMSIS-NN peer builds chain networks only")
    from shared.bundle import layer_weights

    out = []
    for layer in chain:
        entry = dict(layer)
        if layer["op"] in ("conv2d", "linear"):
            name = layer["name"]
            w = layer_weights(layer, bundle.tensors).astype(np.float64)
            b = bundle.tensors[f"{name}.bias"].astype(np.float64)
            if layer["relu"]:
                mult = bundle.tensors[f"{name}.multiplier"].astype(np.float64)
                shift = bundle.tensors[f"{name}.shift"].astype(np.float64)
                real = np.broadcast_to(mult / np.exp2(shift), (len(w),))
            else:
                real = np.ones(len(w))
            entry["w"], entry["b"], entry["real"] = w, b, real
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


def _float_forward(chain: list[dict[str, Any]], x: np.ndarray, top: int) -> np.ndarray:
    """NCHW float forward of the chain (code units), for the logits' calibration."""
    for layer in chain:
        op = layer["op"]
        if op == "conv2d":
            k, s, p = layer["kernel_size"], layer["stride"], layer["padding"]
            x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            cols = np.stack(_windows(x, k, s), axis=2)  # (N, C, k*k, Ho, Wo)
            w = layer["w"].reshape(len(layer["w"]), x.shape[1], k * k)
            acc = np.einsum("nckhw,ock->nohw", cols, w) + layer["b"][None, :, None, None]
            x = acc * layer["real"][None, :, None, None]
        elif op == "linear":
            x = (x.reshape(len(x), -1) @ layer["w"].T + layer["b"]) * layer["real"]
        elif op == "maxpool2d":
            x = np.max(_windows(x, layer["kernel_size"], layer["stride"]), axis=0)
        if op in ("conv2d", "linear") and layer["relu"]:
            x = np.clip(x, 0, top)
    return x


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


def quantize_tflite(bundle: Bundle, calibration: np.ndarray, weight_bits: int = 8) -> PeerNetwork:
    """The bundle's network as CMSIS-NN layers, int8 activations and int8 or int4 weights;
    `calibration`: uint8 images (N, C, H, W) that set the logits' int8 range."""
    if weight_bits not in (8, 4):
        raise ValueError(f"CMSIS-NN weights are int8 or int4, not {weight_bits} bits")
    m = bundle.manifest
    top = (1 << int(m["activation_bits"])) - 1
    input_scale = float(m["input"]["scale"])
    chain = _float_chain(bundle)
    c, h, w = (int(m["input"][k]) for k in ("channels", "height", "width"))
    logits = _float_forward(chain, calibration.astype(np.float64) / 255.0 / input_scale, top)
    lo, hi = min(float(logits.min()), 0.0), max(float(logits.max()), 0.0)
    out_scale_logits = max(hi - lo, 1e-9) / 255.0
    net = PeerNetwork(weight_bits, (c, h, w), int(logits.shape[1]))
    net.logit_scale = out_scale_logits
    net.logit_zero = int(round(-128 - lo / out_scale_logits))
    shape = (h, w, c)  # NHWC as CMSIS-NN holds it
    s_in, zp_in = 1.0 / 255.0, -128  # the pixels / 255, as int8 (pixel - 128)
    first = True
    flat_from: tuple[int, int, int] | None = None
    for layer in chain:
        op = layer["op"]
        if op == "flatten":
            flat_from = shape
            shape = (1, 1, shape[0] * shape[1] * shape[2])
            continue
        if op == "maxpool2d":
            k, s = layer["kernel_size"], layer["stride"]
            out = (graph.windows(shape[0], k, s), graph.windows(shape[1], k, s), shape[2])
            net.layers.append(PeerLayer(layer["name"], "pool", shape, out, kernel=k, stride=s))
            shape = out
            continue
        wf = layer["w"] * layer["real"].reshape(-1, *([1] * (layer["w"].ndim - 1)))
        if first:
            wf = wf / input_scale  # the first layer reads pixels / 255, not input codes
        bf = layer["b"] * layer["real"]
        if op == "conv2d":
            k, s, p = layer["kernel_size"], layer["stride"], layer["padding"]
            wf = wf.transpose(0, 2, 3, 1)  # OHWI
            out = (
                graph.windows(shape[0] + 2 * p, k, s),
                graph.windows(shape[1] + 2 * p, k, s),
                len(wf),
            )
            kind = "conv"
        else:
            k, s, p = 1, 1, 0
            if flat_from is not None:  # torch's (C, H, W) flatten order -> NHWC
                fh, fw, fc = flat_from
                wf = wf.reshape(len(wf), fc, fh, fw).transpose(0, 2, 3, 1).reshape(len(wf), -1)
            out = (1, 1, len(wf))
            kind = "fc"
        per_tensor = kind == "fc" and weight_bits == 4  # arm_fully_connected_s4
        q, s_w = _per_channel(wf, weight_bits, per_tensor)
        if layer["relu"]:
            s_out, zp_out = top / 255.0, -128
        else:
            s_out, zp_out = out_scale_logits, net.logit_zero
        bias = np.round(bf / (s_in * s_w)).astype(np.int64)
        pairs = [quantize_multiplier_q31(s_in * sw / s_out) for sw in s_w]
        net.layers.append(
            PeerLayer(
                layer["name"],
                kind,
                shape,
                out,
                kernel=k,
                stride=s,
                padding=p,
                weights=q,
                bias=np.clip(bias, -(2**31), 2**31 - 1).astype(np.int32),
                multiplier=np.array([a for a, _ in pairs], dtype=np.int32),
                shift=np.array([b for _, b in pairs], dtype=np.int32),
                input_offset=-zp_in,
                output_offset=zp_out,
            )
        )
        shape, s_in, zp_in, first, flat_from = out, s_out, zp_out, False, None
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


def peer_c_source(net: PeerNetwork) -> str:
    """siq_model.c: the weights, two ping-pong activation buffers, a scratch buffer, and one
    noinline function per layer calling its CMSIS-NN kernel."""
    s4 = net.weight_bits == 4
    c, h, w = net.input_shape
    sizes = [h * w * c] + [math.prod(p.out_shape) for p in net.layers]
    ping = max(sizes[0::2])
    pong = max(sizes[1::2])
    scratch = max(
        [4 * p.in_shape[2] * p.kernel * p.kernel for p in net.layers if p.kind == "conv"] + [4]
    )
    parts = [
        '#include <stddef.h>\n#include <stdint.h>\n#include "arm_nnfunctions.h"\n'
        '#include "siq_model.h"\n\n',
        f"static int8_t buf_a[{ping}] __attribute__((aligned(4)));\n",
        f"static int8_t buf_b[{pong}] __attribute__((aligned(4)));\n",
        f"static int32_t scratch[{(scratch + 3) // 4}];\n\n",
    ]
    calls = []
    for i, p in enumerate(net.layers):
        src, dst = ("buf_a", "buf_b") if i % 2 == 0 else ("buf_b", "buf_a")
        ih, iw, ic = p.in_shape
        oh, ow, oc = p.out_shape
        fn = f"layer_{p.name}"
        body: list[str] = []
        if p.kind == "pool":
            body += [
                "    const cmsis_nn_context ctx = { NULL, 0 };",
                f"    const cmsis_nn_pool_params pp = {{ {{ {p.stride}, {p.stride} }}, {{ 0, 0 }}, {{ -128, 127 }} }};",
                f"    const cmsis_nn_dims in = {{ 1, {ih}, {iw}, {ic} }}, f = {{ 1, {p.kernel}, {p.kernel}, 1 }}, out = {{ 1, {oh}, {ow}, {oc} }};",
                f"    return arm_max_pool_s8(&ctx, &pp, &in, {src}, &f, &out, {dst});",
            ]
        else:
            assert p.weights is not None and p.bias is not None
            assert p.multiplier is not None and p.shift is not None
            wname = f"cmsis_w_{p.name}"
            if s4:
                parts.append(_array("int8_t", wname, _pack_int4(p.weights)))
            else:
                parts.append(_array("int8_t", wname, p.weights))
            parts.append(_array("int32_t", f"cmsis_b_{p.name}", p.bias))
            parts.append(_array("int32_t", f"cmsis_m_{p.name}", p.multiplier))
            parts.append(_array("int32_t", f"cmsis_s_{p.name}", p.shift))
            dims = (
                f"    const cmsis_nn_dims in = {{ 1, {ih}, {iw}, {ic} }}, out = {{ 1, {oh}, {ow}, {oc} }};\n"
                f"    const cmsis_nn_dims bias = {{ 1, 1, 1, {oc} }};"
            )
            if p.kind == "conv":
                body += [
                    f"    const cmsis_nn_conv_params cp = {{ {p.input_offset}, {p.output_offset}, "
                    f"{{ {p.stride}, {p.stride} }}, {{ {p.padding}, {p.padding} }}, {{ 1, 1 }}, {{ -128, 127 }} }};",
                    f"    const cmsis_nn_per_channel_quant_params q = {{ (int32_t *)cmsis_m_{p.name}, (int32_t *)cmsis_s_{p.name} }};",
                    dims,
                    f"    const cmsis_nn_dims f = {{ {oc}, {p.kernel}, {p.kernel}, {ic} }};",
                    "    const cmsis_nn_context ctx = { scratch, sizeof scratch };",
                ]
                if s4:
                    body += [
                        "    if (arm_convolve_s4_get_buffer_size(&in, &f) > (int32_t)sizeof scratch) {",
                        "        return -2;",
                        "    }",
                        f"    return arm_convolve_s4(&ctx, &cp, &q, &in, {src}, &f, {wname}, &bias, cmsis_b_{p.name}, &out, {dst});",
                    ]
                else:
                    body += [
                        "    if (arm_convolve_wrapper_s8_get_buffer_size(&cp, &in, &f, &out) > (int32_t)sizeof scratch) {",
                        "        return -2;",
                        "    }",
                        f"    return arm_convolve_wrapper_s8(&ctx, &cp, &q, &in, {src}, &f, {wname}, &bias, cmsis_b_{p.name}, &out, {dst});",
                    ]
            else:
                body += [
                    f"    const cmsis_nn_fc_params fp = {{ {p.input_offset}, 0, {p.output_offset}, {{ -128, 127 }} }};",
                    dims.replace(f"{{ 1, {ih}, {iw}, {ic} }}", f"{{ 1, 1, 1, {ic} }}"),
                    f"    const cmsis_nn_dims f = {{ {ic}, 1, 1, {oc} }};",
                    "    const cmsis_nn_context ctx = { NULL, 0 };",
                ]
                if s4:
                    body += [
                        f"    const cmsis_nn_per_tensor_quant_params q = {{ cmsis_m_{p.name}[0], cmsis_s_{p.name}[0] }};",
                        f"    return arm_fully_connected_s4(&ctx, &fp, &q, &in, {src}, &f, {wname}, &bias, cmsis_b_{p.name}, &out, {dst});",
                    ]
                else:
                    body += [
                        f"    const cmsis_nn_per_channel_quant_params q = {{ (int32_t *)cmsis_m_{p.name}, (int32_t *)cmsis_s_{p.name} }};",
                        f"    return arm_fully_connected_per_channel_s8(&ctx, &fp, &q, &in, {src}, &f, {wname}, &bias, cmsis_b_{p.name}, &out, {dst});",
                    ]
        calls.append(
            f"static int __attribute__((noinline)) {fn}(void)\n{{\n" + "\n".join(body) + "\n}\n\n"
        )
    out_buf = "buf_b" if len(net.layers) % 2 else "buf_a"
    parts += calls
    steps = "\n".join(
        f"    if ({f'layer_{p.name}'}() != 0) {{\n        return -2;\n    }}" for p in net.layers
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
        buf_a[(i % {h * w}) * {c} + i / {h * w}] = (int8_t)(pixels[i] - 128);
    }}
{steps}
    for (i = 0; i < {net.classes}; i++) {{
        logits[i] = {out_buf}[i];
    }}
    return 0;
}}
"""
    )
    return "".join(parts)


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
