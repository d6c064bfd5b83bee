"""The cost report counts what a chip holds and computes, from the manifest alone."""

from __future__ import annotations

import math

import numpy as np

from shared.bundle import decode_bundle, layer_weights
from shared.network import ENERGY_PJ, cost_report, layer_costs, op_costs
from tests.factories import GraphBuilder, make_random_bundle, make_random_network


def test_layer_memory_and_macs_follow_the_graph():
    manifest, tensors = make_random_network(0, arch="lenet", weight_bits=3)
    rows = {r["name"]: r for r in layer_costs(manifest)}
    assert list(rows) == ["conv1", "conv2", "fc1", "fc2"]
    graph = {g["name"]: g for g in manifest["graph"]}
    for name, row in rows.items():
        w = layer_weights(graph[name], tensors)
        assert row["weights"] == w.size
        assert row["bits"]["codes"] == 3 * w.size
        assert row["bits"]["codebook"] == 8 * 8  # 2^3 values of codebook_bits = 8
        assert row["bits"]["bias"] == 32 * len(w)
        assert row["float32_bits"] == 32 * (w.size + len(w))
        assert row["int8_bits"] == 8 * w.size + 32 * len(w) + row["bits"]["requant"]
        assert row["bits"]["requant"] == (40 if graph[name]["relu"] else 0)
    # conv1 of the factory LeNet: 8 filters of 1x5x5 over a 24x24 output
    assert rows["conv1"]["macs"] == 8 * 25 * 24 * 24
    assert rows["fc2"]["macs"] == rows["fc2"]["weights"]
    # the codebook's way: 2^b multiplications per output, one addition per input and bin
    conv2 = rows["conv2"]
    assert conv2["codebook"]["multiplications"] == conv2["outputs"] * 8
    assert conv2["codebook"]["additions"] == conv2["macs"] + conv2["outputs"] * 7


def test_totals_ratios_peak_and_energy():
    bundle = decode_bundle(make_random_bundle(1, arch="lenet", weight_bits=4, activation_bits=4))
    report = cost_report(bundle.manifest)
    total = report["total"]
    assert total["macs"] == sum(r["macs"] for r in report["layers"])
    assert total["bits"]["total"] == sum(r["bits"]["total"] for r in report["layers"])
    assert math.isclose(total["vs_int8"], total["bits"]["total"] / total["int8_bits"])
    assert 0.45 < total["vs_int8"] < 0.6 and total["vs_float32"] < 0.15
    # peak: conv1 with its pool is one step: 28x28 input codes + 8x12x12 pooled outputs
    assert report["peak_activation_bits"] == (28 * 28 + 8 * 12 * 12) * 4
    energy = report["energy_estimate_pj"]
    assert energy["siq"]["total"] < energy["int8"]["total"] < energy["float32"]["total"]
    assert energy["siq"]["arithmetic"] == total["macs"] * (
        ENERGY_PJ["mult_int8"] + ENERGY_PJ["add_int32"]
    )
    assert "Horowitz" in report["energy_source"] and "estimate" in report["note"]


def test_report_needs_no_tensors():
    manifest, _ = make_random_network(2, arch="photo")
    assert cost_report(manifest)["total"]["weights"] > 0
    assert np.isfinite(cost_report(manifest)["total"]["vs_float32"])


def _dag_manifest():
    b = GraphBuilder(0, (3, 8, 8))
    stem = b.conv("input", 4, 3, padding=1, name="stem")  # 4x8x8
    dw = b.depthwise(stem, 3, stride=2, padding=1, activation="relu6", name="dw")  # 4x4x4
    pw = b.conv(dw, 6, 1, activation="none", name="pw")  # 6x4x4 accumulators
    short = b.conv(dw, 6, 1, name="short")
    a = b.add(pw, short, name="a")
    p = b.avgpool(a, 2, name="p")  # 6x2x2
    m = b.maxpool(p, 2, name="m")  # 6x1x1
    fc = b.linear(b.global_avgpool(m, name="g"), 3, activation="none", name="fc")
    return b.network(fc)[0]


def test_dag_costs_count_groups_adds_and_pools():
    manifest = _dag_manifest()
    rows = {r["name"]: r for r in layer_costs(manifest)}
    assert rows["dw"]["weights"] == 4 * 9  # depthwise: one 3x3 filter per channel
    assert rows["dw"]["macs"] == 4 * 4 * 4 * 9
    assert rows["pw"]["macs"] == 6 * 4 * 4 * 4
    assert rows["pw"]["bits"]["requant"] == 0 and rows["dw"]["bits"]["requant"] == 40
    ops = {r["name"]: r for r in op_costs(manifest)}
    assert list(ops) == ["a", "p", "m", "g"]
    assert ops["a"]["multiplications"] == 2 * 96 and ops["a"]["bits"] == 72
    assert ops["p"]["additions"] == 24 * 3 and ops["p"]["divisions"] == 24
    assert ops["m"]["comparisons"] == 6 * 3
    assert ops["g"]["additions"] == 0 and ops["g"]["divisions"] == 6  # 1x1 maps
    report = cost_report(manifest)
    assert report["total"]["bits"]["total"] == sum(r["bits"]["total"] for r in rows.values()) + 72
    assert report["total"]["ops"]["multiplications"] == 192
    # the stem holds the input (192) and its output (256); at the add, dw has been read for
    # the last time: pw, short and a (3 x 96) are alive
    assert report["peak_activation_bits"] == (192 + 256) * 4
    wide = _dag_manifest()  # the same graph on one input channel
    wide["input"].update(channels=1)
    wide["graph"][0]["in_channels"] = 1
    # one input channel: the stem's output (256) with the input (64), or with dw's (64)
    assert cost_report(wide)["peak_activation_bits"] == (256 + 64) * 4
