"""Image-folder data sets: `$SIQ_DATA_DIR/<name>/<class>/*.jpg` becomes a `Dataset`.

Layouts:
- `<name>/train/<class>/...` and `<name>/test/<class>/...`: the split is the folder's own;
- `<name>/<class>/...`: a seeded, stratified split (`TEST_FRACTION` of each class to test).

Every image, train and test, goes through `shared.image.preprocessing` with the data set's
`{"kind": "photo", "resize": RESIZE, "crop": INPUT_SIZE, "draft": true}` spec, the very code the client runs
on an upload, so the accuracy the server measures is the one the client delivers. Training
images then get random crops, flips and colour jitter on the fly (the `imagefolder` recipe's
`photo_augment`, applied by server/training/augment.py), which is what makes a few hundred
photos enough.

Files that are not images, or do not decode, are skipped and named in a log warning;
a class folder left without images, or a data set without classes, is a `DatasetError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.data.dataset import Dataset, DatasetInfo
from server.recipes import RECIPES
from shared.errors import DatasetError, ImageError

__all__ = [
    "IMAGE_SUFFIXES",
    "INPUT_SIZE",
    "RESIZE",
    "TEST_FRACTION",
    "photo_spec",
    "find_imagefolders",
    "load_imagefolder",
    "available",
    "load",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
INPUT_SIZE = 64  # the network sees 3 x 64 x 64
RESIZE = 64  # shorter side before the centre crop
TEST_FRACTION = 0.25  # for folders without train/ and test/
SPLIT_SEED = 0
MAX_PIXELS = 40_000_000  # a decompression-bomb guard, far above any real photo


def photo_spec(size: int = INPUT_SIZE, resize: int = RESIZE, draft: bool = True) -> dict:
    """The manifest's `input.preprocess` for photo data sets. `draft`: JPEGs decode at the
    smallest DCT scale that still reaches `resize` (load_image_for_recipe), here and in
    the client alike."""
    spec: dict = {"kind": "photo", "resize": resize, "crop": size}
    if draft:
        spec["draft"] = True
    return spec


@dataclass
class _Layout:
    classes: list[str]
    train: list[tuple[Path, int]]  # (file, class index)
    test: list[tuple[Path, int]]


def _is_hidden(p: Path) -> bool:
    return p.name.startswith((".", "_"))


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))


def _files(class_dir: Path, report: bool = True) -> list[Path]:
    """Regular, non-hidden image files (by suffix) of a class folder; the others are named
    in a warning (when `report`) and dropped."""
    files = sorted(p for p in class_dir.iterdir() if p.is_file() and not _is_hidden(p))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for p in files:
        if report and p.suffix.lower() not in IMAGE_SUFFIXES:
            log.warning("skipping %s: not an image file", p)
    return images


def _stratified_split(
    per_class: list[list[Path]], fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    rng = np.random.default_rng(seed)
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for label, files in enumerate(per_class):
        order = rng.permutation(len(files))
        n_test = int(round(len(files) * fraction)) if len(files) > 1 else 0
        n_test = min(max(n_test, 1 if len(files) > 1 else 0), len(files) - 1)
        test += [(files[i], label) for i in order[:n_test]]
        train += [(files[i], label) for i in order[n_test:]]
    return train, test


def _scan(path: Path, report: bool = True) -> _Layout:
    """Find classes and files without decoding anything; DatasetError when there is nothing."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder")
    train_dir, test_dir = path / "train", path / "test"
    if train_dir.is_dir():
        classes = [p.name for p in _class_dirs(train_dir)]
        if not classes:
            raise DatasetError(f"{train_dir}: no class folders")
        per_class = [_files(train_dir / c, report) for c in classes]
        if test_dir.is_dir():
            train = [(f, i) for i, fs in enumerate(per_class) for f in fs]
            test: list[tuple[Path, int]] = []
            for d in _class_dirs(test_dir):
                if d.name not in classes:
                    raise DatasetError(f"{d}: class {d.name!r} has no training folder")
                fs = _files(d, report)
                if not fs:
                    raise DatasetError(f"{d}: class folder holds no images")
                test += [(f, classes.index(d.name)) for f in fs]
        else:
            train, test = _stratified_split(per_class, TEST_FRACTION, SPLIT_SEED)
    else:
        classes = [p.name for p in _class_dirs(path)]
        if not classes:
            raise DatasetError(f"{path}: no class folders (expected <class>/ or train/<class>/)")
        per_class = [_files(path / c, report) for c in classes]
        train, test = _stratified_split(per_class, TEST_FRACTION, SPLIT_SEED)
    for c, fs in zip(classes, per_class, strict=True):
        if not fs:
            raise DatasetError(f"{path}: class folder {c!r} holds no images")
    if len(classes) < 2:
        raise DatasetError(f"{path}: an image-folder data set needs at least 2 classes")
    if not test:
        raise DatasetError(f"{path}: no test images")
    return _Layout(classes, train, test)


