"""On-chip test fixtures: a trained MNIST W4A4 bundle (once per session, from the committed
sample) and the test images with the integer logits shared.engine gives them."""

from __future__ import annotations

import numpy as np
import pytest

from shared.bundle import Bundle, decode_bundle
from shared.engine import IntegerNetwork
from tests.samples import mnist_test_digits


def engine_logits(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """What the C code must reproduce: the engine on the 8-bit images / 255 (float32, as the
    preprocessing hands them over)."""
    net = IntegerNetwork(bundle)
    return net.forward_int(net.quantize_input(images.astype(np.float32) / np.float32(255.0)))


def mnist_test_images(count: int) -> np.ndarray:
    """The first `count` MNIST test digits (the committed sample), uint8 (count, 1, 28, 28)."""
    return mnist_test_digits(count)[:, None]


@pytest.fixture(scope="session")
def mnist_w4a4(mnist_w4a4_bytes: bytes) -> Bundle:
    """The session's small real W4A4 MNIST bundle (tests/conftest.py), decoded."""
    return decode_bundle(mnist_w4a4_bytes)
