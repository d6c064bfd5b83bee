"""The few ONNX protobuf messages an exported bundle needs, written straight to wire format.

Why not the `onnx` package: it is 31 MB installed (with its generated protobuf classes and
ml_dtypes) for what is here ~100 lines of varints, and the client builds its graph at load
time. The field numbers are those of onnx/onnx.proto3; tests read the output back with the
real `onnx` package (`onnx.checker.check_model`) and run it in onnxruntime.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["DTYPES", "tensor", "value_info", "node", "graph", "model"]

# TensorProto.DataType
DTYPES: dict[np.dtype, int] = {
    np.dtype(np.float32): 1,
    np.dtype(np.uint8): 2,
    np.dtype(np.int8): 3,
    np.dtype(np.int32): 6,
    np.dtype(np.int64): 7,
    np.dtype(np.float64): 11,
}
# AttributeProto.AttributeType
_FLOAT, _INT, _STRING, _INTS = 1, 2, 3, 7


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 as its two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode())


def _packed(field: int, values: Iterable[int]) -> bytes:
    return _bytes(field, b"".join(_varint(int(v)) for v in values))


def tensor(name: str, array: np.ndarray) -> bytes:
    """TensorProto: dims, data_type, name, raw_data (little-endian)."""
    a = np.ascontiguousarray(array)
    raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
    return _packed(1, a.shape) + _int(2, DTYPES[a.dtype]) + _str(8, name) + _bytes(9, raw)


def value_info(name: str, dtype: np.dtype | type, shape: Sequence[int | str]) -> bytes:
    """ValueInfoProto of a tensor; a str dimension is symbolic (e.g. the batch)."""
    dims = b"".join(
        _bytes(1, _str(2, d) if isinstance(d, str) else _int(1, d)) for d in shape
    )  # TensorShapeProto.Dimension: dim_value 1, dim_param 2
    tensor_type = _int(1, DTYPES[np.dtype(dtype)]) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def _attribute(name: str, value: int | float | str | Sequence[int]) -> bytes:
    out = _str(1, name)
    if isinstance(value, bool | int):
        return out + _int(3, int(value)) + _int(20, _INT)
    if isinstance(value, float):
        return out + _key(2, 5) + struct.pack("<f", value) + _int(20, _FLOAT)
    if isinstance(value, str):
        return out + _bytes(4, value.encode()) + _int(20, _STRING)
    return out + _packed(8, value) + _int(20, _INTS)


def node(op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, **attrs) -> bytes:
    """NodeProto of the default ("ai.onnx") domain."""
    out = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    out += _str(3, name) + _str(4, op)
    return out + b"".join(_bytes(5, _attribute(k, v)) for k, v in attrs.items())


def graph(
    name: str,
    nodes: Sequence[bytes],
    initializers: Sequence[bytes],
    inputs: Sequence[bytes],
    outputs: Sequence[bytes],
) -> bytes:
    """GraphProto: node 1, name 2, initializer 5, input 11, output 12."""
    out = b"".join(_bytes(1, n) for n in nodes) + _str(2, name)
    out += b"".join(_bytes(5, t) for t in initializers)
    out += b"".join(_bytes(11, v) for v in inputs)
    return out + b"".join(_bytes(12, v) for v in outputs)


def model(
    graph_bytes: bytes,
    *,
    opset: int,
    ir_version: int,
    producer: str,
    doc: str = "",
    metadata: dict[str, str] | None = None,
) -> bytes:
    """ModelProto: ir_version 1, producer_name 2, doc_string 6, graph 7, opset_import 8,
    metadata_props 14."""
    out = _int(1, ir_version) + _str(2, producer) + _str(6, doc) + _bytes(7, graph_bytes)
    out += _bytes(8, _str(1, "") + _int(2, opset))
    for k, v in (metadata or {}).items():
        out += _bytes(14, _str(1, k) + _str(2, v))
    return out
