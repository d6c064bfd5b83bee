"""A bundle's checksum of its own content, so that corruption of any byte is refused even
when no id or signing key is at hand (a bundle file copied by hand, SIQ_BUNDLE as a path).

The checksum is a SHA-256 over the manifest (canonical JSON, sorted keys, without the
checksum itself) and, for every tensor in name order, its name, dtype, shape and
little-endian bytes. It is stored in the manifest as `"checksum": "sha256:<hex>"` (not as a
second header key: safetensors writes metadata keys in no fixed order, and a bundle's bytes,
hence its id, must be deterministic). Every byte of the file is so covered: the tensor data
and the manifest by the hash (the stored manifest text must also be exactly the canonical
JSON of what it parses to), the header's tensor index (names, dtypes, shapes, offsets)
because the tensors read through it must hash the same, and the JSON around them because a
changed byte there no longer parses.

This protects against accident, not against an attacker: whoever can rewrite a file can
rewrite its checksum. Bundle ids (the SHA-256 of the whole file) and HMAC signatures
(shared/bundle/signing.py) are what stand against tampering.

Bundles written before the checksum existed carry none: `check_content` accepts those only
when the caller has verified the bytes against their id (`id_verified=True`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from shared.errors import BundleError

__all__ = ["CHECKSUM_KEY", "content_checksum", "with_checksum", "check_content"]

CHECKSUM_KEY = "checksum"  # in the manifest
_DOMAIN = b"siq-bundle-content-v1\0"  # so this hash can never be mistaken for a file id


def _canonical(manifest: Mapping[str, Any]) -> str:
    return json.dumps(manifest, sort_keys=True)


def content_checksum(manifest: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    """`sha256:<hex>` over the manifest (its checksum left out) and every tensor."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM_KEY}
    h = hashlib.sha256(_DOMAIN)
    h.update(_canonical(body).encode("utf-8") + b"\0")
    for name in sorted(tensors):
        t = np.asarray(tensors[name])
        little = t.astype(t.dtype.newbyteorder("<"), copy=False)
        h.update(json.dumps([name, t.dtype.name, list(t.shape)]).encode("utf-8") + b"\0")
        h.update(np.ascontiguousarray(little).tobytes())
    return "sha256:" + h.hexdigest()


def with_checksum(manifest: dict[str, Any], tensors: Mapping[str, np.ndarray]) -> str:
    """The manifest JSON to store: canonical, carrying the checksum of itself and `tensors`."""
    return _canonical({**manifest, CHECKSUM_KEY: content_checksum(manifest, tensors)})


def check_content(
    manifest_json: str, tensors: Mapping[str, np.ndarray], *, id_verified: bool
) -> None:
    """Refuse a bundle whose stored manifest text and tensors do not match the checksum it
    carries, and a checksum-less (older) one unless its id was verified. BundleError."""
    try:
        manifest = json.loads(manifest_json)
    except ValueError as exc:
        raise BundleError("bundle manifest is not JSON") from exc
    stored = manifest.get(CHECKSUM_KEY) if isinstance(manifest, dict) else None
    if stored is None:
        if id_verified:
            return
        raise BundleError(
            "the bundle carries no content checksum (written before checksums existed) and no "
            "id was given to check it against: load it by its id, or name the file <id>.siq"
        )
    actual = content_checksum(manifest, tensors)
    if actual != stored or _canonical(manifest) != manifest_json:
        raise BundleError(
            f"the bundle is corrupt: its content hashes to {actual}, its manifest says {stored}"
        )
