"""What every data source returns: a `Dataset` of uint8 NCHW arrays already at the network's
input size (the pipeline divides by 255), and the validation split, which is always carved
from the training set, never from the test set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from server.recipes import Recipe

__all__ = ["Dataset", "DatasetInfo", "DIGIT_CLASSES", "split_validation"]

DIGIT_CLASSES = [str(d) for d in range(10)]
DatasetInfo = dict  # {name, classes, train_count, test_count, image_size}: GET /datasets


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray  # uint8 (M, C, H, W)
    test_y: np.ndarray  # int64 (M,)
    class_names: list[str]
    preprocess: dict  # the manifest's input.preprocess, e.g. {"kind": "digit"}
    arch: str  # network family: "lenet" (1x28x28) or "photonet" (3xSxS photos), or a job's
    recipe: Recipe  # the training defaults of the family and arch (server.recipes.RECIPES)

    def with_arch(self, arch: str | None) -> Dataset:
        """This data set trained with network family `arch` and its recipe (None: as is)."""
        if arch is None or arch == self.arch:
            return self
        return dataclasses.replace(self, arch=arch, recipe=self.recipe.for_arch(arch))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def split_validation(
    ds: Dataset, fraction: float = 0.1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Carve a validation set from the training set: the last `fraction` after a seeded
    shuffle. Returns (train_x, train_y, val_x, val_y); the test set is never touched."""
    n = len(ds.train_y)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * fraction))) if n > 1 else 0
    train_idx, val_idx = order[: n - n_val], order[n - n_val :]
    return ds.train_x[train_idx], ds.train_y[train_idx], ds.train_x[val_idx], ds.train_y[val_idx]
