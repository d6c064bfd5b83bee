"""The integer inference engine: runs a bundle with integer arithmetic only (numpy, no torch).

Semantics are those of docs/ARCHITECTURE.md, "The integer network, precisely". For speed,
integer values are carried in float32/float64 arrays so BLAS does the products, only where
the accumulator bound proves every partial sum exact (|acc| < 2^24 resp. 2^53); otherwise a
layer runs in int64. Requantisation is `(acc * multiplier + 2^(shift-1)) >> shift` in int64.

A max-pool that directly follows a weighted layer is applied to the accumulators before
requantisation: requantisation is monotonic, so `pool(requant(acc)) == requant(pool(acc))`
exactly, and pooling first requantises a quarter of the values.

Internally activations are NHWC so that im2col is a single reshape.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from shared.bundle import Bundle, layer_weights
from shared.quant import accumulator_bound, quantize_input, requantize

__all__ = ["IntegerNetwork", "carrier_dtype", "softmax"]

FLOAT32_EXACT = 2**24
FLOAT64_EXACT = 2**53


def carrier_dtype(bound: int) -> np.dtype:
    """The cheapest dtype in which every accumulator with |acc| <= bound is exact."""
    if bound < FLOAT32_EXACT:
        return np.dtype(np.float32)
    if bound < FLOAT64_EXACT:
        return np.dtype(np.float64)
    return np.dtype(np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class _Pool:
    kernel: int
    stride: int


@dataclass
class _Weighted:
    name: str
    op: str
    matrix: np.ndarray  # (K, O) in the carrier dtype; K = C*k*k (conv) or in_features
    matrix_t: np.ndarray  # (O, K): the same weights, rows in torch's (C, kh, kw) order
    bias: np.ndarray  # (O,) in the carrier dtype
    dtype: np.dtype
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    relu: bool = True
    multiplier: np.ndarray | None = None  # (O,) int64, broadcast over the channel axis
    shift: np.ndarray | None = None
    pool: _Pool | None = None  # a max-pool fused in front of requantisation


class _Flatten:
    pass


class IntegerNetwork:
    """A network rebuilt from a bundle alone.

    >>> net = IntegerNetwork(bundle)
    >>> labels, probs = net.predict(images)   # images: float (N, C, H, W) in [0, 1]
    """

    def __init__(self, bundle: Bundle, *, threads: int = 1):
        """`threads` > 1 splits a batch across that many threads (numpy and BLAS release the
        GIL); keep 1 where requests already run in parallel, as in the client."""
        m = bundle.manifest
        self.threads = max(1, int(threads))
        self.bundle_id = bundle.id
        self.activation_bits = int(m["activation_bits"])
        self.input_scale = float(m["input"]["scale"])
        self.logit_scale = float(m["logit_scale"])
        self.input_shape = (m["input"]["channels"], m["input"]["height"], m["input"]["width"])
        self.class_names = list(m["input"]["class_names"])
        self._layers: list[Any] = []
        for layer in m["graph"]:
            unit = self._build(layer, bundle.tensors)
            prev = self._layers[-1] if self._layers else None
            if (
                isinstance(unit, _Pool)
                and isinstance(prev, _Weighted)
                and prev.relu
                and not prev.pool
            ):
                prev.pool = unit
            else:
                self._layers.append(unit)

    def _build(self, layer: dict[str, Any], tensors: dict[str, np.ndarray]) -> Any:
        op = layer["op"]
        if op == "flatten":
            return _Flatten()
        if op == "maxpool2d":
            return _Pool(layer["kernel_size"], layer["stride"])
        name = layer["name"]
        w = layer_weights(layer, tensors)  # (O, C, k, k) or (O, I), int64
        bias = tensors[f"{name}.bias"].astype(np.int64)
        dtype = carrier_dtype(int(accumulator_bound(w, bias, self.activation_bits).max()))
        unit = _Weighted(
            name=name,
            op=op,
            # rows in the (kh, kw, C) order of `_im2col_nhwc`'s patches
            matrix=np.ascontiguousarray(
                (w.transpose(0, 2, 3, 1) if op == "conv2d" else w)
                .reshape(len(w), -1)
                .T.astype(dtype)
            ),
            # single-channel convolutions take transposed patches: (O, k*k) @ (k*k, N*Ho*Wo)
            matrix_t=np.ascontiguousarray(w.reshape(len(w), -1).astype(dtype)),
            bias=bias.astype(dtype),
            dtype=dtype,
        )
        if op == "conv2d":
            unit.kernel, unit.stride, unit.padding = (
                layer["kernel_size"],
                layer["stride"],
                layer["padding"],
            )
        unit.relu = bool(layer["relu"])
        if unit.relu:
            unit.multiplier = tensors[f"{name}.multiplier"].astype(np.int64)
            unit.shift = tensors[f"{name}.shift"].astype(np.int64)
        return unit

    # --- inference ------------------------------------------------------------------------

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float images (N, C, H, W) in [0, 1] to a-bit integer codes (int64)."""
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"expected images of shape (N, {self.input_shape}), got {x.shape}")
        return quantize_input(x, self.input_scale, self.activation_bits)

    def forward_int(self, q: np.ndarray) -> np.ndarray:
        """Integer input codes (N, C, H, W) to integer logits (N, classes), int64."""
        return self._over_threads(self._forward, np.asarray(q))

    def _over_threads(self, fn: Any, batch: np.ndarray) -> np.ndarray:
        """fn(batch), with the batch split across the thread pool when `threads` > 1."""
        if self.threads > 1 and len(batch) >= 8 * self.threads:
            parts = _pool(self.threads).map(fn, np.array_split(batch, self.threads))
            return np.concatenate(list(parts))
        return fn(batch)

    def _forward(self, q: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(q).transpose(0, 2, 3, 1))  # (N, H, W, C)
        for layer in self._layers:
            if isinstance(layer, _Flatten):
                # torch flattens (C, H, W); we hold (H, W, C)
                x = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
            elif isinstance(layer, _Pool):
                x = _maxpool_nhwc(x, layer.kernel, layer.stride)
            else:
                x = self._weighted(layer, x)
        return np.asarray(x).astype(np.int64)

    def _weighted(self, layer: _Weighted, x: np.ndarray) -> np.ndarray:
        x = x.astype(layer.dtype, copy=False)
        if layer.op == "conv2d" and x.shape[3] == 1:
            return self._conv_single_channel(layer, x)
        if layer.op == "conv2d":
            n = len(x)
            cols, (ho, wo) = _im2col_nhwc(x, layer.kernel, layer.stride, layer.padding)
            acc = (cols @ layer.matrix).reshape(n, ho, wo, -1)  # (N, Ho, Wo, O), bias not yet
        else:
            acc = x @ layer.matrix  # (N, O)
        if not layer.relu:
            return acc + layer.bias  # logits
        if layer.pool is not None:
            # the bias is constant over a window, so it can follow the max
            acc = _maxpool_nhwc(acc, layer.pool.kernel, layer.pool.stride)
        return self._requantize(layer, acc)

    def _conv_single_channel(self, layer: _Weighted, x: np.ndarray) -> np.ndarray:
        """A one-channel input (the first layer of a grayscale net) has patches of only k*k
        values, too short to copy fast one by one; its transposed patch matrix (k*k rows of
        N*Ho*Wo) copies contiguous image rows instead (measured ~4x faster on 28x28 digits)."""
        k, s, p = layer.kernel, layer.stride, layer.padding
        img = x[..., 0]  # (N, H, W)
        if p:
            img = np.pad(img, ((0, 0), (p, p), (p, p)))
        win = sliding_window_view(img, (k, k), axis=(1, 2))[:, ::s, ::s]  # (N, Ho, Wo, k, k)
        n, ho, wo = win.shape[:3]
        # one C-level copy (a Python loop of k*k slice copies holds the GIL and does not
        # scale across threads); Wo stays innermost and contiguous
        cols = np.ascontiguousarray(win.transpose(3, 4, 0, 1, 2), dtype=layer.dtype)
        acc = (layer.matrix_t @ cols.reshape(k * k, -1)).reshape(-1, n, ho, wo)  # (O, N, Ho, Wo)
        if layer.pool is not None:  # pool while the windows are contiguous, then go NHWC
            acc = _maxpool(acc, layer.pool.kernel, layer.pool.stride, axes=(2, 3))
        acc = np.ascontiguousarray(acc.transpose(1, 2, 3, 0))  # (N, Ho, Wo, O)
        if not layer.relu:
            return acc + layer.bias
        return self._requantize(layer, acc)

    def _requantize(self, layer: _Weighted, acc: np.ndarray) -> np.ndarray:
        assert layer.multiplier is not None and layer.shift is not None
        acc += layer.bias
        # the clip at 0 is the ReLU; the codes go back into acc's buffer, in the carrier dtype
        return requantize(acc, layer.multiplier, layer.shift, self.activation_bits, out=acc)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (N,) and softmax probabilities (N, classes) for float images in [0, 1]."""
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        # quantise inside the threads too: serial float work would not scale
        logits = self._over_threads(lambda c: self._forward(self.quantize_input(c)), x)
        probs = softmax(logits.astype(np.float64) * self.logit_scale)
        return logits.argmax(axis=1), probs


_POOLS: dict[int, ThreadPoolExecutor] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: starting threads per call cost ~1 ms a batch."""
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="siq-engine")
    return _POOLS[threads]


