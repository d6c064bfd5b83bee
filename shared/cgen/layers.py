"""C text of the generated layer functions, one function per graph step, every size a literal
(so the compiler can fold the index arithmetic). `shared.cgen.emit` decides what to call with
which constants; `rows` is a call of a row kernel (`shared.cgen.runtime`) and `req` the C
expression requantising `acc` of channel `ch`.

Feature maps are channels-last activation codes read with `siq_get` / written with `siq_put`;
the first layer reads the caller's CHW pixels through the input quantiser table `siq_inq`.
"""

from __future__ import annotations

from shared.cgen.runtime import ROWS

__all__ = [
    "quantize_input",
    "maxpool",
    "gather",
    "conv",
    "conv_decoded",
    "gather_group",
    "depthwise",
    "add",
    "avgpool",
    "global_avgpool",
    "flatten",
    "linear_input",
    "linear_logits",
    "linear_relu",
]


def quantize_input(name: str, c: int, h: int, w: int) -> str:
    """CHW pixels -> channels-last codes (only for a graph that starts with a max-pool)."""
    return f"""
static void {name}(const uint8_t *px, uint8_t *dst)
{{
    uint32_t c, y, x;
    for (c = 0; c < {c}u; c++)
        for (y = 0; y < {h}u; y++)
            for (x = 0; x < {w}u; x++)
                siq_put(dst, (y * {w}u + x) * {c}u + c, siq_inq[px[(c * {h}u + y) * {w}u + x]]);
}}
"""


def _windows(
    name: str, shape: tuple[int, int, int], k: int, s: int, out: tuple[int, int], reduce: str
) -> str:
    """A pool on codes: per output value, `reduce` over its k x k window. `reduce` is
    "max", or the C expression of the stored code from the window's `sum`."""
    c, _, w = shape
    ph, pw = out
    at = f"((y * {s}u + dy) * {w}u + x * {s}u + dx) * {c}u + c"
    if reduce == "max":
        start, step, result = (
            "best",
            f"""{{
                        uint32_t v = siq_get(src, {at});
                        best = v > best ? v : best;
                    }}""",
            "best",
        )
    else:
        start, step, result = (
            "sum",
            f"""
                        sum += siq_get(src, {at});""",
            reduce,
        )
    return f"""
static void {name}(const uint8_t *src, uint8_t *dst)
{{
    uint32_t y, x, c, dy, dx;
    for (y = 0; y < {ph}u; y++)
        for (x = 0; x < {pw}u; x++)
            for (c = 0; c < {c}u; c++) {{
                uint32_t {start} = 0;
                for (dy = 0; dy < {k}u; dy++)
                    for (dx = 0; dx < {k}u; dx++) {step}
                siq_put(dst, (y * {pw}u + x) * {c}u + c, {result});
            }}
}}
"""


def maxpool(name: str, shape: tuple[int, int, int], k: int, s: int, ph: int, pw: int) -> str:
    """A max-pool on codes (one that does not follow a convolution)."""
    return _windows(name, shape, k, s, (ph, pw), "max")


def avgpool(
    name: str, shape: tuple[int, int, int], k: int, s: int, out: tuple[int, int], div: str
) -> str:
    """An average pool on codes: `div` is the C expression of (sum + n // 2) // n."""
    return _windows(name, shape, k, s, out, div)


