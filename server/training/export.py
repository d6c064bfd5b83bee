"""From a calibrated `QuantSimNet` to an integer network, a bundle, and its accuracy as the
client will see it (docs/ARCHITECTURE.md, "The integer network, precisely" and "Bundle layout").

For a weighted layer with input scale s_x, weight scale s_w and (ReLU layers) output scale s_y:
    W      = codebook_int[codes]                       (codes: nearest centroid of the weights)
    bias   = round_half_up(b_real / (s_x * s_w))      (accumulator units)
    M      = s_x * s_w / s_y  ~=  multiplier / 2^shift (shared.network.quant.quantize_multiplier)
The last layer's accumulators are the logits, real value acc * (s_x * s_w) = logit_scale.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from server.data import Dataset
from server.training.models import graph_of, layer_name, weighted_layers
from server.training.quantsim import QuantSimNet
from shared.bundle import Bundle, decode_bundle, encode_bundle
from shared.bundle import v2 as bundle_v2
from shared.bundle.bitpack import pack_codes
from shared.engine import IntegerNetwork
from shared.network import bits_of_codebook, quantize_multiplier, round_half_up

__all__ = [
    "integer_layers",
    "build_manifest",
    "encode_quantized",
    "engine_accuracy",
    "engine_predictions",
    "siq_version",
]


def siq_version() -> str:
    try:
        return metadata.version("siq")
    except metadata.PackageNotFoundError:
        return "0.1.0"


def _rounded(obj: Any, digits: int = 6) -> Any:
    """Metrics with floats rounded (they are for people; the manifest stays small)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: _rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v, digits) for v in obj]
    return obj


def integer_layers(sim: QuantSimNet) -> tuple[dict[str, np.ndarray], dict[str, dict], float]:
    """Tensors per the bundle layout, per-layer scales for the manifest, and the logit scale."""
    tensors: dict[str, np.ndarray] = {}
    scales: dict[str, dict] = {}
    s_x = sim.input_scale
    logit_scale = 0.0
    for m in weighted_layers(sim.model):
        lq = sim.layers[layer_name(m)]
        bits = bits_of_codebook(len(lq.codebook_int))
        s_acc = s_x * lq.weight_scale
        codes = sim.codes_of(m).numpy().reshape(-1)  # (n,) C order of the weight
        bias_real = (  # (O,)
            m.bias.detach().double().numpy() if m.bias is not None else np.zeros(len(m.weight))
        )
        tensors[f"{lq.name}.codes"] = pack_codes(codes, bits)
        tensors[f"{lq.name}.codebook"] = lq.codebook_int.astype(np.int32)
        tensors[f"{lq.name}.bias"] = round_half_up(bias_real / s_acc).astype(np.int32)
        scales[lq.name] = {
            "input_scale": s_x,
            "weight_scale": lq.weight_scale,
            "output_scale": lq.output_scale if lq.relu else None,
        }
        if lq.relu:
            assert lq.output_scale is not None, f"{lq.name} is not calibrated"
            mult, shift = quantize_multiplier(s_acc / lq.output_scale)
            tensors[f"{lq.name}.multiplier"] = np.array([mult], dtype=np.int32)
            tensors[f"{lq.name}.shift"] = np.array([shift], dtype=np.int32)
            s_x = lq.output_scale
        else:
            logit_scale = s_acc
    return tensors, scales, logit_scale


def build_manifest(
    sim: QuantSimNet,
    dataset: Dataset,
    *,
    weight_bits: int,
    codebook_bits: int,
    weight_quantizer: str,
    scales: dict[str, dict],
    logit_scale: float,
    metrics: dict[str, Any],
    config: dict[str, Any],
    job_id: str | None = None,
) -> dict[str, Any]:
    c, h, w = dataset.input_shape
    for entry in scales.values():
        entry["weight_quantizer"] = weight_quantizer
    graph = graph_of(sim.model, weight_bits)
    for layer in graph:  # each layer's own codebook width (per-layer bits)
        if layer["name"] in sim.layers:
            layer["weight_bits"] = bits_of_codebook(len(sim.layers[layer["name"]].codebook_int))
    weight_bits = max(g["weight_bits"] for g in graph if g["name"] in sim.layers)  # the widest
    return {
        "format": "siq-bundle",
        "format_version": bundle_v2.VERSION,  # compact: sparse layers, entropy-coded codes
        "graph": graph,
        "input": {
            "channels": c,
            "height": h,
            "width": w,
            "bits": sim.activation_bits,
            "scale": sim.input_scale,
            "preprocess": dict(dataset.preprocess),
            "class_names": list(dataset.class_names),
        },
        "weight_bits": weight_bits,
        "activation_bits": sim.activation_bits,
        "codebook_bits": codebook_bits,
        "logit_scale": logit_scale,
        "layers": scales,
        "metrics": _rounded(metrics),
        "provenance": {
            "job_id": job_id,
            "dataset": dataset.name,
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "siq_version": siq_version(),
            "config": config,
        },
    }


def encode_quantized(
    sim: QuantSimNet,
    dataset: Dataset,
    *,
    weight_bits: int,
    codebook_bits: int = 8,
    weight_quantizer: str = "kmeans",
    metrics: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    job_id: str | None = None,
) -> bytes:
    """Bundle bytes for a calibrated network (validated by shared.bundle on the way)."""
    tensors, scales, logit_scale = integer_layers(sim)
    manifest = build_manifest(
        sim,
        dataset,
        weight_bits=weight_bits,
        codebook_bits=codebook_bits,
        weight_quantizer=weight_quantizer,
        scales=scales,
        logit_scale=logit_scale,
        metrics=dict(metrics or {}),
        config=dict(config or {}),
        job_id=job_id,
    )
    return encode_bundle(manifest, tensors)


def engine_predictions(
    bundle: Bundle | bytes, x_u8: np.ndarray, batch_size: int = 1000
) -> np.ndarray:
    """Labels (N,) from shared.engine for uint8 images (N, C, H, W), as the client computes."""
    net = IntegerNetwork(decode_bundle(bundle) if isinstance(bundle, bytes) else bundle)
    out = [
        net.predict(x_u8[i : i + batch_size].astype(np.float64) / 255.0)[0]
        for i in range(0, len(x_u8), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def engine_accuracy(bundle: Bundle | bytes, x_u8: np.ndarray, y: np.ndarray) -> float:
    return float((engine_predictions(bundle, x_u8) == y).mean()) if len(y) else float("nan")
