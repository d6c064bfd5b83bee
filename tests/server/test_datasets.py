"""Data sets: MNIST integrity checks (MD5, truncation, missing files), digits layout, the
registry and the validation split."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from server.data import list_datasets, load_dataset, split_validation
from server.data import mnist as mnist_source
from server.data.digits import load_digits
from server.data.mnist import MNIST_FILES, load_mnist, read_idx
from shared.errors import DatasetError
from tests.samples import SAMPLE_DIR, mnist_sample


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fake_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny but well-formed MNIST folder whose MD5s are patched in as the published ones."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (30, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 30),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (12, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 12),
    }
    folder = tmp_path / "mnist"
    folder.mkdir()
    md5s = {}
    for name, arr in arrays.items():
        data = gzip.compress(_idx_bytes(arr), mtime=0)
        (folder / name).write_bytes(data)
        md5s[name] = hashlib.md5(data).hexdigest()
    monkeypatch.setattr(mnist_source, "MNIST_FILES", md5s)
    monkeypatch.setattr(mnist_source, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    return tmp_path


def test_fake_mnist_loads_with_layout(fake_mnist: Path) -> None:
    ds = load_mnist(fake_mnist, download=False)
    assert ds.train_x.shape == (30, 1, 28, 28) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (12, 1, 28, 28)
    assert ds.train_y.dtype == np.int64 and ds.train_y.max() < 10
    assert ds.preprocess == {"kind": "digit"} and ds.arch == "lenet"


def test_md5_rejects_corrupted_copy(fake_mnist: Path) -> None:
    path = fake_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.gz.*MD5"):
        load_mnist(fake_mnist, download=False)


def test_truncated_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    full = gzip.compress(_idx_bytes(np.zeros((4, 28, 28))))
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        read_idx(path)
    # a complete gzip stream with a short payload is named too
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros((4, 28, 28)))[:-10]))
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz.*expected"):
        read_idx(path)


def test_missing_files_say_where_to_put_them(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(mnist_source, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    with pytest.raises(DatasetError) as info:
        load_mnist(tmp_path, download=True, timeout=1.0)
    message = str(info.value)
    assert str(tmp_path / "mnist") in message and "train-images-idx3-ubyte.gz" in message


@pytest.mark.full_data
def test_real_mnist_matches_published_md5(full_data_dir: Path, tmp_path: Path) -> None:
    mnist_dir = full_data_dir / "mnist"
    ds = load_dataset("mnist", full_data_dir, train_limit=100, test_limit=50)
    assert ds.train_x.shape == (100, 1, 28, 28) and ds.test_y.shape == (50,)
    assert set(MNIST_FILES) <= {p.name for p in mnist_dir.iterdir()}
    # a corrupted copy of the real files is refused
    copy = tmp_path / "mnist"
    shutil.copytree(mnist_dir, copy)
    victim = copy / "train-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path)


def test_digits_in_mnist_layout() -> None:
    ds = load_digits()
    assert ds.train_x.shape == (1438, 1, 28, 28) and ds.train_x.dtype == np.uint8
    assert ds.test_x.shape == (359, 1, 28, 28)
    assert sorted(set(ds.train_y.tolist())) == list(range(10))
    for img in ds.train_x[:50, 0]:  # ink fits 20x20, centre of mass near (14, 14)
        rows, cols = np.nonzero(img)
        assert np.ptp(rows) < 21 and np.ptp(cols) < 21
        ys, xs = np.indices(img.shape)
        mass = img.astype(float).sum()
        assert abs((img * ys).sum() / mass - 14) <= 1 and abs((img * xs).sum() / mass - 14) <= 1
    assert ds.train_x.max() == 255


def test_registry(tmp_path: Path, fake_mnist: Path) -> None:
    names = [d["name"] for d in list_datasets(tmp_path / "nowhere")]
    assert names[0] == "digits" and "mnist" not in names
    listed = {d["name"]: d for d in list_datasets(fake_mnist)}
    assert listed["mnist"]["train_count"] == 30 and listed["mnist"]["test_count"] == 12
    with pytest.raises(DatasetError, match="unknown data set"):
        load_dataset("no-such-set", tmp_path)
    with pytest.raises(DatasetError):
        load_dataset("../etc", tmp_path)
    ds = load_dataset("digits", None, train_limit=20, test_limit=10)
    assert len(ds.train_y) == 20 and len(ds.test_y) == 10


def test_validation_split_comes_from_training_set() -> None:
    ds = load_digits()
    tx, ty, vx, vy = split_validation(ds, 0.1, seed=3)
    assert len(vy) == round(0.1 * len(ds.train_y)) and len(ty) + len(vy) == len(ds.train_y)
    train_rows = {r.tobytes() for r in ds.train_x}
    assert all(r.tobytes() in train_rows for r in vx)
    again = split_validation(ds, 0.1, seed=3)
    np.testing.assert_array_equal(again[3], vy)


@pytest.mark.full_data
def test_the_committed_samples_are_the_first_images_of_the_data_sets(full_data_dir: Path) -> None:
    """tests/data holds MNIST's first 8000 + 1000 images and office10 photos byte for byte: a
    test trained on the sample sees what it would see on the whole data set."""
    sample = mnist_sample()
    ds = load_dataset("mnist", full_data_dir, train_limit=8000, test_limit=1000)
    np.testing.assert_array_equal(ds.train_x[:, 0], sample["train_x"])
    np.testing.assert_array_equal(ds.train_y, sample["train_y"])
    np.testing.assert_array_equal(ds.test_x[:, 0], sample["test_x"])
    np.testing.assert_array_equal(ds.test_y, sample["test_y"])
    photos = sorted(p for p in (SAMPLE_DIR / "office10").rglob("*") if p.is_file())
    assert len(photos) == 70
    for photo in photos:
        original = full_data_dir / photo.relative_to(SAMPLE_DIR)
        assert photo.read_bytes() == original.read_bytes(), photo
