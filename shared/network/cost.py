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

A DAG (format version 3) counts the same per weighted node, with a grouped or depthwise
convolution's fan-in `C/groups * k * k`; its other nodes are listed under `ops`: an add's
two multiplications, two additions and 72 bits of constants (two multipliers, a shift) per
output, an average pool's `n - 1` additions (and one division) per output, a max-pool's
`n - 1` comparisons (the energy estimate counts the multiply-accumulates only). Its peak
activation memory is the largest sum of the values alive at once (produced and still to be
read), in values.

The energy figures are an ESTIMATE from a per-operation table (ENERGY_PJ), not a measurement.
"""

from __future__ import annotations

import math
from typing import Any

from shared.network.graph import (
    INPUT,
    WEIGHTED_OPS,
    as_chain,
    as_dag,
    groups,
    output_shape,
    requantises,
)

__all__ = ["ENERGY_PJ", "ENERGY_SOURCE", "layer_costs", "op_costs", "cost_report"]

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
ADD_BITS = 2 * 32 + 8  # an add's two multipliers and its shift
BASELINE_BITS = 8


def _shapes(
    manifest: dict[str, Any],
) -> list[tuple[dict[str, Any], tuple[int, ...], tuple[int, ...]]]:
    """(node in DAG form, first input's shape, output shape) per graph node, per image."""
    spec = manifest["input"]
    shapes: dict[str, tuple[int, ...]] = {INPUT: (spec["channels"], spec["height"], spec["width"])}
    out = []
    for node in as_dag(manifest["graph"]):
        src = shapes[node["inputs"][0]]
        shapes[node["name"]] = output_shape(node, src)
        out.append((node, src, shapes[node["name"]]))
    return out


def layer_costs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per weighted layer: weights, outputs, MACs, memory bits, operation counts."""
    cb_bits = int(manifest["codebook_bits"])
    rows = []
    for layer, src, dst in _shapes(manifest):
        if layer["op"] not in WEIGHTED_OPS:
            continue
        b = int(layer["weight_bits"])
        outs = math.prod(dst)  # output values per image
        o = dst[0]
        if layer["op"] == "conv2d":
            fan_in = src[0] // groups(layer) * layer["kernel_size"] ** 2
        else:
            fan_in = src[0]
        n = o * fan_in
        macs = outs * fan_in
        requant = REQUANT_BITS if requantises(layer) else 0
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


def op_costs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per add or pool of the graph: outputs and operation counts per image, and
    an add's constants in bits."""
    rows = []
    for node, src, dst in _shapes(manifest):
        op, outs = node["op"], math.prod(dst)
        if op == "add":
            counts = {"multiplications": 2 * outs, "additions": 2 * outs, "comparisons": 0}
        elif op in ("maxpool2d", "avgpool2d", "global_avgpool"):
            n = src[1] * src[2] if op == "global_avgpool" else node["kernel_size"] ** 2
            kind = "comparisons" if op == "maxpool2d" else "additions"
            counts = {"multiplications": 0, "additions": 0, "comparisons": 0}
            counts[kind] = outs * (n - 1)
            if op != "maxpool2d":
                counts["divisions"] = outs
        else:
            continue
        rows.append(
            {
                "name": node["name"],
                "op": op,
                "outputs": outs,
                **counts,
                "bits": ADD_BITS if op == "add" else 0,
            }
        )
    return rows


def _peak_activation_values(manifest: dict[str, Any]) -> int:
    """Largest (input + output) values one step holds, a convolution and the max-pool that
    follows it being one step (the pool runs on its accumulators, as the chip does); for a
    graph that is not a chain, the largest sum of the values alive at once."""
    if as_chain(manifest["graph"]) is None:
        return _peak_live_values(manifest)
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
        if layer["op"] != "linear" or requantises(layer):
            peak = max(peak, math.prod(src) + math.prod(dst))
        else:
            peak = max(peak, math.prod(src))  # the logits are the caller's
        i += 1
    return peak


def _peak_live_values(manifest: dict[str, Any]) -> int:
    """Per node, the values produced before it and read by it or later, plus its output (a
    flatten is a view of its input); the largest such sum."""
    nodes = _shapes(manifest)
    spec = manifest["input"]
    size = {INPUT: spec["channels"] * spec["height"] * spec["width"]}
    alias = {INPUT: INPUT}  # a flatten's value is its input's
    last_read: dict[str, int] = {}
    for i, (node, _, dst) in enumerate(nodes):
        for x in node["inputs"]:
            last_read[alias[x]] = i
        name = node["name"]
        alias[name] = alias[node["inputs"][0]] if node["op"] == "flatten" else name
        size[name] = math.prod(dst)
    peak = 0
    produced = [INPUT]
    for i, (node, _, _) in enumerate(nodes):
        name = node["name"]
        live = sum(size[v] for v in produced if last_read.get(v, -1) >= i)
        if alias[name] == name:
            live += size[name]
            produced.append(name)
        peak = max(peak, live)
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
    ops = op_costs(manifest)
    a = int(manifest["activation_bits"])
    total: dict[str, Any] = {
        key: sum(r[key] for r in layers)
        for key in ("weights", "macs", "float32_bits", "int8_bits", "outputs")
    }
    total["bits"] = {k: sum(r["bits"][k] for r in layers) for k in layers[0]["bits"]}
    add_bits = sum(r["bits"] for r in ops)
    total["bits"]["requant"] += add_bits
    total["bits"]["total"] += add_bits
    total["int8_bits"] += add_bits  # the 8-bit baseline holds the same add constants
    total["ops"] = {
        k: sum(r.get(k, 0) for r in ops)
        for k in ("multiplications", "additions", "comparisons", "divisions")
    }
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
        "ops": ops,
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
