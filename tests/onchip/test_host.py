"""The generated C library, compiled with the host's gcc (strict C99 flags, warnings are
errors), gives shared.engine's integer logits exactly: on 1,000 MNIST test images through a
trained bundle, and on random inputs through random bundles of every weight format."""

from __future__ import annotations

import re

import numpy as np
import pytest

from scripts.onchip.toolchain import host_build, host_run, missing_host_tools
from shared.bundle import decode_bundle
from shared.cgen import generate_bundle_c
from tests.factories import make_random_bundle
from tests.onchip.conftest import engine_logits, mnist_test_images

pytestmark = pytest.mark.skipif(missing_host_tools() is not None, reason="no host gcc")


def sparse_images(rng: np.random.Generator, count: int, shape: tuple[int, ...]) -> np.ndarray:
    """Mostly-dark random images: dense noise saturates random networks into one answer."""
    values = rng.integers(0, 256, size=(count, *shape))
    return (values * (rng.random((count, *shape)) < 0.15)).astype(np.uint8)


CASES = [  # arch, weight bits, activation bits -> formats t4 / t2 / i8 / bits, nibble / byte
    ("lenet", 4, 4),
    ("gray_strided", 4, 8),
    ("gray_strided", 2, 4),
    ("photo", 2, 5),
    ("photo", 8, 8),
    ("photo", 8, 3),
    ("gray_strided", 3, 4),
    ("photo", 1, 6),
]


@pytest.mark.parametrize(("arch", "weight_bits", "activation_bits"), CASES)
def test_random_bundles_match_the_engine(tmp_path, arch, weight_bits, activation_bits):
    bundle = decode_bundle(
        make_random_bundle(
            3,
            arch=arch,
            weight_bits=weight_bits,
            activation_bits=activation_bits,
            per_channel=True,
        )
    )
    images = sparse_images(
        np.random.default_rng(weight_bits),
        24,
        tuple(bundle.manifest["input"][k] for k in ("channels", "height", "width")),
    )
    want = engine_logits(bundle, images)
    exe = host_build(generate_bundle_c(bundle), tmp_path)
    got = host_run(exe, images, want.shape[1])
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the first of them trains the session's bundle (a loaded machine)
def test_trained_mnist_bundle_on_1000_test_images(tmp_path, mnist_w4a4):
    images = mnist_test_images(1000)
    want = engine_logits(mnist_w4a4, images)
    assert len(np.unique(want.argmax(axis=1))) == 10  # a real network, not a constant one
    exe = host_build(generate_bundle_c(mnist_w4a4), tmp_path)
    np.testing.assert_array_equal(host_run(exe, images, 10), want)


def test_the_library_is_integer_only_and_self_contained():
    bundle = decode_bundle(make_random_bundle(0, arch="photo", weight_bits=4))
    files = generate_bundle_c(bundle).files
    assert set(files) == {"siq_model.h", "siq_model.c"}
    source = files["siq_model.c"]
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # comments may say anything
    for word in ("float", "double", "malloc", "free", "printf"):
        assert not re.search(rf"\b{word}\b", code), word
    includes = set(re.findall(r"#include [<\"]([^>\"]+)[>\"]", source))
    assert includes == {"stdint.h", "string.h", "siq_model.h", "arm_acle.h"}
    header = files["siq_model.h"]
    for name in (
        "SIQ_INPUT_CHANNELS 3",
        "SIQ_INPUT_HEIGHT 16",
        "SIQ_INPUT_WIDTH 16",
        "SIQ_NUM_CLASSES 5",
    ):
        assert f"#define {name}" in header
    assert "int siq_predict(const uint8_t *pixels, int32_t *logits);" in header


def test_convolutions_decode_their_weights_into_ram():
    """LeNet's conv1 (16 rows of 4 words: 1 KB) decodes all its rows once, conv2 (too many
    rows for DECODE_BYTES) four rows at a time, reading its input map in place; the linear
    layers keep their table kernel; for_size decodes nothing. (The logits of these very
    libraries are the engine's: the tests above.)"""
    bundle = decode_bundle(
        make_random_bundle(3, arch="lenet", weight_bits=4, activation_bits=4, per_channel=True)
    )
    model = generate_bundle_c(bundle)
    source = model.files["siq_model.c"]
    assert "siq_decode_t4(siq_w_conv1 + 0, siq_t_conv1, siq_dec, " in source
    assert "siq_decode_t4(siq_w_conv2 + o * " in source
    assert re.search(r"siq_rows_d\(siq_dec, src \+ ", source)  # conv2 reads src in place
    assert "siq_rows_t4(siq_w_fc1" in source
    assert 0 < model.decoded_bytes <= 4096
    assert f"static uint64_t siq_dec[{model.decoded_bytes // 8}];" in source
    small = generate_bundle_c(bundle, for_size=True)
    assert small.decoded_bytes == 0 and "siq_dec" not in small.files["siq_model.c"]
