"""What every engine shares: the bundle's input and output description (`BundleIO`), the
check of a batch's shape, the softmax that turns integer logits into probabilities, and
when a batch is worth splitting across threads."""

from __future__ import annotations

import numpy as np

from shared.bundle import Bundle

__all__ = ["BundleIO", "SPLIT_MACS", "check_images", "softmax"]

# With threads > 1, a batch is split across the threads only when each share has at least
# this many multiply-adds: below it, waking a thread costs more than the share's work
# (bench/results/tuning_notes.md).
SPLIT_MACS = 10_000_000


class BundleIO:
    """What every engine reads from a bundle's manifest: id, bits, scales, input shape, class
    names (`IntegerNetwork`, `OnnxEngine`)."""

    def _read_io(self, bundle: Bundle, threads: int) -> None:
        m = bundle.manifest
        self.threads = max(1, int(threads))
        self.bundle_id = bundle.id
        self.activation_bits = int(m["activation_bits"])
        self.input_scale = float(m["input"]["scale"])
        self.logit_scale = float(m["logit_scale"])
        self.input_shape = (m["input"]["channels"], m["input"]["height"], m["input"]["width"])
        self.class_names = list(m["input"]["class_names"])


def check_images(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """x as a batch (N, C, H, W) of the network's input shape; one image gains N = 1."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[None]
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"expected images of shape (N, {input_shape}), got {x.shape}")
    return x


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float64 logits (N, classes), in one new array (the same values as
    exp(z) / sum(exp(z)), z = logits - max, computed in place)."""
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
