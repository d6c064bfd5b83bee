"""The integer forward pass: a bundle's network run exactly to the integer contract
(docs/ARCHITECTURE.md, "The integer network, precisely"). Two backends with one interface
(`quantize_input`, `forward_int`, `predict`, `.backend`):

    numpy_engine  IntegerNetwork, numpy only (the reference; the server evaluates with it)
    onnx_engine   OnnxEngine, the bundle's ONNX graph in ONNX Runtime (needs onnxruntime;
                  import it from its module: this package does not, so it loads without it)
    factory       load_engine: the one the client serves with (ONNX Runtime when it can)
    base          what both share: BundleIO, check_images, softmax, SPLIT_MACS
"""

from shared.engine.base import BundleIO, check_images, softmax
from shared.engine.factory import load_engine
from shared.engine.numpy_engine import IntegerNetwork

__all__ = ["IntegerNetwork", "load_engine", "BundleIO", "check_images", "softmax"]
