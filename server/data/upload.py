"""An uploaded archive becomes an image-folder data set (server/data/imagefolder.py's layout),
or is refused with a message that says what is wrong.

`build_dataset(archive, staging, limits, test_fraction)` unpacks the archive into
`staging/raw` (server/data/archive.py: paths, links, sizes and counts checked there), reads
its layout, decodes every image with the very code training runs on it, and lays the data set
out in `staging/dataset/train/<class>/*` and `staging/dataset/test/<class>/*`, ready to be
renamed into place. The archive may hold:

- `train/<class>/<file>` and `test/<class>/<file>`: the split is the archive's own; or
- `<class>/<file>`: the split is a deterministic hash split: in each class, the files are
  ranked by the SHA-256 of their names and the first `round(n * test_fraction)` (at least
  one) are the test set. The same files give the same split, whatever order they come in.

Either may sit inside one top folder (`office10/train/...`, what zipping a folder gives).
Refused (422, every problem named, at most `MAX_LISTED` files listed): a file elsewhere, a
file that is not an image (by suffix) or does not decode, fewer than two classes, a class
without training or test images, a test class with no training folder.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

from server.data.archive import ArchiveLimits, extract_archive
from server.data.imagefolder import IMAGE_SUFFIXES, MAX_PIXELS, photo_spec
from shared.errors import ArchiveError, ImageError

__all__ = ["MAX_LISTED", "SPLITS", "build_dataset", "hash_split"]

MAX_LISTED = 20
SPLITS = ("train", "test")

Files = dict[str, dict[str, list[str]]]  # split -> class -> file names


def _listed(problems: list[str]) -> str:
    shown = "; ".join(problems[:MAX_LISTED])
    more = len(problems) - MAX_LISTED
    return shown + (f"; ... and {more} more" if more > 0 else "")


def _strip_top_folder(paths: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Without the one folder every path sits in (unless that is train/ or test/)."""
    tops = {p[0] for p in paths}
    if len(tops) == 1 and all(len(p) >= 3 for p in paths) and not tops & set(SPLITS):
        return [p[1:] for p in paths]
    return paths


def _layout(paths: list[tuple[str, ...]]) -> tuple[Files, bool]:
    """(split -> class -> files, whether the archive gave the split), or ArchiveError."""
    if not paths:
        raise ArchiveError("the archive holds no files")
    split_given = any(p[0] in SPLITS for p in paths)
    depth = 3 if split_given else 2
    files: Files = {s: defaultdict(list) for s in SPLITS}
    misplaced = []
    for p in paths:
        if len(p) != depth or (split_given and p[0] not in SPLITS):
            misplaced.append("/".join(p))
        elif split_given:
            files[p[0]][p[1]].append(p[2])
        else:
            files["train"][p[0]].append(p[1])
    if misplaced:
        expected = "train/<class>/<file> and test/<class>/<file>" if split_given else None
        expected = expected or "<class>/<file> (or train/<class>/... and test/<class>/...)"
        raise ArchiveError(f"files outside the layout {expected}: {_listed(misplaced)}")
    return files, split_given


def hash_split(names: list[str], test_fraction: float) -> tuple[list[str], list[str]]:
    """(train, test) of one class's file names: ranked by SHA-256, the first
    round(n * test_fraction) (at least one when there are two or more) are the test set."""
    ranked = sorted(names, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n))
    n_test = round(len(names) * test_fraction)
    n_test = min(max(n_test, 1), len(names) - 1) if len(names) > 1 else 0
    return sorted(ranked[n_test:]), sorted(ranked[:n_test])


def _unreadable(raw: Path, paths: list[tuple[str, ...]]) -> list[str]:
    """Every file that is not an image or does not decode, with why."""
    from shared.image import decode_image

    spec = photo_spec()
    problems = []
    for p in paths:
        shown = "/".join(p)
        if Path(p[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{shown}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
            continue
        try:
            decode_image(raw.joinpath(*p).read_bytes(), max_pixels=MAX_PIXELS, spec=spec)
        except ImageError as exc:
            problems.append(f"{shown}: does not decode ({exc})")
    return problems


def _check_classes(files: Files) -> None:
    train, test = files["train"], files["test"]
    if len(train) < 2:
        raise ArchiveError(
            f"a data set needs at least 2 classes with training images; found {len(train)}"
            + (f" ({', '.join(sorted(train))})" if train else "")
        )
    strays = sorted(set(test) - set(train))
    if strays:
        raise ArchiveError(f"test classes without a training folder: {', '.join(strays)}")
    untested = sorted(c for c in train if not test.get(c))
    if untested:
        raise ArchiveError(
            f"classes with no test images: {', '.join(untested)} (a class needs at least "
            "2 images when the archive gives no test/ folder)"
        )


def build_dataset(
    archive: Path, staging: Path, limits: ArchiveLimits, test_fraction: float
) -> Path:
    """Unpack and check `archive` (see the module doc); returns `staging/dataset`, a
    complete image-folder data set. ArchiveError (4xx) for anything refused."""
    raw, dataset = staging / "raw", staging / "dataset"
    raw.mkdir()
    written = extract_archive(archive, raw, limits)
    paths = _strip_top_folder(written)
    files, split_given = _layout(paths)
    problems = _unreadable(raw, written)
    if problems:
        raise ArchiveError(f"{len(problems)} file(s) are not usable images: {_listed(problems)}")
    if not split_given:
        for cls, names in list(files["train"].items()):
            files["train"][cls], files["test"][cls] = hash_split(names, test_fraction)
    _check_classes(files)
    prefix = written[0][: len(written[0]) - len(paths[0])]  # the top folder, if stripped
    origin = raw.joinpath(*prefix)
    for split, classes in files.items():
        for cls, names in classes.items():
            (dataset / split / cls).mkdir(parents=True)
            for name in names:
                source = origin / split / cls / name if split_given else origin / cls / name
                source.rename(dataset / split / cls / name)
    return dataset
