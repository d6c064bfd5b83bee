"""The bundle in service, how it is replaced, and the cache that survives restarts.

`BundleManager.current` is a `LoadedBundle` (bundle + engine + preprocessing spec) or
None. It is replaced by one reference assignment, so a request that read it keeps a complete,
consistent network for its whole life while a swap happens. A fetch or verification that fails
leaves `current` untouched and is counted. Polls are logged when what they find changes (no
bundle yet, unreachable, refused, back to the current bundle), not one line per poll.

Cache layout under SIQ_STATE_DIR: `bundles/<id>.siq` (the last good bundle; older ones are
removed) and `current.json` = {"id", "source", "signature"}, written after the bundle file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.fetcher import BundleFetcher, FetchError
from client.metrics import ClientMetrics
from client.settings import BundleSource
from shared.bundle import (
    BUNDLE_SUFFIX,
    TEMP_PREFIX,
    Bundle,
    bundle_id,
    read_bundle_file,
    read_signature,
    remove_temp_files,
    signature_path,
    verify,
    write_bundle_atomic,
    write_signature,
)
from shared.engine import IntegerNetwork, load_engine
from shared.errors import BundleError, ConfigError, NotReadyError
from shared.image import check_spec, output_shape

__all__ = ["LoadedBundle", "BundleManager", "load_network"]

log = logging.getLogger("client.bundles")


@dataclass(frozen=True)
class LoadedBundle:
    bundle: Bundle
    network: IntegerNetwork  # or shared.onnx_engine.OnnxEngine: the same interface
    preprocess: dict[str, Any]  # the checked `input.preprocess` spec
    loaded_at: datetime
    source: str  # "server", "cache" or "file"

    def describe(self) -> dict[str, Any]:
        m = self.bundle.manifest
        return {
            "id": self.bundle.id,
            "dataset": self.bundle.dataset,
            "weight_bits": m["weight_bits"],
            "activation_bits": m["activation_bits"],
            "class_names": self.bundle.class_names,
            "input": {k: m["input"][k] for k in ("channels", "height", "width")},
            "preprocess": self.preprocess,
            "bytes": self.bundle.size,
            "network": {  # a chain (format versions 1, 2) or a DAG (3): its ops, counted
                "format_version": m.get("format_version", 1),
                "nodes": len(m["graph"]),
                "ops": dict(Counter(node["op"] for node in m["graph"])),
            },
            "backend": self.network.backend,  # the engine that answers: onnxruntime or numpy
            "metrics": m.get("metrics", {}),
            "loaded_at": self.loaded_at.isoformat(),
            "source": self.source,
        }


def load_network(bundle: Bundle, source: str) -> LoadedBundle:
    """Build the network of a decoded bundle; BundleError when the client cannot serve it."""
    try:
        spec = check_spec(bundle.manifest["input"].get("preprocess"))
    except ConfigError as exc:
        raise BundleError(f"bundle {bundle.id}: {exc}") from exc
    network = load_engine(bundle)  # onnxruntime when installed, else numpy
    if tuple(network.input_shape) != output_shape(spec):
        raise BundleError(
            f"bundle {bundle.id}: input shape {tuple(network.input_shape)} does not match "
            f"its preprocessing {spec} ({output_shape(spec)})"
        )
    return LoadedBundle(bundle, network, spec, datetime.now(UTC), source)


class BundleManager:
    def __init__(
        self,
        source: BundleSource,
        state_dir: Path,
        fetcher: BundleFetcher | None,
        metrics: ClientMetrics,
        hmac_key: str | None = None,
    ):
        self.source = source
        self.state_dir = Path(state_dir)
        self.fetcher = fetcher
        self.metrics = metrics
        self.hmac_key = hmac_key
        self.current: LoadedBundle | None = None
        self._state: str | None = None  # what the last poll found, logged when it changes

    def _found(self, state: str, level: int, message: str, *args: object) -> None:
        """Log what a poll found, once: the same finding on the next polls says nothing."""
        if state != self._state:
            self._state = state
            log.log(level, message, *args)

    def serving(self) -> LoadedBundle:
        """The bundle in service now (a request keeps it whatever swaps happen meanwhile);
        NotReadyError (503) before the first."""
        loaded = self.current
        if loaded is None:
            raise NotReadyError(
                f"no bundle is loaded yet ({self.source.describe()}); try again shortly"
            )
        return loaded

    # --- swapping -----------------------------------------------------------------------

    def install(self, loaded: LoadedBundle) -> None:
        """Put `loaded` into service: one reference assignment, atomic for readers."""
        previous = self.current
        self.current = loaded
        self.metrics.swaps.inc()
        self.metrics.loaded.set(1)
        old = previous.bundle.id[:12] if previous else "none"
        log.info("serving bundle %s from %s (was %s)", loaded.bundle.id, loaded.source, old)

    def load_initial(self) -> None:
        """At start: a file source is loaded or the start fails; otherwise serve the cache."""
        remove_temp_files(self.state_dir)
        remove_temp_files(self._cache_dir)
        if self.source.kind == "file":
            try:
                bundle = read_bundle_file(self.source.value)
                self._check_file_signature(Path(self.source.value))
                self.install(load_network(bundle, "file"))
            except BundleError as exc:
                raise ConfigError(f"SIQ_BUNDLE={self.source.value}: {exc}") from exc
            return
        cached = self._read_cache()
        if cached is not None:
            self.install(cached)

    def _check_file_signature(self, path: Path) -> None:
        """With a key set, a bundle file needs a valid detached signature `<file>.sig`."""
        if self.hmac_key is None:
            return
        signature = read_signature(path)
        if signature is None:
            raise BundleError(
                f"SIQ_BUNDLE_HMAC_KEY is set and {signature_path(path)} is missing: sign the "
                "file with `python -m client sign-bundle FILE`"
            )
        if not verify(path.read_bytes(), self.hmac_key, signature):
            raise BundleError(f"{signature_path(path)} does not verify with the current key")

    def refresh(self) -> bool:
        """One attempt to bring the configured bundle from the server. True when swapped.

        Never raises for network or bundle trouble: the current bundle keeps serving.
        """
        if self.fetcher is None or self.source.kind == "file":
            return False
        current_id = self.current.bundle.id if self.current else None
        try:
            if self.source.kind == "latest":
                fetched = self.fetcher.fetch_latest(self.source.value, current_id)
                if fetched is None:
                    self._up_to_date(current_id)
                    return False
            elif self.source.value == current_id:
                return False
            else:
                fetched = self.fetcher.fetch(self.source.value)
            loaded = load_network(fetched.bundle, "server")
        except FetchError as exc:
            self.metrics.fetch_failures.labels("unreachable").inc()
            self._found(
                f"unreachable {exc}",
                logging.WARNING,
                "bundle fetch failed, still serving %s: %s (said again only when it changes)",
                current_id,
                exc,
            )
            return False
        except BundleError as exc:
            self.metrics.fetch_failures.labels("refused").inc()
            self._found(
                f"refused {exc}",
                logging.ERROR,
                "bundle refused, still serving %s: %s",
                current_id,
                exc,
            )
            return False
        self._state = f"serving {loaded.bundle.id}"
        self.install(loaded)
        self._write_cache(fetched.data, fetched.signature)
        return True

    def _up_to_date(self, current_id: str | None) -> None:
        if current_id is None:
            self._found(
                "no bundle",
                logging.INFO,
                "the server has no bundle for %r yet; waiting for one",
                self.source.value,
            )
        else:
            self._found(f"serving {current_id}", logging.INFO, "bundle %s is current", current_id)

    @property
    def needs_polling(self) -> bool:
        if self.fetcher is None or self.source.kind == "file":
            return False
        return self.source.kind == "latest" or self.current is None

    async def poll(
        self,
        stop: asyncio.Event,
        poll_interval: float,
        retry_interval: float,
        swapped: Callable[[LoadedBundle], Any] | None = None,
    ):
        """Refresh until `stop` is set: every poll_interval for `latest`, every retry_interval
        until an id source is loaded (then stop). `swapped` is called, on this loop, with
        each bundle put into service."""
        while not stop.is_set() and self.needs_polling:
            try:
                put_in = await asyncio.to_thread(self.refresh)
                if put_in and swapped is not None and self.current is not None:
                    swapped(self.current)
            except Exception:  # a bug must not end polling silently
                log.exception("unexpected error while refreshing the bundle")
            if not self.needs_polling:
                break
            wait = poll_interval if self.current is not None else retry_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    # --- cache --------------------------------------------------------------------------

    @property
    def _cache_dir(self) -> Path:
        return self.state_dir / "bundles"

    def _pointer(self) -> Path:
        return self.state_dir / "current.json"

    def _write_cache(self, data: bytes, signature: str | None) -> None:
        try:
            path = write_bundle_atomic(self._cache_dir, data)
            if signature:  # so the cached file can serve as a SIQ_BUNDLE path too
                write_signature(path, signature)
            record = {
                "id": bundle_id(data),
                "source": self.source.describe(),
                "signature": signature,
            }
            fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=TEMP_PREFIX, suffix=".json")
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(tmp, self._pointer())
            for old in self._cache_dir.glob(f"*{BUNDLE_SUFFIX}"):
                if old != path:
                    old.unlink(missing_ok=True)
                    signature_path(old).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot cache the bundle under %s: %s", self.state_dir, exc)

    def _read_cache(self) -> LoadedBundle | None:
        try:
            record = json.loads(self._pointer().read_text())
            cached_id = str(record["id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if record.get("source") != self.source.describe() and not (
            self.source.kind == "id" and cached_id == self.source.value
        ):
            log.info("the cached bundle was for %s; not using it", record.get("source"))
            return None
        path = self._cache_dir / f"{cached_id}{BUNDLE_SUFFIX}"
        try:
            bundle = read_bundle_file(path, expected_id=cached_id)
            if self.hmac_key is not None and not verify(
                path.read_bytes(), self.hmac_key, record.get("signature")
            ):
                raise BundleError("its signature does not verify with the current key")
            return load_network(bundle, "cache")
        except (BundleError, OSError) as exc:
            log.warning("ignoring the cached bundle %s: %s", cached_id, exc)
            return None
