"""The few pieces every ONNX graph of a bundle is built from: `GraphBuilder` (nodes and
constants as protobuf bytes, `shared.onnx.proto`), `Value` (a tensor's name, dtype and a
pending floor) and the dtype-aware primitives `cast`, `settled` and `maxpool`.

`shared.onnx.layers` writes each layer of the integer network with them; `shared.onnx.export`
walks the bundle's graph and assembles the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.bundle import Bundle, layer_weights
from shared.onnx import proto as pb

__all__ = ["GraphBuilder", "Value", "cast", "maxpool", "settled"]


@dataclass
class GraphBuilder:
    """Nodes and initializers of one graph, with unique names from hints."""

    nodes: list[bytes] = field(default_factory=list)
    initializers: list[bytes] = field(default_factory=list)
    count: int = 0
    unpacked: dict[str, np.ndarray] = field(default_factory=dict)

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def const(self, hint: str, array: Any) -> str:
        name = self.name(hint)
        self.initializers.append(pb.tensor(name, np.asarray(array)))
        return name

    def weights(self, bundle: Bundle, layer: dict[str, Any]) -> np.ndarray:
        """The layer's integer weights, unpacked once per export."""
        name = layer["name"]
        if name not in self.unpacked:
            self.unpacked[name] = layer_weights(layer, bundle.tensors)
        return self.unpacked[name]

    def op(self, op: str, inputs: list[str], hint: str, out: str | None = None, **attrs) -> str:
        out = out or self.name(hint)
        self.nodes.append(pb.node(op, inputs, [out], self.name(f"{hint}_{op}"), **attrs))
        return out


@dataclass
class Value:
    name: str
    dtype: np.dtype
    # non-negative floats whose floor is the value: a Cast to uint8 (which truncates) takes
    # them as they are, any other use gets the Floor first (`cast`, `settled`)
    floor_pending: bool = False


def settled(g: GraphBuilder, x: Value) -> Value:
    """x with its pending Floor applied."""
    return Value(g.op("Floor", [x.name], "floor"), x.dtype) if x.floor_pending else x


def cast(g: GraphBuilder, x: Value, dtype: Any) -> Value:
    dtype = np.dtype(dtype)
    if x.floor_pending and dtype == np.uint8:  # truncation is the floor of a non-negative
        return Value(g.op("Cast", [x.name], "cast", to=pb.DTYPES[dtype]), dtype)
    x = settled(g, x)
    if x.dtype == dtype:
        return x
    return Value(g.op("Cast", [x.name], "cast", to=pb.DTYPES[dtype]), dtype)


def maxpool(g: GraphBuilder, x: Value, layer: dict[str, Any]) -> Value:
    k, s = layer["kernel_size"], layer["stride"]
    x = settled(g, x)
    if x.dtype not in (np.float32, np.float64, np.uint8):  # MaxPool's types
        x = cast(g, x, np.uint8)
    pooled = g.op("MaxPool", [x.name], layer["name"], kernel_shape=[k, k], strides=[s, s])
    return Value(pooled, x.dtype)
