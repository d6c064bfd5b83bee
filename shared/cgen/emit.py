"""C99 sources from a DenseModel: `siq_model.h` and `siq_model.c` (docs/ARCHITECTURE.md,
"On chip").

The generated code runs the reference's integer network, one function per node of the DAG:
the input quantiser is a 256-entry table from the 8-bit pixel, convolutions gather one patch
at a time into a small buffer and run the row kernels of `shared.cgen.runtime` (pointwise ones
read whole-word pixels in place, depthwise ones have a kernel of their own), a max-pool that
follows a convolution is taken over the accumulators before requantising (requantisation is
non-decreasing, as the engine uses too), and values live channels-last in one static arena:
two regions written in turn for a chain, offsets planned from the values' lifetimes for any
other graph.
"""

from __future__ import annotations

import re
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
    pair_slots,
    pair_table,
    patch_order,
    weight_format,
)
from shared.cgen.runtime import (
    DECODED_FORMATS,
    PRELUDE,
    ROWS,
    bytes_per_word,
    decode_kernel,
    decoded_kernel,
    interleave_rows,
    row_kernel,
)
from shared.errors import UnsupportedModelError
from shared.network import INPUT, WEIGHTED_OPS, quantize_input, windows

__all__ = ["LayerPlan", "CModel", "generate_c", "input_table"]

# the image's codes in the arena, when the pixels cannot be read where they are (no node name
# has a ':', so no node's value is called this)
_INPUT_CODES = "input:codes"
CHUNK = 32  # linear rows requantised per pass (the accumulator scratch holds this many)
# RAM a convolution may take to hold decoded weight words (runtime.DECODED_FORMATS): all its
# rows when they fit, else ROWS rows at a time
DECODE_BYTES = 4096


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
    decoded_bytes: int = 0  # a convolution's weights decoded into 16-bit pairs
    example: dict[str, str] = field(default_factory=dict)  # file name -> text

    @property
    def arena_bytes(self) -> int:
        return self.activation_bytes + self.patch_bytes + self.scratch_bytes + self.decoded_bytes


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


@dataclass
class _Value:
    """A node's value as the generated code holds it: `where` is "pixels" (the caller's CHW
    bytes, read through the input quantiser), "arena" (its own buffer), "view" (the buffer of
    value `of`: a flatten a linear layer reads in place) or "logits" (the caller's array)."""

    shape: tuple[int, ...]
    accumulators: bool
    where: str
    nbytes: int = 0
    hwc: tuple[int, ...] | None = None  # a flatten of this channels-last map (linear's order)
    of: str | None = None


