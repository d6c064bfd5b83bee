"""bench/cmsis_peer.py + bench/onchip_peers.py: without a CMSIS-NN tree the comparison says
skipped and why (and the report says so); with one (SIQ_CMSIS_NN=DIR, a checkout of
ARM-software/CMSIS-NN, never part of the repository) the same network on its int8 and
int4-weight kernels agrees with SIQ's labels, and its Cortex-M4 firmware equals its host build.
DAG networks (depthwise-separable blocks, residual adds, global pooling) map onto CMSIS-NN's
depthwise, 1x1, average-pool and add kernels, with buffers shared by liveness, and the int8
peer computes the bundle's float network."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench.cmsis_peer import (
    _buffers,
    _float_node,
    _float_nodes,
    _pack_int4,
    missing_cmsis_nn,
    peer_host_logits,
    peer_kernels,
    quantize_multiplier_q31,
    quantize_tflite,
)
from bench.onchip_peers import compare
from bench.onchip_report import cmsis_section
from scripts.onchip.toolchain import missing_arm_tools
from shared.bundle import Bundle, decode_bundle
from tests.factories import GraphBuilder, make_random_bundle
from tests.onchip.conftest import mnist_test_images

ROOT = Path(os.environ["SIQ_CMSIS_NN"]) if os.environ.get("SIQ_CMSIS_NN") else None


def _args(root: Path | None) -> SimpleNamespace:
    return SimpleNamespace(
        cmsis_nn=root, cmsis_nn_commit=None, peer_images=40, peer_chip_images=2, cycles=False
    )


def test_without_a_tree_the_comparison_is_skipped_and_says_why(tmp_path) -> None:
    bundle = decode_bundle(make_random_bundle(1, arch="lenet"))
    images = mnist_test_images(4)
    res = compare(_args(None), {"SIQ W4A4": bundle}, images, np.zeros(4, int), images, tmp_path)
    assert res["skipped"].startswith("no CMSIS-NN source tree given (--cmsis-nn DIR")
    assert res["builds"] == [] and "Skipped: no CMSIS-NN source tree" in "\n".join(
        cmsis_section(res)
    )
    assert "not a CMSIS-NN source tree" in str(missing_cmsis_nn(tmp_path))


def test_tflite_multipliers_and_int4_packing() -> None:
    assert quantize_multiplier_q31(0.5) == (1 << 30, 0)
    assert quantize_multiplier_q31(0.75) == (3 << 29, 0)
    assert quantize_multiplier_q31(3.0) == (3 << 29, 2)
    packed = _pack_int4(np.array([1, 2, 3, -1, 7], dtype=np.int8))
    assert packed.view(np.uint8).tolist() == [0x21, 0xF3, 0x07]  # the first in the low nibble


@pytest.mark.skipif(ROOT is None, reason="SIQ_CMSIS_NN (a CMSIS-NN source tree) not set")
@pytest.mark.skipif(missing_arm_tools() is not None, reason="Cortex-M toolchain absent")
@pytest.mark.timeout(900)
def test_the_peer_runs_the_same_network(tmp_path) -> None:
    bundle = decode_bundle(make_random_bundle(5, arch="lenet", per_channel=True))
    images = mnist_test_images(40)
    res = compare(_args(ROOT), {"SIQ W4A4": bundle}, images, np.zeros(40, int), images, tmp_path)
    assert res["skipped"] is None
    for peer in res["peers"].values():
        assert peer["agrees_with_siq_engine"] >= 0.9
    assert all(row["equal"] for row in res["builds"])
    assert {r["build"] for r in res["builds"]} == {
        "SIQ W4A4",
        "CMSIS-NN int8",
        "CMSIS-NN int4 weights",
    }
    assert {r["flags"] for r in res["builds"]} == {"own", "-O2", "-Os"}
    assert all(r["equal"] for r in res["m0"] if r["fits"])


def separable_bundle(seed: int = 3) -> Bundle:
    """A small MobileNet: strided stem, two depthwise-separable blocks, global pool, linear."""
    b = GraphBuilder(seed, (3, 17, 17), activation_bits=5)
    x = b.conv("input", 8, 3, stride=2, padding=1, activation="relu6")
    x = b.depthwise(x, 3, padding=1, activation="relu6")
    x = b.conv(x, 16, 1, activation="relu6")
    x = b.depthwise(x, 3, stride=2, padding=1, activation="relu6")
    x = b.conv(x, 16, 1, activation="relu6")
    return b.bundle(b.linear(b.global_avgpool(x), 10, activation="none"))


def residual_bundle(seed: int = 3) -> Bundle:
    """A small ResNet: a block on accumulators + the block's input, a projected block."""
    b = GraphBuilder(seed, (3, 16, 16), activation_bits=5)
    s = b.conv("input", 8, 3, stride=2, padding=1)
    h = b.conv(b.conv(s, 8, 3, padding=1), 8, 3, padding=1, activation="none")
    s = b.add(h, s)
    h = b.conv(b.conv(s, 16, 3, stride=2, padding=1), 16, 3, padding=1, activation="none")
    s = b.add(h, b.conv(s, 16, 1, stride=2))
    return b.bundle(b.linear(b.global_avgpool(s), 10, activation="none"))