def _im2col_nhwc(
    x: np.ndarray, k: int, stride: int, padding: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """(N, H, W, C) -> patches (N*Ho*Wo, k*k*C), each patch in (kh, kw, C) order.

    Keeping C innermost makes the one copy run over contiguous memory (measured 3-6x faster
    than the (C, kh, kw) order of torch's weights, which the weight matrix is permuted to).
    """
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    win = sliding_window_view(x, (k, k), axis=(1, 2))  # (N, Ho', Wo', C, k, k), a view
    if stride > 1:
        win = win[:, ::stride, ::stride]
    n, ho, wo = win.shape[:3]
    return win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, -1), (ho, wo)


def _maxpool_nhwc(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    return _maxpool(x, k, stride, axes=(1, 2))


def _maxpool(x: np.ndarray, k: int, stride: int, axes: tuple[int, int]) -> np.ndarray:
    """Max over k x k windows (floor mode) on two axes of `x`, as k*k strided slices."""
    h, w = x.shape[axes[0]], x.shape[axes[1]]
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    rows, cols = stride * (ho - 1) + 1, stride * (wo - 1) + 1

    def window(i: int, j: int) -> np.ndarray:
        index = [slice(None)] * x.ndim
        index[axes[0]] = slice(i, i + rows, stride)
        index[axes[1]] = slice(j, j + cols, stride)
        return x[tuple(index)]

    out = window(0, 0).copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                np.maximum(out, window(i, j), out=out)
    return out
