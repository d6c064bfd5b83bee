"""The smallest chip: the generated library cross-compiled for the Cortex-M0 (ARMv6-M: no DSP,
no divide, no 32x32->64 multiply; QEMU's microbit, an nRF51 with 256 KB flash and 16 KB SRAM)
runs bit-exact with shared.engine. Skips when the cross toolchain is absent."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.onchip.toolchain import CPUS, firmware_build, missing_arm_tools, qemu_run
from shared.bundle import decode_bundle
from shared.cgen import generate_bundle_c
from tests.factories import make_random_bundle
from tests.onchip.conftest import engine_logits, mnist_test_images
from tests.onchip.test_host import sparse_images

_missing = missing_arm_tools()
pytestmark = pytest.mark.skipif(_missing is not None, reason=f"Cortex-M toolchain: {_missing}")


@pytest.mark.parametrize(
    ("arch", "weight_bits", "activation_bits"),
    [("lenet", 4, 4), ("gray_strided", 3, 5), ("photo", 8, 8), ("photo", 2, 4)],
)
def test_random_bundles_on_the_m0(tmp_path, arch, weight_bits, activation_bits):
    bundle = decode_bundle(
        make_random_bundle(
            7, arch=arch, weight_bits=weight_bits, activation_bits=activation_bits, per_channel=True
        )
    )
    shape = tuple(bundle.manifest["input"][k] for k in ("channels", "height", "width"))
    images = sparse_images(np.random.default_rng(2), 4, shape)
    want = engine_logits(bundle, images)
    fw = firmware_build(generate_bundle_c(bundle), tmp_path, "m0", images)
    run = qemu_run(fw, want.shape[1])
    np.testing.assert_array_equal(run.logits, want)
    # measured like the M3 / M4: flash of the library, its RAM, a stack and instructions
    assert fw.library["data"] == 0 and fw.library["rodata"] > 0
    assert 0 < run.stack_bytes < 16 * 1024 and min(run.instructions) > 0


def test_the_m0_board_is_the_nrf51():
    board = CPUS["m0"]
    assert (board.mcpu, board.qemu, board.flash, board.ram) == (
        "cortex-m0",
        "microbit",
        "256K",
        "16K",
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # may train the session's bundle (a loaded machine)
def test_trained_mnist_bundle_on_the_m0(tmp_path, mnist_w4a4):
    images = mnist_test_images(10)
    want = engine_logits(mnist_w4a4, images)
    fw = firmware_build(generate_bundle_c(mnist_w4a4), tmp_path, "m0", images)
    run = qemu_run(fw, 10)
    np.testing.assert_array_equal(run.logits, want)
    assert run.stack_bytes > 0 and np.median(run.instructions) > 1_316_864
