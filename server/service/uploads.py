"""What the stores of uploaded things (data sets, networks) share: the name rule, and the
staging folder an upload is unpacked or imported into before it is renamed into place."""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shared.errors import ConfigError

__all__ = ["NAME_PATTERN", "STAGING", "DELETING", "check_name", "staging_folder"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# name prefixes of a store's folders that are no upload: one being made, one being removed
STAGING, DELETING = ".tmp-", ".deleting-"


def check_name(name: str, what: str) -> None:
    """ConfigError (422, field `name`) for a name that cannot be an upload's; `what` says
    which kind ("data set", "network")."""
    if not re.fullmatch(NAME_PATTERN, name):
        err = ConfigError(
            f"{what} name {name[:80]!r} is not allowed: 1 to 64 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
        err.field = "name"  # type: ignore[attr-defined]
        raise err


@contextmanager
def staging_folder(root: Path) -> Iterator[Path]:
    """A fresh folder under `root` for one upload, removed when the block ends, whatever
    happens."""
    path = root / f"{STAGING}{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
