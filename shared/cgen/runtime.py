"""The hand-written part of the generated `siq_model.c`: target selection, the activation
store, requantisation, and the multiply-accumulate row kernels (one per weight format).

The kernels are written once for both paths. `siq_smlad` and `siq_sxtb16*` are the Arm DSP
instructions where the compiler says the target has them (`__ARM_FEATURE_DSP`: Cortex-M4,
M7, M33 with DSP) and plain C with the same results everywhere else (host, Cortex-M3), so the
host test checks the very data layout and loop the chip runs.
"""

from __future__ import annotations

import numpy as np

from shared.cgen.model import pair_slots

__all__ = [
    "PRELUDE",
    "row_kernel",
    "decode_kernel",
    "decoded_kernel",
    "DECODED_FORMATS",
    "bytes_per_word",
    "interleave_rows",
    "ROWS",
]

# {top}: largest activation code; {nibble}: 1 when two codes share a byte.
PRELUDE = r"""
#include <stdint.h>
#include <string.h>

#include "siq_model.h"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "siq_model.c assumes a little-endian target"
#endif
#endif

/* The DSP path needs the SIMD multiply-accumulate; -DSIQ_PORTABLE forces the C path. */
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(SIQ_PORTABLE)
#define SIQ_DSP 1
#include <arm_acle.h>
#else
#define SIQ_DSP 0
#endif

#define SIQ_TOP {top}u   /* the largest activation code, 2^a - 1 */
#define SIQ_NIBBLE {nibble}  /* 1: two activation codes per byte, low nibble first */

/* a 4-byte memcpy is one (unaligned-capable) load on Cortex-M3/M4, also when built with
   -ffreestanding, where plain memcpy would be a call */
#if defined(__GNUC__)
#define SIQ_MEMCPY4(d, s) __builtin_memcpy((d), (s), 4)
#else
#define SIQ_MEMCPY4(d, s) memcpy((d), (s), 4)
#endif

static inline uint32_t siq_load32(const uint8_t *p)
{{
    uint32_t v;
    SIQ_MEMCPY4(&v, p);
    return v;
}}

#if SIQ_DSP
/* keeps a constant in a register, so it can be the operand of an AND with a shifted source */
#define SIQ_OPAQUE(x) __asm__("" : "+r"(x))
static inline int32_t siq_smlad(uint32_t a, uint32_t b, int32_t acc)
{{
    return __smlad(a, b, acc); /* acc + a.lo * b.lo + a.hi * b.hi, 16-bit halves */
}}
static inline uint32_t siq_sxtb16(uint32_t x)
{{
    return (uint32_t)__sxtb16(x); /* bytes 0 and 2, sign-extended into the halves */
}}
static inline uint32_t siq_sxtb16_ror8(uint32_t x)
{{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x)); /* bytes 1 and 3 */
    return r;
}}
#else
#define SIQ_OPAQUE(x) ((void)0)
static inline int32_t siq_lo16(uint32_t x)
{{
    return (int32_t)((x & 0xFFFFu) ^ 0x8000u) - 0x8000;
}}
static inline int32_t siq_hi16(uint32_t x)
{{
    return (int32_t)((x >> 16) ^ 0x8000u) - 0x8000;
}}
static inline int32_t siq_smlad(uint32_t a, uint32_t b, int32_t acc)
{{
    return acc + siq_lo16(a) * siq_lo16(b) + siq_hi16(a) * siq_hi16(b);
}}
static inline uint32_t siq_sext8(uint32_t x)
{{
    return (uint32_t)((int32_t)((x & 0xFFu) ^ 0x80u) - 0x80) & 0xFFFFu;
}}
static inline uint32_t siq_sxtb16(uint32_t x)
{{
    return siq_sext8(x) | siq_sext8(x >> 16) << 16;
}}
static inline uint32_t siq_sxtb16_ror8(uint32_t x)
{{
    return siq_sext8(x >> 8) | siq_sext8(x >> 24) << 16;
}}
#endif

/* The activation store: value i of a feature map (channels last) or vector. */
#if SIQ_NIBBLE
static inline uint32_t siq_get(const uint8_t *v, uint32_t i)
{{
    return (uint32_t)(v[i >> 1] >> ((i & 1u) << 2)) & 15u;
}}
static inline void siq_put(uint8_t *v, uint32_t i, uint32_t x)
{{
    uint32_t s = (i & 1u) << 2;
    v[i >> 1] = (uint8_t)(((uint32_t)v[i >> 1] & ~(15u << s)) | (x << s));
}}
#else
static inline uint32_t siq_get(const uint8_t *v, uint32_t i)
{{
    return v[i];
}}
static inline void siq_put(uint8_t *v, uint32_t i, uint32_t x)
{{
    v[i] = (uint8_t)x;
}}
#endif

static inline void siq_copy_bytes(uint8_t *d, const uint8_t *s, uint32_t n)
{{
    if ((((uintptr_t)d | (uintptr_t)s | n) & 3u) == 0) {{
        /* channels-last pixels of 8, 16, ... nibbles: word copies */
        for (; n; n -= 4, d += 4, s += 4) {{
            uint32_t w = siq_load32(s);
            SIQ_MEMCPY4(d, &w);
        }}
        return;
    }}
    while (n--) {{
        *d++ = *s++;
    }}
}}

/* n values from src[si..] to dst[di..]: whole bytes when both start and end on one. */
static inline void siq_copy(uint8_t *dst, uint32_t di, const uint8_t *src, uint32_t si, uint32_t n)
{{
#if SIQ_NIBBLE
    uint32_t i;
    if (((di | si | n) & 1u) == 0) {{
        siq_copy_bytes(dst + (di >> 1), src + (si >> 1), n >> 1);
        return;
    }}
    for (i = 0; i < n; i++) {{
        siq_put(dst, di + i, siq_get(src, si + i));
    }}
#else
    siq_copy_bytes(dst + di, src + si, n);
#endif
}}

static inline void siq_zero(uint8_t *dst, uint32_t di, uint32_t n)
{{
    uint32_t i;
    for (i = 0; i < n; i++) {{
        siq_put(dst, di + i, 0u);
    }}
}}

/* clip(v >> s, 0, TOP), 1 <= s <= 62, where v already holds the rounding term 2^(s-1).
   Only 32-bit shifts (no 64-bit shift helper), and a negative sum is code 0. Always inlined:
   a call per requantised value would cost more than its body. */
#if defined(__GNUC__)
#define SIQ_ALWAYS_INLINE __attribute__((always_inline))
#else
#define SIQ_ALWAYS_INLINE
#endif
/* GCC's scheduling before register allocation hoists a row kernel's table loads ahead of
   their multiplies and runs out of registers (spills: more instructions per multiply-
   accumulate, at -O2 and -O3); the library turns it off for its table kernels (the int8
   kernel is faster with it), so a build with no flag of the user's gets them as measured
   (bench/results/onchip.md). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__)
#define SIQ_KERNEL __attribute__((optimize("no-schedule-insns")))
#else
#define SIQ_KERNEL
#endif
static inline SIQ_ALWAYS_INLINE uint32_t siq_shift_clip(int64_t v, uint32_t s)
{{
    uint64_t u;
    uint32_t hi, lo, q;
    if (v < 0) {{
        return 0u;
    }}
    u = (uint64_t)v;
    hi = (uint32_t)(u >> 32);
    lo = (uint32_t)u;
    if (s >= 32u) {{
        q = hi >> (s - 32u);
    }} else {{
        if (hi >> s) {{
            return SIQ_TOP;
        }}
        q = (hi << (32u - s)) | (lo >> s);
    }}
    return q > SIQ_TOP ? SIQ_TOP : q;
}}

/* clip((acc * m + round) >> s, 0, TOP) with round = 2^(s-1), 1 <= s <= 62: the engine's
   requantisation. */
static inline uint32_t siq_requant(int32_t acc, int32_t m, int64_t round, uint32_t s)
{{
    return siq_shift_clip((int64_t)acc * m + round, s);
}}

/* relu6: the requantised code clipped at clamp_max (<= TOP) */
static inline uint32_t siq_umin(uint32_t a, uint32_t b)
{{
    return a < b ? a : b;
}}

/* A row's accumulator into out: stored when first, else the larger one (a fused max-pool). */
static inline void siq_emit(int32_t *out, int32_t s, int first)
{{
    if (first || s > *out) {{
        *out = s;
    }}
}}
"""

