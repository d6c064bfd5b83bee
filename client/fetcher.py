"""Fetch bundles from the training server and verify them before anything uses them.

A bundle is accepted only when its bytes hash to the id we asked for (for `latest`, the id the
server named in its redirect / headers), `decode_bundle` validates the format, and, when a
signing key is set, `X-SIQ-Signature` is the HMAC of the bytes. The httpx client is injected,
so tests hand in one with a `MockTransport` and need no network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from shared.bundle import MAX_BUNDLE_BYTES, Bundle, bundle_id, decode_bundle, verify
from shared.errors import BundleError

__all__ = ["FetchError", "FetchedBundle", "BundleFetcher", "id_from_headers"]

_ID_IN_TEXT = re.compile(r"(?<![0-9a-fA-F])([0-9a-fA-F]{64})(?![0-9a-fA-F])")


class FetchError(Exception):
    """The server could not be asked (network, status); not a verdict on bundle bytes."""


@dataclass(frozen=True)
class FetchedBundle:
    bundle: Bundle
    data: bytes
    signature: str | None


def id_from_headers(headers: httpx.Headers, location: str | None = None) -> str | None:
    """The bundle id the server claims: redirect Location, X-SIQ-Bundle-Id / -SHA256, ETag.

    Every place that names one must name the same; BundleError when they disagree.
    """
    claims = set()
    for text in (
        location,
        headers.get("x-siq-bundle-id"),
        headers.get("x-siq-bundle-sha256"),
        headers.get("etag"),
    ):
        if text:
            match = _ID_IN_TEXT.search(text)
            if match:
                claims.add(match.group(1).lower())
    if len(claims) > 1:
        raise BundleError(f"the server names different bundle ids: {sorted(claims)}")
    return claims.pop() if claims else None


class BundleFetcher:
    def __init__(self, http: httpx.Client, server_url: str, hmac_key: str | None = None):
        self.http = http
        self.server_url = server_url.rstrip("/")
        self.hmac_key = hmac_key

    def fetch_latest(self, dataset: str, current_id: str | None) -> FetchedBundle | None:
        """The server's newest bundle for `dataset`, verified; None when it has none yet or
        it is `current_id` (asked with If-None-Match, so an unchanged bundle costs no body).

        The server may answer 200 with the file (naming its id in X-SIQ-Bundle-Id /
        X-SIQ-Bundle-SHA256 / ETag), 304, or a redirect to /bundles/{id}.
        """
        url = f"{self.server_url}/bundles/latest"
        headers = {"If-None-Match": f'"{current_id}"'} if current_id else {}
        try:
            with self.http.stream(
                "GET", url, params={"dataset": dataset}, headers=headers, follow_redirects=False
            ) as response:
                status = response.status_code
                if status in (304, 404):
                    return None
                if response.is_redirect:
                    wanted = id_from_headers(response.headers, response.headers.get("location"))
                    if wanted is None:
                        raise FetchError(f"GET {url}: the redirect names no bundle id")
                    return None if wanted == current_id else self.fetch(wanted)
                if status != 200:
                    raise FetchError(f"GET {url}: HTTP {status}")
                wanted = id_from_headers(response.headers)
                if wanted is None:
                    raise BundleError(f"GET {url}: the answer names no bundle id to verify")
                if wanted == current_id:
                    return None
                data = self._read_limited(response, url)
                return self._verified(data, wanted, response.headers)
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from exc

    def fetch(self, expected_id: str) -> FetchedBundle:
        """Download, verify and decode bundle `expected_id`.

        FetchError when the server cannot deliver it, BundleError when the bytes are refused.
        """
        expected_id = expected_id.lower()
        url = f"{self.server_url}/bundles/{expected_id}"
        try:
            with self.http.stream("GET", url, follow_redirects=True) as response:
                if response.status_code != 200:
                    raise FetchError(f"GET {url}: HTTP {response.status_code}")
                data = self._read_limited(response, url)
                headers = response.headers
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        return self._verified(data, expected_id, headers)

    def _verified(self, data: bytes, expected_id: str, headers: httpx.Headers) -> FetchedBundle:
        claimed = id_from_headers(headers)
        if claimed is not None and claimed != expected_id:
            raise BundleError(f"asked for bundle {expected_id}, the server sent {claimed}")
        digest = bundle_id(data)
        if digest != expected_id:
            raise BundleError(
                f"bundle bytes hash to {digest}, not to the expected id {expected_id}"
            )
        signature = headers.get("x-siq-signature")
        if self.hmac_key is not None:
            if not signature:
                raise BundleError(
                    f"bundle {expected_id} is unsigned and SIQ_BUNDLE_HMAC_KEY is set"
                )
            if not verify(data, self.hmac_key, signature):
                raise BundleError(f"bundle {expected_id} has a wrong signature")
        return FetchedBundle(decode_bundle(data, expected_id), data, signature)

    @staticmethod
    def _read_limited(response: httpx.Response, url: str) -> bytes:
        length = response.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BUNDLE_BYTES:
            raise BundleError(f"GET {url}: {length} bytes is more than {MAX_BUNDLE_BYTES}")
        chunks, total = [], 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > MAX_BUNDLE_BYTES:
                raise BundleError(f"GET {url}: the bundle is more than {MAX_BUNDLE_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
