"""The sample data committed under tests/data (README.md there: what, whence, licences): MNIST's
first 8,000 training and 1,000 test images, and 70 office10 photos in the image-folder layout.
Tests that need real images use these, so they run on a fresh clone; the tests marked
`full_data` read the whole data sets from $SIQ_DATA_DIR instead."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "SAMPLE_DIR",
    "MNIST_SAMPLE",
    "mnist_sample",
    "mnist_test_digits",
    "mnist_test_labels",
    "sample_mnist_source",
]

SAMPLE_DIR = Path(__file__).resolve().parent / "data"  # holds office10/ as an image folder
MNIST_SAMPLE = SAMPLE_DIR / "mnist-sample.npz"


@functools.cache
def mnist_sample() -> dict[str, np.ndarray]:
    """{train_x (8000, 28, 28), train_y, test_x (1000, 28, 28), test_y}, all uint8."""
    with np.load(MNIST_SAMPLE) as npz:
        arrays = {name: npz[name] for name in npz.files}
    for array in arrays.values():
        array.setflags(write=False)  # cached and shared: nobody may change it
    return arrays


def mnist_test_digits(n: int) -> np.ndarray:
    """The first n MNIST test digits, uint8 (n, 28, 28): white ink on black, as published."""
    digits = mnist_sample()["test_x"]
    if n > len(digits):
        raise ValueError(f"the sample holds {len(digits)} MNIST test digits, {n} asked for")
    return digits[:n]


def mnist_test_labels(n: int) -> np.ndarray:
    """The labels of mnist_test_digits(n), int64."""
    return mnist_sample()["test_y"][:n].astype(np.int64)


@contextlib.contextmanager
def sample_mnist_source() -> Iterator[None]:
    """While open, the server's `mnist` data set (server.data.mnist.load) is the sample: an
    in-process training run (server.training.pipeline.run_pipeline) asked for MNIST with
    train_limit <= 8000 sees exactly the images the full data set would give it."""
    import pytest

    from server.data import mnist

    def load(name: str, data_dir: Path | None, train_limit: int | None, test_limit: int | None):
        s = mnist_sample()
        for what, limit, have in (
            ("train", train_limit, s["train_y"]),
            ("test", test_limit, s["test_y"]),
        ):
            if limit is None or limit > len(have):
                raise ValueError(
                    f"the MNIST sample has {len(have)} {what} images: pass {what}_limit <= {len(have)}"
                )
        return mnist.mnist_dataset(
            s["train_x"][:train_limit],
            s["train_y"][:train_limit],
            s["test_x"][:test_limit],
            s["test_y"][:test_limit],
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mnist, "load", load)
        yield