# Per weight format: bytes of one row per activation word, and the C expression of the
# weight word for pair slot j read through row pointer `w`.
# Rows per pass of a row kernel: 4 accumulators, the pointers, the table, the mask and the
# activation word still fit the 13 registers, and fewer rows cost more instructions per MAC
# (bench/results/tuning_notes.md).
ROWS = 4
_BYTES_PER_SLOT = {"t4": 1.0, "t3": 0.75, "t2": 0.5, "i8": 2.0}


def _weight_expr(fmt: str, j: int, at: int) -> str:
    """The weight word of pair slot j, for the row whose bytes start at wp + at."""
    if fmt == "t4":
        return f"tab[wp[{at + j}]]"
    if fmt == "t3":  # one 32-bit load per row and word (the compiler shares it), 6 bits a slot
        return f"tab[(siq_load32(wp + {at}) >> {6 * j}) & 63u]"
    if fmt == "t2":
        return f"{'tab' if j % 2 == 0 else 'tab_hi'}[wp[{at + j // 2}]]"
    if fmt == "i8":
        word = f"siq_load32(wp + {at + 4 * (j // 2)})"
        return f"siq_sxtb16({word})" if j % 2 == 0 else f"siq_sxtb16_ror8({word})"
    raise ValueError(fmt)


