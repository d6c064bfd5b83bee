"""The built-in batch-norm architectures (mobilenet, resnet, dsnet: depthwise and pointwise
convolutions with hundreds of channels, residual adds, global pooling) as bundles, generated
as C: the host build and the Cortex-M3 and M4 in QEMU give the reference interpreter's logits.
Slow (building a MobileNet bundle takes tens of seconds on a loaded machine)."""

from __future__ import annotations

import numpy as np
import pytest

from scripts.onchip.toolchain import (
    firmware_build,
    host_build,
    host_run,
    missing_arm_tools,
    missing_host_tools,
    qemu_run,
)
from shared.bundle import Bundle, decode_bundle
from shared.cgen import generate_bundle_c
from tests.onchip.test_dag import reference_logits

torch = pytest.importorskip("torch")

SIZE = 32
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(missing_host_tools() is not None, reason="no host gcc"),
]


def arch_bundle(arch: str, x: np.ndarray) -> Bundle:
    """The untrained network with batch-norm statistics, folded, uniform 4-bit codebooks,
    calibrated on x: a v3 bundle of the architecture's graph (what the C must compute)."""
    from server.data import Dataset
    from server.data.dataset import DIGIT_CLASSES
    from server.recipes import RECIPES
    from server.training.batchnorm import fold_batchnorm
    from server.training.export import encode_quantized
    from server.training.models import build_model
    from server.training.quantsim import QuantSimNet, calibrate
    from server.training.siq import SIQSettings, quantize_layers
    from tests.server.test_dag_networks import _with_statistics

    torch.manual_seed(0)
    channels = x.shape[1]
    model = fold_batchnorm(_with_statistics(build_model(arch, channels, 10, SIZE), x))
    settings = SIQSettings(
        weight_bits=4, activation_bits=4, method="uniform", max_iterations=1, tolerance=0.0,
        codebook_tolerance=None, retrain_epochs=0.0, retrain_lr=0.0, batch_size=16,
        augment_shift=0, augment=None, seed=0,
    )  # fmt: skip
    sim = QuantSimNet(model, quantize_layers(model, settings), 4)
    calibrate(sim, x)
    preprocess = (
        {"kind": "photo", "resize": SIZE, "crop": SIZE} if channels == 3 else {"kind": "digit"}
    )
    y = np.zeros(len(x), dtype=np.int64)
    ds = Dataset("t", x, y, x, y, DIGIT_CLASSES, preprocess, arch, RECIPES["imagefolder"])
    return decode_bundle(encode_quantized(sim, ds, weight_bits=4))


@pytest.mark.parametrize("arch", ["mobilenet", "resnet", "dsnet"])
def test_architecture_in_c_equals_the_reference(tmp_path, arch):
    from tests.server.test_dag_networks import _images

    x = _images(8, 1 if arch == "dsnet" else 3, seed=2)
    bundle = arch_bundle(arch, x)
    want = reference_logits(bundle, x)
    model = generate_bundle_c(bundle)
    np.testing.assert_array_equal(host_run(host_build(model, tmp_path / "host"), x, 10), want)
    if missing_arm_tools() is None:
        for cpu in ("m3", "m4"):
            fw = firmware_build(model, tmp_path / cpu, cpu, x[:2])
            np.testing.assert_array_equal(qemu_run(fw, 10, timeout=300).logits, want[:2])
