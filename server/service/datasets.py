"""The data sets uploaded over HTTP: `<state dir>/datasets/<name>/{train,test}/<class>/*`.

Why a folder of their own and not SIQ_DATA_DIR: the data directory is the operator's (docker
compose mounts it read-only, and it may be unset), so an upload can neither write there nor
be confused with it, and DELETE can only ever remove what was uploaded. The state directory
is already proven writable at start. `server.data` lists and loads from both folders.

An upload is staged in `.tmp-<random>/` inside this folder (same filesystem, so the finished
data set is renamed into place atomically; hidden, so never listed) and the staging folder is
removed whatever happens; a delete first renames the data set to `.deleting-<random>/`. The
start-up clean removes what a killed server left of either.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from server.data import BUILTIN_DATASETS, DatasetInfo, list_datasets
from server.data.archive import ArchiveLimits
from server.data.upload import build_dataset
from server.service.settings import ServerSettings
from server.service.uploads import DELETING, NAME_PATTERN, STAGING, check_name, staging_folder
from shared.errors import ConflictError, NotFoundError

__all__ = ["DatasetStore"]

log = logging.getLogger(__name__)


class DatasetStore:
    def __init__(self, settings: ServerSettings) -> None:
        self.root = settings.uploads_dir
        self.data_dir = settings.data_dir
        self.limits = ArchiveLimits(
            max_files=settings.dataset_max_files,
            max_file_bytes=settings.dataset_max_file_bytes,
            max_total_bytes=settings.dataset_max_total_bytes,
            max_ratio=settings.dataset_max_ratio,
        )
        self.test_fraction = settings.dataset_test_fraction
        self._lock = threading.Lock()  # the name check and the rename into place, together

    def clean(self) -> None:
        """Make the folder; remove staging and half-deleted folders a killed server left."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.iterdir():
            if path.name.startswith((STAGING, DELETING)):
                log.info("removing %s, left by an upload or delete that did not finish", path)
                shutil.rmtree(path, ignore_errors=True)

    def listing(self) -> list[DatasetInfo]:
        return list_datasets(self.data_dir, self.root)

    def check_new_name(self, name: str) -> None:
        """ConfigError (422) for a name that cannot be a data set's, ConflictError (409) for
        one that is taken: a built-in, the data directory's or an upload's."""
        check_name(name, "data set")
        taken = name in BUILTIN_DATASETS or (self.root / name).exists()
        taken = taken or (self.data_dir is not None and (self.data_dir / name).exists())
        if taken:
            raise ConflictError(
                f"a data set named {name!r} exists already; DELETE /datasets/{name} first "
                "(uploaded ones only) or choose another name"
            )

    def staging(self) -> AbstractContextManager[Path]:
        """A fresh folder for one upload, removed when the block ends, whatever happens."""
        return staging_folder(self.root)

    def add(
        self, name: str, archive: Path, staging: Path, test_fraction: float | None = None
    ) -> DatasetInfo:
        """Unpack and check `archive` (server/data/upload.py) and put it in place as `name`."""
        fraction = self.test_fraction if test_fraction is None else test_fraction
        dataset = build_dataset(archive, staging, self.limits, fraction)
        with self._lock:
            self.check_new_name(name)  # again: another upload may have taken it meanwhile
            dataset.rename(self.root / name)
        log.info("data set %r uploaded", name)
        return self._info(name)

    def _info(self, name: str) -> DatasetInfo:
        for info in self.listing():
            if info["name"] == name:
                return info
        raise NotFoundError(f"no data set named {name!r}")

    def remove(self, name: str, in_use: Callable[[], set[str]]) -> None:
        """Delete the uploaded data set `name`; ConflictError while a queued or running job
        uses it (`in_use()`: those jobs' data set names), NotFoundError unless uploaded."""
        path = self.root / name
        if not re.fullmatch(NAME_PATTERN, name) or not path.is_dir():
            builtin = name in {d["name"] for d in list_datasets(self.data_dir)}
            hint = " (only uploaded data sets can be deleted)" if builtin else ""
            raise NotFoundError(f"no uploaded data set named {name[:80]!r}{hint}")
        with self._lock:
            # renamed away first: a job submitted from now on finds no such data set
            away = self.root / f"{DELETING}{uuid.uuid4().hex}"
            path.rename(away)
            if name in in_use():
                away.rename(path)
                raise ConflictError(
                    f"data set {name!r} is used by a queued or running job; cancel it or "
                    "wait for it to end, then delete"
                )
        shutil.rmtree(away, ignore_errors=True)
        log.info("data set %r deleted", name)
