"""The integer network run by ONNX Runtime: the bundle's float-carrier ONNX graph
(`shared.onnx_export`, exact by the same bounds as the numpy engine) in an onnxruntime session.

Why: ONNX Runtime runs the whole pass in C++ (MLAS kernels, no Python between layers), where
the numpy engine pays ~1-5 us of interpreter and dispatch per numpy call, ~30 calls a pass.
The graph is the "fast" carrier: float32 convolutions and uint8 MatMulInteger linear layers,
each the faster of the two exact forms there. Measured in bench/results/client.md. The session turns off the graph fusions that would fold
the requantisation's Mul/Add into the weights (`UNSAFE_FUSIONS`); tests compare its logits
with the reference to the last bit.

Same interface as `IntegerNetwork`: `quantize_input`, `forward_int`, `predict`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort

from shared.bundle import Bundle
from shared.engine import check_images, softmax
from shared.onnx_export import UNSAFE_FUSIONS, to_onnx
from shared.quant import quantize_input

__all__ = ["OnnxEngine"]


class OnnxEngine:
    """>>> engine = OnnxEngine(bundle); labels, probs = engine.predict(images)"""

    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 1):
        """`threads`: ONNX Runtime's intra-op threads for one call (1 in the client, whose
        requests already run in parallel; calls from several threads at once are safe)."""
        m = bundle.manifest
        self.threads = max(1, int(threads))
        self.bundle_id = bundle.id
        self.activation_bits = int(m["activation_bits"])
        self.input_scale = float(m["input"]["scale"])
        self.logit_scale = float(m["logit_scale"])
        self.input_shape = (m["input"]["channels"], m["input"]["height"], m["input"]["width"])
        self.class_names = list(m["input"]["class_names"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about the host's CPU are not ours to act on
        # float32 images in, quantised in the graph as `quantize_input` does (in float64):
        # measured 63 vs 77 us a batch of 1 with numpy quantising into a codes graph
        self.model = to_onnx(bundle, carrier="fast", inputs="images")
        self._session = ort.InferenceSession(
            self.model,
            options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=UNSAFE_FUSIONS,
        )

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float images (N, C, H, W) in [0, 1] to a-bit integer codes (int64)."""
        return quantize_input(
            check_images(x, self.input_shape), self.input_scale, self.activation_bits
        )

    def forward_int(self, q: np.ndarray) -> np.ndarray:
        """Integer input codes (N, C, H, W) to integer logits (N, classes), int64."""
        q = check_images(q, self.input_shape)
        top = (1 << self.activation_bits) - 1
        if q.size and (q.min() < 0 or q.max() > top):
            raise ValueError(f"input codes must lie in 0..{top}")
        return self._run(self._images_of(q))

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (N,) and softmax probabilities (N, classes) for float images in [0, 1]."""
        x = check_images(x, self.input_shape)
        if x.dtype != np.float32:  # float32 images go in as they are; others via their codes
            x = self._images_of(self.quantize_input(x))
        logits = self._run(x)
        return logits.argmax(axis=1), softmax(logits.astype(np.float64) * self.logit_scale)

    def _images_of(self, q: np.ndarray) -> np.ndarray:
        """Float32 images that quantise to the codes q: float32(c * scale) is within a
        relative 2^-24 of c * scale, so dividing by the scale lands within 2^-16 of c
        (c < 2^8), far from the rounding points c +- 1/2."""
        return (q * self.input_scale).astype(np.float32)

    def _run(self, images: np.ndarray) -> np.ndarray:
        out: Any = self._session.run(["logits"], {"images": images})[0]
        return out.astype(np.int64)