def gather(
    n: str,
    shape: tuple[int, int, int],
    geometry: tuple[int, int, int],
    pixels: bool,
    kp: int,
    activation_bits: int,
) -> str:
    """`siq_gather_<n>`: one output position's (kh, kw, C) patch of a convolution (kernel,
    stride, padding = geometry) into the patch buffer, zeros where the window is padding."""
    c, h, w = shape
    k, s, p = geometry
    if pixels and p == 0 and k * k * c <= UNROLLED_PATCH:
        return _gather_pixels_unrolled(n, shape, k, s, activation_bits)
    if pixels:  # through the input quantiser, CHW pixels -> (kh, kw, C) patch codes
        inside = "1" if p == 0 else f"iy >= 0 && iy < {h} && ix >= 0 && ix < {w}"
        nibble = activation_bits <= 4
        # codes one per byte first, then packed in pairs: a nibble store per value would be a
        # read-modify-write
        pack = (
            f"""    for (i = 0; i < {kp // 2}u; i++)
        patch[i] = (uint8_t)(vals[2 * i] | vals[2 * i + 1] << 4);"""
            if nibble
            else ""
        )
        vals = f"uint8_t vals[{kp}];" if nibble else "uint8_t *vals = patch;"
        body = f"""
    {vals}
    uint32_t kh, kw, c, i;
    for (kh = 0; kh < {k}u; kh++) {{
        int32_t iy = (int32_t)(oy * {s}u + kh) - {p};
        for (kw = 0; kw < {k}u; kw++) {{
            int32_t ix = (int32_t)(ox * {s}u + kw) - {p};
            int inside = {inside};
            for (c = 0; c < {c}u; c++)
                vals[(kh * {k}u + kw) * {c}u + c] =
                    inside ? siq_inq[src[(c * {h}u + (uint32_t)iy) * {w}u + (uint32_t)ix]] : 0u;
        }}
    }}
    for (i = {k * k * c}u; i < {kp}u; i++)
        vals[i] = 0;
{pack}"""
    elif p == 0:  # each kernel row is one run of k*C codes
        body = f"""
    uint32_t kh;
    for (kh = 0; kh < {k}u; kh++)
        siq_copy(patch, kh * {k * c}u, src, ((oy * {s}u + kh) * {w}u + ox * {s}u) * {c}u, {k * c}u);"""
    else:
        body = f"""
    uint32_t kh;
    int32_t ix0 = (int32_t)(ox * {s}u) - {p};
    uint32_t lo = ix0 < 0 ? (uint32_t)(-ix0) : 0u;
    uint32_t hi = ix0 + {k} > {w} ? (uint32_t)({w} - ix0) : {k}u;
    for (kh = 0; kh < {k}u; kh++) {{
        int32_t iy = (int32_t)(oy * {s}u + kh) - {p};
        uint32_t base = kh * {k * c}u;
        if (iy < 0 || iy >= {h}) {{
            siq_zero(patch, base, {k * c}u);
            continue;
        }}
        siq_zero(patch, base, lo * {c}u);
        siq_copy(patch, base + lo * {c}u, src, ((uint32_t)iy * {w}u + (uint32_t)(ix0 + (int32_t)lo)) * {c}u, (hi - lo) * {c}u);
        siq_zero(patch, base + hi * {c}u, ({k}u - hi) * {c}u);
    }}"""
    return f"""
static void siq_gather_{n}(uint8_t *patch, const uint8_t *src, uint32_t oy, uint32_t ox)
{{{body}
}}
"""


# the largest patch (values) of pixels that a gather writes out value by value, every offset a
# literal: a first convolution's patch in about three instructions a value
UNROLLED_PATCH = 128


def _gather_pixels_unrolled(
    n: str, shape: tuple[int, int, int], k: int, s: int, activation_bits: int
) -> str:
    """`siq_gather_<n>` of a first convolution without padding: each patch word built from its
    values through the input quantiser, every pixel offset a literal (the patch's padding
    values past K are zero: nothing is ORed into them)."""
    c, h, w = shape
    per_word = 8 if activation_bits <= 4 else 4
    width = 32 // per_word
    count = k * k * c
    lines = []
    for start in range(0, count, per_word):
        terms = []
        for i in range(start, min(start + per_word, count)):
            kh, kw, ch = i // (k * c), (i // c) % k, i % c
            shift = width * (i - start)
            term = f"(uint32_t)siq_inq[b[{(ch * h + kh) * w + kw}]]"
            terms.append(f"{term} << {shift}" if shift else term)
        lines.append(f"    v = {' | '.join(terms)};")
        lines.append(f"    SIQ_MEMCPY4(patch + {4 * (start // per_word)}, &v);")
    body = "\n".join(lines)
    return f"""
static void siq_gather_{n}(uint8_t *patch, const uint8_t *src, uint32_t oy, uint32_t ox)
{{
    const uint8_t *b = src + oy * {s * w}u + ox * {s}u;
    uint32_t v;
{body}
}}
"""


def _store(at: str, value: str, req: str, accumulators: bool) -> tuple[str, str]:
    """(the dst parameter, the statement storing channel `ch`'s accumulator `value` at index
    `at`): the int32 itself when the node's value is accumulators, else its code `req` (a C
    expression of `acc`)."""
    if accumulators:
        return "int32_t *dst", f"dst[{at}] = {value};"
    return (
        "uint8_t *dst",
        f"""{{
                int32_t acc = {value};
                siq_put(dst, {at}, {req});
            }}""",
    )


