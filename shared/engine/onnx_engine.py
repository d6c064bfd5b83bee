"""The integer network run by ONNX Runtime: the bundle's "fast" ONNX graph (`shared.onnx.export`:
float32 convolutions, MatMulInteger for large linear layers, int64 adds, integer pool
divisions, the input quantised in the graph; exact by the same bounds as the numpy engine) in
an onnxruntime session, for chains and DAGs alike.

Why: ONNX Runtime runs the whole pass in C++ (MLAS kernels, no Python between layers), where
the numpy engine pays interpreter and dispatch time for each of its ~30 numpy calls a pass
(profiles of both: bench/results/client.md). The session turns off the graph rewrites that
would fold the requantisation's Mul/Add into the weights (`UNSAFE_FUSIONS`); tests compare
its logits with the reference to the last bit and check which ops the rewritten graph keeps.

Same interface as `IntegerNetwork`: `quantize_input`, `forward_int`, `predict`.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.bundle import Bundle
from shared.engine.base import SPLIT_MACS, BundleIO, check_images, softmax
from shared.network import quantize_input, weight_shape
from shared.network.graph import WEIGHTED_OPS, as_dag, check_graph
from shared.onnx import UNSAFE_FUSIONS, to_onnx

__all__ = ["OnnxEngine"]


class OnnxEngine(BundleIO):
    """>>> engine = OnnxEngine(bundle); labels, probs = engine.predict(images)"""

    backend = "onnxruntime"

    def __init__(self, bundle: Bundle, *, threads: int = 1):
        """`threads`: ONNX Runtime's intra-op threads for one call (1 in the client, whose
        requests already run in parallel; calls from several threads at once are safe)."""
        self._read_io(bundle, threads)
        # float32 images in, quantised in the graph as `quantize_input` does (in float64):
        # faster than numpy quantising into a graph that takes codes (tuning_notes.md)
        self.model = to_onnx(bundle, carrier="fast", inputs="images", logits_dtype=None)
        self._slots = threading.local()  # per thread: IO bindings and output buffers
        self._single = self._session(1)
        kind = self._single.get_outputs()[0].type  # "tensor(float)" or "tensor(int32)"
        self._logits_dtype = np.dtype(np.float32 if kind == "tensor(float)" else np.int32)
        # a small batch runs on one thread: waking ONNX Runtime's pool for each of ~30 nodes
        # costs more than it saves (SPLIT_MACS, the numpy engine's threshold too)
        self._pooled = self._session(self.threads) if self.threads > 1 else self._single
        self._split_batch = max(1, self.threads * SPLIT_MACS // max(1, _macs(bundle)))

    def _session(self, threads: int) -> Any:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about the host's CPU are not ours to act on
        return ort.InferenceSession(
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
        return self._run(self._images_of(q)).astype(np.int64)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (N,) and softmax probabilities (N, classes) for float images in [0, 1]."""
        x = check_images(x, self.input_shape)
        if x.dtype != np.float32:  # float32 images go in as they are; others via their codes
            x = self._images_of(self.quantize_input(x))
        logits = self._run(x)  # exact integers (int32 or float32), float64 in the multiply
        labels = logits.argmax(axis=1)
        return labels, softmax(np.multiply(logits, self.logit_scale, dtype=np.float64))

    def _images_of(self, q: np.ndarray) -> np.ndarray:
        """Float32 images that quantise to the codes q: float32(c * scale) is within a
        relative 2^-24 of c * scale, so dividing by the scale lands within 2^-16 of c
        (c < 2^8), far from the rounding points c +- 1/2."""
        return (q * self.input_scale).astype(np.float32)

    def _run(self, images: np.ndarray) -> np.ndarray:
        """The logits of float32 images, in a buffer this thread reuses for batches of this
        size: read it before the next call. Bound in and out once (ONNX Runtime's IO binding)
        instead of `session.run`, which builds its feeds and allocates its outputs on every
        call (at batch 1 a large share of the whole pass: bench/results/tuning_notes.md)."""
        n = len(images)
        session = self._pooled if n >= self._split_batch else self._single
        slots = self._slots.__dict__.setdefault("by_batch", {})
        slot = slots.get((id(session), n))
        if slot is None:
            if len(slots) >= 16:  # batch sizes come and go; keep the newest few
                slots.pop(next(iter(slots)))
            out = np.empty((n, len(self.class_names)), self._logits_dtype)
            binding = session.io_binding()
            binding.bind_ortvalue_output("logits", ort.OrtValue.ortvalue_from_numpy(out))
            slot = slots[(id(session), n)] = (binding, out)
        binding, out = slot
        binding.bind_cpu_input("images", np.ascontiguousarray(images, dtype=np.float32))
        session.run_with_iobinding(binding)
        binding.clear_binding_inputs()  # the caller's images are not kept alive by a slot
        return out


def _macs(bundle: Bundle) -> int:
    """Multiply-adds of one image's pass: weights x output positions, per weighted node."""
    m = bundle.manifest
    spec = m["input"]
    graph = as_dag(m["graph"])
    values = check_graph(
        graph, (spec["channels"], spec["height"], spec["width"]), int(m["activation_bits"])
    )
    return sum(
        math.prod(values[node["name"]].shape[1:]) * math.prod(weight_shape(node))
        for node in graph
        if node["op"] in WEIGHTED_OPS
    )
