"""The numpy engine's general path: any graph of the contract (docs/ARCHITECTURE.md, "The
integer network, precisely"), one node at a time. `IntegerNetwork` runs chains through its
prepared fast plan (numpy_engine.py) and every other graph through a `DagProgram`.

The same exactness rules as the fast plan: a weighted node's products run in float32 or
float64 only where its accumulator bound proves every partial sum exact, else in int64; its
requantisation is the checked float form of `fit_affine_requant` where one exists, else the
int64 formula; relu6 is that code clipped again at `clamp_max` (min(clip(v, 0, A), c) =
clip(v, 0, c) for c <= A). Adds and average pools are the integer formulas in int64.
Feature maps are NHWC, so a convolution's patches are strided views of contiguous runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from shared.bundle import layer_weights
from shared.network.graph import (
    INPUT,
    WEIGHTED_OPS,
    activation,
    clamp_top,
    groups,
    output_shape,
    requantises,
)
from shared.network.quant import (
    accumulator_bound,
    affine_requantize,
    carrier_dtype,
    fit_affine_requant,
    requantize,
)

__all__ = ["DagProgram"]


@dataclass
class _Step:
    node: dict[str, Any]
    shape: tuple[int, ...]  # of the node's value, per image (C, H, W) or (F,)
    # weighted nodes: (groups, k*k*C/g, O/g) weights in the carrier dtype, and the bias
    matrix: np.ndarray | None = None
    bias: np.ndarray | None = None
    dtype: np.dtype | None = None
    scale: np.ndarray | None = None  # checked float requantisation constants, or
    offset: np.ndarray | None = None
    multiplier: np.ndarray | None = None  # the int64 formula's (also an add's (2,))
    shift: np.ndarray | None = None
    top: int = 0  # the upper clip of a requantising node
    macs: int = 0  # per image
    scratch: int = 0  # bytes per image of its im2col patches


class DagProgram:
    """A validated bundle's graph (DAG form) prepared for numpy: weights reshaped for the
    products, carriers and requantisation constants chosen once."""

    def __init__(
        self,
        dag: list[dict[str, Any]],
        tensors: dict[str, np.ndarray],
        input_shape: tuple[int, ...],
        bits: int,
    ) -> None:
        self.bits = bits
        shapes: dict[str, tuple[int, ...]] = {INPUT: tuple(input_shape)}
        self.steps: list[_Step] = []
        for node in dag:
            shape = output_shape(node, shapes[node["inputs"][0]])
            shapes[node["name"]] = shape
            step = _Step(node, shape)
            if node["op"] in WEIGHTED_OPS:
                self._prepare_weighted(step, tensors)
            elif node["op"] == "add":
                step.multiplier = tensors[f"{node['name']}.multiplier"].astype(np.int64)
                step.shift = tensors[f"{node['name']}.shift"].astype(np.int64)
            if requantises(node):
                step.top = clamp_top(node, bits)
            self.steps.append(step)
        # after which step each value is last read (then dropped)
        self._last_use = {x: i for i, s in enumerate(self.steps) for x in s.node["inputs"]}
        self.macs = sum(s.macs for s in self.steps)
        values = [input_shape] + [s.shape for s in self.steps]
        self.bytes_per_image = 8 * sum(int(np.prod(v)) for v in values) + max(
            s.scratch for s in self.steps
        )

    def _prepare_weighted(self, step: _Step, tensors: dict[str, np.ndarray]) -> None:
        node = step.node
        w = layer_weights(node, tensors)  # (O, C/g, k, k) or (O, F), int64
        bias = tensors[f"{node['name']}.bias"].astype(np.int64)
        step.dtype = dtype = carrier_dtype(int(accumulator_bound(w, bias, self.bits).max()))
        if node["op"] == "conv2d":
            g = groups(node)
            o, ci, k, _ = w.shape
            # (g, O/g, C/g, k, k) -> (g, k, k, C/g, O/g): the patches' (kh, kw, c) order
            rows = w.reshape(g, o // g, ci, k, k).transpose(0, 3, 4, 2, 1)
            step.matrix = rows.reshape(g, k * k * ci, o // g).astype(dtype)
            step.macs = int(np.prod(step.shape[1:])) * o * k * k * ci
            step.scratch = int(np.prod(step.shape[1:])) * g * k * k * ci * 8
        else:
            step.matrix = w.T[None].astype(dtype)  # (1, F, O)
            step.macs = w.size
        step.bias = bias.astype(dtype)
        if activation(node) == "none":
            return
        multiplier = tensors[f"{node['name']}.multiplier"].astype(np.int64)
        shift = tensors[f"{node['name']}.shift"].astype(np.int64)
        if dtype != np.int64:
            bound = accumulator_bound(w, np.zeros_like(bias), self.bits)
            for kind in dict.fromkeys((dtype, np.dtype(np.float64))):
                fitted = fit_affine_requant(bias, multiplier, shift, self.bits, bound, kind)
                if fitted:
                    step.scale, step.offset = fitted
                    return
        step.multiplier, step.shift = multiplier, shift

    def run(self, codes: np.ndarray) -> np.ndarray:
        """Input codes (N, C, H, W) to the int64 logits (N, classes)."""
        values: dict[str, np.ndarray] = {INPUT: np.asarray(codes).transpose(0, 2, 3, 1)}
        out = values[INPUT]
        for i, step in enumerate(self.steps):
            args = [values[x] for x in step.node["inputs"]]
            out = values[step.node["name"]] = _RUN[step.node["op"]](self, step, args)
            for x in step.node["inputs"]:
                if self._last_use[x] == i:
                    del values[x]
        return np.asarray(out, dtype=np.int64)

    # --- ops: NHWC maps (N, H, W, C) or (N, F) -------------------------------------------

    def _conv2d(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        node, matrix = step.node, step.matrix
        assert matrix is not None and step.dtype is not None
        k, s, p = node["kernel_size"], node["stride"], node["padding"]
        x = args[0]
        n, h, w, c = x.shape
        padded = np.zeros((n, h + 2 * p, w + 2 * p, c), step.dtype)
        padded[:, p : p + h, p : p + w] = x
        _, ho, wo = step.shape
        sn, sh, sw, sc = padded.strides
        windows = as_strided(
            padded, (n, ho, wo, k, k, c), (sn, s * sh, s * sw, sh, sw, sc), writeable=False
        )
        g, kk, og = matrix.shape
        patches = windows.reshape(n * ho * wo, k * k, g, c // g)  # a copy: the im2col
        if kk == k * k and og == 1:  # depthwise: each channel with its own k*k weights
            acc = np.einsum("mkg,kg->mg", patches[..., 0], matrix[:, :, 0].T)
        elif g == 1:
            acc = patches.reshape(len(patches), kk) @ matrix[0]
        else:  # (g, M, k*k*C/g) @ (g, k*k*C/g, O/g) -> (M, g, O/g)
            by_group = patches.transpose(2, 0, 1, 3).reshape(g, len(patches), kk)
            acc = np.matmul(by_group, matrix).transpose(1, 0, 2).reshape(len(patches), g * og)
        return self._activate(step, acc).reshape(n, ho, wo, -1)

    def _linear(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        assert step.matrix is not None
        return self._activate(step, args[0].astype(step.dtype) @ step.matrix[0])

    def _activate(self, step: _Step, acc: np.ndarray) -> np.ndarray:
        """Accumulators (M, O) without the bias to the node's value: its accumulators (int64)
        or its codes."""
        assert step.bias is not None
        if activation(step.node) == "none":
            return (acc + step.bias).astype(np.int64)
        if step.scale is not None and step.offset is not None:
            codes = affine_requantize(
                acc.astype(step.scale.dtype), step.scale, step.offset, self.bits
            )
        else:
            assert step.multiplier is not None and step.shift is not None
            total = acc.astype(np.int64) + step.bias.astype(np.int64)
            codes = requantize(total, step.multiplier, step.shift, self.bits)
        return np.minimum(codes, step.top, out=codes)

    def _add(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        assert step.multiplier is not None and step.shift is not None
        mx, my = (int(v) for v in step.multiplier)
        s = int(step.shift[0])
        total = args[0].astype(np.int64) * mx
        total += args[1].astype(np.int64) * my
        total += 1 << (s - 1)
        total >>= s
        return np.clip(total, 0, step.top, out=total)

    def _windows(self, step: _Step, x: np.ndarray) -> list[np.ndarray]:
        k, s = step.node["kernel_size"], step.node["stride"]
        _, ho, wo = step.shape
        return [
            x[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
            for i in range(k)
            for j in range(k)
        ]

    def _maxpool2d(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        return np.maximum.reduce(self._windows(step, args[0]))

    def _avgpool2d(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        n = step.node["kernel_size"] ** 2
        total = np.add.reduce([w.astype(np.int64) for w in self._windows(step, args[0])])
        return (total + n // 2) // n

    def _global_avgpool(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        n = x.shape[1] * x.shape[2]
        return (x.astype(np.int64).sum(axis=(1, 2)) + n // 2) // n

    def _flatten(self, step: _Step, args: list[np.ndarray]) -> np.ndarray:
        x = args[0]
        if x.ndim == 4:  # NHWC -> the contract's (C, H, W) order
            x = x.transpose(0, 3, 1, 2)
        return x.reshape(len(x), -1)


_RUN = {
    "conv2d": DagProgram._conv2d,
    "linear": DagProgram._linear,
    "add": DagProgram._add,
    "maxpool2d": DagProgram._maxpool2d,
    "avgpool2d": DagProgram._avgpool2d,
    "global_avgpool": DagProgram._global_avgpool,
    "flatten": DagProgram._flatten,
}
