"""The networks uploaded over HTTP: `<state dir>/networks/<name>.safetensors`, each the float
ONNX model a user brought, read into the integer contract's graph (server/networks/).

Like uploaded data sets (server/service/datasets.py): the model is streamed into a hidden
staging folder `.tmp-<random>/` here, checked there, and the stored file renamed into place
under a lock; the staging folder is removed whatever happens, and at start. A delete renames
the file to `.deleting-<random>` first, so a job submitted meanwhile finds no such network.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from server.data import list_datasets
from server.networks import encode_network, import_onnx, read_info
from server.service.settings import ServerSettings
from server.service.uploads import DELETING, NAME_PATTERN, STAGING, check_name, staging_folder
from shared.errors import ConfigError, ConflictError, NotFoundError

__all__ = ["NetworkStore", "network_path", "read_network"]

log = logging.getLogger(__name__)

_SUFFIX = ".safetensors"


def network_path(networks_dir: Path, name: str) -> Path:
    return networks_dir / f"{name}{_SUFFIX}"


def read_network(networks_dir: Path, name: str) -> bytes:
    """The stored network `name`'s bytes (what a job that names it is handed)."""
    try:
        return network_path(networks_dir, name).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"network {name!r} is not on this server (see GET /networks)") from None


class NetworkStore:
    def __init__(self, settings: ServerSettings) -> None:
        self.root = settings.networks_dir
        self.data_dir, self.uploads_dir = settings.data_dir, settings.uploads_dir
        self.max_nodes = settings.network_max_nodes
        self._lock = threading.Lock()

    def clean(self) -> None:
        """Make the folder; remove what an upload or delete that did not finish left."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self.root.iterdir():
            if path.name.startswith((STAGING, DELETING)):
                log.info("removing %s, left by an upload or delete that did not finish", path)
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def listing(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.root.glob(f"*{_SUFFIX}")):
            if not path.name.startswith("."):
                out.append(self._info(path))
        return out

    def get(self, name: str) -> dict[str, Any]:
        path = network_path(self.root, name)
        if not re.fullmatch(NAME_PATTERN, name) or not path.is_file():
            raise NotFoundError(f"no network named {name[:80]!r} (see GET /networks)")
        return self._info(path)

    @staticmethod
    def _info(path: Path) -> dict[str, Any]:
        meta = read_info(path)
        return {
            "name": path.name[: -len(_SUFFIX)],
            "input_shape": meta["input_shape"],
            "num_classes": meta["num_classes"],
            "parameters": meta["parameters"],
            "nodes": len(meta["graph"]),
            "onnx_sha256": meta.get("onnx_sha256"),
            "onnx_bytes": meta.get("onnx_bytes"),
            "created": meta.get("created"),
            "graph": meta["graph"],
        }

    def check_new_name(self, name: str) -> None:
        check_name(name, "network")
        if network_path(self.root, name).exists():
            raise ConflictError(
                f"a network named {name!r} exists already; DELETE /networks/{name} first or "
                "choose another name"
            )

    def staging(self) -> AbstractContextManager[Path]:
        """A fresh folder for one upload, removed when the block ends, whatever happens."""
        return staging_folder(self.root)

    def add(self, name: str, model: Path, staging: Path) -> dict[str, Any]:
        """Import the ONNX model at `model` (NetworkError naming the node otherwise) and put
        it in place as `name`."""
        net = import_onnx(model, self.max_nodes)
        digest = hashlib.sha256()
        with model.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        extra = {
            "onnx_sha256": digest.hexdigest(),
            "onnx_bytes": model.stat().st_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        stored = staging / f"network{_SUFFIX}"
        stored.write_bytes(encode_network(net, extra))
        with self._lock:
            self.check_new_name(name)
            stored.rename(network_path(self.root, name))
        log.info("network %r uploaded (%d nodes)", name, len(net.graph))
        return self.get(name)

    def check_job(self, network: str, dataset: str) -> None:
        """ConfigError (422 at submit) unless `network` exists and takes `dataset`'s images
        and classes."""
        try:
            info = self.get(network)
        except NotFoundError:
            err = ConfigError(f"network: no network named {network!r} (see GET /networks)")
            err.field = "network"  # type: ignore[attr-defined]
            raise err from None
        for d in list_datasets(self.data_dir, self.uploads_dir):
            if d["name"] != dataset:
                continue
            problem = None
            if list(d["image_size"]) != list(info["input_shape"]):
                problem = (
                    f"takes images of shape {info['input_shape']} (C, H, W); data set "
                    f"{dataset!r} has {d['image_size']}"
                )
            elif len(d["classes"]) != info["num_classes"]:
                problem = (
                    f"has {info['num_classes']} outputs; data set {dataset!r} has "
                    f"{len(d['classes'])} classes"
                )
            if problem:
                err = ConfigError(f"network: {network!r} {problem}")
                err.field = "network"  # type: ignore[attr-defined]
                raise err

    def remove(self, name: str, in_use: Callable[[], set[str]]) -> None:
        """Delete network `name`; ConflictError while a queued or running job names it."""
        path = network_path(self.root, name)
        if not re.fullmatch(NAME_PATTERN, name) or not path.is_file():
            raise NotFoundError(f"no network named {name[:80]!r}")
        with self._lock:
            away = self.root / f"{DELETING}{uuid.uuid4().hex}"
            path.rename(away)
            if name in in_use():
                away.rename(path)
                raise ConflictError(
                    f"network {name!r} is used by a queued or running job; cancel it or wait "
                    "for it to end, then delete"
                )
        away.unlink(missing_ok=True)
        log.info("network %r deleted", name)
