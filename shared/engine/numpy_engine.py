"""The integer inference engine: runs a bundle with integer arithmetic only (numpy, no torch).

Semantics are those of docs/ARCHITECTURE.md, "The integer network, precisely". How the engine
gets there fast, and why each shortcut is exact:

- Integer values are carried in float32/float64 arrays so BLAS does the products, only where
  the accumulator bound proves every partial sum exact (|acc| < 2^24 resp. 2^53); otherwise a
  layer runs in int64.
- Requantisation `(acc * multiplier + 2^(shift-1)) >> shift` is applied as
  `floor(acc * scale + offset)` in the carrier's float type, with per-channel constants
  (bias folded in) that `shared.network.quant.fit_affine_requant` proved equal on every accumulator
  the layer can produce; a layer where no such constants are found requantises in int64.
- A max-pool that directly follows a weighted layer is applied to the accumulators before
  requantisation: requantisation is monotonic, so `pool(requant(acc)) == requant(pool(acc))`.
- Activations are NHWC, so a convolution's patches are runs of `k*C` contiguous values, and
  the linear layer after a flatten takes its weight rows in (H, W, C) order, so the flatten is
  a free reshape.
- A graph that is not a chain (residual adds, grouped convolutions, average pools, relu6:
  format version 3) runs through the general path, `shared.engine.dag.DagProgram`, node by
  node with the same exactness rules; chains of any format version keep the plan below.
- Each batch size runs a prepared `_Plan`: scratch arrays allocated and views taken once,
  then reused. Fresh multi-megabyte arrays per layer cost page faults, and Python glue
  between numpy calls holds the GIL, which the threads of a split batch wait on.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from shared.bundle import Bundle, layer_weights
from shared.engine.base import SPLIT_MACS, BundleIO, check_images, softmax
from shared.engine.dag import DagProgram
from shared.network import graph
from shared.network.quant import (
    accumulator_bound,
    affine_requantize,
    carrier_dtype,
    fit_affine_requant,
    quantize_input,
    requantize,
)

__all__ = ["IntegerNetwork"]

# Memory of one prepared batch; larger batches run in pieces of at most this size.
WORKSPACE_BYTES = 32 * 2**20


@dataclass
class _Pool:
    name: str
    kernel: int
    stride: int


@dataclass
class _Weighted:
    name: str
    op: str
    matrix: np.ndarray  # (K, O) in the carrier dtype; K = k*k*C (conv, NHWC order) or inputs
    bias: np.ndarray  # (O,) in the carrier dtype
    dtype: np.dtype
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    relu: bool = True
    # requantisation: verified float constants, or the int64 formula's multiplier and shift
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    pool: _Pool | None = None  # a max-pool fused in front of requantisation


@dataclass
class _Flatten:
    source: tuple[int, ...]  # the (C, H, W) maps it flattens
    to_chw: bool  # True when no linear layer follows to take them in (H, W, C) order


class _Plans:
    """Prepared forward passes (`_Plan`), in caches that one thread at a time checks out; at
    most `keep` caches of at most `per_cache` batch sizes stay alive between calls."""

    def __init__(self, keep: int, per_cache: int = 2) -> None:
        self._free: list[OrderedDict[tuple[int, bool], _Plan]] = []
        self._lock = threading.Lock()
        self._keep, self._per_cache = keep, per_cache

    @contextmanager
    def take(self) -> Iterator[OrderedDict[tuple[int, bool], _Plan]]:
        with self._lock:
            cache = self._free.pop() if self._free else OrderedDict()
        try:
            yield cache
        finally:
            while len(cache) > self._per_cache:
                cache.popitem(last=False)  # the least recently used batch size
            with self._lock:
                if len(self._free) < self._keep:
                    self._free.append(cache)


class IntegerNetwork(BundleIO):
    """A network rebuilt from a bundle alone.

    >>> net = IntegerNetwork(bundle)
    >>> labels, probs = net.predict(images)   # images: float (N, C, H, W) in [0, 1]
    """

    backend = "numpy"

    def __init__(self, bundle: Bundle, *, threads: int = 1):
        """`threads` > 1 splits a batch across that many threads (numpy and BLAS release the
        GIL); keep 1 where requests already run in parallel, as in the client."""
        m = bundle.manifest
        self._read_io(bundle, threads)
        # as many plan caches as threads may run passes at once (a split batch: `threads`;
        # a server's request threads: about one per CPU); more are made on demand, not kept
        self._plans = _Plans(keep=max(self.threads + 1, os.cpu_count() or 1))
        self._layers: list[Any] = []
        self._dag: DagProgram | None = None
        layers = graph.as_chain(m["graph"])
        if layers is None:
            dag = graph.as_dag(m["graph"])
            self._dag = DagProgram(dag, bundle.tensors, self.input_shape, self.activation_bits)
            self._chunk = max(1, WORKSPACE_BYTES // self._dag.bytes_per_image)
            self._macs = self._dag.macs
            return
        shape: tuple[int, ...] = self.input_shape  # (C, H, W), or (features,) after a flatten
        for i, layer in enumerate(layers):
            unit = self._build(layer, bundle.tensors, shape, layers[i + 1 :])
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
            shape = graph.output_shape(layer, shape)
        self._first_dtype = next(x.dtype for x in self._layers if isinstance(x, _Weighted))
        one = _Plan(self, 1, quantized=False)
        self._chunk = max(1, WORKSPACE_BYTES // one.nbytes)  # images per piece, at most
        self._macs = one.macs  # multiply-adds per image

    def _build(
        self,
        layer: dict[str, Any],
        tensors: dict[str, np.ndarray],
        shape: tuple[int, ...],
        rest: list[dict[str, Any]],
    ) -> Any:
        op = layer["op"]
        if op == "flatten":
            return _Flatten(shape, to_chw=not (rest and rest[0]["op"] == "linear"))
        if op == "maxpool2d":
            return _Pool(layer["name"], layer["kernel_size"], layer["stride"])
        name = layer["name"]
        w = layer_weights(layer, tensors)  # (O, C, k, k) or (O, I), int64
        bias = tensors[f"{name}.bias"].astype(np.int64)
        bits = self.activation_bits
        dtype = carrier_dtype(int(accumulator_bound(w, bias, bits).max()))
        if op == "conv2d":
            rows = w.transpose(0, 2, 3, 1)  # (O, kh, kw, C): the order of the patches
        elif (
            self._layers
            and isinstance(self._layers[-1], _Flatten)
            and len(self._layers[-1].source) == 3
        ):
            # after a flatten of NHWC maps: torch's (C, H, W) input order -> (H, W, C)
            c, h, wd = self._layers[-1].source
            rows = w.reshape(len(w), c, h, wd).transpose(0, 2, 3, 1)
        else:
            rows = w
        unit = _Weighted(
            name=name,
            op=op,
            matrix=np.ascontiguousarray(rows.reshape(len(w), -1).T.astype(dtype)),
            bias=bias.astype(dtype),
            dtype=dtype,
            relu=bool(layer["relu"]),
        )
        if op == "conv2d":
            unit.kernel, unit.stride, unit.padding = (
                layer["kernel_size"],
                layer["stride"],
                layer["padding"],
            )
        if unit.relu:
            multiplier = tensors[f"{name}.multiplier"].astype(np.int64)
            shift = tensors[f"{name}.shift"].astype(np.int64)
            fitted = None
            if dtype != np.int64:
                bound = accumulator_bound(w, np.zeros_like(bias), bits)
                for kind in dict.fromkeys((dtype, np.dtype(np.float64))):
                    fitted = fit_affine_requant(bias, multiplier, shift, bits, bound, kind)
                    if fitted:
                        break
            if fitted:
                unit.scale, unit.offset = fitted
            else:
                unit.multiplier, unit.shift = multiplier, shift
        return unit

    # --- inference ------------------------------------------------------------------------

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float images (N, C, H, W) in [0, 1] to a-bit integer codes (int64)."""
        x = self._check_images(x)
        return quantize_input(x, self.input_scale, self.activation_bits)

    def forward_int(self, q: np.ndarray) -> np.ndarray:
        """Integer input codes (N, C, H, W) to integer logits (N, classes), int64."""
        q = self._check_images(q)
        return self._over_threads(lambda part: self._forward(part, quantized=True), q)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (N,) and softmax probabilities (N, classes) for float images in [0, 1]."""
        x = self._check_images(x)
        # quantised inside the threads too: serial float work would not scale
        logits = self._over_threads(lambda part: self._forward(part, quantized=False), x)
        probs = softmax(logits.astype(np.float64) * self.logit_scale)
        return logits.argmax(axis=1), probs

    def _check_images(self, x: np.ndarray) -> np.ndarray:
        return check_images(x, self.input_shape)

    def _over_threads(
        self, fn: Callable[[np.ndarray], np.ndarray], batch: np.ndarray
    ) -> np.ndarray:
        """fn(batch) in pieces that fit WORKSPACE_BYTES, across the thread pool when `threads` > 1."""
        n = len(batch)
        if n == 0:  # no images: no logits (the plans' reshapes need a batch)
            return np.zeros((0, len(self.class_names)), np.int64)
        pieces = -(-n // self._chunk)
        if self.threads > 1 and n * self._macs >= self.threads * SPLIT_MACS and n >= self.threads:
            pieces = -(-max(pieces, self.threads) // self.threads) * self.threads
        if pieces <= 1:
            return fn(batch)
        size, extra = divmod(n, pieces)
        parts, start = [], 0
        for i in range(pieces):  # slices: cheaper than np.array_split
            end = start + size + (i < extra)
            parts.append(batch[start:end])
            start = end
        if self.threads == 1:
            return np.concatenate([fn(p) for p in parts])
        # the calling thread takes a share itself: one thread fewer to wake and wait for
        share = len(parts) // self.threads
        futures = [_pool(self.threads - 1).submit(fn, p) for p in parts[share:]]
        mine = [fn(p) for p in parts[:share]]
        return np.concatenate(mine + [f.result() for f in futures])

    def _forward(self, x: np.ndarray, quantized: bool) -> np.ndarray:
        """Images (N, C, H, W) (codes, or floats to quantise) to int64 logits."""
        if self._dag is not None:
            codes = x if quantized else quantize_input(x, self.input_scale, self.activation_bits)
            return self._dag.run(codes)
        key = (len(x), quantized)
        with self._plans.take() as plans:
            plan = plans.pop(key, None) or _Plan(self, *key)
            plans[key] = plan  # now the most recently used
            return plan.run(x)


Step = Callable[[], object]


class _Plan:
    """The forward pass for one batch size, prepared: every scratch array allocated and every
    view taken once, so a call is the input's quantisation and a flat list of numpy calls
    on fixed arrays. (Python glue between numpy calls holds the GIL; in threaded batches
    each extra microsecond of it is paid again as threads wait for each other.)"""

    def __init__(self, net: IntegerNetwork, n: int, quantized: bool):
        self.net = net
        self.macs = 0  # multiply-adds of the matmuls
        self.steps: list[tuple[str, Step]] = []  # (what it does, the call)
        c, h, w = net.input_shape
        self.nbytes = 0  # of the arrays allocated for this plan
        self.codes = self._array((n, h, w, c), net._first_dtype)  # NHWC
        self.floats = None if quantized else self._array((n, c, h, w), np.dtype(np.float64))
        y = self.codes
        for layer in net._layers:
            if isinstance(layer, _Flatten):
                y = self._flatten(layer, y)
            elif isinstance(layer, _Pool):
                y = self._maxpool(layer.name, y, layer.kernel, layer.stride)
            elif layer.op == "conv2d":
                y = self._activate(layer, self._conv(layer, y))
            else:
                y = self._activate(layer, self._linear(layer, y))
        self.logits = y

    def run(self, x: np.ndarray) -> np.ndarray:
        self.load(x)
        for _, step in self.steps:
            step()
        return self.logits.astype(np.int64)  # a copy: the plan's arrays are reused

    def load(self, x: np.ndarray) -> None:
        """The images (N, C, H, W) into the first layer's NHWC codes, quantised if floats."""
        nhwc = (0, 2, 3, 1)
        if self.floats is None:
            np.copyto(self.codes, x.transpose(nhwc), casting="unsafe")
        else:
            # the codes land in the NHWC buffer directly, through a transposed view
            codes = self.codes.transpose(0, 3, 1, 2)
            quantize_input(x, self.net.input_scale, self.net.activation_bits, codes, self.floats)

    def _flatten(self, layer: _Flatten, y: np.ndarray) -> np.ndarray:
        if not layer.to_chw:  # the next linear layer takes (H, W, C) order: a free reshape
            return y.reshape(len(y), -1)
        out = self._array((len(y), y.shape[3], y.shape[1], y.shape[2]), y.dtype)
        self._emit("flatten", np.copyto, out, y.transpose(0, 3, 1, 2))
        return out.reshape(len(y), -1)

    def _conv(self, layer: _Weighted, x: np.ndarray) -> np.ndarray:
        """NHWC codes (N, H, W, C) to accumulators (N, Ho, Wo, O), bias not added.

        The patches are copied into a (N*Ho*Wo, k*k*C) matrix in (kh, kw, C) order: for a
        fixed kh, the k*C values of a patch are one contiguous run of the input. A
        single-channel input (a grayscale first layer) has runs too short to copy fast; its
        patches are copied transposed, (k*k, N*Ho*Wo), where the runs are image rows.
        """
        k, s, p, dtype = layer.kernel, layer.stride, layer.padding, layer.dtype
        n, h, w, c = x.shape
        if p:  # the borders are zeroed once here and never written again
            padded = self._array((n, h + 2 * p, w + 2 * p, c), dtype)
            padded.fill(0)
            self._emit(f"{layer.name} pad", np.copyto, padded[:, p:-p, p:-p], x, casting="unsafe")
            x = padded
        ho, wo = graph.windows(x.shape[1], k, s), graph.windows(x.shape[2], k, s)
        sn, sh, sw, sc = x.strides
        acc = self._array((n * ho * wo, layer.matrix.shape[1]), dtype)
        if c == 1:
            cols = self._array((k, k, n, ho, wo), dtype)
            windows = as_strided(x, cols.shape, (sh, sw, sn, s * sh, s * sw), writeable=False)
            patches = cols.reshape(k * k, -1).T
        else:
            cols = self._array((n, ho, wo, k, k * c), dtype)
            windows = as_strided(x, cols.shape, (sn, s * sh, s * sw, sh, sc), writeable=False)
            patches = cols.reshape(n * ho * wo, -1)
        self._emit(f"{layer.name} patches", np.copyto, cols, windows, casting="unsafe")
        self._matmul(f"{layer.name} matmul", patches, layer.matrix, acc)
        return acc.reshape(n, ho, wo, -1)

    def _linear(self, layer: _Weighted, x: np.ndarray) -> np.ndarray:
        if x.dtype != layer.dtype:
            cast = self._array(x.shape, layer.dtype)
            self._emit(f"{layer.name} cast", np.copyto, cast, x, casting="unsafe")
            x = cast
        acc = self._array((len(x), layer.matrix.shape[1]), layer.dtype)
        self._matmul(f"{layer.name} matmul", x, layer.matrix, acc)
        return acc

    def _activate(self, layer: _Weighted, acc: np.ndarray) -> np.ndarray:
        """Accumulators (bias not yet added) to the next layer's codes, or to the logits."""
        if not layer.relu:
            self._emit(f"{layer.name} bias", np.add, acc, layer.bias, out=acc)
            return acc
        if layer.pool is not None:  # the bias is constant over a window: it can follow the max
            acc = self._maxpool(layer.pool.name, acc, layer.pool.kernel, layer.pool.stride)
        bits, label = self.net.activation_bits, f"{layer.name} requantise"
        if layer.scale is not None and layer.offset is not None:
            out = (
                acc if acc.dtype == layer.scale.dtype else self._array(acc.shape, layer.scale.dtype)
            )
            self._emit(label, affine_requantize, acc, layer.scale, layer.offset, bits, out=out)
            return out
        assert layer.multiplier is not None and layer.shift is not None
        self._emit(label, _requantize_int, acc, layer.bias, layer.multiplier, layer.shift, bits)
        return acc

    def _maxpool(self, name: str, x: np.ndarray, k: int, stride: int) -> np.ndarray:
        """Max over k x k windows (floor mode) of NHWC maps: first over the k rows of a window
        (strided slices whose W*C values are contiguous), then over its k columns; 2(k-1)
        passes instead of k*k - 1, and the first ones on contiguous runs."""
        n, h, w, c = x.shape
        ho, wo = graph.windows(h, k, stride), graph.windows(w, k, stride)
        rows = self._array((n, ho, w, c), x.dtype)
        windows = [x[:, i : i + stride * (ho - 1) + 1 : stride] for i in range(k)]
        self._max_of(f"{name} rows", rows, windows)
        out = self._array((n, ho, wo, c), x.dtype)
        windows = [rows[:, :, j : j + stride * (wo - 1) + 1 : stride] for j in range(k)]
        self._max_of(f"{name} columns", out, windows)
        return out

    def _max_of(self, label: str, out: np.ndarray, arrays: list[np.ndarray]) -> None:
        if len(arrays) == 1:
            self._emit(label, np.copyto, out, arrays[0])
            return
        self._emit(label, np.maximum, arrays[0], arrays[1], out=out)
        for a in arrays[2:]:
            self._emit(label, np.maximum, out, a, out=out)

    def _matmul(self, label: str, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
        self.macs += a.shape[0] * a.shape[1] * b.shape[1]
        self._emit(label, np.matmul, a, b, out=out)

    def _array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        self.nbytes += math.prod(shape) * dtype.itemsize
        return np.empty(shape, dtype)

    def _emit(self, label: str, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        self.steps.append((label, partial(fn, *args, **kwargs)))


def _requantize_int(
    acc: np.ndarray, bias: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, bits: int
) -> None:
    """The int64 formula, in place: for layers without proved float constants."""
    acc += bias  # exact: the carrier's bound includes the bias
    requantize(acc, multiplier, shift, bits, out=acc)


_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _pool(threads: int) -> ThreadPoolExecutor:
    """One long-lived pool per size: starting threads on every call costs more than a batch."""
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadPoolExecutor(threads, thread_name_prefix="siq-engine")
        return _POOLS[threads]