def conv(
    n: str,
    pooled: tuple[int, int],
    window: tuple[int, int],
    o: int,
    rows: str,
    req: str,
    *,
    fetch: str | None = None,
    groups: tuple[int, int] = (1, 0),
    accumulators: bool = False,
    setup: str = "",
) -> str:
    """A convolution with its activation and, when window = (k, s) != (1, 1), the max-pool
    after it: per pooled position, the max of the accumulators over the window, then
    requantised (`req`), or stored as int32 when `accumulators`. `fetch` makes the patch for
    (oy, ox) = (py * s + dy, px * s + dx) and sets `x` to it (default: the gather into the
    patch buffer); `groups` = (g, input channels per group): one gather and one row-kernel call
    per group, with `o` its first output row (`rows` writes from siq_acc + o). `setup` runs
    once first (the weights' decoding)."""
    ph, pw = pooled
    pk, ps = window
    g, ci = groups
    dst, store = _store(f"(py * {pw}u + px) * {o}u + ch", "siq_acc[ch]", req, accumulators)
    if fetch is None and g == 1:  # the layout every chain has had (its bytes unchanged)
        return f"""
static void siq_{n}(const uint8_t *src, {dst})
{{
    uint32_t py, px, dy, dx, ch;
    const uint32_t o = 0;
    memset(siq_patch, 0, SIQ_PATCH_BYTES); /* the padding past K stays zero */{setup and chr(10) + "    " + setup}
    for (py = 0; py < {ph}u; py++)
        for (px = 0; px < {pw}u; px++) {{
            for (dy = 0; dy < {pk}u; dy++)
                for (dx = 0; dx < {pk}u; dx++) {{
                    siq_gather_{n}((uint8_t *)siq_patch, src, py * {ps}u + dy, px * {ps}u + dx);
                    {rows};
                }}
            for (ch = 0; ch < {o}u; ch++) {store}
        }}
}}
"""
    if g > 1:
        step = f"""for (grp = 0; grp < {g}u; grp++) {{
                        const uint32_t o = grp * {o // g}u;
                        siq_gather_{n}((uint8_t *)siq_patch, src, py * {ps}u + dy, px * {ps}u + dx, grp * {ci}u);
                        {rows};
                    }}"""
        head = """uint32_t py, px, dy, dx, ch, grp;
    const uint8_t *x = (const uint8_t *)siq_patch;
    memset(siq_patch, 0, SIQ_PATCH_BYTES); /* the padding past K stays zero */"""
    else:
        step = f"""const uint8_t *x;
                    const uint32_t o = 0;
                    {fetch}
                    {rows};"""
        head = "uint32_t py, px, dy, dx, ch;" + (setup and "\n    " + setup)
    return f"""
static void siq_{n}(const uint8_t *src, {dst})
{{
    {head}
    for (py = 0; py < {ph}u; py++)
        for (px = 0; px < {pw}u; px++) {{
            for (dy = 0; dy < {pk}u; dy++)
                for (dx = 0; dx < {pk}u; dx++) {{
                    {step}
                }}
            for (ch = 0; ch < {o}u; ch++) {store}
        }}
}}
"""


def conv_decoded(
    n: str,
    pooled: tuple[int, int],
    window: tuple[int, int],
    o: int,
    decode: str,
    rows: str,
    req: str,
    *,
    accumulators: bool = False,
) -> str:
    """A convolution (and its fused max-pool, as `conv`) that runs ROWS output channels at a
    time: `decode` puts rows o .. o + cnt - 1 into siq_dec, then every pooled position runs
    `rows` (reading the input map where it is) and stores those channels."""
    ph, pw = pooled
    pk, ps = window
    dst, store = _store(f"(py * {pw}u + px) * {o}u + ch", "siq_acc[j]", req, accumulators)
    return f"""
static void siq_{n}(const uint8_t *src, {dst})
{{
    uint32_t o, py, px, dy, dx, j, ch;
    for (o = 0; o < {o}u; o += {ROWS}u) {{
        const uint32_t cnt = {o}u - o < {ROWS}u ? {o}u - o : {ROWS}u;
        {decode}
        for (py = 0; py < {ph}u; py++)
            for (px = 0; px < {pw}u; px++) {{
                for (dy = 0; dy < {pk}u; dy++)
                    for (dx = 0; dx < {pk}u; dx++)
                        {rows};
                for (j = 0; j < cnt; j++) {{
                    ch = o + j;
                    {store}
                }}
            }}
    }}
}}
"""


