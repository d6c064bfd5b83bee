"""The integer forward pass: a bundle's network run exactly to the integer contract.

numpy_engine  IntegerNetwork, the numpy engine (and load_engine, the backend factory)
onnx_engine   OnnxEngine, the bundle's ONNX graph in ONNX Runtime (needs onnxruntime)
"""

from shared.engine.numpy_engine import (
    IntegerNetwork,
    carrier_dtype,
    check_images,
    load_engine,
    softmax,
)

__all__ = [
    "IntegerNetwork",
    "load_engine",
    "check_images",
    "carrier_dtype",
    "softmax",
]