def _act_expr(activation_bits: int, j: int) -> str:
    """Pair slot j of activation word v; m is the mask, in a register (one AND with a shifted
    operand per slot on Thumb-2)."""
    if activation_bits <= 4:
        return f"(v >> {4 * j}) & m" if j else "v & m"
    return "v & m" if j == 0 else "(v >> 8) & m"


def bytes_per_word(fmt: str, activation_bits: int) -> int:
    """Bytes of one weight row per activation word (t4, t2, i8)."""
    return int(_BYTES_PER_SLOT[fmt] * len(pair_slots(activation_bits)))


def row_kernel(fmt: str, activation_bits: int) -> str:
    """C text of `siq_rows_<fmt>`: out[o] = bias[o] + row o . x, for n rows of `rb` bytes.

    Rows go ROWS at a time, sharing each decoded activation word; the bytes of such a group
    are interleaved per activation word (`interleave_rows`), so one pointer walks them all. x holds
    `words` activation words. `bits` (any width) is the scalar fallback: one code, one lookup,
    one multiply per value.
    """
    if fmt == "bits":
        return _BITS_KERNEL
    slots = pair_slots(activation_bits)
    per_word = bytes_per_word(fmt, activation_bits)
    tab = "const uint32_t *tab, " if fmt in ("t4", "t3", "t2") else ""
    second = (
        "\n    const uint32_t *tab_hi = tab + 256; /* t2: the second slot's words */"
        if fmt == "t2"
        else ""
    )

    def body(rows: int) -> str:
        lines = []
        for j in range(len(slots)):
            lines.append(f"            p = {_act_expr(activation_bits, j)};")
            for r in range(rows):
                lines.append(
                    f"            s{r} = siq_smlad({_weight_expr(fmt, j, r * per_word)}, p, s{r});"
                )
        return "\n".join(lines)

    return f"""
static {"SIQ_KERNEL " if fmt in ("t4", "t3", "t2") else ""}void siq_rows_{fmt}(const uint8_t *w, uint32_t rb, {tab}const uint8_t *x,
                         uint32_t words, const int32_t *bias, int32_t *out, uint32_t n, int first)
{{
    const uint8_t *end = x + 4u * words;{second}
    /* the rows past the last whole group of {ROWS}: a bound the compiler sees, so it knows the
       tail loop's trip count (at -O3 it otherwise warns that a dead tail could overrun) */
    const uint32_t full = n - n % {ROWS}u;
    uint32_t o = 0, m = {_MASK[activation_bits <= 4]};
    SIQ_OPAQUE(m);
    for (; o < full; o += {ROWS}, w += {ROWS} * rb) {{
        const uint8_t *wp = w, *xp = x;
        int32_t s0 = bias[o], s1 = bias[o + 1], s2 = bias[o + 2], s3 = bias[o + 3];
        do {{
            uint32_t v = siq_load32(xp), p;
            xp += 4;
{body(ROWS)}
            wp += {ROWS * per_word};
        }} while (xp != end);
        siq_emit(out + o, s0, first);
        siq_emit(out + o + 1, s1, first);
        siq_emit(out + o + 2, s2, first);
        siq_emit(out + o + 3, s3, first);
    }}
    for (; o < n; o++, w += rb) {{
        const uint8_t *wp = w, *xp = x;
        int32_t s0 = bias[o];
        do {{
            uint32_t v = siq_load32(xp), p;
            xp += 4;
{body(1)}
            wp += {per_word};
        }} while (xp != end);
        siq_emit(out + o, s0, first);
    }}
}}
"""


