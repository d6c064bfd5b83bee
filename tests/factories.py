"""Builders of valid random bundles for tests that need a network but no training."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.bundle import encode_bundle
from shared.bundle.bitpack import pack_codes
from shared.network import quantize_multiplier, weight_shape

ARCHS: dict[str, dict[str, Any]] = {
    # LeNet-shaped, 1x28x28 digits
    "lenet": {
        "input": (1, 28, 28),
        "graph": [
            {
                "op": "conv2d",
                "name": "conv1",
                "out_channels": 8,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
            },
            {"op": "maxpool2d", "name": "pool1", "kernel_size": 2, "stride": 2},
            {
                "op": "conv2d",
                "name": "conv2",
                "out_channels": 16,
                "kernel_size": 5,
                "stride": 1,
                "padding": 0,
            },
            {"op": "maxpool2d", "name": "pool2", "kernel_size": 2, "stride": 2},
            {"op": "flatten", "name": "flatten"},
            {"op": "linear", "name": "fc1", "out_features": 32},
            {"op": "linear", "name": "fc2", "out_features": 10},
        ],
        "preprocess": {"kind": "digit"},
    },
    # grayscale with a padded, strided first convolution and a pool that follows no layer
    "gray_strided": {
        "input": (1, 17, 17),
        "graph": [
            {
                "op": "conv2d",
                "name": "conv1",
                "out_channels": 4,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
            },
            {
                "op": "conv2d",
                "name": "conv2",
                "out_channels": 6,
                "kernel_size": 3,
                "stride": 1,
                "padding": 0,
            },
            {"op": "maxpool2d", "name": "pool1", "kernel_size": 2, "stride": 2},
            {"op": "flatten", "name": "flatten"},
            {"op": "linear", "name": "fc1", "out_features": 3},
        ],
        "preprocess": {"kind": "digit"},
    },
    # small RGB net with padding, stride and an overlapping pool
    "photo": {
        "input": (3, 16, 16),
        "graph": [
            {
                "op": "conv2d",
                "name": "conv1",
                "out_channels": 6,
                "kernel_size": 3,
                "stride": 1,
                "padding": 1,
            },
            {"op": "maxpool2d", "name": "pool1", "kernel_size": 3, "stride": 2},
            {
                "op": "conv2d",
                "name": "conv2",
                "out_channels": 8,
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
            },
            {"op": "flatten", "name": "flatten"},
            {"op": "linear", "name": "fc1", "out_features": 5},
        ],
        "preprocess": {"kind": "photo", "resize": 18, "crop": 16},
    },
}


def make_random_network(
    seed: int = 0,
    *,
    arch: str = "lenet",
    weight_bits: int = 4,
    activation_bits: int = 4,
    codebook_bits: int = 8,
    per_channel: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A random but well-scaled integer network: (manifest, tensors) ready for encode_bundle."""
    rng = np.random.default_rng(seed)
    spec = ARCHS[arch]
    top = (1 << activation_bits) - 1
    limit = (1 << (codebook_bits - 1)) - 1
    shape: tuple[int, ...] = spec["input"]
    graph: list[dict[str, Any]] = []
    tensors: dict[str, np.ndarray] = {}
    weighted = [g["name"] for g in spec["graph"] if g["op"] in ("conv2d", "linear")]
    for template in spec["graph"]:
        layer = dict(template)
        op = layer["op"]
        if op == "flatten":
            shape = (int(np.prod(shape)),)
        elif op == "maxpool2d":
            k, s = layer["kernel_size"], layer["stride"]
            shape = (shape[0], (shape[1] - k) // s + 1, (shape[2] - k) // s + 1)
        else:
            layer["weight_bits"] = weight_bits
            layer["relu"] = layer["name"] != weighted[-1]
            if op == "conv2d":
                layer["in_channels"] = shape[0]
                k, s, p = layer["kernel_size"], layer["stride"], layer["padding"]
                out = layer["out_channels"]
                shape = (out, (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1)
            else:
                layer["in_features"] = shape[0]
                out = layer["out_features"]
                shape = (out,)
            name = layer["name"]
            count = int(np.prod(weight_shape(layer)))
            fan_in = count // out
            codebook = np.sort(rng.integers(-limit, limit + 1, size=1 << weight_bits)).astype(
                np.int32
            )
            codes = rng.integers(0, 1 << weight_bits, size=count)
            tensors[f"{name}.codes"] = pack_codes(codes, weight_bits)
            tensors[f"{name}.codebook"] = codebook
            # typical |acc| ~ sqrt(fan_in) * rms(w) * rms(x); put the ReLU's range around it
            spread = np.sqrt(fan_in * np.mean(codebook.astype(np.float64) ** 2)) * top / 2
            tensors[f"{name}.bias"] = rng.integers(
                -int(spread / 4), int(spread / 4) + 1, size=out
            ).astype(np.int32)
            if layer["relu"]:
                reals = (
                    top
                    / (2 * spread)
                    * (rng.uniform(0.5, 2.0, size=out) if per_channel else np.ones(1))
                )
                pairs = [quantize_multiplier(float(r)) for r in reals]
                tensors[f"{name}.multiplier"] = np.array([m for m, _ in pairs], dtype=np.int32)
                tensors[f"{name}.shift"] = np.array([s for _, s in pairs], dtype=np.int32)
        graph.append(layer)
    channels, height, width = spec["input"]
    manifest = {
        "format": "siq-bundle",
        "format_version": 1,
        "graph": graph,
        "input": {
            "channels": channels,
            "height": height,
            "width": width,
            "bits": activation_bits,
            "scale": 1.0 / top,
            "preprocess": spec["preprocess"],
            "class_names": [f"class{i}" for i in range(shape[0])],
        },
        "weight_bits": weight_bits,
        "activation_bits": activation_bits,
        "codebook_bits": codebook_bits,
        "logit_scale": 0.01,
        "layers": {},
        "metrics": {},
        "provenance": {"dataset": f"random-{arch}", "job_id": None, "seed": seed},
    }
    return manifest, tensors


def make_random_bundle(seed: int = 0, **kwargs: Any) -> bytes:
    """Bundle bytes of `make_random_network(seed, **kwargs)`."""
    return encode_bundle(*make_random_network(seed, **kwargs))
