"""Unpacking an archive someone uploaded (zip, tar, tar.gz / .bz2 / .xz) into a folder, safely.

Nothing in the archive is trusted. Before a byte is written:
- every member's path is checked: an absolute path, a drive letter, a backslash, a `..`
  part, a control character or an over-long name refuses the whole archive;
- only regular files and folders are taken: a symlink, a hardlink, a device file, a FIFO
  or an encrypted zip member refuses it;
- the member count is bounded (`max_files`), and the sizes the archive declares are held to
  the limits (`max_file_bytes` each, `max_total_bytes` in all).
While writing, the bytes that actually come out are counted again (a zip's or tar's header
may lie): a file over `max_file_bytes`, a total over `max_total_bytes` or over `max_ratio`
times the archive's own size (a decompression bomb) stops the extraction at once.

Members whose path has a hidden part (`.DS_Store`, `__MACOSX/`: a part starting with `.` or
`_`, which the image-folder reader skips too) are not extracted. Files are created with
O_EXCL under folders this module made, so a member named twice is refused rather than
overwritten, and nothing is ever written outside `dest`.

`ArchiveError` (422) names the member at fault; the limits raise `ArchiveTooLargeError` (413);
`UnsupportedArchiveError` (415) for bytes that are no archive this reads. The caller removes
`dest` on any error (extraction stops part-way).
"""

from __future__ import annotations

import functools
import os
import re
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.errors import ArchiveError, ArchiveTooLargeError, UnsupportedArchiveError

__all__ = ["ArchiveLimits", "extract_archive", "member_parts"]

_CHUNK = 1 << 20
_MAX_PART_BYTES = 255  # a file name's limit on every common filesystem
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")
# what a corrupt member raises as it is read (an OSError with an errno is the disk's)
_CORRUPT = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip


@dataclass(frozen=True)
class ArchiveLimits:
    max_files: int  # members of any kind
    max_file_bytes: int  # one extracted file
    max_total_bytes: int  # all extracted files together
    max_ratio: float  # extracted bytes / archive bytes


@dataclass(frozen=True)
class _Member:
    name: str
    kind: str  # "file" | "dir" | what else it is, in words (then refused)
    size: int  # as declared
    open: Callable[[], IO[bytes]]


