"""Networks users bring as float ONNX models (torch-free): `onnx_import` reads a model into
the integer contract's graph and float weights, `stored` is the file the server keeps of it.
server/service/networks.py is the store, server/training/imported.py builds the torch model."""

from server.networks.onnx_import import (
    ONNX_OPS,
    ImportedNetwork,
    NetworkError,
    NetworkTooLargeError,
    import_onnx,
)
from server.networks.stored import StoredNetwork, decode_network, encode_network, read_info

__all__ = [
    "ONNX_OPS",
    "ImportedNetwork",
    "NetworkError",
    "NetworkTooLargeError",
    "import_onnx",
    "StoredNetwork",
    "decode_network",
    "encode_network",
    "read_info",
]
