"""The reference interpreter of the integer contract (docs/ARCHITECTURE.md, "The integer
network, precisely"): one loop over the graph's nodes in DAG form, NCHW, int64 everywhere,
direct loops over kernel offsets, every rounding written out as the formula. Written for
reading, not speed: the numpy engine, the server's quantised forward pass, the ONNX graph and
the generated C are each tested equal to it, to the last bit.

    >>> logits = run_reference(bundle.manifest, bundle.tensors, codes)  # codes (N, C, H, W)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.bundle import layer_weights
from shared.network.graph import INPUT, activation, as_dag, clamp_top, groups

__all__ = ["run_reference", "run_node"]

Tensors = dict[str, np.ndarray]


def run_reference(manifest: dict[str, Any], tensors: Tensors, codes: np.ndarray) -> np.ndarray:
    """Integer input codes (N, C, H, W) to the integer logits (N, classes), int64, for a
    validated bundle's manifest and (version-1 layout) tensors of any format version."""
    bits = int(manifest["activation_bits"])
    values = {INPUT: np.asarray(codes, dtype=np.int64)}
    node: dict[str, Any] = {}
    for node in as_dag(manifest["graph"]):
        inputs = [values[name] for name in node["inputs"]]
        values[node["name"]] = run_node(node, inputs, tensors, bits)
    return values[node["name"]]


def run_node(
    node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int
) -> np.ndarray:
    """One DAG-form node's value (int64, batch first) from its inputs' values."""
    return _OPS[node["op"]](node, inputs, tensors, bits)


def _requantize(node: dict[str, Any], acc: np.ndarray, tensors: Tensors, bits: int) -> np.ndarray:
    """A weighted node's value: its accumulators (activation "none"), or
    clip((acc * M + 2^(s-1)) >> s, 0, top) with M, s per node or per output channel."""
    if activation(node) == "none":
        return acc
    channel_axis = (1, -1) + (1,) * (acc.ndim - 2)  # (1, O, 1, 1) or (1, O)
    m = tensors[f"{node['name']}.multiplier"].astype(np.int64).reshape(channel_axis)
    s = tensors[f"{node['name']}.shift"].astype(np.int64).reshape(channel_axis)
    return np.clip((acc * m + (np.int64(1) << (s - 1))) >> s, 0, clamp_top(node, bits))


def _conv2d(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    (x,) = inputs  # (N, C, H, W) codes
    w = layer_weights(node, tensors)  # (O, C/g, k, k)
    b = tensors[f"{node['name']}.bias"].astype(np.int64)
    k, s, p, g = node["kernel_size"], node["stride"], node["padding"], groups(node)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))  # zero codes around the borders
    n, c, h, wd = xp.shape
    ho, wo = (h - k) // s + 1, (wd - k) // s + 1
    o = len(w)
    ci, co = c // g, o // g  # channels per group, in and out
    acc = np.zeros((n, o, ho, wo), dtype=np.int64)
    for group in range(g):
        xg = xp[:, group * ci : (group + 1) * ci]  # (N, C/g, H, W)
        wg = w[group * co : (group + 1) * co]  # (O/g, C/g, k, k)
        for i in range(k):
            for j in range(k):
                patch = xg[:, :, i : i + s * ho : s, j : j + s * wo : s]  # (N, C/g, Ho, Wo)
                acc[:, group * co : (group + 1) * co] += np.einsum(
                    "nchw,oc->nohw", patch, wg[:, :, i, j]
                )
    acc += b[None, :, None, None]
    return _requantize(node, acc, tensors, bits)


def _linear(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    (x,) = inputs  # (N, F) codes
    w = layer_weights(node, tensors)  # (O, F)
    acc = x @ w.T + tensors[f"{node['name']}.bias"].astype(np.int64)
    return _requantize(node, acc, tensors, bits)


def _add(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    """clip((x * M_x + y * M_y + 2^(s-1)) >> s, 0, top): x codes or accumulators, y codes."""
    x, y = inputs
    mx, my = (int(v) for v in tensors[f"{node['name']}.multiplier"])
    s = int(tensors[f"{node['name']}.shift"][0])
    total = x * mx + y * my + (1 << (s - 1))
    return np.clip(total >> s, 0, clamp_top(node, bits))


def _windows(x: np.ndarray, k: int, s: int) -> list[np.ndarray]:
    """The k*k strided views (N, C, Ho, Wo) whose element (n, c, i, j) is offset (di, dj) of
    window (i, j) (floor mode, no padding)."""
    ho, wo = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return [
        x[:, :, di : di + s * ho : s, dj : dj + s * wo : s] for di in range(k) for dj in range(k)
    ]


def _maxpool2d(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    return np.maximum.reduce(_windows(inputs[0], node["kernel_size"], node["stride"]))


def _avgpool2d(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    """The mean of each window rounded half up: (sum + n // 2) // n, n = k*k."""
    n = node["kernel_size"] ** 2
    total = np.add.reduce(_windows(inputs[0], node["kernel_size"], node["stride"]))
    return (total + n // 2) // n


def _global_avgpool(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    """(N, C, H, W) -> (N, C): (sum + n // 2) // n, n = H*W."""
    x = inputs[0]
    n = x.shape[2] * x.shape[3]
    return (x.sum(axis=(2, 3)) + n // 2) // n


def _flatten(node: dict[str, Any], inputs: list[np.ndarray], tensors: Tensors, bits: int):
    return inputs[0].reshape(len(inputs[0]), -1)  # C order, like torch.flatten(x, 1)


_OPS = {
    "conv2d": _conv2d,
    "linear": _linear,
    "add": _add,
    "maxpool2d": _maxpool2d,
    "avgpool2d": _avgpool2d,
    "global_avgpool": _global_avgpool,
    "flatten": _flatten,
}