def interleave_rows(packed: np.ndarray, per_word: int) -> np.ndarray:
    """(O, row bytes) -> the same bytes with each group of ROWS rows interleaved per
    activation word (row 4i's bytes of word k, then row 4i+1's, ...); the rows left over at
    the end stay as they are (the kernel runs them one at a time)."""
    o, rb = packed.shape
    out = packed.copy()
    groups = o // ROWS
    if groups:
        body = packed[: ROWS * groups].reshape(groups, ROWS, rb // per_word, per_word)
        out[: ROWS * groups] = body.transpose(0, 2, 1, 3).reshape(ROWS * groups, rb)
    return out


_MASK = {True: "0x000F000Fu", False: "0x00FF00FFu"}

# Weight formats whose rows a convolution may decode into RAM once per inference (or per group
# of ROWS rows) as the 16-bit centroid pairs SMLAD takes: the weight words of `_weight_expr`,
# a 64-bit word per two pair slots (the low half first), stored; `siq_rows_d` then reads two
# slots' weights with one load (LDRD) instead of a byte load and a table load per slot (a
# convolution reuses every weight at each output position).
DECODED_FORMATS = ("t4", "t3", "t2", "i8")


def decode_kernel(fmt: str, activation_bits: int) -> str:
    """C text of `siq_decode_<fmt>`: `units` (row, activation word) units of packed weights,
    `bytes_per_word` bytes each, into their pair-slot words (two to a 64-bit word), in the same
    order."""
    slots = len(pair_slots(activation_bits))
    per_word = bytes_per_word(fmt, activation_bits)
    tab = "const uint32_t *tab, " if fmt in ("t4", "t3", "t2") else ""
    second = "\n    const uint32_t *tab_hi = tab + 256;" if fmt == "t2" else ""
    words = "\n".join(
        f"        out[{j // 2}] = (uint64_t){_weight_expr(fmt, j, 0)} |\n"
        f"                 (uint64_t){_weight_expr(fmt, j + 1, 0)} << 32;"
        for j in range(0, slots, 2)
    )
    return f"""
static void siq_decode_{fmt}(const uint8_t *w, {tab}uint64_t *out, uint32_t units)
{{
    const uint8_t *wp = w;{second}
    for (; units; units--, wp += {per_word}, out += {slots // 2}) {{
{words}
    }}
}}
"""


def decoded_kernel(activation_bits: int) -> str:
    """C text of `siq_rows_d`: out[o] = bias[o] + row o . x over decoded weight words `wd`
    (`siq_decode_*`'s order: ROWS rows interleaved per activation word, the rows left over one
    after another). x is `segs` runs of `words` activation words, `stride` bytes apart: one run
    for a patch, a convolution's k kernel rows when it reads its input map in place."""
    slots = len(pair_slots(activation_bits))

    def body(rows: int) -> str:
        lines = []
        for j in range(0, slots, 2):  # two slots of a row: one 64-bit load (LDRD)
            lines.append(f"                p = {_act_expr(activation_bits, j)};")
            lines.append(f"                q = {_act_expr(activation_bits, j + 1)};")
            for r in range(rows):
                at = (r * slots + j) // 2
                lines.append(f"                d = wd[{at}];")
                lines.append(f"                s{r} = siq_smlad((uint32_t)d, p, s{r});")
                lines.append(f"                s{r} = siq_smlad((uint32_t)(d >> 32), q, s{r});")
        return "\n".join(lines)

    def loop(rows: int) -> str:
        return f"""        do {{
            const uint8_t *xp = xs, *end = xs + 4u * words;
            do {{
                uint32_t v = siq_load32(xp), p, q;
                uint64_t d;
                xp += 4;
{body(rows)}
                wd += {rows * slots // 2};
            }} while (xp != end);
            xs += stride;
        }} while (--seg);"""

    return f"""
static SIQ_KERNEL void siq_rows_d(const uint64_t *wd, const uint8_t *x, uint32_t words, uint32_t segs,
                       uint32_t stride, const int32_t *bias, int32_t *out, uint32_t n, int first)
{{
    const uint32_t full = n - n % {ROWS}u;
    uint32_t o = 0, m = {_MASK[activation_bits <= 4]};
    SIQ_OPAQUE(m);
    for (; o < full; o += {ROWS}) {{
        const uint8_t *xs = x;
        uint32_t seg = segs;
        int32_t s0 = bias[o], s1 = bias[o + 1], s2 = bias[o + 2], s3 = bias[o + 3];
{loop(ROWS)}
        siq_emit(out + o, s0, first);
        siq_emit(out + o + 1, s1, first);
        siq_emit(out + o + 2, s2, first);
        siq_emit(out + o + 3, s3, first);
    }}
    for (; o < n; o++) {{
        const uint8_t *xs = x;
        uint32_t seg = segs;
        int32_t s0 = bias[o];
{loop(1)}
        siq_emit(out + o, s0, first);
    }}
}}
"""


_BITS_KERNEL = r"""
static void siq_rows_bits(const uint8_t *w, uint32_t rb, const int16_t *cb, uint32_t bits,
                          const uint8_t *x, uint32_t count, const int32_t *bias, int32_t *out,
                          uint32_t n, int first)
{
    uint32_t o, i, mask = (1u << bits) - 1u;
    for (o = 0; o < n; o++, w += rb) {
        int32_t s = bias[o];
        for (i = 0; i < count; i++) {
            uint32_t pos = i * bits, b = pos >> 3, off = pos & 7u;
            uint32_t c = (uint32_t)w[b] >> off;
            if (off + bits > 8u) {
                c |= (uint32_t)w[b + 1] << (8u - off);
            }
            s += cb[c & mask] * (int32_t)siq_get(x, i);
        }
        siq_emit(out + o, s, first);
    }
}
"""