def _pixels(bundle: Bundle, n: int) -> np.ndarray:
    c, h, w = (bundle.manifest["input"][k] for k in ("channels", "height", "width"))
    return np.random.default_rng(0).integers(0, 256, size=(n, c, h, w)).astype(np.uint8)


def test_dag_networks_map_onto_cmsis_nn_kernels_and_share_buffers() -> None:
    mobile = separable_bundle()
    net = quantize_tflite(mobile, _pixels(mobile, 8), 8)
    assert [p.kind for p in net.layers] == [
        "conv", "dwconv", "conv", "dwconv", "conv", "avgpool", "fc",
    ]  # fmt: skip
    assert peer_kernels(net) == [
        "arm_convolve_wrapper_s8",
        "arm_depthwise_conv_wrapper_s8",
        "arm_avgpool_s8",
        "arm_fully_connected_per_channel_s8",
    ]
    assert len(_buffers(net)[1]) == 2  # a chain ping-pongs
    dw = net.layers[1]
    assert dw.weights is not None and dw.weights.shape == (1, 3, 3, 8) and dw.ch_mult == 1
    four = quantize_tflite(mobile, _pixels(mobile, 8), 4)
    assert "arm_depthwise_conv_wrapper_s4" in peer_kernels(four)
    assert "arm_convolve_wrapper_s4" in peer_kernels(four)

    res = residual_bundle()
    net = quantize_tflite(res, _pixels(res, 8), 8)
    assert "arm_elementwise_add_s8" in peer_kernels(net)
    where, sizes = _buffers(net)
    assert len(sizes) == 3  # the shortcut is held while the branch runs
    for p in net.layers:
        assert where[p.name] not in {where[t] for t in p.inputs}


def test_a_grouped_convolution_has_no_cmsis_nn_kernel() -> None:
    b = GraphBuilder(1, (4, 6, 6))
    x = b.conv("input", 4, 3, groups=2)
    bundle = b.bundle(b.linear(b.global_avgpool(x), 3, activation="none"))
    with pytest.raises(ValueError, match="no grouped convolution"):
        quantize_tflite(bundle, _pixels(bundle, 2), 8)


@pytest.mark.skipif(ROOT is None, reason="SIQ_CMSIS_NN (a CMSIS-NN source tree) not set")
@pytest.mark.skipif(missing_arm_tools() is not None, reason="Cortex-M toolchain absent")
@pytest.mark.timeout(900)
@pytest.mark.parametrize("make", [separable_bundle, residual_bundle])
def test_the_dag_peer_computes_the_float_network(tmp_path, make) -> None:
    bundle = make()
    x = _pixels(bundle, 40)
    values = {"input": x / 255.0 / bundle.manifest["input"]["scale"]}
    for node in _float_nodes(bundle):
        values[node["name"]] = _float_node(node, [values[i] for i in node["inputs"]])
    want = values[bundle.manifest["graph"][-1]["name"]]
    net = quantize_tflite(bundle, x, 8)
    got = peer_host_logits(net, ROOT, tmp_path / "host", x)
    real = (got - net.logit_zero) * net.logit_scale
    assert np.corrcoef(real.ravel(), want.ravel())[0, 1] > 0.99
    args = SimpleNamespace(
        cmsis_nn=ROOT, cmsis_nn_commit=None, peer_images=40, peer_chip_images=2, cycles=False
    )
    res = compare(args, {"SIQ W4A5": bundle}, x, np.zeros(40, int), x, tmp_path, m0=False)
    assert res["m0"] == [] and set(peer_kernels(net)) <= set(res["kernels"])
    assert all(row["equal"] for row in res["builds"]) and len(res["builds"]) == 9
