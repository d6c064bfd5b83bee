"""What every on-chip measurement checks a generated C library against, and records of it:
the integer engine's logits for uint8 images, and the library's host check and layout as one
row's fields (bench_onchip's MNIST and office10 rows, onchip_m0's M0 rows, the peers' check)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.bundle import Bundle
from shared.cgen import CModel
from shared.engine import IntegerNetwork

__all__ = ["engine_logits", "library_fields"]


def engine_logits(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """shared.engine's integer logits for uint8 images (N, C, H, W): what the C must equal."""
    net = IntegerNetwork(bundle)
    return net.forward_int(net.quantize_input(images.astype(np.float32) / np.float32(255.0)))


def library_fields(
    cmodel: CModel, host: np.ndarray, want: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    """The host build's logits `host` against the engine's `want`, its accuracy, and the
    library's layout: MACs, arena parts and per-layer bytes."""
    return {
        "host_images": len(host),
        "host_equal": bool(np.array_equal(host, want)),
        "c_accuracy": float((host.argmax(axis=1) == labels).mean()),
        "engine_accuracy": float((want.argmax(axis=1) == labels).mean()),
        "macs": sum(p.macs for p in cmodel.layers),
        "activation_bytes": cmodel.activation_bytes,  # SIQ_ARENA_BYTES adds patch and scratch
        "patch_bytes": cmodel.patch_bytes,
        "scratch_bytes": cmodel.scratch_bytes,
        "layers": [
            {
                "name": p.name,
                "op": p.op,
                "format": p.fmt,
                "weight_bytes": p.weight_bytes,
                "table_bytes": p.table_bytes,
                "const_bytes": p.const_bytes,
                "out_bytes": p.out_bytes,
                "macs": p.macs,
                "pool": p.pool,
            }
            for p in cmodel.layers
        ],
    }
