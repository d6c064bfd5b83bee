"""Data sets the server trains on: `mnist` (the original IDX files), `digits` (scikit-learn's
bundled 8x8 digits in MNIST layout, works offline) and image folders (server/imagefolder.py).

Every loader returns a `Dataset` of uint8 NCHW arrays already at the network's input size;
the pipeline divides by 255. The validation split is always carved from the training set
(`split_validation`), never from the test set.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import struct
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import DatasetError

__all__ = [
    "Dataset",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "list_datasets",
    "load_dataset",
    "load_mnist",
    "load_digits",
    "read_idx",
    "split_validation",
    "digit_to_mnist",
]

# The published MD5s of the four MNIST files (LeCun, Cortes, Burges).
MNIST_FILES: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
DIGIT_CLASSES = [str(d) for d in range(10)]

# Per-data-set training defaults; the pipeline's config overrides them.
MNIST_DEFAULTS: dict[str, Any] = {
    "epochs": 6,
    "retrain_epochs": 1.0,
    "lr": 3e-3,
    "retrain_lr": 5e-4,
    "batch_size": 128,
    "augment_shift": 2,
    "weight_decay": 1e-4,
}
DIGITS_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "retrain_epochs": 4.0,
    "lr": 3e-3,
    "retrain_lr": 1e-3,
    "batch_size": 64,
    "augment_shift": 2,
    "weight_decay": 1e-4,
}


@dataclass
class Dataset:
    name: str
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray  # uint8 (M, C, H, W)
    test_y: np.ndarray  # int64 (M,)
    class_names: list[str]
    preprocess: dict
    arch: str
    defaults: dict = field(default_factory=dict)

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


# ---------------------------------------------------------------- MNIST


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_idx(path: Path) -> np.ndarray:
    """Parse a gzip'ed IDX file (uint8 payload) into an array; DatasetError naming the file."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable gzip IDX file ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DatasetError(f"{path}: expected {count} bytes of data, found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _download(url: str, dest: Path, md5: str, timeout: float) -> bool:
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            data = resp.read()
    except Exception:
        return False
    if hashlib.md5(data).hexdigest() != md5:
        return False
    try:
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError:
        return False
    return True


def _ensure_mnist_files(mnist_dir: Path, *, download: bool, timeout: float) -> None:
    missing = [name for name in MNIST_FILES if not (mnist_dir / name).is_file()]
    if missing and download:
        with contextlib.suppress(OSError):
            mnist_dir.mkdir(parents=True, exist_ok=True)
        for name in list(missing):
            for mirror in MNIST_MIRRORS:
                if _download(mirror + name, mnist_dir / name, MNIST_FILES[name], timeout):
                    missing.remove(name)
                    break
            else:
                break  # no mirror answers: don't wait on the other files too
        missing = [name for name in MNIST_FILES if not (mnist_dir / name).is_file()]
    if missing:
        raise DatasetError(
            f"MNIST files missing: {', '.join(missing)}. Put the four original files "
            f"({', '.join(MNIST_FILES)}) in {mnist_dir} (set SIQ_DATA_DIR to the folder that "
            f"holds mnist/); downloading them from the public mirrors failed."
        )


