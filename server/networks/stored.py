"""A network as the server keeps it: one safetensors file (no pickle, bounded header) whose
tensors are the float32 weights, named as `GraphNet` names its parameters, and whose metadata
`siq_network` is JSON: the graph (the manifest's DAG form; a conv2d says whether it has a
`bias` and its `batchnorm_eps`), the input shape (C, H, W), the class count and where it came
from. The job that names the network gets these bytes (server/training/imported.py builds
the `GraphNet`); `GET /networks` reads only the header.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as load_tensors
from safetensors.numpy import save as save_tensors

from server.networks.onnx_import import ImportedNetwork
from shared.errors import ConfigError

__all__ = ["FORMAT_VERSION", "StoredNetwork", "encode_network", "decode_network", "read_info"]

FORMAT_VERSION = 1
_KEY = "siq_network"
MAX_HEADER_BYTES = 16 << 20


@dataclass
class StoredNetwork:
    graph: list[dict[str, Any]]
    weights: dict[str, np.ndarray]
    input_shape: tuple[int, int, int]
    num_classes: int
    info: dict[str, Any]  # the metadata, as GET /networks shows it


def encode_network(net: ImportedNetwork, extra: dict[str, Any]) -> bytes:
    meta = {
        "format_version": FORMAT_VERSION,
        "graph": net.graph,
        "input_shape": list(net.input_shape),
        "num_classes": net.num_classes,
        "onnx_names": net.onnx_names,
        "parameters": int(sum(v.size for v in net.weights.values())),
        **extra,
    }
    return save_tensors(net.weights, metadata={_KEY: json.dumps(meta)})


def _meta(header: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(header["__metadata__"][_KEY])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("the stored network has no SIQ metadata") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ConfigError(f"stored network format {meta.get('format_version')!r} is unknown")
    return dict(meta)


def read_info(path: Path) -> dict[str, Any]:
    """The metadata of the stored network at `path`, reading its header only."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > MAX_HEADER_BYTES:
            raise ConfigError(f"{path.name}: header of {length} bytes")
        return _meta(json.loads(f.read(length)))


def decode_network(data: bytes) -> StoredNetwork:
    try:
        (length,) = struct.unpack("<Q", data[:8])
        meta = _meta(json.loads(data[8 : 8 + length]))
        weights = load_tensors(data)
    except (struct.error, ValueError) as exc:
        raise ConfigError(f"the stored network cannot be read: {exc}") from None
    c, h, w = meta["input_shape"]
    return StoredNetwork(meta["graph"], weights, (c, h, w), int(meta["num_classes"]), meta)
