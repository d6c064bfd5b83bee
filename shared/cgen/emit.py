"""C99 sources from a DenseModel: `siq_model.h` and `siq_model.c` (docs/ARCHITECTURE.md,
"On chip").

The generated code runs the engine's integer network: the input quantiser is a 256-entry
table from the 8-bit pixel, convolutions gather one patch at a time into a small buffer and
run the row kernels of `shared.cgen.runtime`, a max-pool that follows a convolution is taken
over the accumulators before requantising (requantisation is non-decreasing, as the engine
uses too), and feature maps live channels-last in one static arena of two regions that the
layers write in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.cgen import layers
from shared.cgen.model import (
    DenseLayer,
    DenseModel,
    group_size,
    pack_rows,
    padded_length,
    pair_table,
    patch_order,
    weight_format,
)
from shared.cgen.runtime import PRELUDE, bytes_per_word, interleave_rows, row_kernel
from shared.errors import UnsupportedModelError
from shared.network import quantize_input, windows

__all__ = ["LayerPlan", "CModel", "generate_c", "input_table"]

CHUNK = 32  # linear rows requantised per pass (the accumulator scratch holds this many)


@dataclass
class LayerPlan:
    """One generated layer function and the sizes the cost report and the tests read."""

    name: str
    op: str  # conv2d | linear | maxpool2d | quantize
    fmt: str | None = None  # weight format of a weighted layer
    weight_bytes: int = 0  # packed codes / int8 weights in flash
    table_bytes: int = 0  # pair tables or codebook in flash
    const_bytes: int = 0  # bias and requantisation constants in flash
    out_bytes: int = 0  # activation bytes it writes into the arena
    patch_values: int = 0  # padded patch length it reads (0: reads its input in place)
    macs: int = 0  # multiply-accumulates of the network (not counting padding)
    pool: str | None = None  # name of a fused max-pool


@dataclass
class CModel:
    """The generated library (`files`) and its sizes. `arena_bytes` is the one static arena,
    SIQ_ARENA_BYTES in siq_model.h: the two activation regions, the patch buffer and the
    accumulators. `example` holds siq_example.c, a program that uses the library (not part of
    it: it reads a file and prints), when the bundle's classes and preprocessing are known."""

    files: dict[str, str]  # file name -> text
    layers: list[LayerPlan]
    activation_bytes: int  # the two activation regions
    patch_bytes: int
    scratch_bytes: int  # the accumulators
    example: dict[str, str] = field(default_factory=dict)  # file name -> text

    @property
    def arena_bytes(self) -> int:
        return self.activation_bytes + self.patch_bytes + self.scratch_bytes


def input_table(model: DenseModel) -> np.ndarray:
    """(256,) codes: the engine's input quantiser applied to pixel / 255 (float32, as the
    preprocessing hands it over)."""
    x = (np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float32)
    return quantize_input(x, model.input_scale, model.activation_bits).astype(np.uint8)


