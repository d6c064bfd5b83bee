"""What the C generator reads from a bundle, and how it lays weights out for the chip.

`dense_model(manifest, tensors)` is the one place that reads a bundle: it unpacks every
layer's codes into a dense (O, ...) array. A bundle in another storage form (sparse,
entropy-coded) only needs its own decoder into the same `DenseModel` to be generated.

Layout for the chip (docs/ARCHITECTURE.md, "On chip"): feature maps are channels-last
(H, W, C), so a convolution's patch row is a run of k*C values; each weight row is reordered to
that patch order, padded to a whole number of activation words, and packed in one of these
formats:

- `t4` (4-bit codes): one byte holds the two codes of a *pair slot*; a 256-entry table maps the
  byte to two 16-bit centroids, the first operand of a dual 16-bit multiply-accumulate (SMLAD).
- `t2` (2-bit codes): one byte holds two pair slots; two 256-entry tables map it to their words.
- `t3` (3-bit codes, with nibble activations): the four pair slots of an activation word are
  24 bits (3 bytes, 6 bits a slot); a 64-entry table maps a slot to its two centroids.
- `i8` (8-bit codes whose centroids fit int8, e.g. the uniform W8 baseline): the centroid values
  themselves as int8 bytes, the TFLite-Micro / CMSIS-NN form; SXTB16 widens them in pairs.
- `bits` (any other width): the codes packed at b bits in patch order, decoded one at a time.

Activations are unsigned a-bit codes, stored two per byte when a <= 4 (nibbles) else one per
byte. A 32-bit activation word holds 8 nibbles or 4 bytes; its pair slots (the two values one
SMLAD multiplies) are (0,4) (1,5) (2,6) (3,7) for nibbles, because `(word >> 4j) & 0x000F000F`
extracts them in one instruction, and (0,2) (1,3) for bytes (UXTB16). The weight bytes are
permuted to the same slots, so the decoded weight word lines up with the activation word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.bundle.bitpack import pack_codes, unpack_codes
from shared.errors import UnsupportedModelError
from shared.network import activation, as_dag, groups, requantises, weight_shape

__all__ = [
    "DenseLayer",
    "DenseModel",
    "dense_model",
    "weight_format",
    "group_size",
    "pair_slots",
    "patch_order",
    "pack_rows",
    "pair_table",
]


@dataclass
class DenseLayer:
    """A weighted layer with its codes unpacked: `codes` (O, C/groups, k, k) or (O, I), uint8."""

    name: str
    op: str  # "conv2d" | "linear"
    codes: np.ndarray
    codebook: np.ndarray  # (2^b,) int64
    bits: int
    bias: np.ndarray  # (O,) int64
    activation: str  # "relu" | "relu6" | "none" (the accumulators are its value)
    multiplier: np.ndarray | None = None  # (1,) or (O,) int64
    shift: np.ndarray | None = None
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1
    clamp_max: int | None = None  # relu6's upper clip (a code)

    @property
    def out(self) -> int:
        return int(self.codes.shape[0])

    @property
    def requantises(self) -> bool:
        """Whether its value is codes (relu, relu6), not accumulators."""
        return self.activation != "none"

    @property
    def depthwise(self) -> bool:
        """A convolution with one input and one output channel per group, groups > 1."""
        return self.groups > 1 and self.codes.shape[1] == 1 and self.out == self.groups

    def weights(self) -> np.ndarray:
        """Integer weights codebook[codes], int64, in the layer's weight shape."""
        return self.codebook[self.codes]


@dataclass
class DenseModel:
    """Everything the generator needs: the graph in DAG form (`shared.network.as_dag`), the
    input spec, and the dense weighted layers."""

    graph: list[dict[str, Any]]
    input_shape: tuple[int, int, int]  # (C, H, W)
    input_scale: float
    activation_bits: int
    num_classes: int
    layers: dict[str, DenseLayer] = field(default_factory=dict)
    adds: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # name -> (M_x, M_y, s)


def dense_model(manifest: dict[str, Any], tensors: dict[str, np.ndarray]) -> DenseModel:
    """Read a (validated) bundle's manifest and tensors into a DenseModel."""
    spec = manifest["input"]
    model = DenseModel(
        graph=as_dag(manifest["graph"]),
        input_shape=(int(spec["channels"]), int(spec["height"]), int(spec["width"])),
        input_scale=float(spec["scale"]),
        activation_bits=int(manifest["activation_bits"]),
        num_classes=len(spec["class_names"]),
    )
    for layer in model.graph:
        if layer["op"] == "add":
            name = layer["name"]
            mx, my = (int(v) for v in tensors[f"{name}.multiplier"].reshape(-1))
            model.adds[name] = (mx, my, int(tensors[f"{name}.shift"].reshape(-1)[0]))
        if layer["op"] not in ("conv2d", "linear"):
            continue
        name, bits = layer["name"], int(layer["weight_bits"])
        shape = weight_shape(layer)
        codes = unpack_codes(tensors[f"{name}.codes"], bits, int(np.prod(shape))).reshape(shape)
        requant = requantises(layer)
        model.layers[name] = DenseLayer(
            name=name,
            op=layer["op"],
            codes=codes,
            codebook=tensors[f"{name}.codebook"].astype(np.int64),
            bits=bits,
            bias=tensors[f"{name}.bias"].astype(np.int64),
            activation=activation(layer),
            multiplier=tensors[f"{name}.multiplier"].astype(np.int64) if requant else None,
            shift=tensors[f"{name}.shift"].astype(np.int64) if requant else None,
            kernel=int(layer.get("kernel_size", 1)),
            stride=int(layer.get("stride", 1)),
            padding=int(layer.get("padding", 0)),
            groups=groups(layer),
            clamp_max=int(layer["clamp_max"]) if activation(layer) == "relu6" else None,
        )
    return model


