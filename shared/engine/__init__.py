"""The integer forward pass: a bundle's network run exactly to the integer contract
(docs/ARCHITECTURE.md, "The integer network, precisely"). Two backends with one interface
(`quantize_input`, `forward_int`, `predict`, `.backend`), and the reference they are held to:

    reference     run_reference(manifest, tensors, codes): the plain interpreter of the
                  contract, node by node in int64; every implementation is tested equal to it
    numpy_engine  IntegerNetwork, numpy only (the server evaluates with it); chains run a
                  prepared plan, other graphs the general path in dag.py (DagProgram)
    onnx_engine   OnnxEngine, the bundle's ONNX graph in ONNX Runtime (needs onnxruntime;
                  import it from its module: this package does not, so it loads without it)
    factory       load_engine: the one the client serves with (ONNX Runtime when it can)
    base          what both share: BundleIO, check_images, softmax, SPLIT_MACS
"""

from shared.engine.base import BundleIO, check_images, softmax
from shared.engine.factory import load_engine
from shared.engine.numpy_engine import IntegerNetwork
from shared.engine.reference import run_reference

__all__ = ["IntegerNetwork", "load_engine", "run_reference", "BundleIO", "check_images", "softmax"]
