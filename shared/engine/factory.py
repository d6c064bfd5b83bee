"""The backend factory: which engine serves a bundle."""

from __future__ import annotations

from typing import Any

from shared.bundle import Bundle
from shared.engine.numpy_engine import IntegerNetwork

__all__ = ["BACKENDS", "load_engine"]

BACKENDS = ("auto", "onnxruntime", "numpy")


def load_engine(bundle: Bundle, *, threads: int = 1, backend: str = "auto") -> Any:
    """The engine to serve a bundle with: `predict(images) -> (labels, probabilities)`,
    `forward_int(codes) -> logits`, both exact to the integer contract.

    `backend="auto"` runs the bundle's ONNX graph in ONNX Runtime when onnxruntime is
    installed (the faster one: bench/results/client.md), else `IntegerNetwork`;
    "onnxruntime" or "numpy" ask for one. Chains and DAGs (format version 3) alike.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be auto, onnxruntime or numpy, not {backend!r}")
    if backend != "numpy":
        try:
            from shared.engine.onnx_engine import OnnxEngine
            from shared.onnx import ExportError
        except ImportError:
            if backend == "onnxruntime":
                raise
        else:
            try:
                return OnnxEngine(bundle, threads=threads)
            except ExportError:  # no exact ONNX graph for it (> 8-bit codebooks, wide sums)
                if backend == "onnxruntime":
                    raise
    return IntegerNetwork(bundle, threads=threads)
