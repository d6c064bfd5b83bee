"""Image-folder data sets: both layouts, skipped files, empty classes, array shapes; and the
photo augmentation keeps shapes, ranges and seeds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from server.data import list_datasets, load_dataset
from server.data.imagefolder import INPUT_SIZE, find_imagefolders, load_imagefolder
from server.training.augment import augment_photos, color_jitter, random_resized_crop
from shared.errors import DatasetError
from shared.image import decode_image, preprocess

S = INPUT_SIZE


def _photo(path: Path, rng: np.random.Generator, size: tuple[int, int], mode: str = "RGB") -> None:
    w, h = size
    arr = rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path)


def _make_folder(root: Path, classes: dict[str, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for c, n in classes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            size = (int(rng.integers(40, 120)), int(rng.integers(40, 120)))
            ext = ".png" if i % 2 else ".jpg"
            _photo(root / c / f"img{i}{ext}", rng, size, "RGBA" if ext == ".png" else "RGB")


def test_flat_layout_makes_stratified_seeded_split(tmp_path: Path) -> None:
    root = tmp_path / "things"
    _make_folder(root, {"cup": 8, "mug": 4, "pen": 5})
    ds = load_imagefolder(root, "things")
    assert ds.name == "things" and ds.class_names == ["cup", "mug", "pen"]
    assert ds.arch == "photonet" and ds.preprocess["kind"] == "photo"
    assert ds.train_x.dtype == np.uint8 and ds.train_x.shape[1:] == (3, S, S)
    assert ds.test_x.dtype == np.uint8 and ds.test_x.shape[1:] == (3, S, S)
    assert ds.train_y.dtype == np.int64 and ds.test_y.dtype == np.int64
    assert len(ds.train_y) + len(ds.test_y) == 17
    # every class is in both halves (stratified), and the split is the same every time
    assert set(ds.train_y.tolist()) == {0, 1, 2} and set(ds.test_y.tolist()) == {0, 1, 2}
    again = load_imagefolder(root, "things")
    np.testing.assert_array_equal(again.test_x, ds.test_x)
    np.testing.assert_array_equal(again.train_y, ds.train_y)


def test_train_test_layout_is_kept_and_matches_shared_preprocess(tmp_path: Path) -> None:
    root = tmp_path / "office"
    _make_folder(root / "train", {"a": 3, "b": 2}, seed=1)
    _make_folder(root / "test", {"a": 2, "b": 1}, seed=2)
    ds = load_imagefolder(root, "office")
    assert ds.train_x.shape == (5, 3, S, S) and ds.test_x.shape == (3, 3, S, S)
    assert ds.test_y.tolist() == [0, 0, 1]
    # the test arrays are exactly what the client computes from the same file bytes
    first = sorted((root / "test" / "a").iterdir())[0]
    x = preprocess(decode_image(first.read_bytes()), ds.preprocess)  # (3, S, S) in [0, 1]
    np.testing.assert_array_equal(ds.test_x[0].astype(np.float32) / 255.0, x)


def test_non_image_and_corrupt_files_are_skipped_and_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "ds"
    _make_folder(root, {"x": 4, "y": 4})
    (root / "x" / "notes.txt").write_text("not a photo")
    (root / "y" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with caplog.at_level(logging.WARNING, logger="server.data.imagefolder"):
        ds = load_imagefolder(root)
    text = caplog.text
    assert "notes.txt" in text and "broken.jpg" in text
    assert len(ds.train_y) + len(ds.test_y) == 8


@pytest.mark.parametrize("layout", ["flat", "split"])
def test_empty_class_is_a_dataset_error(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "ds"
    base = root / "train" if layout == "split" else root
    _make_folder(base, {"full": 3, "other": 2})
    if layout == "split":
        _make_folder(root / "test", {"full": 1, "other": 1}, seed=3)
    (base / "empty").mkdir()
    (base / "empty" / "readme.md").write_text("nothing here")
    with pytest.raises(DatasetError, match="holds no images"):
        load_imagefolder(root)


def test_unreadable_images_only_is_a_dataset_error(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_folder(root, {"a": 3})
    (root / "b").mkdir()
    (root / "b" / "bad.png").write_bytes(b"nope")
    with pytest.raises(DatasetError, match=r"class\(es\) b"):
        load_imagefolder(root)
    with pytest.raises(DatasetError):
        load_imagefolder(tmp_path / "missing")


def test_find_and_registry(tmp_path: Path) -> None:
    _make_folder(tmp_path / "office" / "train", {"a": 3, "b": 3})
    _make_folder(tmp_path / "office" / "test", {"a": 1, "b": 2}, seed=4)
    _make_folder(tmp_path / "flat", {"p": 4, "q": 4}, seed=5)
    (tmp_path / "notes").mkdir()  # no class folders: not a data set
    found = {d["name"]: d for d in find_imagefolders(tmp_path)}
    assert set(found) == {"office", "flat"}
    assert found["office"] == {
        "name": "office",
        "classes": ["a", "b"],
        "train_count": 6,
        "test_count": 3,
        "image_size": [3, S, S],
        "class_counts": {"a": {"train": 3, "test": 1}, "b": {"train": 3, "test": 2}},
    }
    assert found["flat"]["train_count"] + found["flat"]["test_count"] == 8
    names = [d["name"] for d in list_datasets(tmp_path)]
    assert "office" in names and "flat" in names
    ds = load_dataset("office", tmp_path, train_limit=4, test_limit=2)
    assert ds.train_x.shape == (4, 3, S, S) and ds.test_x.shape == (2, 3, S, S)


def test_office10_sample_loads(office10_dir: Path) -> None:
    ds = load_imagefolder(office10_dir, "office10", train_limit=30, test_limit=12)
    assert len(ds.class_names) == 10 and ds.train_x.shape == (30, 3, S, S)
    assert ds.test_x.shape == (12, 3, S, S) and ds.test_y.min() >= 0 and ds.test_y.max() < 10


def test_augmentation_keeps_shape_range_and_seed() -> None:
    x = torch.rand(6, 3, S, S)  # (B, C, H, W)
    a = augment_photos(x, torch.Generator().manual_seed(3))
    b = augment_photos(x, torch.Generator().manual_seed(3))
    c = augment_photos(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the full window without flip or jitter is the identity
    same = random_resized_crop(x, min_area=1.0, max_aspect=1.0, flip=0.0)
    torch.testing.assert_close(same, x, atol=1e-5, rtol=0)
    flipped = random_resized_crop(x, min_area=1.0, max_aspect=1.0, flip=1.0)
    torch.testing.assert_close(flipped, x.flip(-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(color_jitter(x, brightness=0.0, contrast=0.0), x, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        augment_photos(x, None, rotate=1.0)
