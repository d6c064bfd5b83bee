"""Bundle signatures: hex HMAC-SHA256 of a bundle's bytes under a shared key.

The server sends `X-SIQ-Signature: sign(bytes, key)` with a bundle when `SIQ_BUNDLE_HMAC_KEY`
is set; the client checks it with `verify` (constant-time) and refuses the bundle otherwise.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "verify"]


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
