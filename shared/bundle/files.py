"""Bundles as files: `<id>.siq` read back against its name, written through a temporary
file and a rename so that no reader sees a partial one, and the temporary files a killed
writer left behind removed."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from shared.bundle.format import MAX_BUNDLE_BYTES, Bundle, bundle_id, decode_bundle
from shared.errors import BundleError

__all__ = [
    "BUNDLE_SUFFIX",
    "TEMP_PREFIX",
    "read_bundle_file",
    "write_bundle_atomic",
    "remove_temp_files",
]

BUNDLE_SUFFIX = ".siq"
TEMP_PREFIX = ".tmp-"  # files being written; a killed writer leaves them behind
_HEX_ID = re.compile(r"^[0-9a-fA-F]{64}$")


def read_bundle_file(path: str | os.PathLike[str], expected_id: str | None = None) -> Bundle:
    """Read and decode a bundle file. A file named `<id>.siq` is checked against that id."""
    path = Path(path)
    if expected_id is None and path.suffix == BUNDLE_SUFFIX and _HEX_ID.match(path.stem):
        expected_id = path.stem
    try:
        size = path.stat().st_size
        if size > MAX_BUNDLE_BYTES:
            raise BundleError(f"{path}: {size} bytes is more than the {MAX_BUNDLE_BYTES} limit")
        data = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read bundle file {path}: {exc.strerror or exc}") from exc
    try:
        return decode_bundle(data, expected_id)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def write_bundle_atomic(directory: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` as `<directory>/<id>.siq` via a temporary file and a rename, so no reader
    ever sees a partial file. Returns the final path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{bundle_id(data)}{BUNDLE_SUFFIX}"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=BUNDLE_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def remove_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete the `.tmp-*` files a killed writer left in `directory` (a process that owns the
    directory calls this at start, before it writes). Returns what it removed."""
    removed = []
    for path in Path(directory).glob(f"{TEMP_PREFIX}*"):
        try:
            if path.is_file():
                path.unlink()
                removed.append(path)
        except OSError:
            pass  # not ours to remove, or gone already
    return removed