def weight_format(layer: DenseLayer, activation_bits: int) -> str:
    """The chip's storage form for this layer's weights (see the module docstring)."""
    if layer.bits == 4:
        return "t4"
    if layer.bits == 2:
        return "t2"
    if layer.bits == 3 and activation_bits <= 4:
        return "t3"
    if layer.bits == 8 and int(np.abs(layer.codebook).max()) <= 127:
        return "i8"
    return "bits"


def group_size(activation_bits: int) -> int:
    """Activation values per 32-bit word: 8 nibbles (a <= 4) or 4 bytes."""
    return 8 if activation_bits <= 4 else 4


def pair_slots(activation_bits: int) -> list[tuple[int, int]]:
    """The (low, high) value indices one SMLAD multiplies, per activation word, in order."""
    if activation_bits <= 4:
        return [(0, 4), (1, 5), (2, 6), (3, 7)]
    return [(0, 2), (1, 3)]


def patch_order(layer: DenseLayer, source: tuple[int, ...] | None) -> np.ndarray:
    """Codes as (O, K) rows in the order the chip's patch holds the inputs.

    conv2d: (kh, kw, C/groups) (a grouped convolution's rows are its groups' in turn). linear after a flatten of (C, H, W) feature maps held channels-last:
    (H, W, C); `source` is those maps' shape, or None when the input is already a vector in
    its natural order (the image itself, or another linear layer).
    """
    codes = layer.codes
    o = layer.out
    if layer.op == "conv2d":
        return codes.transpose(0, 2, 3, 1).reshape(o, -1)
    if source is not None:
        c, h, w = source
        return codes.reshape(o, c, h, w).transpose(0, 2, 3, 1).reshape(o, -1)
    return codes.reshape(o, -1)


def padded_length(k: int, fmt: str, activation_bits: int) -> int:
    """K rounded up to whole activation words (t2 with nibbles: whole pairs of words, so a
    row is a whole number of bytes... and of 32-bit words, which keeps rows aligned)."""
    g = group_size(activation_bits)
    unit = {"t4": 8, "t3": 8, "t2": 16, "i8": 4, "bits": 32}[fmt]
    unit = max(unit, g)
    return -(-k // unit) * unit


def pack_rows(layer: DenseLayer, rows: np.ndarray, fmt: str, activation_bits: int) -> np.ndarray:
    """(O, K) codes in patch order -> (O, row_bytes) uint8 in the chip's format."""
    o, k = rows.shape
    kp = padded_length(k, fmt, activation_bits)
    codes = np.zeros((o, kp), dtype=np.int64)
    codes[:, :k] = rows  # padding codes meet zero activations: any code will do
    if fmt == "bits":
        return np.stack([pack_codes(r, layer.bits) for r in codes])
    g = group_size(activation_bits)
    slots = pair_slots(activation_bits)
    groups = codes.reshape(o, kp // g, g)  # (O, words, values per word)
    lo = np.stack([groups[:, :, i] for i, _ in slots], axis=2)  # (O, words, slots)
    hi = np.stack([groups[:, :, j] for _, j in slots], axis=2)
    if fmt == "t4":
        packed = lo | hi << 4  # one byte per slot
    elif fmt == "t3":
        slot = lo | hi << 3  # 6 bits per slot, the word's four slots in 3 bytes
        bits24 = slot[:, :, 0] | slot[:, :, 1] << 6 | slot[:, :, 2] << 12 | slot[:, :, 3] << 18
        packed = np.stack([bits24 & 255, bits24 >> 8 & 255, bits24 >> 16], axis=2)
    elif fmt == "t2":
        pair = lo | hi << 2  # 4 bits per slot, two slots per byte
        packed = pair[:, :, 0::2] | pair[:, :, 1::2] << 4
    elif fmt == "i8":
        v_lo, v_hi = layer.codebook[lo], layer.codebook[hi]  # centroid values
        # SXTB16 takes bytes 0 and 2 (slot 2m), with ROR 8 bytes 1 and 3 (slot 2m + 1)
        packed = np.stack(
            [v_lo[:, :, 0::2], v_lo[:, :, 1::2], v_hi[:, :, 0::2], v_hi[:, :, 1::2]], axis=3
        )
        packed = packed & 0xFF
    else:
        raise ValueError(f"unknown weight format {fmt!r}")
    return packed.reshape(o, -1).astype(np.uint8)


def pair_table(layer: DenseLayer, fmt: str) -> np.ndarray:
    """t4: (256,) uint32, byte -> two int16 centroids; t2: (2, 256), byte -> two such words;
    t3: (64,), a 6-bit slot -> two centroids."""
    cb = layer.codebook
    if np.abs(cb).max() > 32767:
        raise UnsupportedModelError(f"layer {layer.name}: codebook values do not fit 16 bits")
    byte = np.arange(256)
    half = cb & 0xFFFF

    def word(lo_code: np.ndarray, hi_code: np.ndarray) -> np.ndarray:
        return (half[lo_code] | half[hi_code] << 16).astype(np.uint32)

    if fmt == "t4":
        return word(byte & 15, byte >> 4)
    if fmt == "t3":
        return word(byte[:64] & 7, byte[:64] >> 3)
    if fmt == "t2":
        # (2, 256): the first slot's words, then the second's (two bases, one scaled load each)
        return np.stack([word(byte & 3, byte >> 2 & 3), word(byte >> 4 & 3, byte >> 6)])
    raise ValueError(f"format {fmt!r} has no pair table")
