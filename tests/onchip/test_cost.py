"""The cost report counts what a chip holds and computes, from the manifest alone."""

from __future__ import annotations

import math

import numpy as np

from shared.bundle import decode_bundle, layer_weights
from shared.network import ENERGY_PJ, cost_report, layer_costs
from tests.factories import make_random_bundle, make_random_network


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
