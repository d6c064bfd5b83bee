"""Bundle signatures: hex HMAC-SHA256 of a bundle's bytes under a shared key.

The server sends `X-SIQ-Signature: sign(bytes, key)` with a bundle when `SIQ_BUNDLE_HMAC_KEY`
is set; the client checks it with `verify` (constant-time) and refuses the bundle otherwise.
A bundle *file* carries its signature detached, in `<file>.sig` beside it (one line of hex):
the client writes one beside every bundle it caches, `python -m client sign-bundle FILE`
writes one for an exported file, and a file source needs a valid one while a key is set.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

__all__ = ["sign", "verify", "signature_path", "read_signature", "write_signature"]

SIGNATURE_SUFFIX = ".sig"
_MAX_SIGNATURE_FILE = 1024  # one hex line; anything longer is not a signature


def sign(data: bytes, key: str) -> str:
    """Hex HMAC-SHA256 of `data` under `key` (UTF-8)."""
    if not key:
        raise ValueError("an HMAC key must not be empty")
    return hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()


def verify(data: bytes, key: str, signature: str | None) -> bool:
    """True only when `signature` is the hex HMAC-SHA256 of `data` under `key`.

    A missing, empty or malformed signature is simply `False`, never an exception.
    """
    if not key or not signature or not isinstance(signature, str):
        return False
    expected = sign(data, key)
    try:
        return hmac.compare_digest(expected, signature.strip().lower())
    except TypeError:  # non-ASCII characters in the signature
        return False


def signature_path(bundle_path: str | os.PathLike[str]) -> Path:
    """Where the detached signature of a bundle file lives: `<file>.sig`."""
    path = Path(bundle_path)
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def read_signature(bundle_path: str | os.PathLike[str]) -> str | None:
    """The detached signature of a bundle file, or None when there is none (or unreadable)."""
    try:
        with open(signature_path(bundle_path), "rb") as f:
            text = f.read(_MAX_SIGNATURE_FILE + 1)
    except OSError:
        return None
    if len(text) > _MAX_SIGNATURE_FILE:
        return None
    return text.decode("ascii", "replace").strip() or None


def write_signature(bundle_path: str | os.PathLike[str], signature: str) -> Path:
    """Write `<file>.sig` atomically (temporary file + rename); returns its path."""
    final = signature_path(bundle_path)
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}")
    tmp.write_text(signature.strip() + "\n")
    os.replace(tmp, final)
    return final