def member_parts(name: str) -> tuple[str, ...]:
    """The folder parts of a member's path, or ArchiveError saying why the path is refused."""
    if name.startswith(("/", "\\")):
        raise ArchiveError(f"archive member {name[:200]!r}: an absolute path")
    if _DRIVE.match(name):
        raise ArchiveError(f"archive member {name[:200]!r}: a path with a drive letter")
    if "\\" in name:
        raise ArchiveError(f"archive member {name[:200]!r}: a backslash in the path")
    if _CONTROL.search(name):
        raise ArchiveError(f"archive member {name[:200]!r}: a control character in the path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"archive member {name[:200]!r}: a path that escapes the archive")
    if any(len(p.encode()) > _MAX_PART_BYTES for p in parts):
        raise ArchiveError(f"archive member {name[:200]!r}: a name over {_MAX_PART_BYTES} bytes")
    return parts


def _zip_kind(info: zipfile.ZipInfo) -> str:
    if info.flag_bits & 0x1:
        return "an encrypted file"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "a FIFO or socket"
    return "dir" if info.is_dir() else "file"


def _tar_kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "a symbolic link"
    if info.islnk():
        return "a hard link"
    if info.ischr() or info.isblk():
        return "a device file"
    if info.isfifo():
        return "a FIFO"
    return "an unsupported member type"


def _members(path: Path) -> Iterator[_Member]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic in _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    kind = _zip_kind(info)
                    open_info = functools.partial(zf.open, info)
                    yield _Member(info.filename, kind, info.file_size, open_info)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise ArchiveError(f"a corrupt zip archive ({exc})") from None
        return
    try:
        tf = tarfile.open(path, "r:*")  # noqa: SIM115 - closed below, after the check
    except (tarfile.TarError, EOFError, OSError):
        raise UnsupportedArchiveError(
            "the body is not a zip, tar, tar.gz, tar.bz2 or tar.xz archive"
        ) from None
    with closing(tf):
        try:
            for member in tf:  # one header at a time: a huge member count stops at the limit
                kind = _tar_kind(member)

                def opener(i: tarfile.TarInfo = member) -> IO[bytes]:
                    stream = tf.extractfile(i)
                    assert stream is not None  # a regular file
                    return stream

                yield _Member(member.name, kind, member.size, opener)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise ArchiveError(f"a corrupt tar archive ({exc})") from None


def extract_archive(archive: Path, dest: Path, limits: ArchiveLimits) -> list[tuple[str, ...]]:
    """Extract `archive` into the empty folder `dest` under `limits` (see the module doc).
    Returns the path parts of every file written, in archive order."""
    archive_bytes = max(archive.stat().st_size, 1)
    ratio_cap = limits.max_ratio * archive_bytes
    files: list[tuple[str, ...]] = []
    count = declared = written = 0
    for member in _members(archive):
        count += 1
        if count > limits.max_files:
            raise ArchiveTooLargeError(
                f"the archive holds more than {limits.max_files} members (SIQ_DATASET_MAX_FILES)"
            )
        parts = member_parts(member.name)
        if member.kind not in ("file", "dir"):
            raise ArchiveError(f"archive member {member.name[:200]!r} is {member.kind}")
        if member.kind == "dir":
            continue
        if member.size > limits.max_file_bytes:  # hidden ones too: reading past them inflates
            raise _file_too_large(member.name, limits)
        declared += member.size
        if declared > limits.max_total_bytes:
            raise _total_too_large(limits)
        if not parts or any(p.startswith((".", "_")) for p in parts):
            continue
        total_left = limits.max_total_bytes - written
        written += _write(member, dest, parts, limits, total_left, ratio_cap - written)
        files.append(parts)
    return files


def _write(
    member: _Member,
    dest: Path,
    parts: tuple[str, ...],
    limits: ArchiveLimits,
    total_left: int,
    ratio_left: float,
) -> int:
    """Copy one member to dest/parts, counting what comes out; returns the bytes written."""
    folder = dest.joinpath(*parts[:-1])
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ArchiveError(f"archive member {member.name[:200]!r} appears twice") from None
    except NotADirectoryError:
        raise ArchiveError(f"archive member {member.name[:200]!r}: a file is its folder") from None
    except IsADirectoryError:
        raise ArchiveError(f"archive member {member.name[:200]!r} is a folder's name") from None
    size = 0
    with os.fdopen(fd, "wb") as out:
        try:
            with member.open() as src:
                while chunk := src.read(_CHUNK):
                    size += len(chunk)
                    if size > limits.max_file_bytes:
                        raise _file_too_large(member.name, limits)
                    if size > total_left:
                        raise _total_too_large(limits)
                    if size > ratio_left:
                        raise _ratio_too_high(limits)
                    out.write(chunk)
        except (*_CORRUPT, RuntimeError, NotImplementedError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the disk's problem (a full disk: 507), not the archive's
            raise ArchiveError(
                f"archive member {member.name[:200]!r} does not unpack ({exc})"
            ) from None
    return size


def _file_too_large(name: str, limits: ArchiveLimits) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"archive member {name[:200]!r} is over {limits.max_file_bytes} bytes "
        "(SIQ_DATASET_MAX_FILE_BYTES)"
    )


def _total_too_large(limits: ArchiveLimits) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"the archive's files come to more than {limits.max_total_bytes} bytes "
        "(SIQ_DATASET_MAX_TOTAL_BYTES)"
    )


def _ratio_too_high(limits: ArchiveLimits) -> ArchiveTooLargeError:
    return ArchiveTooLargeError(
        f"the archive inflates to more than {limits.max_ratio:g} times its own size "
        "(SIQ_DATASET_MAX_RATIO): a decompression bomb?"
    )
