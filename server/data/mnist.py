"""The `mnist` source: the four original IDX files under `$SIQ_DATA_DIR/mnist`, checked
against their published MD5s. A file missing there is looked for, and else downloaded from
the public mirrors, in a writable cache under the server's state directory
(`$SIQ_STATE_DIR/cache/mnist`): the data directory may be read-only (compose mounts it so)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import struct
import urllib.request
from pathlib import Path

import numpy as np

from server.data.dataset import DIGIT_CLASSES, Dataset, DatasetInfo
from server.recipes import RECIPES
from shared.errors import DatasetError

__all__ = [
    "NAME",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "cache_dir",
    "read_idx",
    "load_mnist",
    "mnist_dataset",
    "available",
    "load",
]

NAME = "mnist"
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


def cache_dir() -> Path:
    """Where downloaded MNIST files go: `$SIQ_STATE_DIR/cache/mnist` (the server's settings
    read the same variable; `state` when unset, as theirs)."""
    return Path(os.environ.get("SIQ_STATE_DIR") or "state") / "cache" / "mnist"


def _download(url: str, dest: Path, md5: str, timeout: float) -> str | None:
    """Fetch `url` into `dest` (atomically); None on success, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310
            data = resp.read()
    except Exception as exc:  # noqa: BLE001 - any failure is reported, and the next mirror tried
        return f"{url}: {type(exc).__name__}: {exc}"
    if hashlib.md5(data).hexdigest() != md5:
        return f"{url}: the download does not match the published MD5"
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, dest)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        return f"cannot write {dest}: {exc.strerror or exc}"
    return None


def _locate(mnist_dir: Path, cache: Path) -> dict[str, Path]:
    """Each MNIST file that exists, from the data directory first, else the cache."""
    found = {}
    for name in MNIST_FILES:
        for folder in (mnist_dir, cache):
            if (folder / name).is_file():
                found[name] = folder / name
                break
    return found


def _ensure_mnist_files(
    mnist_dir: Path, cache: Path, *, download: bool, timeout: float
) -> dict[str, Path]:
    found = _locate(mnist_dir, cache)
    failures: list[str] = []
    if len(found) < len(MNIST_FILES) and download:
        for name in [n for n in MNIST_FILES if n not in found]:
            for mirror in MNIST_MIRRORS:
                why = _download(mirror + name, cache / name, MNIST_FILES[name], timeout)
                if why is None:
                    found[name] = cache / name
                    break
                failures.append(why)
            else:
                break  # no mirror answers: don't wait on the other files too
    missing = [name for name in MNIST_FILES if name not in found]
    if missing:
        tried = f" Downloading into {cache} failed: {'; '.join(failures)}." if failures else ""
        raise DatasetError(
            f"MNIST files missing: {', '.join(missing)}. Put the four original files "
            f"({', '.join(MNIST_FILES)}) in {mnist_dir} (set SIQ_DATA_DIR to the folder that "
            f"holds mnist/) or in {cache}.{tried}"
        )
    return found


def load_mnist(
    data_dir: Path,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
    download: bool = True,
    timeout: float = 10.0,
    cache: Path | None = None,
) -> Dataset:
    """MNIST from `data_dir/mnist` or the download cache (`cache`, default `cache_dir()`)."""
    mnist_dir = Path(data_dir) / "mnist"
    files = _ensure_mnist_files(mnist_dir, cache or cache_dir(), download=download, timeout=timeout)
    for name, md5 in MNIST_FILES.items():
        got = _md5(files[name])
        if got != md5:
            raise DatasetError(
                f"{files[name]}: MD5 {got} does not match the published {md5} "
                "(corrupt or truncated copy; replace it with the original file)"
            )
    return mnist_dataset(
        read_idx(files["train-images-idx3-ubyte.gz"])[:train_limit],
        read_idx(files["train-labels-idx1-ubyte.gz"])[:train_limit],
        read_idx(files["t10k-images-idx3-ubyte.gz"])[:test_limit],
        read_idx(files["t10k-labels-idx1-ubyte.gz"])[:test_limit],
    )


def mnist_dataset(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray
) -> Dataset:
    """The `mnist` Dataset of these uint8 images (N, 28, 28) and labels (N,)."""
    return Dataset(
        name=NAME,
        train_x=train_x[:, None].copy(),  # (N, 1, 28, 28)
        train_y=train_y.astype(np.int64),
        test_x=test_x[:, None].copy(),
        test_y=test_y.astype(np.int64),
        class_names=list(DIGIT_CLASSES),
        preprocess={"kind": "digit"},
        arch="lenet",
        recipe=RECIPES["mnist"],
    )


def _counts(files: dict[str, Path]) -> tuple[int, int] | None:
    """Counts from the IDX headers only (cheap; no MD5), None when files are missing/bad."""
    if len(files) < len(MNIST_FILES):
        return None
    counts = []
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        try:
            with gzip.open(files[name], "rb") as f:
                head = f.read(8)
            counts.append(struct.unpack(">I", head[4:8])[0])
        except (OSError, EOFError, struct.error):
            return None
    return counts[0], counts[1]


def available(data_dir: Path | None, cache: Path | None = None) -> list[DatasetInfo]:
    """[mnist's info] when its files are under `data_dir` or in the cache, else []."""
    cache = cache or cache_dir()
    folder = Path(data_dir) / "mnist" if data_dir is not None else cache
    counts = _counts(_locate(folder, cache))
    if counts is None:
        return []
    return [
        {
            "name": NAME,
            "classes": list(DIGIT_CLASSES),
            "train_count": counts[0],
            "test_count": counts[1],
            "image_size": [1, 28, 28],
        }
    ]


def load(
    name: str, data_dir: Path | None, train_limit: int | None, test_limit: int | None
) -> Dataset:
    # without SIQ_DATA_DIR, the cache is the only place (cache_dir().parent / "mnist" is it)
    root = Path(data_dir) if data_dir is not None else cache_dir().parent
    return load_mnist(root, train_limit=train_limit, test_limit=test_limit)
