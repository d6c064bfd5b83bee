"""From a calibrated `QuantSimNet` to an integer network, a bundle, and its accuracy as the
client will see it (docs/ARCHITECTURE.md, "The integer network, precisely" and "Bundle layout").

For a weighted node with input scale s_x, weight scale s_w and (relu / relu6) output scale s_y:
    W      = codebook_int[codes]                       (codes: nearest centroid of the weights)
    bias   = round_half_up(b_real / (s_x * s_w))      (accumulator units)
    M      = s_x * s_w / s_y  ~=  multiplier / 2^shift (shared.network.quant.quantize_multiplier)
    relu6  clamp_max = min(A, round_half_up(6 / s_y))
For an add of x (codes or accumulators, scale s_x) and y (codes, s_y) into codes of scale s_out:
    [M_x, M_y] / 2^shift ~= [s_x / s_out, s_y / s_out]   (one shift: quantize_add_multipliers)
The last node's accumulators are the logits, real value acc * (s_x * s_w) = logit_scale.
A chain network (lenet, photonet) is written as a version-2 bundle in the chain form, as it
always was (shared.network.as_chain); any other graph as version 3.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np

from server.data import Dataset
from server.training.models import graph_of
from server.training.quantsim import QuantSimNet
from shared.bundle import DAG_VERSION, Bundle, decode_bundle, encode_bundle
from shared.bundle import v2 as bundle_v2
from shared.bundle.bitpack import pack_codes
from shared.engine import IntegerNetwork
from shared.network import (
    WEIGHTED_OPS,
    as_chain,
    bits_of_codebook,
    quantize_add_multipliers,
    quantize_multiplier,
    relu6_clamp_max,
    round_half_up,
)

__all__ = [
    "value_scales",
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


def value_scales(sim: QuantSimNet) -> dict[str, float]:
    """Each node's value scale by name ("input" too): of its codes, or of its accumulators
    (s_x * s_w) where a weighted node has no activation. Pools and flatten keep their
    input's."""
    scales = {"input": sim.input_scale}
    for node in sim.model.nodes:
        s_x = scales[node.inputs[0]]
        if node.op in WEIGHTED_OPS:
            lq = sim.layers[node.name]
            out = lq.output_scale if lq.relu else s_x * lq.weight_scale
        elif node.op == "add":
            out = sim.add_scales.get(node.name)
        else:
            out = s_x
        if out is None:
            raise RuntimeError(f"node {node.name} is not calibrated")
        scales[node.name] = out
    return scales


def integer_layers(sim: QuantSimNet) -> tuple[dict[str, np.ndarray], dict[str, dict], float]:
    """Tensors per the bundle layout, per-node scales for the manifest, and the logit scale."""
    tensors: dict[str, np.ndarray] = {}
    scales: dict[str, dict] = {}
    value = value_scales(sim)
    logit_scale = 0.0
    for node in sim.model.nodes:
        if node.op == "add":
            s_x, s_y, s_out = (value[node.inputs[0]], value[node.inputs[1]], value[node.name])
            pair, shared_shift = quantize_add_multipliers(s_x / s_out, s_y / s_out)
            tensors[f"{node.name}.multiplier"] = pair  # (2,) [M_x, M_y]
            tensors[f"{node.name}.shift"] = shared_shift  # (1,)
            scales[node.name] = {"input_scales": [s_x, s_y], "output_scale": s_out}
            continue
        if node.op not in WEIGHTED_OPS:
            continue
        m = sim.model.weighted(node.name)
        lq = sim.layers[node.name]
        bits = bits_of_codebook(len(lq.codebook_int))
        s_x = value[node.inputs[0]]
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
    for name, entry in scales.items():
        if name in sim.layers:
            entry["weight_quantizer"] = weight_quantizer
    graph = graph_of(sim.model, weight_bits)
    for layer in graph:
        if layer["name"] in sim.layers:  # each layer's own codebook width (per-layer bits)
            layer["weight_bits"] = bits_of_codebook(len(sim.layers[layer["name"]].codebook_int))
        if layer.get("activation") == "relu6":
            layer["clamp_max"] = relu6_clamp_max(
                scales[layer["name"]]["output_scale"], sim.activation_bits
            )
    weight_bits = max(g["weight_bits"] for g in graph if g["name"] in sim.layers)  # the widest
    chain = as_chain(graph)
    return {
        "format": "siq-bundle",
        # chains: version 2 (compact: sparse layers, entropy-coded codes); DAGs: version 3
        "format_version": bundle_v2.VERSION if chain is not None else DAG_VERSION,
        "graph": chain if chain is not None else graph,
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
