"""The same library cross-compiled for Cortex-M3 (no DSP: the C path) and Cortex-M4 (the
SMLAD path) into a firmware with embedded images, run in QEMU (mps2-an385 / mps2-an386):
the logits it prints equal shared.engine's, and for version-3 DAGs the reference
interpreter's. Skips when the cross toolchain is absent
(.ci/run installs it)."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.onchip.toolchain import firmware_build, missing_arm_tools, qemu_run, undefined_symbols
from shared.bundle import decode_bundle
from shared.cgen import generate_bundle_c
from tests.factories import make_random_bundle, random_dag_bundle
from tests.onchip.conftest import engine_logits, mnist_test_images
from tests.onchip.test_dag import op_bundle, pixels, reference_logits
from tests.onchip.test_host import sparse_images

_missing = missing_arm_tools()
pytestmark = pytest.mark.skipif(_missing is not None, reason=f"Cortex-M toolchain: {_missing}")


@pytest.mark.parametrize("cpu", ["m3", "m4"])
@pytest.mark.parametrize(
    ("arch", "weight_bits", "activation_bits"),
    [
        ("gray_strided", 4, 4),
        ("photo", 2, 8),
        ("photo", 8, 4),
        ("photo", 3, 4),
        ("gray_strided", 3, 5),
    ],
)
def test_random_bundles_on_the_chip(tmp_path, cpu, arch, weight_bits, activation_bits):
    bundle = decode_bundle(
        make_random_bundle(
            5, arch=arch, weight_bits=weight_bits, activation_bits=activation_bits, per_channel=True
        )
    )
    shape = tuple(bundle.manifest["input"][k] for k in ("channels", "height", "width"))
    images = sparse_images(np.random.default_rng(1), 6, shape)
    want = engine_logits(bundle, images)
    fw = firmware_build(generate_bundle_c(bundle), tmp_path, cpu, images)
    run = qemu_run(fw, want.shape[1])
    np.testing.assert_array_equal(run.logits, want)
    assert undefined_symbols(fw.obj) <= {"memcpy", "memset"}
    assert fw.library["data"] == 0  # everything constant is in flash


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first of them trains the session's bundle (a loaded machine)
@pytest.mark.parametrize("cpu", ["m3", "m4"])
def test_trained_mnist_bundle_on_20_test_images(tmp_path, cpu, mnist_w4a4):
    images = mnist_test_images(20)
    want = engine_logits(mnist_w4a4, images)
    fw = firmware_build(generate_bundle_c(mnist_w4a4), tmp_path, cpu, images)
    run = qemu_run(fw, 10)
    np.testing.assert_array_equal(run.logits, want)
    # the figures the benchmark reports are there and plausible
    assert run.calibration_ticks > 0 and run.stack_bytes > 0
    macs = 1_316_864
    assert macs < np.median(run.instructions) < 20 * macs


DAGS = [  # random DAGs mixing every op, and two hand-made graphs for the kernels they stress
    ("random", 1, 4, 4),
    ("random", 6, 8, 8),
    ("random", 7, 5, 3),
    ("pointwise_pooled", 0, 4, 4),  # a pointwise conv reading its words in place, SMLAD
    ("depthwise_residual", 0, 4, 8),
]


@pytest.mark.parametrize("cpu", ["m0", "m3", "m4"])
@pytest.mark.parametrize(("graph", "seed", "activation_bits", "weight_bits"), DAGS)
def test_dags_on_the_chip(tmp_path, cpu, graph, seed, activation_bits, weight_bits):
    """Version-3 graphs (depthwise, grouped and pointwise convolutions, adds, pools) give the
    reference interpreter's logits on the Cortex-M0 (no divide, no 64-bit multiply), M3 and M4."""
    if graph == "random":
        bundle = random_dag_bundle(
            seed, activation_bits=activation_bits, weight_bits=weight_bits, saturate=True
        )
    else:
        bundle = op_bundle(graph, activation_bits, weight_bits, seed)
    images = pixels(bundle, 4, seed)
    want = reference_logits(bundle, images)
    fw = firmware_build(generate_bundle_c(bundle), tmp_path, cpu, images)
    np.testing.assert_array_equal(qemu_run(fw, want.shape[1]).logits, want)
    if cpu != "m0":  # the M0 calls libgcc for 64-bit products
        assert undefined_symbols(fw.obj) <= {"memcpy", "memset"}
    assert fw.library["data"] == 0
