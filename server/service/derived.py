"""Files made from a bundle (its C sources, its ONNX models, its cost report), made once and
kept: a bundle is immutable, so what is derived from it is too.

`DerivedFiles(root).get(bundle_id, name, make)` answers `root/<bundle_id>/<name>` when it
exists, else calls `make()` once, writes its bytes there (a temporary file renamed into place:
no reader sees a partial file) and answers them. Concurrent callers for one file wait for the
one build (a lock per file) instead of each building it. A file that cannot be written (the
disk is full) is still answered, just not kept: the next request builds it again.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from shared.bundle import TEMP_PREFIX, remove_temp_files

__all__ = ["DerivedFiles"]

log = logging.getLogger(__name__)


class DerivedFiles:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._guard = threading.Lock()
        self._building: dict[Path, threading.Lock] = {}

    def get(self, bundle_id: str, name: str, make: Callable[[], bytes]) -> bytes:
        """The derived file `name` of bundle `bundle_id` (a checked id), made by `make` once."""
        path = self.root / bundle_id / name
        if (data := _read(path)) is not None:
            return data
        with self._guard:
            lock = self._building.setdefault(path, threading.Lock())
        with lock:
            try:
                if (data := _read(path)) is not None:  # built while this caller waited
                    return data
                data = make()
                _keep(path, data)
                return data
            finally:
                with self._guard:
                    self._building.pop(path, None)

    def remove_temp_files(self) -> list[Path]:
        """Delete the partial files a killed writer left (at start, before anything writes)."""
        if not self.root.is_dir():
            return []
        return [p for d in self.root.iterdir() if d.is_dir() for p in remove_temp_files(d)]


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _keep(path: Path, data: bytes) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # full disk, read-only directory: answer it anyway, unkept
        log.warning("could not keep %s (%s); it is made again on the next request", path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
