"""The MNIST download fallback writes into a cache under the state directory, never into the
(possibly read-only) data directory, finds the cached files again, and reports the real cause
when a download or a write fails. A `file://` mirror stands in for the internet."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from server.data import mnist as mnist_source
from shared.errors import DatasetError


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes(), mtime=0)


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (20, 28, 28))),
        "train-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 20)),
        "t10k-images-idx3-ubyte.gz": _idx(rng.integers(0, 256, (8, 28, 28))),
        "t10k-labels-idx1-ubyte.gz": _idx(rng.integers(0, 10, 8)),
    }
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    monkeypatch.setattr(mnist_source, "MNIST_FILES", md5s)
    monkeypatch.setattr(mnist_source, "MNIST_MIRRORS", (folder.as_uri() + "/",))
    return folder


def test_download_goes_to_the_state_cache_not_the_data_dir(
    tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "data"  # compose mounts it read-only: nothing may be written here
    data_dir.mkdir()
    monkeypatch.setenv("SIQ_STATE_DIR", str(tmp_path / "state"))
    cache = tmp_path / "state" / "cache" / "mnist"
    assert mnist_source.cache_dir() == cache
    assert mnist_source.available(data_dir) == []
    ds = mnist_source.load("mnist", data_dir, None, None)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_y.shape == (8,)
    assert list(data_dir.iterdir()) == []
    assert sorted(p.name for p in cache.iterdir()) == sorted(mnist_source.MNIST_FILES)
    # listed and loaded from the cache from now on, with no mirror at all
    monkeypatch.setattr(mnist_source, "MNIST_MIRRORS", ())
    [info] = mnist_source.available(data_dir)
    assert info["train_count"] == 20 and info["test_count"] == 8
    assert mnist_source.load("mnist", None, 5, None).train_x.shape[0] == 5


def test_a_failed_write_names_its_cause(tmp_path: Path, mirror: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory should be")
    with pytest.raises(DatasetError) as info:
        mnist_source.load_mnist(tmp_path / "data", cache=blocker / "mnist", timeout=1.0)
    assert "cannot write" in str(info.value) and str(blocker) in str(info.value)


def test_a_failed_download_names_its_cause(tmp_path: Path, mirror: Path, monkeypatch) -> None:
    monkeypatch.setattr(mnist_source, "MNIST_MIRRORS", ((tmp_path / "gone").as_uri() + "/",))
    with pytest.raises(DatasetError) as info:
        mnist_source.load_mnist(tmp_path / "data", cache=tmp_path / "cache", timeout=1.0)
    assert "URLError" in str(info.value) and "gone" in str(info.value)
