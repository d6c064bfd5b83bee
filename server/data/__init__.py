"""Data sources the server trains on, one module each: `mnist` (the original IDX files),
`digits` (scikit-learn's bundled digits, works offline) and image folders
(`$SIQ_DATA_DIR/<name>/<class>/*.jpg`). The sources never import each other, and nothing
here imports torch: the HTTP service lists data sets and checks job submissions with it.

Every loader returns a `Dataset` (server/data/dataset.py) carrying its family's recipe of
training defaults (server.recipes.RECIPES).

Data sets uploaded over HTTP (server/data/upload.py builds them) are image folders too, kept
in an uploads folder of their own (`<state dir>/datasets`, server/service/datasets.py):
`list_datasets` and `check_dataset` take it as `uploads_dir`, and `dataset_root` says which
of the two folders a job loads a name from. A name in the data directory wins.
"""

from __future__ import annotations

from pathlib import Path

from server.data import digits, imagefolder, mnist
from server.data.dataset import Dataset, DatasetInfo, split_validation
from shared.errors import DatasetError, UnknownDatasetError

__all__ = [
    "Dataset",
    "DatasetInfo",
    "BUILTIN_DATASETS",
    "split_validation",
    "list_datasets",
    "load_dataset",
    "check_dataset",
    "dataset_names",
    "dataset_root",
]

# The named sources; every other name is an image folder. Both are always accepted at
# submission: mnist may still fail in the worker when its files are missing, with a
# dataset_error that says where to put them.
_NAMED = {mnist.NAME: mnist, digits.NAME: digits}
BUILTIN_DATASETS = tuple(sorted(_NAMED))


def list_datasets(data_dir: Path | None, uploads_dir: Path | None = None) -> list[DatasetInfo]:
    """{name, classes, train_count, test_count, image_size} for every data set available
    (image folders add `class_counts`; uploaded ones say `uploaded: true`)."""
    out = mnist.available(data_dir) + digits.available(data_dir)
    names = {d["name"] for d in out}
    for folder, uploaded in ((data_dir, False), (uploads_dir, True)):
        for info in imagefolder.available(folder):
            if info["name"] not in names:
                names.add(info["name"])
                out.append({**info, "uploaded": uploaded})
    return out


def dataset_names(data_dir: Path | None, uploads_dir: Path | None = None) -> list[str]:
    """The names a job may ask for, sorted: what `check_dataset` accepts and the OpenAPI
    document lists (server/service/openapi.py)."""
    listed = {d["name"] for d in list_datasets(data_dir, uploads_dir)}
    return sorted(listed | set(BUILTIN_DATASETS))


def check_dataset(name: str, data_dir: Path | None, uploads_dir: Path | None = None) -> None:
    """UnknownDatasetError (naming the available ones) unless `name` can be asked for."""
    available = dataset_names(data_dir, uploads_dir)
    if name not in available:
        raise UnknownDatasetError(
            f"unknown data set {name!r}; available: {', '.join(available)} (see GET /datasets)"
        )


def dataset_root(name: str, data_dir: Path | None, uploads_dir: Path | None) -> Path | None:
    """The folder a job hands `load_dataset` for `name`: the uploads folder for an uploaded
    data set the data directory does not also hold, else the data directory."""
    if name in _NAMED or uploads_dir is None or not (uploads_dir / name).is_dir():
        return data_dir
    if data_dir is not None and (data_dir / name).exists():
        return data_dir
    return uploads_dir


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
    source = _NAMED.get(name, imagefolder)
    ds = source.load(name, data_dir, train_limit, test_limit)
    if len(ds.train_y) == 0 or len(ds.test_y) == 0:
        raise DatasetError(f"data set {name!r} has no training or no test images")
    return ds