def load_mnist(
    data_dir: Path,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = True,
    timeout: float = 10.0,
) -> Dataset:
    mnist_dir = Path(data_dir) / "mnist"
    _ensure_mnist_files(mnist_dir, download=download, timeout=timeout)
    for name, md5 in MNIST_FILES.items():
        got = _md5(mnist_dir / name)
        if got != md5:
            raise DatasetError(
                f"{mnist_dir / name}: MD5 {got} does not match the published {md5} "
                "(corrupt or truncated copy; replace it with the original file)"
            )
    train_x = read_idx(mnist_dir / "train-images-idx3-ubyte.gz")
    train_y = read_idx(mnist_dir / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(mnist_dir / "t10k-labels-idx1-ubyte.gz")
    ds = Dataset(
        name="mnist",
        train_x=train_x[:train_limit, None].copy(),  # (N, 1, 28, 28)
        train_y=train_y[:train_limit].astype(np.int64),
        test_x=test_x[:test_limit, None].copy(),
        test_y=test_y[:test_limit].astype(np.int64),
        class_names=list(DIGIT_CLASSES),
        preprocess={"kind": "digit"},
        arch="lenet",
        defaults=dict(MNIST_DEFAULTS),
    )
    return ds


# ---------------------------------------------------------------- digits


def digit_to_mnist(img: np.ndarray) -> np.ndarray:
    """(h, w) ink in [0, 1] -> (28, 28) uint8 in MNIST layout, through the very
    `shared.preprocess.preprocess_digit` the client applies to an upload (crop to the ink,
    fit into 20x20, centre of mass at (14, 14)), so a digits image posted to the client is
    preprocessed into what the network was trained on."""
    from PIL import Image

    from shared.preprocess import preprocess_digit

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
        name="digits",
        train_x=x[train_idx][:train_limit],  # fancy indexing copies: writable
        train_y=labels[train_idx][:train_limit],
        test_x=x[test_idx][:test_limit],
        test_y=labels[test_idx][:test_limit],
        class_names=list(DIGIT_CLASSES),
        preprocess={"kind": "digit"},
        arch="lenet",
        defaults=dict(DIGITS_DEFAULTS),
    )


# ---------------------------------------------------------------- registry


def _imagefolder_module() -> Any | None:
    try:
        from server import imagefolder  # written separately; tolerated absent
    except ImportError:
        return None
    return imagefolder


def _mnist_counts(mnist_dir: Path) -> tuple[int, int] | None:
    """Counts from the IDX headers only (cheap; no MD5), None when files are missing/bad."""
    counts = []
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        try:
            with gzip.open(mnist_dir / name, "rb") as f:
                head = f.read(8)
            counts.append(struct.unpack(">I", head[4:8])[0])
        except (OSError, EOFError, struct.error):
            return None
    if not all((mnist_dir / n).is_file() for n in MNIST_FILES):
        return None
    return counts[0], counts[1]


def list_datasets(data_dir: Path | None) -> list[dict]:
    """{name, classes, train_count, test_count, image_size} for every data set available."""
    out: list[dict] = []
    if data_dir is not None:
        counts = _mnist_counts(Path(data_dir) / "mnist")
        if counts is not None:
            out.append(
                {
                    "name": "mnist",
                    "classes": list(DIGIT_CLASSES),
                    "train_count": counts[0],
                    "test_count": counts[1],
                    "image_size": [1, 28, 28],
                }
            )
    out.append(
        {
            "name": "digits",
            "classes": list(DIGIT_CLASSES),
            "train_count": 1438,
            "test_count": 359,
            "image_size": [1, 28, 28],
        }
    )
    mod = _imagefolder_module()
    if mod is not None and data_dir is not None and Path(data_dir).is_dir():
        names = {d["name"] for d in out}
        out.extend(d for d in mod.find_imagefolders(Path(data_dir)) if d["name"] not in names)
    return out


def load_dataset(
    name: str,
    data_dir: Path | None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    for lim_name, lim in (("train_limit", train_limit), ("test_limit", test_limit)):
        if lim is not None and lim < 1:
            raise DatasetError(f"{lim_name} must be >= 1, got {lim}")
    if name == "digits":
        ds = load_digits(train_limit=train_limit, test_limit=test_limit)
    elif name == "mnist":
        if data_dir is None:
            raise DatasetError("mnist needs a data directory (set SIQ_DATA_DIR)")
        ds = load_mnist(Path(data_dir), train_limit=train_limit, test_limit=test_limit)
    else:
        ds = _load_imagefolder(name, data_dir, train_limit, test_limit)
    if len(ds.train_y) == 0 or len(ds.test_y) == 0:
        raise DatasetError(f"data set {name!r} has no training or no test images")
    return ds


def _load_imagefolder(
    name: str, data_dir: Path | None, train_limit: int | None, test_limit: int | None
) -> Dataset:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DatasetError(f"unknown data set {name!r}")
    mod = _imagefolder_module()
    path = Path(data_dir) / name if data_dir is not None else None
    if mod is None or path is None or not path.is_dir():
        where = f" (no folder {path})" if path is not None else ""
        raise DatasetError(f"unknown data set {name!r}{where}; known: mnist, digits, image folders")
    return replace(mod.load_imagefolder(path, name, train_limit, test_limit))
