"""What a bundle costs on a chip, computed from its manifest alone: weight memory in bits,
peak activation memory, multiply-accumulates (direct, and the codebook's way), and an energy
estimate per image. Pure functions; `GET /bundles/{id}/cost` and bench/bench_onchip.py show it.

Memory counts the information a chip must hold, not a file format: `n` codes of `b` bits, a
codebook of `2^b` values of `codebook_bits`, a 32-bit bias per output, and per requantisation
entry a 32-bit multiplier and an 8-bit shift. The float32 comparison holds every weight and
bias in 32 bits; the 8-bit baseline (TensorFlow Lite Micro / CMSIS-NN style) holds 8-bit
weights with the same biases and requantisation constants.

The codebook's way of computing an output: with `2^b` centroids, add each of the output's `n`
inputs into the bin of its weight's code (n additions), then multiply each bin sum by its
centroid and add those up (2^b multiplications, 2^b - 1 additions).

The energy figures are an ESTIMATE from a per-operation table (ENERGY_PJ), not a measurement.
"""

from __future__ import annotations

import math
from typing import Any

from shared.network.graph import output_shape

__all__ = ["ENERGY_PJ", "ENERGY_SOURCE", "layer_costs", "cost_report"]

ENERGY_SOURCE = (
    "M. Horowitz, 'Computing's energy problem (and what we can do about it)', ISSCC 2014, "
    "45 nm, 0.9 V: per-operation energies (pJ); memory reads per 64-bit access"
)
ENERGY_PJ = {
    "add_int8": 0.03,
    "add_int32": 0.1,
    "mult_int8": 0.2,
    "mult_int32": 3.1,
    "add_fp32": 0.9,
    "mult_fp32": 3.7,
    "sram_8kb_64bit": 10.0,
    "sram_32kb_64bit": 20.0,
    "sram_1mb_64bit": 100.0,
    "dram_64bit": 1300.0,  # the low end of the table's 1.3-2.6 nJ
}
BIAS_BITS = 32
REQUANT_BITS = 32 + 8  # multiplier + shift
BASELINE_BITS = 8


def _shapes(
    manifest: dict[str, Any],
) -> list[tuple[dict[str, Any], tuple[int, ...], tuple[int, ...]]]:
    """(layer, input shape, output shape) per graph node, shapes per image."""
    spec = manifest["input"]
    shape: tuple[int, ...] = (spec["channels"], spec["height"], spec["width"])
    out = []
    for layer in manifest["graph"]:
        new = output_shape(layer, shape)
        out.append((layer, shape, new))
        shape = new
    return out


