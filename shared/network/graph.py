"""The graph contract of a bundle, stated once (docs/ARCHITECTURE.md, "The integer network,
precisely"): which ops there are, how many windows a convolution or max-pool has, the shape
each op outputs, which layers carry a ReLU, the bit width a codebook's length implies, and
the rounding rule. shared.bundle validates with it, shared.engine plans with it, and
the server's models, quantised forward pass and export build with it.

Layers are the manifest's graph entries: dicts with `op` and the op's fields. Shapes are
per image: (C, H, W) for feature maps, (features,) after a flatten.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "WEIGHTED_OPS",
    "KNOWN_OPS",
    "round_half_up",
    "windows",
    "output_shape",
    "weight_shape",
    "carries_relu",
    "is_relu_chain",
    "codebook_size",
    "bits_of_codebook",
]

WEIGHTED_OPS = ("conv2d", "linear")
KNOWN_OPS = ("conv2d", "linear", "maxpool2d", "flatten")


def round_half_up(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """floor(x + 0.5) in float64: the one rounding rule of SIQ (ties go up, also for
    negatives); into `out` (float64, may be x itself) when given. (The server's quantised
    forward pass applies the same formula to torch tensors, where autograd needs it.)"""
    y = np.add(x, 0.5, out=out, dtype=np.float64)
    return np.floor(y, out=y)


def windows(size: int, kernel: int, stride: int) -> int:
    """How many kernel-wide windows at this stride fit in `size` (floor mode: a partial
    window at the end is dropped, as torch's default `ceil_mode=False`). Padding is added
    to `size` by the caller."""
    return (size - kernel) // stride + 1


def output_shape(layer: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
    """A graph node's output shape per image: (C, H, W), or (features,)."""
    op = layer["op"]
    if op == "flatten":
        return (math.prod(shape),)
    if op == "linear":
        return (layer["out_features"],)
    c, h, w = shape
    k, s = layer["kernel_size"], layer["stride"]
    p = layer.get("padding", 0)  # maxpool2d has none
    ho, wo = windows(h + 2 * p, k, s), windows(w + 2 * p, k, s)
    return (c if op == "maxpool2d" else layer["out_channels"], ho, wo)


def weight_shape(layer: dict[str, Any]) -> tuple[int, ...]:
    """Shape of a weighted layer's weight tensor, as torch lays it out."""
    if layer["op"] == "conv2d":
        k = layer["kernel_size"]
        return (layer["out_channels"], layer["in_channels"], k, k)
    return (layer["out_features"], layer["in_features"])


def carries_relu(index: int, weighted_count: int) -> bool:
    """The ReLU-chain rule: every weighted layer but the last is followed by a ReLU (fused
    into its requantisation); the last one's accumulators are the logits. `index` counts
    weighted layers only."""
    return index < weighted_count - 1


def is_relu_chain(relu: Sequence[bool]) -> bool:
    """Whether the weighted layers' `relu` flags, in order, follow the rule."""
    return len(relu) > 0 and all(r is carries_relu(i, len(relu)) for i, r in enumerate(relu))


def codebook_size(bits: int) -> int:
    """A `bits`-bit layer's codebook has exactly 2^bits entries (unused ones included)."""
    return 1 << bits


def bits_of_codebook(length: int) -> int:
    """The weight bits a codebook of `length` entries stands for; ValueError unless a power
    of two."""
    bits = int(length).bit_length() - 1
    if length < 2 or codebook_size(bits) != length:
        raise ValueError(f"a codebook must have 2^b >= 2 entries, got {length}")
    return bits