def gather_group(
    n: str, shape: tuple[int, int, int], geometry: tuple[int, int, int], ci: int
) -> str:
    """`siq_gather_<n>` of a grouped convolution: the (kh, kw, ci) patch of channels
    c0 .. c0 + ci - 1 at one output position, zeros where the window is padding."""
    c, h, w = shape
    k, s, p = geometry
    return f"""
static void siq_gather_{n}(uint8_t *patch, const uint8_t *src, uint32_t oy, uint32_t ox, uint32_t c0)
{{
    uint32_t kh, kw;
    for (kh = 0; kh < {k}u; kh++) {{
        int32_t iy = (int32_t)(oy * {s}u + kh) - {p};
        for (kw = 0; kw < {k}u; kw++) {{
            int32_t ix = (int32_t)(ox * {s}u + kw) - {p};
            uint32_t at = (kh * {k}u + kw) * {ci}u;
            if (iy < 0 || iy >= {h} || ix < 0 || ix >= {w})
                siq_zero(patch, at, {ci}u);
            else
                siq_copy(patch, at, src, ((uint32_t)iy * {w}u + (uint32_t)ix) * {c}u + c0, {ci}u);
        }}
    }}
}}
"""


def _inner(k: int, s: int, p: int, size: int, out: int) -> tuple[int, int]:
    """(first, count) of the output rows (or columns) whose k taps all lie inside the map."""
    first = -(-p // s)
    last = min(out, (size - k + p) // s + 1) if size - k + p >= 0 else first
    return first, max(0, last - first)


def _in_range(var: str, first: int, count: int) -> str:
    """C condition `first <= var < first + count` (one unsigned compare)."""
    if count == 0:
        return "0"
    return f"{var} < {count}u" if first == 0 else f"{var} - {first}u < {count}u"


def depthwise(
    n: str,
    shape: tuple[int, int, int],
    geometry: tuple[int, int, int],
    out: tuple[int, int],
    wtype: str,
    req: str,
    accumulators: bool,
    nibbles: bool,
) -> str:
    """A depthwise convolution on channels-last codes, one channel at a time: its k x k
    weights (`siq_dw_<n>`, (kh, kw, C) order, of C type `wtype`) held in locals across the
    output positions and the sum in a register. An output whose window lies inside the map
    reads its k * k codes at literal offsets (with `nibbles` and an even C every code of the
    channel sits in the same half of its byte); one whose window meets the padding takes the
    slow path that skips the taps outside (code 0 adds nothing)."""
    c, h, w = shape
    k, s, p = geometry
    ho, wo = out
    taps = [(kh, kw) for kh in range(k) for kw in range(k)]
    weights = "\n".join(
        f"        const int32_t w{i} = wt[{(kh * k + kw) * c}u];" for i, (kh, kw) in enumerate(taps)
    )
    at = f"((uint32_t)iy0 * {w}u + (uint32_t)ix0) * {c}u + ch"
    if nibbles and c % 2 == 0:  # the channel's codes are all low or all high nibbles
        base = f"const uint8_t *px = src + (({at}) >> 1);"
        code = "(int32_t)((uint32_t)px[{o}] >> half & 15u)"
        offsets = [(kh * w + kw) * c // 2 for kh, kw in taps]
        half = "\n        const uint32_t half = (ch & 1u) << 2;"
    elif nibbles:
        base = f"const uint32_t at = {at};"
        code = "(int32_t)siq_get(src, at + {o}u)"
        offsets = [(kh * w + kw) * c for kh, kw in taps]
        half = ""
    else:
        base = f"const uint8_t *px = src + {at};"
        code = "(int32_t)px[{o}]"
        offsets = [(kh * w + kw) * c for kh, kw in taps]
        half = ""
    fast = " +\n                         ".join(
        f"w{i} * {code.format(o=o)}" for i, o in enumerate(offsets)
    )
    y0, ny = _inner(k, s, p, h, ho)
    x0, nx = _inner(k, s, p, w, wo)
    dst, store = _store(f"(oy * {wo}u + ox) * {c}u + ch", "sum", req, accumulators)
    return f"""
static void siq_{n}(const uint8_t *src, {dst})
{{
    uint32_t ch, oy, ox, kh, kw;
    for (ch = 0; ch < {c}u; ch++) {{
        const {wtype} *wt = siq_dw_{n} + ch;
{weights}
        const int32_t bias = siq_b_{n}[ch];{half}
        for (oy = 0; oy < {ho}u; oy++) {{
            const int32_t iy0 = (int32_t)(oy * {s}u) - {p};
            const int row_inside = {_in_range("oy", y0, ny)};
            for (ox = 0; ox < {wo}u; ox++) {{
                const int32_t ix0 = (int32_t)(ox * {s}u) - {p};
                int32_t sum = bias;
                if (row_inside && {_in_range("ox", x0, nx)}) {{
                    {base}
                    sum += {fast};
                }} else {{ /* the window meets the padding */
                    for (kh = 0; kh < {k}u; kh++) {{
                        int32_t iy = iy0 + (int32_t)kh;
                        if (iy < 0 || iy >= {h})
                            continue;
                        for (kw = 0; kw < {k}u; kw++) {{
                            int32_t ix = ix0 + (int32_t)kw;
                            if (ix < 0 || ix >= {w})
                                continue;
                            sum += (int32_t)wt[(kh * {k}u + kw) * {c}u] *
                                   (int32_t)siq_get(src, ((uint32_t)iy * {w}u + (uint32_t)ix) * {c}u + ch);
                        }}
                    }}
                }}
                {store}
            }}
        }}
    }}
}}
"""


def add(n: str, count: int, accumulators: bool, mx: int, my: int, s: int, top: str) -> str:
    """out = clip((x * M_x + y * M_y + 2^(s-1)) >> s, 0, top) over `count` values: x int32
    accumulators or codes, y codes, int64 sums."""
    xt = "int32_t" if accumulators else "uint8_t"
    xv = "x[i]" if accumulators else "(int32_t)siq_get(x, i)"
    out = f"siq_shift_clip(v, {s}u)"
    if top != "SIQ_TOP":
        out = f"siq_umin({out}, {top})"
    return f"""
static void siq_{n}(const {xt} *x, const uint8_t *y, uint8_t *dst)
{{
    uint32_t i;
    for (i = 0; i < {count}u; i++) {{
        int64_t v = (int64_t){xv} * {mx} + (int64_t)siq_get(y, i) * {my} + INT64_C({1 << (s - 1)});
        siq_put(dst, i, {out});
    }}
}}
"""


def global_avgpool(name: str, shape: tuple[int, int, int], div: str) -> str:
    """(C, H, W) channels-last -> (C,): per channel (sum + n // 2) // n, n = H * W."""
    c, h, w = shape
    return f"""
static void {name}(const uint8_t *src, uint8_t *dst)
{{
    uint32_t c, i;
    for (c = 0; c < {c}u; c++) {{
        uint32_t sum = 0;
        for (i = 0; i < {h * w}u; i++)
            sum += siq_get(src, i * {c}u + c);
        siq_put(dst, c, {div});
    }}
}}
"""


def flatten(name: str, shape: tuple[int, int, int]) -> str:
    """A flatten whose value something other than a linear layer reads: the channels-last map
    copied into (C, H, W) order (a linear layer instead reads the map in place, its weight
    columns permuted)."""
    c, h, w = shape
    return f"""
static void {name}(const uint8_t *src, uint8_t *dst)
{{
    uint32_t c, i;
    for (c = 0; c < {c}u; c++)
        for (i = 0; i < {h * w}u; i++)
            siq_put(dst, c * {h * w}u + i, siq_get(src, i * {c}u + c));
}}
"""


def linear_input(k: int, kp: int, pixels: bool) -> str:
    """Statements setting `x`, a linear layer's input of k values padded to kp: the pixels
    through the quantiser, a zero-padded copy, or the source itself when nothing is missing."""
    if pixels:
        return f"""    uint32_t i;
    memset(siq_patch, 0, SIQ_PATCH_BYTES);
    for (i = 0; i < {k}u; i++)
        siq_put((uint8_t *)siq_patch, i, siq_inq[src[i]]);
    x = (const uint8_t *)siq_patch;"""
    if kp != k:
        return f"""    memset(siq_patch, 0, SIQ_PATCH_BYTES);
    siq_copy((uint8_t *)siq_patch, 0, src, 0, {k}u);
    x = (const uint8_t *)siq_patch;"""
    return "    x = src; /* read in place: a whole number of activation words */"


def linear_logits(n: str, prep: str, rows: str) -> str:
    """The last layer: its accumulators are the logits."""
    return f"""
static void siq_{n}(const uint8_t *src, int32_t *logits)
{{
    const uint8_t *x;
    const uint32_t o = 0;
{prep}
    {rows};
}}
"""


def linear_relu(n: str, prep: str, o: int, chunk: int, rows: str, req: str) -> str:
    """A hidden linear layer, `chunk` rows into the accumulator scratch, then requantised."""
    return f"""
static void siq_{n}(const uint8_t *src, uint8_t *dst)
{{
    const uint8_t *x;
    uint32_t o, j;
{prep}
    for (o = 0; o < {o}u; o += {chunk}u) {{
        uint32_t cnt = {o}u - o < {chunk}u ? {o}u - o : {chunk}u;
        {rows};
        for (j = 0; j < cnt; j++) {{
            int32_t acc = siq_acc[j];
            uint32_t ch = o + j;
            siq_put(dst, ch, {req});
        }}
    }}
}}
"""
