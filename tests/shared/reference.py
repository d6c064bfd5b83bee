"""A deliberately plain reference implementation of the integer contract: NCHW, int64
everywhere, direct loops over kernel offsets, requantisation written out as the formula.
The engine must equal it to the last bit."""

from __future__ import annotations

import numpy as np

from shared.bundle import Bundle
from shared.bundle.bitpack import unpack_codes
from shared.network import weight_shape


def reference_logits(bundle: Bundle, q: np.ndarray) -> np.ndarray:
    m = bundle.manifest
    top = (1 << m["activation_bits"]) - 1
    x = np.asarray(q, dtype=np.int64)  # (N, C, H, W)
    for layer in m["graph"]:
        op, name = layer["op"], layer["name"]
        if op == "flatten":
            x = x.reshape(len(x), -1)
            continue
        if op == "maxpool2d":
            k, s = layer["kernel_size"], layer["stride"]
            n, c, h, w = x.shape
            ho, wo = (h - k) // s + 1, (w - k) // s + 1
            out = np.full((n, c, ho, wo), np.iinfo(np.int64).min, dtype=np.int64)
            for i in range(k):
                for j in range(k):
                    out = np.maximum(out, x[:, :, i : i + s * ho : s, j : j + s * wo : s])
            x = out
            continue
        shape = weight_shape(layer)
        codes = unpack_codes(
            bundle.tensors[f"{name}.codes"], layer["weight_bits"], int(np.prod(shape))
        )
        w = (
            bundle.tensors[f"{name}.codebook"]
            .astype(np.int64)[codes.astype(np.int64)]
            .reshape(shape)
        )
        b = bundle.tensors[f"{name}.bias"].astype(np.int64)
        if op == "conv2d":
            k, s, p = layer["kernel_size"], layer["stride"], layer["padding"]
            xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
            n, _, h, wd = xp.shape
            ho, wo = (h - k) // s + 1, (wd - k) // s + 1
            acc = np.zeros((n, shape[0], ho, wo), dtype=np.int64)
            for i in range(k):
                for j in range(k):
                    patch = xp[:, :, i : i + s * ho : s, j : j + s * wo : s]  # (N, C, Ho, Wo)
                    acc += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
            acc += b[None, :, None, None]
            bshape = (1, -1, 1, 1)
        else:
            acc = x @ w.T + b
            bshape = (1, -1)
        if not layer["relu"]:
            return acc
        mult = bundle.tensors[f"{name}.multiplier"].astype(np.int64).reshape(bshape)
        shift = bundle.tensors[f"{name}.shift"].astype(np.int64).reshape(bshape)
        out = (acc * mult + (np.int64(1) << (shift - 1))) >> shift
        x = np.clip(out, 0, top)
    raise AssertionError("graph ended without logits")