def find_imagefolders(data_dir: Path) -> list[DatasetInfo]:
    """Every image-folder data set under `data_dir`, for `GET /datasets`. Counts are of
    image files (not yet decoded); folders that are not data sets are left out."""
    out: list[DatasetInfo] = []
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return out
    for path in _class_dirs(data_dir):
        try:
            layout = _scan(path, report=False)
        except (DatasetError, OSError) as exc:
            log.debug("not an image-folder data set: %s (%s)", path, exc)
            continue
        out.append(
            {
                "name": path.name,
                "classes": layout.classes,
                "train_count": len(layout.train),
                "test_count": len(layout.test),
                "image_size": [3, INPUT_SIZE, INPUT_SIZE],
                "class_counts": _class_counts(layout),
            }
        )
    return out


def _class_counts(layout: _Layout) -> dict[str, dict[str, int]]:
    """{class: {"train": n, "test": m}}, image files per class and split."""
    counts = {c: {"train": 0, "test": 0} for c in layout.classes}
    for split, items in (("train", layout.train), ("test", layout.test)):
        for _, label in items:
            counts[layout.classes[label]][split] += 1
    return counts


def _limit(items: list[tuple[Path, int]], limit: int | None, seed: int) -> list:
    """A seeded random subset (class-sorted lists would give one class), original order."""
    if limit is None or limit >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).permutation(len(items))[:limit])
    return [items[i] for i in keep]


def _decode_all(items: list[tuple[Path, int]], spec: dict) -> tuple[np.ndarray, np.ndarray]:
    """Decode + preprocess each file with shared.image.preprocessing; skip (and name) failures.
    Returns uint8 (N, 3, S, S) and int64 (N,)."""
    from shared.image import decode_image, preprocess

    xs: list[np.ndarray] = []
    ys: list[int] = []
    for path, label in items:
        try:
            image = decode_image(path.read_bytes(), max_pixels=MAX_PIXELS, spec=spec)
            x = preprocess(image, spec)  # float32 (3, S, S) in [0, 1]
        except (ImageError, OSError) as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        # Exact: preprocess divides uint8 pixels by 255, so x * 255 is an integer again.
        xs.append(np.rint(np.asarray(x, dtype=np.float64) * 255.0).astype(np.uint8))
        ys.append(label)
    s = spec["crop"]
    x_arr = np.stack(xs) if xs else np.zeros((0, 3, s, s), dtype=np.uint8)
    return x_arr, np.asarray(ys, dtype=np.int64)


def load_imagefolder(
    path: Path,
    name: str | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    """Load an image folder as a `Dataset` of uint8 (N, 3, 64, 64) arrays (see module doc)."""
    path = Path(path)
    layout = _scan(path)
    spec = photo_spec()
    train_x, train_y = _decode_all(_limit(layout.train, train_limit, 1), spec)
    test_x, test_y = _decode_all(_limit(layout.test, test_limit, 2), spec)
    if train_limit is None:
        empty = sorted(set(range(len(layout.classes))) - set(train_y.tolist()))
        if empty:
            names = ", ".join(layout.classes[i] for i in empty)
            raise DatasetError(f"{path}: no readable training images for class(es) {names}")
    if len(train_y) == 0 or len(test_y) == 0:
        raise DatasetError(f"{path}: no readable training or no readable test images")
    return Dataset(
        name=name or path.name,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        class_names=list(layout.classes),
        preprocess=spec,
        arch="photonet",
        recipe=RECIPES["imagefolder"],
    )


def available(data_dir: Path | None) -> list[DatasetInfo]:
    return find_imagefolders(Path(data_dir)) if data_dir is not None else []


def load(
    name: str, data_dir: Path | None, train_limit: int | None, test_limit: int | None
) -> Dataset:
    """The image folder `data_dir/name`; DatasetError for a name that is not one."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DatasetError(f"unknown data set {name!r}")
    path = Path(data_dir) / name if data_dir is not None else None
    if path is None or not path.is_dir():
        where = f" (no folder {path})" if path is not None else ""
        raise DatasetError(f"unknown data set {name!r}{where}; known: mnist, digits, image folders")
    return load_imagefolder(path, name, train_limit, test_limit)