def _divide(n: int, largest: int) -> str:
    """C expression of `(sum + n // 2) // n` for 0 <= sum <= largest (uint32 `sum`): a
    multiply and a shift where one in 32 bits is checked equal on every such sum (so no
    division, which a Cortex-M0 lacks), else `/` by the literal (gcc turns that into its own
    multiply-shift or the chip's UDIV)."""
    half = n // 2
    top = largest + half
    if n & (n - 1) == 0:
        return f"(sum + {half}u) >> {n.bit_length() - 1}"
    if top < 1 << 22:  # a bound on the check's work (maps of 16k values at 8 bits and more)
        t = np.arange(top + 1, dtype=np.uint64)
        for shift in range(1, 33):
            m = -(-(1 << shift) // n)
            if top * m >= 1 << 32:
                break
            if np.array_equal((t * np.uint64(m)) >> np.uint64(shift), t // np.uint64(n)):
                return f"((sum + {half}u) * {m}u) >> {shift}"
    return f"(sum + {half}u) / {n}u"


ROW_FORMATS = ("t4", "t3", "t2", "i8", "bits")  # every row kernel runtime.row_kernel writes
# what each node's C names are made of: siq_<node>, siq_gather_<node>, siq_w_<node>, ...
_NODE_PREFIXES = ("", "gather_", "w_", "b_", "t_", "cb_", "m_", "r_", "s_", "dw_")
# the names of the library's own code and data that a node's names must not take
_RESERVED = set(
    re.findall(
        r"\bsiq_\w+",
        PRELUDE
        + "".join(row_kernel(f, a) for f in ROW_FORMATS for a in (4, 8))
        + "".join(decode_kernel(f, a) for f in DECODED_FORMATS for a in (4, 8))
        + decoded_kernel(4),
    )
) | {
    "siq_dec",
    "siq_arena",
    "siq_patch",
    "siq_acc",
    "siq_inq",
    "siq_predict",
    "siq_quantize_input",
}


def _identifiers(names: list[str]) -> dict[str, str]:
    """The C identifier part of each node: its name with '.' as '_' (so chains keep their
    names: siq_conv1, siq_w_conv1), or, when any of the C names made from them would clash
    with each other or with the library's own, `n<index>` for every node."""
    idents = {name: re.sub(r"[^A-Za-z0-9_]", "_", name) for name in names}
    made = [f"siq_{p}{i}" for i in idents.values() for p in _NODE_PREFIXES]
    if len(set(made)) == len(made) and not _RESERVED & set(made):
        return idents
    return {name: f"n{i}" for i, name in enumerate(names)}


def _plan_arena(
    sizes: dict[str, int], lives: dict[str, tuple[int, int]]
) -> tuple[dict[str, int], int]:
    """Offsets in the activation arena for values alive over steps [first, last] (a step
    writes its value while its inputs are alive): largest first, each at the lowest
    word-aligned offset free of every value alive at the same time. Returns (offsets, bytes)."""
    offsets: dict[str, int] = {}
    for name in sorted(sizes, key=lambda v: (-sizes[v], lives[v][0])):
        lo, hi = lives[name]
        busy = sorted(
            (offsets[o], offsets[o] + sizes[o])
            for o in offsets
            if lives[o][0] <= hi and lo <= lives[o][1]
        )
        at = 0
        for start, stop in busy:
            if at + sizes[name] <= start:
                break
            at = max(at, stop)
        offsets[name] = at
    return offsets, max([offsets[v] + sizes[v] for v in sizes], default=0)


class _Emitter:
    def __init__(self, model: DenseModel, bundle_id: str | None, for_size: bool = False):
        self.m = model
        self.for_size = for_size
        self.a = model.activation_bits
        self.g = group_size(self.a)
        self.bundle_id = bundle_id
        self.data: list[str] = []
        self.funcs: list[str] = []
        self.steps: list[tuple[str, list[str], str]] = []  # (function, inputs, output value)
        self.plans: list[LayerPlan] = []
        self.formats: set[str] = set()
        self.values: dict[str, _Value] = {}
        self.patch_values = 0
        self.scratch = 1
        self.decoded = 0  # 32-bit words of the decoded-weights buffer (an even number)
        self.decoders: set[str] = set()
        self.ident: dict[str, str] = {}

    # --- the graph walk -------------------------------------------------------------------

    def run(self) -> CModel:
        graph = self.m.graph
        users: dict[str, list[dict[str, Any]]] = {INPUT: []}
        for node in graph:
            users[node["name"]] = []
            for x in node["inputs"]:
                users[x].append(node)
        self.users = users
        self.ident = _identifiers([node["name"] for node in graph])
        self.values[INPUT] = _Value(self.m.input_shape, False, "pixels")
        if not self._reads_pixels(graph):
            self._quantize_input()
        output = graph[-1]
        if output["op"] != "linear":
            if output["op"] == "conv2d":
                raise UnsupportedModelError(
                    f"layer {output['name']}: a convolution without ReLU is not supported in C "
                    "as the output (the C generator needs the network to end in a linear layer)"
                )
            raise UnsupportedModelError(
                "the C generator needs the network to end in a linear layer"
            )
        fused: set[str] = set()
        for node in graph:
            name, op = node["name"], node["op"]
            if name in fused:
                continue
            if op in WEIGHTED_OPS and name != output["name"]:
                self._check_accumulators(name)
            if op == "conv2d":
                dense = self.m.layers[name]
                pool = self._fusable_pool(node, dense)
                if pool is not None:
                    fused.add(pool["name"])
                self._conv(dense, node["inputs"][0], pool)
            elif op == "linear":
                self._linear(self.m.layers[name], node["inputs"][0], name == output["name"])
            elif op == "maxpool2d":
                self._pool(node)
            elif op == "avgpool2d":
                self._avgpool(node)
            elif op == "global_avgpool":
                self._global_avgpool(node)
            elif op == "flatten":
                self._flatten(node)
            elif op == "add":
                self._add(node)
            else:
                raise UnsupportedModelError(f"node {name}: op {op!r} is not supported in C")
        return self._files()

    def _check_accumulators(self, name: str) -> None:
        """Accumulators (activation "none") are the output's or an add's first input (a
        version-1 bundle's chain could end in a convolution without ReLU, then a flatten)."""
        if self.m.layers[name].requantises:
            return
        if not all(u["op"] == "add" and u["inputs"][0] == name for u in self.users[name]):
            raise UnsupportedModelError(
                f"layer {name}: a convolution without ReLU is not supported in C "
                "unless an add takes its accumulators"
            )

    def _reads_pixels(self, graph: list[dict[str, Any]]) -> bool:
        """Whether the caller's pixels can be read where they are: their one reader is a
        convolution without groups, or a flatten whose one reader is a linear layer (as every
        chain has). Else the input is quantised into the arena first."""
        readers = self.users[INPUT]
        if len(readers) != 1:
            return False
        (node,) = readers
        if node["op"] == "conv2d":
            return self.m.layers[node["name"]].groups == 1
        if node["op"] == "flatten":
            after = self.users[node["name"]]
            return len(after) == 1 and after[0]["op"] == "linear"
        return False

    def _fusable_pool(self, node: dict[str, Any], dense: DenseLayer) -> dict[str, Any] | None:
        """The max-pool right after a convolution without groups that is the only reader of
        its codes: it is taken over the accumulators (requantisation is non-decreasing)."""
        readers = self.users[node["name"]]
        if dense.groups != 1 or not dense.requantises or len(readers) != 1:
            return None
        return readers[0] if readers[0]["op"] == "maxpool2d" else None

    def _value(self, name: str, shape: tuple[int, ...], accumulators: bool = False) -> str:
        count = int(np.prod(shape))
        nbytes = 4 * count if accumulators else _value_bytes(count, self.a)
        self.values[name] = _Value(tuple(shape), accumulators, "arena", nbytes)
        return name

    def _buffer(self, name: str) -> str:
        """The value whose buffer holds `name` (a view's source)."""
        value = self.values[name]
        return value.of if value.of is not None else name

    def _quantize_input(self) -> None:
        c, h, w = self.m.input_shape
        name = "siq_quantize_input"
        self.funcs.append(layers.quantize_input(name, c, h, w))
        self._value(_INPUT_CODES, (c, h, w))
        self.values[INPUT] = _Value((c, h, w), False, "view", of=_INPUT_CODES)
        self.steps.append((name, [], _INPUT_CODES))
        self.plans.append(
            LayerPlan("input", "quantize", out_bytes=self.values[_INPUT_CODES].nbytes)
        )

    def _step(self, node: dict[str, Any], func: str, shape: tuple[int, ...]) -> None:
        """A node that is one function `siq_<name>(inputs..., dst)` writing codes of `shape`."""
        name = node["name"]
        self.funcs.append(func)
        self._value(name, shape)
        self.steps.append((f"siq_{self.ident[name]}", list(node["inputs"]), name))
        self.plans.append(LayerPlan(name, node["op"], out_bytes=self.values[name].nbytes))

    def _pool(self, node: dict[str, Any]) -> None:
        c, h, w = self.values[node["inputs"][0]].shape
        k, s = node["kernel_size"], node["stride"]
        ph, pw = windows(h, k, s), windows(w, k, s)
        func = layers.maxpool(f"siq_{self.ident[node['name']]}", (c, h, w), k, s, ph, pw)
        self._step(node, func, (c, ph, pw))

    def _avgpool(self, node: dict[str, Any]) -> None:
        c, h, w = self.values[node["inputs"][0]].shape
        k, s = node["kernel_size"], node["stride"]
        out = (windows(h, k, s), windows(w, k, s))
        div = _divide(k * k, k * k * ((1 << self.a) - 1))
        func = layers.avgpool(f"siq_{self.ident[node['name']]}", (c, h, w), k, s, out, div)
        self._step(node, func, (c, *out))

    def _global_avgpool(self, node: dict[str, Any]) -> None:
        c, h, w = self.values[node["inputs"][0]].shape
        div = _divide(h * w, h * w * ((1 << self.a) - 1))
        func = layers.global_avgpool(f"siq_{self.ident[node['name']]}", (c, h, w), div)
        self._step(node, func, (c,))

    def _flatten(self, node: dict[str, Any]) -> None:
        """A view of its input when only linear layers read it (they take channels-last maps
        in place, their weight columns permuted); else a copy into (C, H, W) order."""
        x, name = node["inputs"][0], node["name"]
        source = self.values[x]
        shape = (int(np.prod(source.shape)),)
        hwc = source.hwc
        if len(source.shape) == 3 and source.shape[1:] != (1, 1):
            hwc = source.shape
        if source.where == "pixels":  # CHW already; its one reader is a linear layer
            self.values[name] = _Value(shape, False, "pixels")
        elif hwc is None or all(u["op"] == "linear" for u in self.users[name]):
            self.values[name] = _Value(shape, False, "view", hwc=hwc, of=self._buffer(x))
        else:
            func = layers.flatten(f"siq_{self.ident[name]}", hwc)  # type: ignore[arg-type]
            self._step(node, func, shape)

    def _add(self, node: dict[str, Any]) -> None:
        x = self.values[node["inputs"][0]]
        mx, my, s = self.m.adds[node["name"]]
        top = f"{int(node['clamp_max'])}u" if node["activation"] == "relu6" else "SIQ_TOP"
        count = int(np.prod(x.shape))
        n = self.ident[node["name"]]
        self._step(node, layers.add(n, count, x.accumulators, mx, my, s, top), x.shape)

    # --- weighted layers ------------------------------------------------------------------

    def _weights(
        self, dense: DenseLayer, source: tuple[int, ...] | None
    ) -> tuple[str, int, int, LayerPlan]:
        """Emit the layer's constant data; returns (kernel call prefix, row bytes, K', plan).
        A grouped convolution's rows are packed per group (each group's rows are a kernel
        call of their own)."""
        fmt = "bits" if self.for_size else weight_format(dense, self.a)
        self.formats.add(fmt)
        rows = patch_order(dense, source)
        packed = pack_rows(dense, rows, fmt, self.a)  # (O, row bytes)
        kp = padded_length(rows.shape[1], fmt, self.a)
        if fmt != "bits":
            per = dense.out // dense.groups
            packed = np.concatenate(
                [
                    interleave_rows(packed[i : i + per], bytes_per_word(fmt, self.a))
                    for i in range(0, dense.out, per)
                ]
            )
        n = self.ident[dense.name]
        stored = packed.reshape(-1)
        if fmt == "t3":  # the last row's 3-byte group is read as a 32-bit word
            stored = np.append(stored, np.uint8(0))
        self.data.append(_array("uint8_t", f"siq_w_{n}", stored, "0x{:02x}", 24))
        plan = LayerPlan(dense.name, dense.op, fmt=fmt, weight_bytes=stored.size)
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
        """C expression requantising `acc` of channel `ch` (relu6: then clipped at clamp_max)."""
        assert dense.multiplier is not None and dense.shift is not None
        m, s = dense.multiplier.reshape(-1), dense.shift.reshape(-1)
        n = self.ident[dense.name]
        if len(m) == 1 and len(s) == 1:
            r = 1 << (int(s[0]) - 1)
            plan.const_bytes += 8
            req = f"siq_requant(acc, {_i32(int(m[0]))}, INT64_C({r}), {int(s[0])}u)"
        else:
            m = np.broadcast_to(m, (dense.out,))
            s = np.broadcast_to(s, (dense.out,))
            self.data.append(_array("int32_t", f"siq_m_{n}", m, _i32))
            self.data.append(
                _array("int64_t", f"siq_r_{n}", 1 << (s.astype(np.int64) - 1), "INT64_C({})", 8)
            )
            self.data.append(_array("uint8_t", f"siq_s_{n}", s, "{}"))
            plan.const_bytes += dense.out * 13
            req = f"siq_requant(acc, siq_m_{n}[ch], siq_r_{n}[ch], siq_s_{n}[ch])"
        if dense.activation == "relu6":
            req = f"siq_umin({req}, {dense.clamp_max}u)"
        return req

    def _conv(self, dense: DenseLayer, x: str, pool: dict[str, Any] | None) -> None:
        src = self.values[x]
        c, h, w = src.shape
        k, st, p, o, g = dense.kernel, dense.stride, dense.padding, dense.out, dense.groups
        ho, wo = windows(h + 2 * p, k, st), windows(w + 2 * p, k, st)
        if dense.depthwise:
            return self._depthwise(dense, x, (ho, wo))
        pk, ps = (pool["kernel_size"], pool["stride"]) if pool else (1, 1)
        ph, pw = windows(ho, pk, ps), windows(wo, pk, ps)
        call, rb, kp, plan = self._weights(dense, None)
        plan.macs = o * (c // g) * k * k * ho * wo
        plan.pool = pool["name"] if pool else None
        self.scratch = max(self.scratch, o)
        req = self._requant(dense, plan) if dense.requantises else ""
        n = self.ident[dense.name]
        acc = not dense.requantises
        pixels = src.where == "pixels"
        in_place = not pixels and g == 1 and k == 1 and p == 0 and kp == c
        per_value = "/ 2u" if self.a <= 4 else ""
        at = f"(py * {ps}u + dy) * {st}u * {w}u + (px * {ps}u + dx) * {st}u"
        first = "dy == 0 && dx == 0"
        words = kp // self.g  # activation words of a row
        row_words = words * len(pair_slots(self.a))  # its decoded weight words
        decodes = g == 1 and plan.fmt in DECODED_FORMATS and not self.for_size
        setup = ""
        if decodes and o * row_words * 4 <= DECODE_BYTES:  # every row decoded, once
            self.decoded = max(self.decoded, o * row_words)
            setup = self._decode(dense, plan, "0", f"{o * words}u")
            call = f"siq_rows_d(siq_dec, {{x}}, {words}u, 1u, 0u, siq_b_{n} + o, {{out}}, {{n}}, {{first}})"
        elif (
            decodes
            and not pixels
            and p == 0
            and c % self.g == 0
            and kp == k * k * c
            and ROWS * row_words * 4 <= DECODE_BYTES
        ):  # ROWS rows decoded at a time, the input's k kernel rows read where they are
            self.decoded = max(self.decoded, ROWS * row_words)
            setup = self._decode(dense, plan, f"o * {rb}u", f"cnt * {words}u")
            read = f"src + (({at}) * {c}u) {per_value}"
            rows = (
                f"siq_rows_d(siq_dec, {read}, {k * c // self.g}u, {k}u, ({w * c}u {per_value}), "
                f"siq_b_{n} + o, siq_acc, cnt, {first})"
            )
            self.funcs.append(
                layers.conv_decoded(n, (ph, pw), (pk, ps), o, setup, rows, req, accumulators=acc)
            )
            call = ""
        if not call:
            pass
        elif in_place:  # a pointwise convolution reads each pixel's C codes where they are
            fetch = f"x = src + ({at}) * {c}u {per_value};"
            rows = call.format(x="x", out="siq_acc", n=f"{o}u", first=first)
            self.funcs.append(
                layers.conv(
                    n, (ph, pw), (pk, ps), o, rows, req, fetch=fetch, accumulators=acc, setup=setup
                )
            )
        elif g == 1:
            plan.patch_values = kp
            self.funcs.append(layers.gather(n, (c, h, w), (k, st, p), pixels, kp, self.a))
            rows = call.format(
                x="(const uint8_t *)siq_patch", out="siq_acc", n=f"{o}u", first=first
            )
            self.funcs.append(
                layers.conv(n, (ph, pw), (pk, ps), o, rows, req, accumulators=acc, setup=setup)
            )
        else:
            plan.patch_values = kp
            self.funcs.append(layers.gather_group(n, (c, h, w), (k, st, p), c // g))
            rows = call.format(x="x", out="siq_acc + o", n=f"{o // g}u", first="dy == 0 && dx == 0")
            self.funcs.append(
                layers.conv(
                    n, (ph, pw), (pk, ps), o, rows, req, groups=(g, c // g), accumulators=acc
                )
            )
        self.patch_values = max(self.patch_values, plan.patch_values)
        self._value(dense.name if pool is None else pool["name"], (o, ph, pw), acc)
        plan.out_bytes = self.values[dense.name if pool is None else pool["name"]].nbytes
        self.steps.append((f"siq_{n}", [x], dense.name if pool is None else pool["name"]))
        self.plans.append(plan)

    def _decode(self, dense: DenseLayer, plan: LayerPlan, start: str, units: str) -> str:
        """The statement decoding `units` (row, activation word) units of the layer's packed
        weights, from byte `start` on, into siq_dec."""
        assert plan.fmt is not None
        self.decoders.add(plan.fmt)
        n = self.ident[dense.name]
        tab = f"siq_t_{n}, " if plan.fmt != "i8" else ""
        return f"siq_decode_{plan.fmt}(siq_w_{n} + {start}, {tab}siq_dec, {units});"

    def _depthwise(self, dense: DenseLayer, x: str, out: tuple[int, int]) -> None:
        """Weights decoded at generation time, as int8 where the codebook fits, else int16."""
        c, h, w = self.values[x].shape
        k, n = dense.kernel, self.ident[dense.name]
        wide = int(np.abs(dense.codebook).max()) > 127
        ctype = "int16_t" if wide else "int8_t"
        weights = dense.weights()[:, 0].transpose(1, 2, 0)  # (kh, kw, C)
        self.data.append(_array(ctype, f"siq_dw_{n}", weights, "{}"))
        self.data.append(_array("int32_t", f"siq_b_{n}", dense.bias, _i32))
        fmt = "dw16" if wide else "dw8"
        plan = LayerPlan(
            dense.name, "conv2d", fmt=fmt, weight_bytes=weights.size * (2 if wide else 1)
        )
        plan.const_bytes += 4 * c
        plan.macs = c * k * k * out[0] * out[1]
        req = self._requant(dense, plan) if dense.requantises else ""
        self.scratch = max(self.scratch, c)
        geometry = (k, dense.stride, dense.padding)
        self.funcs.append(
            layers.depthwise(
                n, (c, h, w), geometry, out, ctype, req, not dense.requantises, self.a <= 4
            )
        )
        self._value(dense.name, (c, *out), not dense.requantises)
        plan.out_bytes = self.values[dense.name].nbytes
        self.steps.append((f"siq_{n}", [x], dense.name))
        self.plans.append(plan)

    def _linear(self, dense: DenseLayer, x: str, output: bool) -> None:
        src = self.values[x]
        k, o, n = src.shape[0], dense.out, self.ident[dense.name]
        call, rb, kp, plan = self._weights(dense, src.hwc)
        plan.macs = o * k
        pixels = src.where == "pixels"
        prep = layers.linear_input(k, kp, pixels)
        if pixels or kp != k:
            plan.patch_values = kp
        self.patch_values = max(self.patch_values, plan.patch_values)
        if output or not dense.requantises:
            rows = call.format(x="x", out="logits", n=f"{o}u", first="1")
            self.funcs.append(layers.linear_logits(n, prep, rows))
            if output:
                self.values[dense.name] = _Value((o,), True, "logits")
            else:
                self._value(dense.name, (o,), True)
                plan.out_bytes = self.values[dense.name].nbytes
            self.steps.append((f"siq_{n}", [x], dense.name))
            self.plans.append(plan)
            return
        req = self._requant(dense, plan)
        self.scratch = max(self.scratch, min(CHUNK, o))
        rows = call.format(x="x", out="siq_acc", n="cnt", first="1")
        self.funcs.append(layers.linear_relu(n, prep, o, CHUNK, rows, req))
        self._value(dense.name, (o,))
        plan.out_bytes = self.values[dense.name].nbytes
        self.steps.append((f"siq_{n}", [x], dense.name))
        self.plans.append(plan)

    # --- the files ------------------------------------------------------------------------

    def _layout(self) -> tuple[int, str, list[str]]:
        """Where every value lives in the arena: (activation bytes, siq_predict's pointer
        declarations, its calls). A chain (every value read by the next step alone) keeps two
        regions that the steps write in turn, r0 and r1; any other graph gets the offsets of
        `_plan_arena` from its values' lifetimes (a residual's identity stays alive while its
        branch runs)."""
        born: dict[str, int] = {}
        lives: dict[str, tuple[int, int]] = {}
        for i, (_, inputs, out) in enumerate(self.steps):
            if self.values[out].where == "arena":
                born[out] = i
                lives[out] = (i, i)
            for x in inputs:
                buf = self._buffer(x)
                if buf in lives:
                    lives[buf] = (lives[buf][0], max(lives[buf][1], i))
        sizes = {v: self.values[v].nbytes for v in lives}
        chain = all(hi <= lo + 1 for lo, hi in lives.values())
        if chain:
            order = sorted(born, key=born.__getitem__)
            region = {v: i % 2 for i, v in enumerate(order)}
            region0 = max([sizes[v] for v in order if region[v] == 0], default=0)
            region1 = max([sizes[v] for v in order if region[v] == 1], default=0)
            arena = max(4, region0 + region1)
            names = {v: f"r{region[v]}" for v in order}
            decl = f"""uint8_t *r0 = (uint8_t *)siq_arena;
    uint8_t *r1 = r0 + {region0};
    (void)r0;
    (void)r1;"""
        else:
            offsets, used = _plan_arena(sizes, lives)
            arena = max(4, used)
            names = {v: f"a + {offsets[v]}" for v in offsets}
            decl = """uint8_t *a = (uint8_t *)siq_arena;
    (void)a;"""

        def arg(name: str) -> str:
            if name == "pixels":
                return name
            value = self.values[name]
            if value.where == "pixels":
                return "pixels"
            if value.where == "logits":
                return "logits"
            ptr = names[self._buffer(name)]
            if value.accumulators:
                return f"(int32_t *)({ptr})"
            return ptr

        calls = [
            f"{fname}({', '.join(arg(x) for x in [*(inputs or ['pixels']), out])});"
            for fname, inputs, out in self.steps
        ]
        return arena, decl, calls

    def _files(self) -> CModel:
        c, h, w = self.m.input_shape
        a = self.a
        patch_words = max(1, _value_bytes(self.patch_values, a) // 4)
        arena, decl, calls_list = self._layout()
        model = CModel(
            files={},
            layers=self.plans,
            activation_bytes=arena,
            patch_bytes=patch_words * 4,
            scratch_bytes=self.scratch * 4,
            decoded_bytes=self.decoded * 4,
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
#define SIQ_ARENA_BYTES {total} /* static RAM: activations, patch, accumulators, decoded weights */

/* Build with -O2 (fastest) or -Os (smallest) and no other flag; it builds warning-free from
   -O0 to -O3 with -std=c99 -Wall -Wextra -Werror -pedantic. With __ARM_FEATURE_DSP
   (Cortex-M4, M7, M33 with DSP) the SIMD multiply-accumulate is used; -DSIQ_PORTABLE forces
   plain C. */

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
        kernels += "".join(decode_kernel(f, a) for f in sorted(self.decoders))
        if self.decoders:
            kernels += decoded_kernel(a)
        calls = "\n    ".join(calls_list)
        source = f"""/* Generated by SIQ (shared/cgen) from bundle {self.bundle_id or "-"}. Do not edit.
{summary}
   arena {arena} B, patch {patch_words * 4} B, accumulators {self.scratch * 4} B, decoded weights {self.decoded * 4} B */
{PRELUDE.format(top=(1 << a) - 1, nibble=1 if a <= 4 else 0)}
{kernels}
{_array("uint8_t", "siq_inq", input_table(self.m), "{}")}
{"".join(self.data)}
/* the one static arena: the activations, the patch buffer, the accumulators */
static uint32_t siq_arena[{(total - model.decoded_bytes) // 4}];
#define siq_patch (siq_arena + {arena // 4})
#define SIQ_PATCH_BYTES {patch_words * 4}u
#define siq_acc ((int32_t *)(siq_arena + {arena // 4 + patch_words}))
{f"static uint64_t siq_dec[{self.decoded // 2}]; /* a convolution's decoded weights */" if self.decoded else ""}
{"".join(self.funcs)}
int siq_predict(const uint8_t *pixels, int32_t *logits)
{{
    {decl}
    if (pixels == NULL || logits == NULL) {{
        return -1;
    }}
    {calls}
    return 0;
}}
"""
        model.files = {"siq_model.h": header, "siq_model.c": source}
        return model


def generate_c(
    model: DenseModel, bundle_id: str | None = None, *, for_size: bool = False
) -> CModel:
    """The C library for a model: `files` holds siq_model.h and siq_model.c. `for_size`
    stores every weighted layer as `bits` (its codes at b bits and a 2^b-entry codebook, no
    256-entry pair tables, one small row kernel): the least flash, at more instructions per
    multiply-accumulate (a Cortex-M0 with 16 KB of flash, issue 29)."""
    return _Emitter(model, bundle_id, for_size).run()
