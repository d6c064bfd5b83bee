"""bench/cmsis_peer.py + bench/onchip_peers.py: without a CMSIS-NN tree the comparison says
skipped and why (and the report says so); with one (SIQ_CMSIS_NN=DIR, a checkout of
ARM-software/CMSIS-NN, never part of the repository) the same network on its int8 and
int4-weight kernels agrees with SIQ's labels, and its Cortex-M4 firmware equals its host build."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench.cmsis_peer import _pack_int4, missing_cmsis_nn, quantize_multiplier_q31
from bench.onchip_peers import compare
from bench.onchip_report import cmsis_section
from scripts.onchip.toolchain import missing_arm_tools
from shared.bundle import decode_bundle
from tests.factories import make_random_bundle
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