def _value_bytes(n: int, activation_bits: int) -> int:
    """Bytes of n activation codes, rounded up to whole 32-bit words."""
    raw = -(-n // 2) if activation_bits <= 4 else n
    return -(-raw // 4) * 4


def _i32(v: int) -> str:
    return "(-2147483647 - 1)" if v == -(2**31) else str(int(v))


def _array(
    ctype: str, name: str, values: Any, fmt: str | Callable[[int], str] = "{}", per_line: int = 16
) -> str:
    show = fmt if callable(fmt) else fmt.format
    vals = [show(int(v)) for v in np.asarray(values).reshape(-1)]
    lines = [", ".join(vals[i : i + per_line]) for i in range(0, len(vals), per_line)]
    body = ",\n    ".join(lines)
    return f"static const {ctype} {name}[{len(vals)}] = {{\n    {body}\n}};\n"


class _Emitter:
    def __init__(self, model: DenseModel, bundle_id: str | None):
        self.m = model
        self.a = model.activation_bits
        self.g = group_size(self.a)
        self.bundle_id = bundle_id
        self.data: list[str] = []
        self.funcs: list[str] = []
        self.calls: list[str] = []
        self.plans: list[LayerPlan] = []
        self.formats: set[str] = set()
        self.region = [0, 0]  # bytes of the two arena regions
        self.patch_values = 0
        self.scratch = 1

    # --- the graph walk -------------------------------------------------------------------

    def run(self) -> CModel:
        graph = self.m.graph
        shape: tuple[int, ...] = self.m.input_shape
        where = "pixels"  # or region index 0 / 1
        flat_source: tuple[int, ...] | None = None  # maps a following linear takes in HWC order
        i = 0
        while i < len(graph):
            layer = graph[i]
            op = layer["op"]
            nxt = graph[i + 1] if i + 1 < len(graph) else None
            if op == "maxpool2d":
                if where == "pixels":
                    where = self._quantize_input(shape)
                shape, where = self._pool(layer, shape, where)
            elif op == "flatten":
                flat_source = shape if where != "pixels" and len(shape) == 3 else None
                shape = (int(np.prod(shape)),)
            elif op == "conv2d":
                dense = self.m.layers[layer["name"]]
                if not dense.relu:
                    raise UnsupportedModelError(
                        f"layer {dense.name}: a convolution without ReLU is not supported in C"
                    )
                pool = nxt if nxt is not None and nxt["op"] == "maxpool2d" else None
                shape, where = self._conv(dense, shape, where, pool)
                i += pool is not None
            else:
                dense = self.m.layers[layer["name"]]
                source = flat_source if len(shape) == 1 else None
                shape, where = self._linear(dense, shape, where, source)
                flat_source = None
            i += 1
        if where != "logits":
            raise UnsupportedModelError(
                "the C generator needs the network to end in a linear layer"
            )
        return self._files()

    def _other(self, where: str) -> int:
        return 0 if where in ("pixels", "1") else 1

    def _src(self, where: str) -> str:
        return "pixels" if where == "pixels" else f"r{where}"

    def _claim(self, region: int, nbytes: int) -> None:
        self.region[region] = max(self.region[region], nbytes)

    def _quantize_input(self, shape: tuple[int, ...]) -> str:
        c, h, w = shape
        name = "siq_quantize_input"
        self.funcs.append(layers.quantize_input(name, c, h, w))
        out = self._other("pixels")
        self._claim(out, _value_bytes(c * h * w, self.a))
        self.calls.append(f"{name}(pixels, r{out});")
        self.plans.append(LayerPlan("input", "quantize", out_bytes=_value_bytes(c * h * w, self.a)))
        return str(out)

    def _pool(self, layer: dict[str, Any], shape: tuple[int, ...], where: str):
        c, h, w = shape
        k, s = layer["kernel_size"], layer["stride"]
        ph, pw = windows(h, k, s), windows(w, k, s)
        name = f"siq_{layer['name']}"
        self.funcs.append(layers.maxpool(name, (c, h, w), k, s, ph, pw))
        out = self._other(where)
        nbytes = _value_bytes(c * ph * pw, self.a)
        self._claim(out, nbytes)
        self.calls.append(f"{name}({self._src(where)}, r{out});")
        self.plans.append(LayerPlan(layer["name"], "maxpool2d", out_bytes=nbytes))
        return (c, ph, pw), str(out)

    # --- weighted layers ------------------------------------------------------------------

    def _weights(
        self, dense: DenseLayer, source: tuple[int, ...] | None
    ) -> tuple[str, int, int, LayerPlan]:
        """Emit the layer's constant data; returns (kernel call prefix, row bytes, K', plan)."""
        fmt = weight_format(dense, self.a)
        self.formats.add(fmt)
        rows = patch_order(dense, source)
        packed = pack_rows(dense, rows, fmt, self.a)  # (O, row bytes)
        kp = padded_length(rows.shape[1], fmt, self.a)
        if fmt != "bits":
            packed = interleave_rows(packed, bytes_per_word(fmt, self.a))
        n = dense.name
        stored = packed.reshape(-1)
        if fmt == "t3":  # the last row's 3-byte group is read as a 32-bit word
            stored = np.append(stored, np.uint8(0))
        self.data.append(_array("uint8_t", f"siq_w_{n}", stored, "0x{:02x}", 24))
        plan = LayerPlan(n, dense.op, fmt=fmt, weight_bytes=stored.size)
        self.data.append(_array("int32_t", f"siq_b_{n}", dense.bias, _i32))
        plan.const_bytes += 4 * dense.out
        if fmt in ("t4", "t3", "t2"):
            table = pair_table(dense, fmt)
            self.data.append(_array("uint32_t", f"siq_t_{n}", table, "0x{:08x}u", 8))
            plan.table_bytes = table.size * 4
            head = f"siq_rows_{fmt}(siq_w_{n} + o * {packed.shape[1]}u, {packed.shape[1]}u, siq_t_{n}, "
            tail = f"{kp // self.g}u"
        elif fmt == "i8":
            head = f"siq_rows_i8(siq_w_{n} + o * {packed.shape[1]}u, {packed.shape[1]}u, "
            tail = f"{kp // self.g}u"
        else:
            self.data.append(_array("int16_t", f"siq_cb_{n}", dense.codebook, "{}"))
            plan.table_bytes = 2 * dense.codebook.size
            head = (
                f"siq_rows_bits(siq_w_{n} + o * {packed.shape[1]}u, {packed.shape[1]}u, "
                f"siq_cb_{n}, {dense.bits}u, "
            )
            tail = f"{kp}u"
        # the call: head + x + ", " + tail + ", bias, out, n, first)"
        return (
            head + "{x}, " + tail + f", siq_b_{n} + o, {{out}}, {{n}}, {{first}})",
            packed.shape[1],
            kp,
            plan,
        )

    def _requant(self, dense: DenseLayer, plan: LayerPlan) -> str:
        """C expression requantising `acc` of channel `ch`."""
        assert dense.multiplier is not None and dense.shift is not None
        m, s = dense.multiplier.reshape(-1), dense.shift.reshape(-1)
        n = dense.name
        if len(m) == 1 and len(s) == 1:
            r = 1 << (int(s[0]) - 1)
            plan.const_bytes += 8
            return f"siq_requant(acc, {_i32(int(m[0]))}, INT64_C({r}), {int(s[0])}u)"
        m = np.broadcast_to(m, (dense.out,))
        s = np.broadcast_to(s, (dense.out,))
        self.data.append(_array("int32_t", f"siq_m_{n}", m, _i32))
        self.data.append(
            _array("int64_t", f"siq_r_{n}", 1 << (s.astype(np.int64) - 1), "INT64_C({})", 8)
        )
        self.data.append(_array("uint8_t", f"siq_s_{n}", s, "{}"))
        plan.const_bytes += dense.out * 13
        return f"siq_requant(acc, siq_m_{n}[ch], siq_r_{n}[ch], siq_s_{n}[ch])"

    def _conv(self, dense: DenseLayer, shape: tuple[int, ...], where: str, pool: dict | None):
        c, h, w = shape
        k, st, p, o = dense.kernel, dense.stride, dense.padding, dense.out
        ho, wo = windows(h + 2 * p, k, st), windows(w + 2 * p, k, st)
        pk, ps = (pool["kernel_size"], pool["stride"]) if pool else (1, 1)
        ph, pw = windows(ho, pk, ps), windows(wo, pk, ps)
        call, rb, kp, plan = self._weights(dense, None)
        plan.macs = o * c * k * k * ho * wo
        plan.pool = pool["name"] if pool else None
        plan.patch_values = kp
        self.patch_values = max(self.patch_values, kp)
        self.scratch = max(self.scratch, o)
        req = self._requant(dense, plan)
        n = dense.name
        self.funcs.append(layers.gather(n, (c, h, w), (k, st, p), where == "pixels", kp, self.a))
        rows = call.format(
            x="(const uint8_t *)siq_patch", out="siq_acc", n=f"{o}u", first="dy == 0 && dx == 0"
        )
        self.funcs.append(layers.conv(n, (ph, pw), (pk, ps), o, rows, req))
        out = self._other(where)
        plan.out_bytes = _value_bytes(o * ph * pw, self.a)
        self._claim(out, plan.out_bytes)
        self.calls.append(f"siq_{n}({self._src(where)}, r{out});")
        self.plans.append(plan)
        return (o, ph, pw), str(out)

    def _linear(self, dense: DenseLayer, shape: tuple[int, ...], where: str, source):
        k, o, n = shape[0], dense.out, dense.name
        call, rb, kp, plan = self._weights(dense, source)
        plan.macs = o * k
        prep = layers.linear_input(k, kp, where == "pixels")
        if where == "pixels" or kp != k:
            plan.patch_values = kp
        self.patch_values = max(self.patch_values, plan.patch_values)
        if not dense.relu:
            rows = call.format(x="x", out="logits", n=f"{o}u", first="1")
            self.funcs.append(layers.linear_logits(n, prep, rows))
            self.calls.append(f"siq_{n}({self._src(where)}, logits);")
            self.plans.append(plan)
            return (o,), "logits"
        req = self._requant(dense, plan)
        self.scratch = max(self.scratch, min(CHUNK, o))
        rows = call.format(x="x", out="siq_acc", n="cnt", first="1")
        self.funcs.append(layers.linear_relu(n, prep, o, CHUNK, rows, req))
        out = self._other(where)
        plan.out_bytes = _value_bytes(o, self.a)
        self._claim(out, plan.out_bytes)
        self.calls.append(f"siq_{n}({self._src(where)}, r{out});")
        self.plans.append(plan)
        return (o,), str(out)

    # --- the files ------------------------------------------------------------------------

    def _files(self) -> CModel:
        c, h, w = self.m.input_shape
        a = self.a
        patch_words = max(1, _value_bytes(self.patch_values, a) // 4)
        region0 = self.region[0]
        arena = max(4, region0 + self.region[1])
        model = CModel(
            files={},
            layers=self.plans,
            activation_bytes=arena,
            patch_bytes=patch_words * 4,
            scratch_bytes=self.scratch * 4,
        )
        total = model.arena_bytes  # what SIQ_ARENA_BYTES and export-c say
        header = f"""/* Generated by SIQ (shared/cgen) from bundle {self.bundle_id or "-"}. Do not edit.
   Integer-only inference, bit-exact with shared.engine (docs/ARCHITECTURE.md). */
#ifndef SIQ_MODEL_H
#define SIQ_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define SIQ_INPUT_CHANNELS {c}
#define SIQ_INPUT_HEIGHT {h}
#define SIQ_INPUT_WIDTH {w}
#define SIQ_NUM_CLASSES {self.m.num_classes}
#define SIQ_ACTIVATION_BITS {a}
#define SIQ_ARENA_BYTES {total} /* the static arena: activations, patch, accumulators */

/* pixels: C x H x W preprocessed image, 8-bit (the engine's float input times 255);
   logits: SIQ_NUM_CLASSES integer logits. Returns 0, or -1 on a null argument. */
int siq_predict(const uint8_t *pixels, int32_t *logits);

#ifdef __cplusplus
}}
#endif

#endif /* SIQ_MODEL_H */
"""
        summary = "\n".join(
            f"   {p.name:10s} {p.op:9s} {p.fmt or '-':4s} weights {p.weight_bytes} B, "
            f"tables {p.table_bytes} B, out {p.out_bytes} B"
            + (f", pool {p.pool}" if p.pool else "")
            for p in self.plans
        )
        kernels = "".join(row_kernel(f, a) for f in sorted(self.formats))
        calls = "\n    ".join(self.calls)
        source = f"""/* Generated by SIQ (shared/cgen) from bundle {self.bundle_id or "-"}. Do not edit.
{summary}
   arena {arena} B, patch {patch_words * 4} B, accumulators {self.scratch * 4} B */
{PRELUDE.format(top=(1 << a) - 1, nibble=1 if a <= 4 else 0)}
{kernels}
{_array("uint8_t", "siq_inq", input_table(self.m), "{}")}
{"".join(self.data)}
/* the one static arena: the two activation regions, the patch buffer, the accumulators */
static uint32_t siq_arena[{total // 4}];
#define siq_patch (siq_arena + {arena // 4})
#define SIQ_PATCH_BYTES {patch_words * 4}u
#define siq_acc ((int32_t *)(siq_arena + {arena // 4 + patch_words}))
{"".join(self.funcs)}
int siq_predict(const uint8_t *pixels, int32_t *logits)
{{
    uint8_t *r0 = (uint8_t *)siq_arena;
    uint8_t *r1 = r0 + {region0};
    (void)r0;
    (void)r1;
    if (pixels == NULL || logits == NULL) {{
        return -1;
    }}
    {calls}
    return 0;
}}
"""
        model.files = {"siq_model.h": header, "siq_model.c": source}
        return model


def generate_c(model: DenseModel, bundle_id: str | None = None) -> CModel:
    """The C library for a model: `files` holds siq_model.h and siq_model.c."""
    return _Emitter(model, bundle_id).run()