def layer_costs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per weighted layer: weights, outputs, MACs, memory bits, operation counts."""
    cb_bits = int(manifest["codebook_bits"])
    rows = []
    for layer, src, dst in _shapes(manifest):
        if layer["op"] not in ("conv2d", "linear"):
            continue
        b = int(layer["weight_bits"])
        outs = math.prod(dst)  # output values per image
        o = dst[0]
        fan_in = src[0] * layer["kernel_size"] ** 2 if layer["op"] == "conv2d" else src[0]
        n = o * fan_in
        macs = outs * fan_in
        requant = REQUANT_BITS if layer["relu"] else 0
        bits = {
            "codes": n * b,
            "codebook": (1 << b) * cb_bits,
            "bias": o * BIAS_BITS,
            "requant": requant,
        }
        bits["total"] = sum(bits.values())
        rows.append(
            {
                "name": layer["name"],
                "op": layer["op"],
                "weight_bits": b,
                "weights": n,
                "outputs": outs,
                "macs": macs,
                "bits": bits,
                "float32_bits": (n + o) * 32,
                "int8_bits": n * BASELINE_BITS + o * BIAS_BITS + requant,
                "direct": {"multiplications": macs, "additions": macs},
                "codebook": {
                    "multiplications": outs * (1 << b),
                    "additions": macs + outs * ((1 << b) - 1),
                },
            }
        )
    return rows


def _peak_activation_values(manifest: dict[str, Any]) -> int:
    """Largest (input + output) values one step holds, a convolution and the max-pool that
    follows it being one step (the pool runs on its accumulators, as the chip does)."""
    nodes = _shapes(manifest)
    peak, i = 0, 0
    while i < len(nodes):
        layer, src, dst = nodes[i]
        if layer["op"] == "flatten":
            i += 1
            continue
        if layer["op"] == "conv2d" and i + 1 < len(nodes) and nodes[i + 1][0]["op"] == "maxpool2d":
            dst = nodes[i + 1][2]
            i += 1
        if layer["op"] != "linear" or layer["relu"]:
            peak = max(peak, math.prod(src) + math.prod(dst))
        else:
            peak = max(peak, math.prod(src))  # the logits are the caller's
        i += 1
    return peak


def _sram_read_pj(nbytes: float) -> float:
    """Energy of one 64-bit read from the smallest memory of the table that holds nbytes."""
    e = ENERGY_PJ
    if nbytes <= 8 * 1024:
        return e["sram_8kb_64bit"]
    if nbytes <= 32 * 1024:
        return e["sram_32kb_64bit"]
    if nbytes <= 1024 * 1024:
        return e["sram_1mb_64bit"]
    return e["dram_64bit"]


def _energy(
    macs: int, weight_bits: int, act_bits: int, mult: float, add: float
) -> dict[str, float]:
    """pJ per image: arithmetic, every weight read once, every MAC's activation operand read
    from an 8 KB buffer (packed act_bits to a 64-bit word)."""
    arithmetic = macs * (mult + add)
    weights = weight_bits / 64 * _sram_read_pj(weight_bits / 8)
    activations = macs * act_bits / 64 * ENERGY_PJ["sram_8kb_64bit"]
    return {
        "arithmetic": arithmetic,
        "weight_reads": weights,
        "activation_reads": activations,
        "total": arithmetic + weights + activations,
    }


def cost_report(manifest: dict[str, Any]) -> dict[str, Any]:
    """Per-layer costs, totals, peak activation memory and the energy estimate of a bundle."""
    layers = layer_costs(manifest)
    a = int(manifest["activation_bits"])
    total: dict[str, Any] = {
        key: sum(r[key] for r in layers)
        for key in ("weights", "macs", "float32_bits", "int8_bits", "outputs")
    }
    total["bits"] = {k: sum(r["bits"][k] for r in layers) for k in layers[0]["bits"]}
    for way in ("direct", "codebook"):
        total[way] = {k: sum(r[way][k] for r in layers) for k in ("multiplications", "additions")}
    siq_bits = total["bits"]["total"]
    total["vs_float32"] = siq_bits / total["float32_bits"]
    total["vs_int8"] = siq_bits / total["int8_bits"]
    peak_values = _peak_activation_values(manifest)
    e = ENERGY_PJ
    macs = total["macs"]
    siq = _energy(macs, siq_bits, a, e["mult_int8"], e["add_int32"])
    binned_arith = (
        total["codebook"]["additions"] * e["add_int32"]
        + total["codebook"]["multiplications"] * e["mult_int8"]
    )
    siq_codebook = dict(siq, arithmetic=binned_arith)
    siq_codebook["total"] = binned_arith + siq["weight_reads"] + siq["activation_reads"]
    return {
        "layers": layers,
        "total": total,
        "activation_bits": a,
        "peak_activation_bits": peak_values * a,
        "peak_activation_bits_float32": peak_values * 32,
        "peak_activation_bits_int8": peak_values * 8,
        "energy_estimate_pj": {
            "float32": _energy(macs, total["float32_bits"], 32, e["mult_fp32"], e["add_fp32"]),
            "int8": _energy(macs, total["int8_bits"], 8, e["mult_int8"], e["add_int32"]),
            "siq": siq,
            "siq_codebook": siq_codebook,
        },
        "energy_source": ENERGY_SOURCE,
        "energy_table_pj": dict(ENERGY_PJ),
        "note": "energy is an estimate from a per-operation table, not a measurement",
    }
