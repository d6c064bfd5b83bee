"""bench_onchip's office10 part on a small DAG: the W4A5 bundle and its 8-bit build measured
on the host and the Cortex-M4, traced per node (a depthwise node's instructions its own), and
rendered side by side in onchip.md's office10 section."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from bench.bench_onchip import office10_measure
from bench.onchip_report import office10_section
from scripts.onchip.toolchain import missing_arm_tools, missing_host_tools
from shared.bundle import Bundle
from tests.factories import GraphBuilder

pytestmark = [
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        missing_host_tools() is not None or missing_arm_tools() is not None,
        reason="host gcc or the Cortex-M toolchain absent",
    ),
]


def _separable(weight_bits: int, activation_bits: int, quantizer: str) -> Bundle:
    b = GraphBuilder(4, (3, 12, 12), activation_bits=activation_bits, weight_bits=weight_bits)
    x = b.conv("input", 8, 3, stride=2, padding=1, activation="relu6", name="stem")
    x = b.depthwise(x, 3, padding=1, activation="relu6", name="b1_dw")
    x = b.conv(x, 16, 1, activation="relu6", name="b1_pw")
    bundle = b.bundle(b.linear(b.global_avgpool(x, name="pool"), 5, activation="none", name="fc"))
    manifest = {**bundle.manifest, "layers": {"stem": {"weight_quantizer": quantizer}}}
    manifest["metrics"] = {"float_accuracy": 0.5}
    return dataclasses.replace(bundle, manifest=manifest)


def test_the_office10_rows_measure_trace_and_render(tmp_path) -> None:
    siq, base = _separable(4, 5, "kmeans"), _separable(8, 8, "uniform")
    x = np.random.default_rng(0).integers(0, 256, size=(6, 3, 12, 12)).astype(np.uint8)
    office = SimpleNamespace(arch="mobilenet", test_x=x, test_y=np.zeros(6, int), train_x=x)
    args = SimpleNamespace(office10_images=2, office10_trace=True, cmsis_nn=None)
    res = office10_measure(args, [(base, 200), (siq, 100)], office, tmp_path)
    assert [(r["weight_bits"], r["quantizer"]) for r in res["rows"]] == [
        (4, "kmeans"),
        (8, "uniform"),
    ]  # SIQ first
    for row in res["rows"]:
        m4 = row["chips"]["m4"]
        assert row["host_equal"] and m4["equal"] and m4["images"] == 2
        assert {"stem", "b1_dw", "b1_pw", "fc"} <= set(m4["trace"]["layers"])
    assert res["cmsis"]["skipped"].startswith("no CMSIS-NN source tree given")
    md = "\n".join(office10_section({**res, "float_accuracy": 0.5}))
    assert "| W4A5 SIQ k-means | " in md and "| W8A8 8-bit build (W8A8 uniform) | " in md
    dw = next(line for line in md.splitlines() if line.startswith("| b1_dw | conv2d | 2,592 |"))
    assert dw.count("|") == 8  # node, op, MACs, and two builds' instructions and per MAC
