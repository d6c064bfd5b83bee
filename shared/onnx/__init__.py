"""A bundle as an ONNX graph whose integer logits equal the engine's, bit for bit.

export  to_onnx: the whole graph, and UNSAFE_FUSIONS
layers  each layer as exact ONNX nodes
graph   GraphBuilder and Value, the builder the layers write with
proto   the few ONNX protobuf messages, written straight to wire format (no onnx package)
"""

from shared.onnx.export import OPSET, UNSAFE_FUSIONS, ExportError, to_onnx

__all__ = [
    "OPSET",
    "UNSAFE_FUSIONS",
    "ExportError",
    "to_onnx",
]
