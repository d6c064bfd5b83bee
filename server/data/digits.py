"""The `digits` source: scikit-learn's bundled 1797 8x8 digits, upscaled into MNIST's
20x20-in-28x28 layout with the client's own preprocessing; needs no files, works offline."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from server.data.dataset import DIGIT_CLASSES, Dataset, DatasetInfo
from server.recipes import RECIPES

__all__ = ["NAME", "digit_to_mnist", "load_digits", "available", "load"]

NAME = "digits"


def digit_to_mnist(img: np.ndarray) -> np.ndarray:
    """(h, w) ink in [0, 1] -> (28, 28) uint8 in MNIST layout, through the very
    `shared.image.preprocessing.preprocess_digit` the client applies to an upload (crop to the ink,
    fit into 20x20, centre of mass at (14, 14)), so a digits image posted to the client is
    preprocessed into what the network was trained on."""
    from PIL import Image

    from shared.image import preprocess_digit

    padded = np.pad(img, 4)  # a clean background border for the polarity check
    pil = Image.fromarray(np.clip(padded * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    x = preprocess_digit(pil)  # float32 (1, 28, 28), multiples of 1/255
    return np.rint(x[0].astype(np.float64) * 255.0).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = bunch.images.astype(np.float64) / 16.0  # (1797, 8, 8) in [0, 1]
    x = np.stack([digit_to_mnist(im) for im in images])[:, None]  # (1797, 1, 28, 28)
    x.setflags(write=False)
    return x, bunch.target.astype(np.int64)


def load_digits(
    *, train_limit: int | None = None, test_limit: int | None = None, test_fraction: float = 0.2
) -> Dataset:
    """scikit-learn's 1797 8x8 digits (values 0..16) in MNIST layout, seeded 80/20 split."""
    x, labels = _digits_arrays()
    order = np.random.default_rng(0).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    return Dataset(
        name=NAME,
        train_x=x[train_idx][:train_limit],  # fancy indexing copies: writable
        train_y=labels[train_idx][:train_limit],
        test_x=x[test_idx][:test_limit],
        test_y=labels[test_idx][:test_limit],
        class_names=list(DIGIT_CLASSES),
        preprocess={"kind": "digit"},
        arch="lenet",
        recipe=RECIPES["digits"],
    )


def available(data_dir: Path | None) -> list[DatasetInfo]:
    """Always there (counts of the fixed 80/20 split of `load_digits`)."""
    return [
        {
            "name": NAME,
            "classes": list(DIGIT_CLASSES),
            "train_count": 1438,
            "test_count": 359,
            "image_size": [1, 28, 28],
        }
    ]


def load(
    name: str, data_dir: Path | None, train_limit: int | None, test_limit: int | None
) -> Dataset:
    return load_digits(train_limit=train_limit, test_limit=test_limit)
